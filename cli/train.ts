/**
 * `train`: trains a model on a text file and saves its weights atomically, with checkpoints,
 * --resume, and a checkpoint on SIGINT/SIGTERM/SIGHUP.
 *
 * @module
 */

import {
  BareGPTError,
  createModel,
  createTrainer,
  DECAYS,
  decodeCorpus,
  describeAdapter,
  extendVocabulary,
  InputError,
  type Model,
  MODEL_OPTIONS,
  OPTIMIZERS,
  saveWeights,
  selectKernels,
  TRAIN_OPTIONS,
  trainCommand,
  webgpuAdapter,
} from "../mod.ts";
import {
  choiceFlag,
  kernelsFlag,
  numberFlag,
  range,
  requireFlag,
  stringFlag,
  type Values,
} from "./flags.ts";
import {
  checkOutput,
  exists,
  folderOf,
  loadWeightsFile,
  readInput,
  removeStaleTemps,
  tempPath,
  writeFileAtomic,
} from "./files.ts";
import { acquireLock, lockPath, type OutputLock, probeLock } from "./lock.ts";
import { log, Progress } from "./output.ts";
import {
  checkWorkerPermission,
  defaultThreads,
  missingFolders,
  resumeFrom,
  schedule,
  shown,
} from "./train_steps.ts";

/** How another command runs a training (the no-argument `start`). */
export interface TrainContext {
  /** What continues an interrupted run (default: "the same command with --resume"). */
  continueWith?: string;
}

/** `train --data FILE --out FILE [options]`. */
export async function train(v: Values, context: TrainContext = {}): Promise<void> {
  const dataPath = requireFlag(v, "data", "train");
  const out = requireFlag(v, "out", "train");
  const o = TRAIN_OPTIONS;
  const steps = numberFlag(v, "steps", o.steps) ?? o.steps.default!;
  const batch = numberFlag(v, "batch", o.batch) ?? o.batch.default!;
  const lr = numberFlag(v, "lr", o.lr) ?? o.lr.default!;
  const warmup = numberFlag(v, "warmup", o.warmup) ?? o.warmup.default!;
  const minLr = numberFlag(v, "min-lr", o.minLr) ?? o.minLr.default!;
  const weightDecay = numberFlag(v, "weight-decay", o.weightDecay) ?? o.weightDecay.default!;
  const beta1 = numberFlag(v, "beta1", o.beta1) ?? o.beta1.default!;
  const beta2 = numberFlag(v, "beta2", o.beta2) ?? o.beta2.default!;
  const clip = numberFlag(v, "clip", o.clip) ?? o.clip.default!;
  const seed = numberFlag(v, "seed", o.seed) ?? o.seed.default!;
  const evalEvery = numberFlag(v, "eval-every", range(0, 1e9)) ?? 650;
  const evalBatches = numberFlag(v, "eval-batches", range(0, 1e9)) ?? 0;
  const checkpointEvery = numberFlag(v, "checkpoint-every", range(0, 1e9)) ?? 0;
  const dropout = numberFlag(v, "dropout", o.dropout) ?? o.dropout.default!;
  const decay = choiceFlag(v, "decay", DECAYS, "a schedule");
  const cooldown = numberFlag(v, "cooldown", o.cooldown) ?? o.cooldown.default!;
  const optimizer = choiceFlag(v, "optimizer", OPTIMIZERS, "an optimizer");
  const muonLr = numberFlag(v, "muon-lr", o.muonLr) ?? o.muonLr.default!;
  const muonMomentum = numberFlag(v, "muon-momentum", o.muonMomentum) ?? o.muonMomentum.default!;
  const muonSteps = numberFlag(v, "muon-steps", o.muonSteps) ?? o.muonSteps.default!;
  if (optimizer !== "muon") {
    const given = ["muon-lr", "muon-momentum", "muon-steps"].filter((f) => v[f] !== undefined);
    if (given.length > 0) {
      throw new InputError(
        `--${given[0]} sets Muon, which this run does not use; add --optimizer muon or drop it`,
      );
    }
  }

  const threadsFlag = numberFlag(v, "threads", o.threads);
  const threads = threadsFlag ?? defaultThreads();
  const initPath = stringFlag(v, "init");
  const m = MODEL_OPTIONS;
  const shape = {
    blockSize: numberFlag(v, "block", m.blockSize),
    dModel: numberFlag(v, "d-model", m.dModel),
    nLayers: numberFlag(v, "layers", m.nLayers),
    nHeads: numberFlag(v, "heads", m.nHeads),
  };
  if (initPath !== undefined && Object.values(shape).some((x) => x !== undefined)) {
    throw new InputError(
      "--init takes the model's shape from the weights; drop --block, --d-model, --layers and --heads",
    );
  }
  const tierFlag = kernelsFlag(v);
  const force = v.force === true;
  const resume = v.resume === true;
  const ckptPath = `${out}.ckpt`;

  // Before any work: the output folder must exist (it is made when missing) and be writable,
  // every file this run writes (the weights, the checkpoint, the lock, their temporary files) is
  // absent or a regular file and none is a file it reads, and no file may be lost by this run.
  const created = await missingFolders(folderOf(out));
  let lock: OutputLock | undefined;
  try {
    await checkOutput(out, {
      createFolder: created.length > 0,
      companions: [["its checkpoint", ckptPath], ["its lock file", lockPath(out)]],
      inputs: [["--data", dataPath], ["--init", initPath]],
    });
    // one writer per output: a run that holds the lock now makes this one fail at once (the lock
    // itself is taken once the settings and a checkpoint to resume have been checked, below)
    await probeLock(out);
    const outExists = await exists(out);
    const ckptExists = await exists(ckptPath);
    if (outExists && !force && !(resume && ckptExists)) {
      throw new InputError(
        resume
          ? `${out} already exists and there is no checkpoint ${ckptPath} to resume (the run finished); pass --force to train it again`
          : `${out} already exists; pass --force to overwrite it or choose another --out`,
      );
    }
    if (ckptExists && !resume && !force) {
      throw new InputError(
        `${ckptPath} holds an interrupted run; pass --resume to continue it, or --force to start over`,
      );
    }
    const note = (message: string) => log(`note: ${message}`);
    const text = decodeCorpus(await readInput(dataPath, "corpus"), dataPath, { onNote: note });
    const tier = selectKernels(tierFlag);
    // the GPU, asked for now: a machine without one fails before any work
    const adapter = tier === "webgpu" ? await webgpuAdapter() : undefined;
    let model: Model;
    if (initPath !== undefined) {
      // fine-tuning: the text's new characters join the vocabulary after the known ones
      const grown = extendVocabulary(await loadWeightsFile(initPath), text, { seed });
      model = grown.model;
      if (grown.added.length > 0) {
        const chars = grown.added.map((ch) => JSON.stringify(ch)).join(" ");
        note(
          `added ${grown.added.length} new characters to the vocabulary (new embedding rows): ${chars}`,
        );
      }
    } else model = createModel(text, { ...shape, seed });
    const c = model.config;
    if (initPath !== undefined) {
      const f = model.facts;
      log(
        `base model: ${initPath} (steps ${shown(f.steps ?? "not stored")}, val_loss ${
          shown(f.val_loss ?? "not stored")
        }${f.corpus_sha256 ? `, corpus sha256 ${shown(f.corpus_sha256).slice(0, 12)}...` : ""})`,
      );
    }
    // the webgpu kernels train on one device (the trainer refuses --threads above 1 there)
    const gpuThreads = threadsFlag ?? 1;
    const useThreads = tier === "webgpu"
      ? gpuThreads
      : tier === "js"
      ? 1
      : Math.min(threads, batch);
    const cores = navigator.hardwareConcurrency;
    if (tier !== "webgpu" && threadsFlag !== undefined && cores > 0 && threadsFlag > cores) {
      const why = useThreads === threads
        ? ""
        : tier === "js"
        ? " (the js kernels run on one)"
        : ` (no more than --batch ${batch})`;
      log(
        `warning: --threads ${threadsFlag} is more than the ${cores} cores of this machine; using ${useThreads} thread${
          useThreads > 1 ? "s" : ""
        }${why}, which may be slower than --threads ${cores}`,
      );
    }
    if (useThreads > 1 && tier !== "webgpu") await checkWorkerPermission(useThreads);
    // the run's settings as given (the trainer caps a long warmup; the command keeps it)
    const recipe = {
      batch,
      steps,
      lr,
      minLr,
      decay,
      warmup,
      cooldown,
      optimizer,
      muonLr,
      muonMomentum,
      muonSteps,
      weightDecay,
      beta1,
      beta2,
      clip,
      dropout,
      seed,
    };
    const trainer = await createTrainer(model, text, {
      ...recipe,
      threads: tier === "webgpu" ? gpuThreads : threads,
    });
    // A first SIGINT/SIGTERM/SIGHUP (a closed terminal) asks the run to save a checkpoint and
    // stop, wherever it is: between steps, in an evaluation (which stops at its next batch), in
    // the final evaluation (the checkpoint is then at the last step: resuming only evaluates and
    // saves) or while saving (the save finishes); it always exits with 128 + the signal's number.
    // A second stops within a moment (a write in flight gets a quarter of a second to settle),
    // removing the temporary file of a write still in progress (every file is written
    // atomically, so nothing is left half-written).
    let signal: "SIGINT" | "SIGTERM" | "SIGHUP" | undefined;
    const exitCodes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
    const listeners: [Deno.Signal, () => void][] = [];
    /** The path being written now, and its write (its temporary file goes on a second signal). */
    let writing: string | undefined, written: Promise<void> | undefined;
    const write = (path: string, bytes: Uint8Array) => {
      writing = path;
      return written = writeFileAtomic(path, bytes).finally(() => {
        writing = written = undefined;
      });
    };
    /** Thrown out of an evaluation that a signal interrupts (at its next batch). */
    const interrupted = new Error("interrupted by a signal");
    const stopOnSignal = () => {
      if (signal !== undefined) throw interrupted;
    };
    try {
      const canValidate = trainer.valTokens.length >= c.blockSize + 1;
      if (!canValidate && evalEvery > 0) {
        throw new InputError(
          `the validation split of ${dataPath} has ${trainer.valTokens.length} characters, fewer than block_size + 1 = ${
            c.blockSize + 1
          }; use a longer corpus, a smaller --block, or --eval-every 0`,
        );
      }
      for (const name of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
        const listener = async () => {
          if (signal !== undefined) {
            // a write in flight may create its temporary file after it is removed: let it
            // settle first, for a moment at most
            if (written) {
              const moment = new Promise((resolve) => setTimeout(resolve, 250));
              await Promise.race([written.catch(() => {}), moment]);
            }
            if (writing !== undefined) {
              try {
                Deno.removeSync(tempPath(writing));
              } catch { /* not created yet, or renamed already */ }
            }
            let kept = false;
            try {
              kept = Deno.lstatSync(ckptPath).isFile;
            } catch { /* none */ }
            log(
              `${name} again: stopping now; ${
                kept ? `the last checkpoint ${ckptPath} is kept` : "nothing was saved"
              }`,
            );
            lock?.release();
            Deno.exit(exitCodes[name]);
          }
          signal = name;
        };
        try {
          Deno.addSignalListener(name, listener);
          listeners.push([name, listener]);
        } catch { /* SIGTERM and SIGHUP cannot be listened to on Windows */ }
      }
      // A fine-tuning run starts from the base model's loss on the new text (measured before a
      // checkpoint replaces the weights, so a resumed run reports the same starting point).
      let baseLoss;
      try {
        baseLoss = initPath !== undefined && canValidate
          ? await trainer.evaluate(undefined, {
            ...(evalBatches > 0 ? { maxWindows: evalBatches } : {}),
            onProgress: stopOnSignal,
          })
          : undefined;
      } catch (e) {
        if (e !== interrupted) throw e;
      }
      let resumed = false;
      if (resume) {
        if (ckptExists) {
          await resumeFrom(trainer, ckptPath, tier);
          resumed = true;
        } else log(`no checkpoint at ${ckptPath}; starting fresh`);
      }

      // one writer per output: take the lock, then look again at what the checks above saw (a
      // run that started at the same moment may have written meanwhile)
      lock = await acquireLock(out, { takeOver: force || resume });
      await removeStaleTemps(out, 0); // this run alone writes out now: leftovers are a dead run's
      if ((await exists(out)) !== outExists || (await exists(ckptPath)) !== ckptExists) {
        throw new InputError(
          `another run wrote ${out} or ${ckptPath} while this one was starting; run again to see what to do`,
        );
      }

      const command = trainCommand({
        data: dataPath,
        init: initPath,
        shape: c,
        ...recipe,
        threads: trainer.threads,
      });
      log(
        `model: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads, block ${c.blockSize}, vocab ${c.vocabSize}; ${
          model.parameterCount.toLocaleString("en-US")
        } parameters`,
      );
      log(
        `training: ${steps} step${steps === 1 ? "" : "s"} of ${batch} x ${c.blockSize} tokens, ${
          schedule(steps, lr, minLr, warmup, decay, cooldown)
        }, ${
          optimizer === "muon"
            ? `Muon (lr ${muonLr}, momentum ${muonMomentum}, ${muonSteps} Newton-Schulz steps) and AdamW`
            : "AdamW"
        }, weight decay ${weightDecay}, betas (${beta1}, ${beta2}), clip ${clip}, dropout ${dropout}, seed ${seed}, ${trainer.threads} thread${
          trainer.threads > 1 ? "s" : ""
        }, kernels ${tier}${adapter ? ` (${shown(describeAdapter(adapter))})` : ""}`,
      );
      const nTrain = trainer.trainTokens.length, nVal = trainer.valTokens.length;
      log(
        `corpus: ${dataPath}, ${(nTrain + nVal).toLocaleString("en-US")} characters (${
          nTrain.toLocaleString("en-US")
        } train, ${nVal.toLocaleString("en-US")} validation)`,
      );
      if (initPath !== undefined) {
        log(
          baseLoss === undefined
            ? `base model: no validation loss on ${dataPath} (its validation split holds no window of ${c.blockSize} + 1 characters)`
            : `base model: validation loss ${evalBatches > 0 ? "~" : ""}${
              baseLoss.loss.toFixed(4)
            } on ${dataPath} before fine-tuning (${
              evalBatches > 0
                ? `estimate on ${baseLoss.windows} windows`
                : `${baseLoss.windows} windows`
            })`,
        );
      }

      let wroteCheckpoint = false;
      /** The step of the state last saved to ckptPath (by this run, or the one resumed). */
      let savedStep = resumed ? trainer.stepsDone : -1;
      const saveCheckpoint = async () => {
        await write(ckptPath, trainer.checkpoint({ command }));
        wroteCheckpoint = true;
        savedStep = trainer.stepsDone;
      };
      const continueWith = context.continueWith ?? "the same command with --resume";
      /** Stops the run on a signal: saves the state reached (when any), sets the exit code. */
      const stop = async (name: "SIGINT" | "SIGTERM" | "SIGHUP", where: string) => {
        const step = trainer.stepsDone;
        Deno.exitCode = exitCodes[name];
        if (step === 0) {
          log(`${name}: stopped${where && ` ${where},`} before the first step; nothing to save`);
          return;
        }
        const fresh = savedStep !== step;
        if (fresh) await saveCheckpoint();
        log(
          `${name}: stopped${where && ` ${where}`} after step ${step} of ${steps}; ${
            fresh ? "saved" : "kept"
          } ${ckptPath}; to continue, run ${continueWith}`,
        );
      };
      const progress = new Progress(steps, trainer.stepsDone, batch * c.blockSize);
      try {
        // a signal that came before a step (while starting, resuming or evaluating) stops the run
        // after it (on the GPU, after the one already submitted): a resumed run always goes on
        // from its checkpoint
        const stopping = new AbortController();
        await trainer.run({
          steps: steps - trainer.stepsDone,
          signal: stopping.signal,
          onProgress: async ({ step, loss }) => {
            progress.update(step, loss);
            if (step >= steps) return; // the last step: finish rather than checkpoint
            if (signal !== undefined) return stopping.abort();
            if (checkpointEvery > 0 && step % checkpointEvery === 0) {
              await saveCheckpoint();
              progress.note(`step ${step}: saved checkpoint ${ckptPath}`);
            }
            if (evalEvery > 0 && step % evalEvery === 0) {
              try {
                const e = await trainer.evaluate(undefined, {
                  ...(evalBatches > 0 ? { maxWindows: evalBatches } : {}),
                  onProgress: stopOnSignal,
                });
                progress.note(
                  `step ${step}: validation loss ${evalBatches > 0 ? "~" : ""}${e.loss.toFixed(4)}${
                    evalBatches > 0 ? ` (estimate on ${e.windows} windows)` : ""
                  }`,
                );
              } catch (e) {
                if (e !== interrupted) throw e;
                stopping.abort();
              }
            }
          },
        });
      } finally {
        progress.done();
      }
      if (signal !== undefined && trainer.stepsDone < steps) {
        await stop(signal, "");
        return;
      }
      const facts: Record<string, string> = {
        steps: String(trainer.stepsDone),
        corpus_sha256: trainer.corpusSha256,
        command,
      };
      if (signal === undefined && canValidate) {
        let e;
        try {
          e = await trainer.evaluate(undefined, { onProgress: stopOnSignal });
        } catch (err) {
          if (err !== interrupted) throw err;
        }
        if (e === undefined || signal !== undefined) {
          // every step is done: the checkpoint at the last step resumes to the final evaluation
          await stop(signal!, "during the final evaluation");
          return;
        }
        facts.val_loss = e.loss.toFixed(4);
        log(
          `final validation loss ${e.loss.toFixed(4)} (${
            e.bpc.toFixed(4)
          } bits per character, ${e.windows} windows)`,
        );
      } else if (signal !== undefined) {
        await stop(signal, "at the end of the run");
        return;
      } else {
        log(
          `note: no val_loss stored: the validation split (the last 10% of ${dataPath}) has ${trainer.valTokens.length} characters, fewer than block_size + 1 = ${
            c.blockSize + 1
          }; use a longer corpus or a smaller --block`,
        );
      }
      let bytes: Uint8Array;
      try {
        bytes = saveWeights(model, facts);
      } catch (e) {
        if (!(e instanceof BareGPTError) || !/NaN or Inf/.test(e.message)) throw e;
        throw new BareGPTError(
          `the weights hold NaN or Inf after step ${trainer.stepsDone} (training diverged); lower --lr; ${out} was not written`,
        );
      }
      await write(out, bytes);
      log(`saved ${out}`);
      // The checkpoint of this run is spent once its weights are saved.
      if (wroteCheckpoint || resumed) await Deno.remove(ckptPath).catch(() => {});
      if (signal !== undefined) {
        // the signal came while the weights were being saved: they are complete, and saved
        log(`${signal}: came while saving ${out}; the run is complete and ${out} is saved`);
        Deno.exitCode = exitCodes[signal];
      }
    } finally {
      for (const [name, listener] of listeners) Deno.removeSignalListener(name, listener);
      trainer.close();
      lock?.release();
    }
  } catch (e) {
    lock?.release();
    // a run that fails before writing anything leaves no folder behind (a checkpoint keeps it)
    for (const dir of created) await Deno.remove(dir).catch(() => {});
    throw e;
  }
}
