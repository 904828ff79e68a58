/// <reference lib="dom" />
/**
 * Training in the page, with the library's trainer: a text from the text area, a file (checked
 * as the CLI checks a corpus) or Tiny Shakespeare; a new model of a preset or custom size, or a
 * model file to fine-tune; every core through workers when the page is cross-origin isolated.
 * With the webgpu kernels it trains on the GPU, on one thread (the library refuses what the GPU
 * does not do, in one line, shown in the panel). The run checkpoints to OPFS (`opfs.ts`), with
 * its kernels, so a reload offers to continue it on them, and ends with the same weights, bit
 * for bit. The weights download as a .safetensors file whose `command` fact is
 * the equivalent `train` command, as the CLI stores it.
 *
 * @module
 */

import {
  createModel,
  createTrainer,
  decodeCorpus,
  extendVocabulary,
  type KernelChoice,
  loadWeights,
  type Model,
  saveWeights,
  Tokenizer,
  trainCommand,
  type Trainer,
  trainingMemoryBytes,
} from "../mod.ts";
import { forgetRun, loadRun, saveCheckpoint, type SavedRun, saveRun } from "./opfs.ts";
import { chooseKernels, type Kernels, kernelsName } from "./state.ts";
import {
  clock,
  curves,
  drawChart,
  fillForm,
  type FormSettings,
  readForm,
  setTrainState,
  shapeFieldsEnabled,
  trainError,
  trainStatus,
  tui,
} from "./train_ui.ts";

/** What the page does for the panel (from app.ts). */
export interface TrainHooks {
  /** The kernels the menu asks for (undefined: the fastest WebAssembly tier here). */
  tier(): KernelChoice | undefined;
  /** Makes `model` the page's model (generation, candidates, attention); `bytes` reload it. */
  adopt(model: Model, kernels: Kernels, name: string, bytes?: Uint8Array): void;
  /** Loads weights as the page's model. */
  load(bytes: Uint8Array, name: string): Promise<Model>;
  /**
   * Streams a sample of the page's model into the text pane, from the prompt of the form, or from
   * `hint` where the model cannot read that prompt (false when a generation is running already).
   */
  sample(hint: string): Promise<boolean>;
  /** Locks the kernel menu while a run trains. */
  lock(locked: boolean): void;
}

/** The text to train on, when it came from a file or the server (else: the text area's). */
let source: { name: string; text: string } | null = null;
/** A model file given, to fine-tune. */
let base: { name: string; bytes: Uint8Array; vocabSize: number } | null = null;
/** The run in progress. */
const run = {
  active: false,
  paused: false,
  stopRequested: false,
  wake: null as (() => void) | null,
  /** The last run's weights and their file name, for the download. */
  result: null as { bytes: Uint8Array; name: string } | null,
};
/** Every step's time in ms (the benchmark reads it as `baregptTraining.stepMs`). */
const timing = { stepMs: [] as number[], curves };
(globalThis as unknown as { baregptTraining: typeof timing }).baregptTraining = timing;

/** The name a pasted text has in the command (save the text under it to run the command). */
export const PASTED_NAME = "pasted.txt";

/** The text to train on and its name; throws the CLI's one-line errors for a bad one. */
function currentText(): { name: string; text: string } {
  if (source !== null) return source;
  const bytes = new TextEncoder().encode(tui.text.value);
  return { name: PASTED_NAME, text: decodeCorpus(bytes, PASTED_NAME) };
}

/** A text file chosen: checked as the CLI checks a corpus; its text is trained on as it is. */
export async function chooseFile(file: File): Promise<void> {
  trainError(null);
  const bytes = new Uint8Array(await file.arrayBuffer());
  const notes: string[] = [];
  let text: string;
  try {
    text = decodeCorpus(bytes, file.name, { onNote: (n) => notes.push(n) });
  } catch (e) {
    tui.file.value = "";
    return trainError((e as Error).message);
  }
  useText(file.name, text, notes.length > 0 ? `note: ${notes.join("; ")}` : undefined);
}

/** Shows a text as the one to train on (the text area's edits make it a pasted text again). */
export function useText(name: string, text: string, note?: string): void {
  source = { name, text };
  tui.text.value = text;
  tui.source.textContent = `${name}, ${[...text].length.toLocaleString("en-US")} characters`;
  if (note !== undefined) trainStatus(note);
}

/** The text area was edited: the text is the pasted one. */
export function textEdited(): void {
  source = null;
  tui.source.textContent = "pasted";
}

/** A model file chosen: loaded as the page's model (to sample), and offered for fine-tuning. */
export async function chooseWeights(file: File, hooks: TrainHooks): Promise<void> {
  trainError(null);
  const bytes = new Uint8Array(await file.arrayBuffer());
  try {
    const model = await hooks.load(bytes, file.name);
    const c = model.config;
    base = { name: file.name, bytes, vocabSize: c.vocabSize };
    const option = tui.size.querySelector<HTMLOptionElement>('option[value="finetune"]')!;
    option.disabled = false;
    option.textContent = `fine-tune ${file.name}`;
    tui.size.value = "finetune";
    tui.dModel.value = String(c.dModel);
    tui.layers.value = String(c.nLayers);
    tui.heads.value = String(c.nHeads);
    tui.block.value = String(c.blockSize);
    shapeFieldsEnabled(false);
    trainStatus(`${file.name} loaded: Generate samples from it; Train fine-tunes it on the text`);
  } catch (e) {
    tui.weights.value = "";
    trainError((e as Error).message);
  }
}

/** Pauses or resumes the run. */
export function togglePause(): void {
  if (!run.active) return;
  run.paused = !run.paused;
  tui.pause.textContent = run.paused ? "Resume" : "Pause";
  if (!run.paused) run.wake?.();
}

/** Stops the run after the step in progress (its checkpoint is kept, to continue it later). */
export function stopRun(): void {
  if (!run.active) return;
  run.stopRequested = true;
  run.wake?.();
}

/** Offers the last run's weights as an ordinary download. */
export function download(): void {
  if (run.result === null) return;
  const url = URL.createObjectURL(new Blob([run.result.bytes as BlobPart]));
  const a = document.createElement("a");
  a.href = url;
  a.download = run.result.name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Starts a run from the form. */
export async function startFromForm(hooks: TrainHooks): Promise<void> {
  if (run.active) return;
  trainError(null);
  let settings: FormSettings, text: { name: string; text: string };
  try {
    settings = readForm();
    text = currentText();
  } catch (e) {
    return trainError((e as Error).message);
  }
  const finetune = tui.size.value === "finetune" && base !== null;
  const saved: SavedRun = {
    settings,
    size: tui.size.value,
    dataName: text.name,
    ...(finetune ? { initName: base!.name } : {}),
    tier: hooks.tier() ?? "",
    step: 0,
  };
  await train(hooks, saved, text.text, finetune ? base!.bytes : undefined);
}

/** Continues the run saved in OPFS (or starts it again when it has no checkpoint yet). */
export async function continueSaved(hooks: TrainHooks): Promise<void> {
  if (run.active) return;
  tui.offer.hidden = true;
  trainError(null);
  const kept = await loadRun();
  if (kept === null) {
    return trainError("the interrupted run is no longer in this browser's storage");
  }
  const { run: saved, text, init, checkpoint } = kept;
  if (saved.initName !== undefined && init === undefined) {
    return trainError("the interrupted run's base model is missing from this browser's storage");
  }
  fillForm(saved.settings, saved.size);
  useText(saved.dataName, text);
  await train(hooks, saved, text, init, checkpoint);
}

/** Says whether an interrupted run is kept, and offers to continue it. */
export async function offerSaved(): Promise<void> {
  const kept = await loadRun().catch(() => null);
  if (kept === null) return;
  const { run: saved } = kept;
  tui.offerText.textContent = `An interrupted run is kept in this browser: ${saved.dataName}, ${
    kept.checkpoint ? `checkpoint at step ${saved.step}` : "no checkpoint yet"
  } of ${saved.settings.steps} steps.`;
  tui.offer.hidden = false;
}

/** Drops the interrupted run. */
export async function discardSaved(): Promise<void> {
  tui.offer.hidden = true;
  await forgetRun();
}

/** Waits while paused (a stop wakes it too). */
function whilePaused(): Promise<void> {
  return new Promise((resolve) => {
    run.wake = () => {
      run.wake = null;
      resolve();
    };
  });
}

/** Yields to the event loop (a message, not a timer), so the page paints between steps. */
function nextTask(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

/** The kernels and the model of a run (a plain memory is sized for the whole run first). */
async function makeModel(
  saved: SavedRun,
  text: string,
  init: Uint8Array | undefined,
): Promise<{ model: Model; kernels: Kernels; added: string[] }> {
  const s = saved.settings;
  const wanted = saved.tier === "" ? undefined : saved.tier as KernelChoice;
  const chars = Tokenizer.fromText(text).size;
  // fine-tuning: the base model's shape, and at most every character of the text added
  const config = init === undefined
    ? { vocabSize: chars, ...s.shape }
    : await configOf(init, wanted).then((c) => ({ ...c, vocabSize: c.vocabSize + chars }));
  const memory = crossOriginIsolated ? {} : {
    memoryBytes: trainingMemoryBytes(config, { batch: s.batch, threads: 1 }),
  };
  const kernels = await chooseKernels(wanted, memory);
  if (init === undefined) {
    return { model: createModel(text, { ...s.shape, seed: s.seed }), kernels, added: [] };
  }
  const grown = extendVocabulary(await loadWeights(init), text, { seed: s.seed });
  return { model: grown.model, kernels, added: grown.added };
}

/** A model file's configuration (loaded once on fresh kernels, then dropped). */
async function configOf(bytes: Uint8Array, tier: KernelChoice | undefined) {
  await chooseKernels(tier);
  const model = await loadWeights(bytes);
  const config = { ...model.config };
  model.dispose();
  return config;
}

/** A file name for the weights: the text's name, its extension and folders left out. */
function weightsName(dataName: string, steps: number): string {
  const stem = dataName.replace(/^.*\//, "").replace(/\.[^.]*$/, "") || "model";
  return `${stem}-${steps}.safetensors`;
}

/** Trains a run (from its checkpoint when given), then offers its weights. */
async function train(
  hooks: TrainHooks,
  saved: SavedRun,
  text: string,
  init?: Uint8Array,
  checkpoint?: Uint8Array,
): Promise<void> {
  Object.assign(run, { active: true, paused: false, stopRequested: false, result: null });
  const s = saved.settings;
  tui.start.disabled = tui.download.disabled = true;
  tui.pause.disabled = tui.stop.disabled = false;
  tui.pause.textContent = "Pause";
  hooks.lock(true);
  setTrainState("running");
  curves.train = [];
  curves.val = [];
  timing.stepMs = [];
  let trainer: Trainer | undefined;
  try {
    trainStatus("Setting up the model…");
    const { model, kernels, added } = await makeModel(saved, text, init);
    const tier = saved.tier = kernels.tier;
    // the page's options; the others are the library's defaults, as in the command below
    const options = { steps: s.steps, batch: s.batch, lr: s.lr, seed: s.seed };
    // the GPU trains without worker threads: the threads field is the CPU tiers'
    const threads = tier === "webgpu" ? 1 : s.threads;
    trainer = await createTrainer(model, text, { ...options, threads });
    const c = model.config;
    if (trainer.valTokens.length < c.blockSize + 1) {
      throw new Error(
        `the validation split of ${saved.dataName} (its last 10%) has ${trainer.valTokens.length} characters, fewer than block_size + 1 = ${
          c.blockSize + 1
        }; use a longer text or a smaller block`,
      );
    }
    const command = trainCommand({
      data: saved.dataName,
      init: saved.initName,
      shape: s.shape,
      ...options,
      threads: trainer.threads,
      // the CLI's default is the fastest tier, relaxed SIMD
      kernels: tier === "relaxed" ? undefined : tier,
    });
    tui.command.textContent = `The same run with the CLI: deno run -A cli.ts ${command} --out ${
      weightsName(saved.dataName, s.steps)
    }`;
    tui.command.hidden = false;
    if (checkpoint !== undefined) {
      const { step } = trainer.restore(checkpoint);
      curves.train = (saved.curves?.train ?? []).filter((p) => p.x <= step);
      curves.val = (saved.curves?.val ?? []).filter((p) => p.x <= step);
    } else await saveRun(saved, text, init);
    hooks.adopt(model, kernels, `${saved.dataName} (training)`);
    const how = `${trainer.threads} thread${trainer.threads > 1 ? "s" : ""}${
      crossOriginIsolated
        ? ""
        : " (the page is not cross-origin isolated: no shared memory for worker threads)"
    }, ${kernelsName(kernels)} kernels`;
    const grown = added.length > 0 ? `, ${added.length} new characters in the vocabulary` : "";
    await loop(hooks, trainer, saved, command, how + grown);
    if (run.stopRequested && trainer.stepsDone < s.steps) {
      await finishStopped(trainer, saved, command);
      return;
    }
    trainStatus(`Step ${trainer.stepsDone} of ${s.steps}: the validation loss, full sweep…`);
    const e = await trainer.evaluate();
    curves.val.push({ x: trainer.stepsDone, y: e.loss });
    drawChart(s.steps);
    const facts: Record<string, string> = {
      steps: String(trainer.stepsDone),
      corpus_sha256: trainer.corpusSha256,
      command,
      val_loss: e.loss.toFixed(4),
    };
    const bytes = saveWeights(model, facts);
    run.result = { bytes, name: weightsName(saved.dataName, s.steps) };
    hooks.adopt(model, kernels, run.result.name, bytes);
    await forgetRun();
    const mean = timing.stepMs.reduce((a, b) => a + b, 0) / Math.max(1, timing.stepMs.length);
    trainStatus(
      `done: ${trainer.stepsDone} steps (${mean.toFixed(1)} ms a step, ${how}), validation loss ${
        e.loss.toFixed(4)
      } (${
        e.bpc.toFixed(3)
      } bits per character, ${e.windows} windows); download the weights, or Generate from them`,
    );
    tui.download.disabled = false;
    setTrainState("done");
  } catch (e) {
    trainError((e as Error).message);
    trainStatus(
      trainer === undefined
        ? "Not training."
        : `Stopped by an error after step ${trainer.stepsDone}; the last checkpoint is kept in this browser.`,
    );
    setTrainState("error");
  } finally {
    trainer?.close();
    run.active = false;
    tui.start.disabled = false;
    tui.pause.disabled = tui.stop.disabled = true;
    tui.pause.textContent = "Pause";
    hooks.lock(false);
  }
}

/** The steps of a run, with its checkpoints, estimates, samples and status line. */
async function loop(
  hooks: TrainHooks,
  trainer: Trainer,
  saved: SavedRun,
  command: string,
  how: string,
): Promise<void> {
  const s = saved.settings, c = trainer.model.config;
  const evalEvery = Math.max(1, Math.round(s.steps / 20));
  const tokens = s.batch * c.blockSize;
  let recent = 0, lastVal = NaN, lastShown = 0;
  const text = trainer.model.tokenizer.decode(trainer.trainTokens.subarray(0, 40));
  const hint = text.slice(0, Math.max(1, text.indexOf("\n") + 1));
  while (trainer.stepsDone < s.steps && !run.stopRequested) {
    if (run.paused) {
      trainStatus(`Paused at step ${trainer.stepsDone} of ${s.steps}.`);
      setTrainState("paused");
      await whilePaused();
      setTrainState("running");
      continue;
    }
    const t0 = performance.now();
    const loss = await trainer.step();
    const ms = performance.now() - t0;
    timing.stepMs.push(ms);
    recent = recent === 0 ? ms : 0.9 * recent + 0.1 * ms;
    const step = trainer.stepsDone;
    curves.train.push({ x: step, y: loss });
    document.body.dataset.trainStep = String(step);
    if (step < s.steps && step % s.checkpointEvery === 0) {
      saved.step = step;
      saved.curves = { train: curves.train, val: curves.val };
      await saveCheckpoint(saved, trainer.checkpoint({ command }));
      document.body.dataset.trainCheckpoint = String(step);
    }
    if (step < s.steps && step % evalEvery === 0) {
      lastVal = (await trainer.evaluate(undefined, { maxWindows: 32 })).loss;
      curves.val.push({ x: step, y: lastVal });
    }
    const now = performance.now();
    if (now - lastShown > 200 || step === s.steps) {
      lastShown = now;
      drawChart(s.steps);
      trainStatus(
        `Step ${step} of ${s.steps} · loss ${loss.toFixed(4)}${
          Number.isNaN(lastVal) ? "" : ` · validation ~${lastVal.toFixed(4)}`
        } · ${Math.round(tokens / (recent / 1000)).toLocaleString("en-US")} tokens/s · ${
          clock(((s.steps - step) * recent) / 1000)
        } left · ${how}`,
      );
    }
    if (s.sampleEvery > 0 && step % s.sampleEvery === 0 && step < s.steps) await hooks.sample(hint);
    await nextTask();
  }
}

/** A stopped run: its state is checkpointed (to continue it), its weights offered as they are. */
async function finishStopped(trainer: Trainer, saved: SavedRun, command: string): Promise<void> {
  const s = saved.settings, step = trainer.stepsDone;
  if (step > 0) {
    saved.step = step;
    saved.curves = { train: curves.train, val: curves.val };
    await saveCheckpoint(saved, trainer.checkpoint({ command }));
  }
  const facts = { steps: String(step), corpus_sha256: trainer.corpusSha256, command };
  run.result = {
    bytes: saveWeights(trainer.model, facts),
    name: weightsName(saved.dataName, step),
  };
  tui.download.disabled = false;
  drawChart(s.steps);
  trainStatus(
    `Stopped at step ${step} of ${s.steps}; the run is kept in this browser (reload, or Continue, to finish it). The weights so far can be downloaded.`,
  );
  await offerSaved();
  setTrainState("stopped");
}
