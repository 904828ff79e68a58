/**
 * The trainer: one for the CLI and the library alike. It trains a model in place on the first
 * 90% of a text (validating on the rest, as `train --data` does), draws its batches from
 * seed + 1 (the model's initialization takes the seed itself), spreads each batch over threads,
 * and saves and restores its whole state as a checkpoint.
 *
 * @module
 */

import { AdamW, learningRate, type Schedule } from "./adam.ts";
import { Muon, newtonSchulzFloats } from "./muon.ts";
import { Checkpoint, encodeCheckpoint } from "./checkpoint.ts";
import { evalTokensOf, randomBatch, sha256Hex, splitIndex, trainingTokens } from "./data.ts";
import { BareGPTError, InputError, WeightsError } from "./errors.ts";
import { evaluateTokens, type Evaluation } from "./evaluate.ts";
import { isShared } from "./kernels/arena.ts";
import { kernelMemory, kernelTier, type Lease } from "./kernels/dispatch.ts";
import type { Pass } from "./layers.ts";
import { type Activations, batchPass, forward, type GPT, type Model } from "./model.ts";
import {
  checkEvaluateOptions,
  checkFunction,
  checkNumber,
  checkOptions,
  checkSignal,
  checkText,
  type EvaluateOptions,
  type RunOptions,
  type RunResult,
  type StepInfo,
  type TrainerOptions,
  type TrainSettings,
  trainSettings,
} from "./options.ts";
import { checkKernelMemory } from "./activations.ts";
import { WorkerPool } from "./pool.ts";
import { dropoutSeed, Rng } from "./rng.ts";
import { gradients, update } from "./train.ts";
import { eventLoopTurns } from "./turns.ts";
import { float32, gpuEvaluation, trainingCopy, webGpuChosen, weightsOf } from "./webgpu/backend.ts";
import type { GpuModel } from "./webgpu/model.ts";

export type {
  EvaluateOptions,
  RunOptions,
  RunResult,
  StepInfo,
  TrainerOptions,
} from "./options.ts";

/** A step submitted to the GPU: its report to come, and the batch generator's state before it. */
interface GpuStep {
  index: number; // in the run: 0 for the first step
  info: Promise<StepInfo>;
  rngBefore: Uint32Array;
  updates: number; // the optimizer's update count after it
  /** Its state arrived before it was reported, and waits in the trainer's early buffer. */
  early: boolean;
}

/**
 * Trains a model in place on a text, step by step or in a run. Holds the optimizer's state;
 * {@linkcode Trainer.close} it (or use `using`) when done if it started worker threads.
 *
 * After `selectKernels("webgpu")` the steps and evaluations run on the GPU (lib/webgpu), where
 * the parameters and the optimizer's state live. Each step copies them back in its own
 * submission, so the model, `checkpoint()` and saved weights are those of the last step
 * reported; `run()` submits the next step before it reports one, so the GPU does not wait for
 * the readback.
 *
 * @example
 * ```ts
 * import { createModel, createTrainer } from "@baregpt/baregpt";
 * const text = "abcd".repeat(50);
 * const model = createModel(text, { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 });
 * using trainer = await createTrainer(model, text, { steps: 20, batch: 4 });
 * await trainer.run();
 * console.log(trainer.stepsDone); // 20
 * ```
 */
export class Trainer {
  /** The model being trained (its parameters change in place). */
  readonly #model: GPT;
  /** The settings of the run, every default filled in. */
  readonly settings: Readonly<TrainSettings>;
  /** The sha256 of the text (UTF-8), recorded in checkpoints. */
  readonly corpusSha256: string;
  /** The training split: the text's first 90%. */
  readonly trainTokens: Uint16Array;
  /** The validation split: the text's last 10%. */
  readonly valTokens: Uint16Array;
  readonly #optimizer: AdamW | Muon;
  readonly #schedule: Schedule;
  /** The batch sampler's generator (its state is the data position). */
  readonly #rng: Rng;
  readonly #pool: WorkerPool | null;
  /** The model on the GPU (webgpu kernels), which takes the steps; null on the CPU. */
  readonly #gpu: GpuModel | null;
  /** This thread's activations: the whole batch on one thread, its share with a pool (CPU). */
  readonly #acts: Activations | null;
  /** The batch, [B, T] (on one thread, the activations' own inputs and targets). */
  readonly #inputs: Uint16Array;
  readonly #targets: Uint16Array;
  /** The pass of a training step (its dropout's seed changes every step). */
  readonly #pass: Pass;
  #step = 0;
  /** Steps submitted to the GPU and not yet reported, oldest first (run() keeps one ahead). */
  #inFlight: GpuStep[] = [];
  /** The step whose report is being waited for: its state goes into the model as it arrives. */
  #awaited: GpuStep | null = null;
  /** States [params | m | v] read back before their step was reported, by the step's parity. */
  readonly #early: (Float32Array | undefined)[] = [];
  /** True from a restore to the step after it. */
  #restored = false;
  #closed = false;
  readonly #lease: Lease | undefined;

  private constructor(
    model: GPT,
    tokens: Uint16Array,
    settings: TrainSettings,
    sha: string,
    pool: WorkerPool | null,
    gpu: GpuModel | null,
  ) {
    const o = settings, T = model.config.blockSize;
    this.#model = model;
    this.settings = Object.freeze({ ...o, threads: pool?.threads ?? 1 });
    this.corpusSha256 = sha;
    const split = splitIndex(tokens.length);
    this.trainTokens = tokens.subarray(0, split);
    this.valTokens = tokens.subarray(split);
    const { lr, minLr, warmup, steps, decay, cooldown } = o;
    this.#schedule = { lr, minLr, warmup, steps, decay, cooldown };
    const { beta1, beta2, weightDecay } = o;
    // the optimizer's state and the activations are the trainer's, given back when it closes
    const lease = this.#lease = model.arena?.lease(this);
    const alloc = lease ? (n: number) => lease.f32(n) : model.alloc;
    const adamw = { beta1, beta2, weightDecay };
    this.#optimizer = o.optimizer === "muon"
      ? new Muon(model.config, alloc, { ...adamw, momentum: o.muonMomentum, steps: o.muonSteps })
      : new AdamW(model.config, alloc, adamw);
    this.#rng = new Rng(o.seed + 1);
    this.#pool = pool;
    this.#gpu = gpu;
    this.#acts = gpu
      ? null
      : pool?.acts ?? model.activations(o.batch, { dropout: o.dropout > 0, lease });
    const own = this.#acts === null || pool !== null;
    this.#inputs = own ? new Uint16Array(o.batch * T) : this.#acts!.inputs;
    this.#targets = own ? new Uint16Array(o.batch * T) : this.#acts!.targets;
    const dropout = o.dropout > 0 ? { p: o.dropout, seed: 0, firstRow: 0 } : null;
    this.#pass = batchPass(model.config, o.batch, dropout);
  }

  /** A trainer of `model` on `data`; see the library's `createTrainer`. */
  static async create(
    model: GPT,
    data: string | Uint16Array,
    options: TrainerOptions = {},
  ): Promise<Trainer> {
    const o = trainSettings(options);
    const tokens = trainingTokens(model, data);
    if (webGpuChosen()) {
      const gpu = await trainingCopy(model, o);
      try {
        return new Trainer(model, tokens, o, await sha256Hex(data, model), null, gpu);
      } catch (e) {
        gpu.destroy();
        throw e;
      }
    }
    const threads = kernelTier() === "js" ? 1 : Math.min(o.threads, o.batch);
    checkKernelMemory(model, o.batch, threads);
    model.withGrads();
    const memory = kernelMemory();
    const shared = memory !== null && isShared(memory);
    const scratch = o.optimizer === "muon" ? newtonSchulzFloats(model.config) : 0;
    const pool = threads > 1 && shared
      ? await WorkerPool.start(model, o.batch, threads, o.dropout > 0, scratch)
      : null;
    try {
      return new Trainer(model, tokens, o, await sha256Hex(data, model), pool, null);
    } catch (e) {
      pool?.close();
      throw e;
    }
  }

  /** The model being trained (its parameters change in place). */
  get model(): Model {
    return this.#model;
  }

  /** Steps taken so far. */
  get stepsDone(): number {
    return this.#step;
  }

  /** Length of the schedule (the `steps` option); steps past it use the final learning rate. */
  get totalSteps(): number {
    return this.settings.steps;
  }

  /** Threads in use (1 without workers). */
  get threads(): number {
    return this.settings.threads;
  }

  /** One optimizer step on a random batch, with what it did; throws when the loss is not finite. */
  async #trainStep(): Promise<StepInfo> {
    const gpu = this.#gpu;
    if (gpu !== null) {
      this.#submitGpu(gpu);
      return await this.#settleGpu(gpu);
    }
    this.#checkOpen("create a new one");
    const model = this.#model, o = this.settings, B = o.batch, T = model.config.blockSize;
    randomBatch(this.#inputs, this.#targets, this.trainTokens, B, T, this.#rng);
    // this step's dropout masks come from (seed, step): nothing to save for a resume
    const drop = this.#pass.dropout;
    if (drop !== null) drop.seed = dropoutSeed(o.seed, this.#step);
    const lossSum = this.#pool
      ? await this.#pool.forwardBackward(this.#inputs, this.#targets, 1 / (B * T), drop)
      : gradients(model, this.#acts!, this.#pass, 1 / (B * T));
    const loss = lossSum / (B * T);
    this.#checkLoss(loss);
    const optimizer = this.#optimizer, pool = this.#pool;
    const { lr, gradNorm } = await update(model, optimizer, this.#schedule, o, this.#step, pool);
    return { step: ++this.#step, loss, lr, gradNorm };
  }

  /**
   * Submits a step on the GPU, on a batch drawn now: one submission (gradients, clip, update, and
   * a copy of the new state). Its state goes into the model and the optimizer when it is
   * reported (#settleGpu), never before; later steps may be submitted meanwhile.
   */
  #submitGpu(gpu: GpuModel): GpuStep {
    this.#checkOpen("create a new one");
    const o = this.settings, T = this.#model.config.blockSize;
    const rngBefore = this.#rng.state.slice();
    randomBatch(this.#inputs, this.#targets, this.trainTokens, o.batch, T, this.#rng);
    // the rates of lib/train.ts update: the schedule's, and Muon's at muonLr · lr / peak
    const index = this.#step + this.#inFlight.length, lr = learningRate(this.#schedule, index);
    const hiddenLr = (o.muonLr * lr) / this.#schedule.lr;
    const step: GpuStep = { index, info: null!, rngBefore, updates: 0, early: false };
    const settings = { lr, hiddenLr, clip: o.clip, dropoutSeed: dropoutSeed(o.seed, index) };
    let result;
    try {
      result = gpu.trainStep(this.#inputs, this.#targets, settings, (s) => {
        if (this.#awaited === step) return this.#commit(step, s.params, s.m, s.v);
        const P = s.params.length;
        const early = this.#early[index % 2] ??= new Float32Array(3 * P);
        [s.params, s.m, s.v].forEach((a, i) => early.set(a, i * P));
        step.early = true;
      });
    } catch (e) {
      this.#rng.state.set(rngBefore);
      throw e;
    }
    step.updates = gpu.stepsTaken;
    step.info = result.then(({ loss, gradNorm }) => ({ step: index + 1, loss, lr, gradNorm }));
    step.info.catch(() => {}); // awaited when reported or dropped (never, if the trainer closes)
    this.#inFlight.push(step);
    return step;
  }

  /** A step's state into the model and the optimizer. */
  #commit(step: GpuStep, params: Float32Array, m: Float32Array, v: Float32Array): void {
    this.#model.flat.set(params);
    this.#optimizer.m.set(m);
    this.#optimizer.v.set(v);
    this.#optimizer.t = step.updates;
  }

  /**
   * Waits for the oldest step submitted, takes its state and reports it. On a loss that is not
   * finite (or a failed step) every step in flight is dropped, the GPU set back to the last good
   * state, and it throws.
   */
  async #settleGpu(gpu: GpuModel): Promise<StepInfo> {
    const step = this.#inFlight[0];
    let info: StepInfo;
    try {
      this.#awaited = step;
      info = await step.info;
      this.#checkLoss(info.loss);
    } catch (e) {
      await this.#dropGpu(gpu, true);
      throw e;
    } finally {
      this.#awaited = null;
    }
    if (step.early) {
      const early = this.#early[step.index % 2]!, P = early.length / 3;
      const [p, m, v] = [0, 1, 2].map((i) => early.subarray(i * P, (i + 1) * P));
      this.#commit(step, p, m, v);
    }
    this.#inFlight.shift();
    this.#step++;
    return info;
  }

  /**
   * Drops every step submitted and not reported (but a `failed` first one's batch stays drawn,
   * as on the CPU): waits for them, then sets the GPU, the optimizer's count and the batch
   * generator back to the last step reported.
   */
  async #dropGpu(gpu: GpuModel, failed = false): Promise<void> {
    const dropped = this.#inFlight;
    this.#inFlight = [];
    await Promise.all(dropped.map((s) => s.info.catch(() => {})));
    const first = dropped[failed ? 1 : 0];
    if (first) this.#rng.state.set(first.rngBefore);
    if (dropped.length === 0 || this.#closed) return;
    const optimizer = this.#optimizer;
    gpu.upload(weightsOf(this.#model), float32(optimizer.m), float32(optimizer.v));
    gpu.stepsTaken = optimizer.t;
  }

  /** Throws the error of a loss that is not finite, at the step being taken. */
  #checkLoss(loss: number): void {
    const restored = this.#restored;
    this.#restored = false;
    if (Number.isFinite(loss)) return;
    // right after a restore, the checkpoint's own weights overflow: a run that was diverging
    // when it was saved, or a corrupt file
    throw new BareGPTError(
      `the loss became ${loss} at step ${this.#step + 1}; ${
        restored
          ? "the first after the checkpoint, whose weights overflow (a diverging run or a corrupt file): delete it and train again with a lower lr"
          : "lower lr or check the text (the last checkpoint is kept)"
      }`,
      { options: ["lr"] },
    );
  }

  /** Takes one optimizer step on a random batch; returns the batch's mean loss (nats). */
  async step(): Promise<number> {
    return (await this.#trainStep()).loss;
  }

  /**
   * Takes `steps` steps (default: the rest of the schedule), reporting each to `onProgress` and
   * yielding to the event loop between steps; stops early, without an error, when `signal`
   * aborts.
   */
  async run(options: RunOptions = {}): Promise<RunResult> {
    options = checkOptions(options, "options", "run");
    checkNumber("steps", options.steps);
    checkFunction("onProgress", options.onProgress);
    checkSignal("signal", options.signal);
    const steps = options.steps ?? Math.max(0, this.totalSteps - this.stepsDone);
    if (!Number.isInteger(steps) || steps < 0) {
      throw new InputError(`run steps ${steps} is not a whole number of steps; use 0 or more`);
    }
    let loss = NaN;
    const turn = eventLoopTurns();
    // on the GPU the next step is submitted before this one is reported, so the GPU never waits
    // for a readback (a run that stops or fails with one ahead drops it: nothing reported is lost)
    const gpu = this.#gpu, aborted = () => options.signal?.aborted === true;
    try {
      for (let i = 0; i < steps; i++) {
        if (aborted() && this.#inFlight.length === 0) return { steps: i, loss, aborted: true };
        let info: StepInfo;
        if (gpu !== null) {
          if (this.#inFlight.length === 0) this.#submitGpu(gpu);
          if (i + 1 < steps && !aborted()) this.#submitGpu(gpu);
          info = await this.#settleGpu(gpu);
        } else info = await this.#trainStep();
        loss = info.loss;
        await options.onProgress?.(info);
        await turn();
      }
    } finally {
      if (gpu !== null) await this.#dropGpu(gpu);
    }
    return { steps, loss, aborted: false };
  }

  /**
   * The model's loss, spread over the trainer's threads: on the validation split (the last 10%
   * of the training text) by default, or on another text.
   */
  async evaluate(data?: string | Uint16Array, options: EvaluateOptions = {}): Promise<Evaluation> {
    this.#checkOpen("use evaluate(model, text)");
    if (data !== undefined) checkText("data", data);
    options = checkEvaluateOptions(options);
    const given = data === undefined ? null : evalTokensOf(this.#model, data, options.unknown);
    let tokens = given?.tokens ?? this.valTokens;
    if (data !== undefined && options.split === "val") {
      tokens = tokens.subarray(splitIndex(tokens.length));
    }
    const model = this.#model, settings = this.settings, pool = this.#pool, acts = this.#acts;
    // on the GPU, a copy holding the model's weights (run() may have the next step running)
    const runner = this.#gpu !== null
      ? await gpuEvaluation(model)
      : acts !== null && pool === null
      ? {
        B: acts.B,
        inputs: acts.inputs,
        targets: acts.targets,
        lossSum: (n: number) => forward(model, acts, batchPass(model.config, n)),
      }
      : {
        B: settings.batch,
        inputs: this.#inputs,
        targets: this.#targets,
        lossSum: (n: number) => pool!.forwardLoss(this.#inputs, this.#targets, n),
      };
    const T = model.config.blockSize;
    const r = await evaluateTokens(tokens, T, runner, options.maxWindows, options.onProgress);
    return { ...r, dropped: given?.dropped ?? 0 };
  }

  /**
   * The whole state of the run as checkpoint bytes (safetensors): weights, both AdamW moments,
   * step, update count and batch generator, the settings and the text's sha256, plus `facts`.
   * Throws when the state holds NaN or Inf, so a good checkpoint is never replaced.
   */
  checkpoint(facts: Record<string, string> = {}): Uint8Array {
    this.#checkOpen("its state is gone; checkpoint before closing");
    const { threads, ...recipe } = this.settings;
    // with a step ahead (run() on the GPU), the batch generator as it was before that step's batch
    const ahead = this.#inFlight[0], rng = ahead ? new Rng(0) : this.#rng;
    if (ahead) rng.state.set(ahead.rngBefore);
    return encodeCheckpoint(this.#model, this.#optimizer, rng, this.#step, {
      ...facts,
      corpus_sha256: this.corpusSha256,
      train_settings: JSON.stringify(recipe),
      threads: String(threads),
      kernels: this.#gpu ? "webgpu" : kernelTier(),
    });
  }

  /**
   * Continues the run saved by {@linkcode Trainer.checkpoint}: the same model, text and settings
   * are required (threads and kernels may differ, at the cost of the last bits). Returns the
   * step reached and the threads and kernels the checkpoint was made with.
   */
  restore(bytes: Uint8Array): { step: number; threads?: string; kernels?: string } {
    this.#checkOpen("create a new one");
    if (this.#inFlight.length > 0) {
      throw new InputError("restore a checkpoint between runs, not while one is taking steps");
    }
    let ckpt: Checkpoint;
    try {
      ckpt = Checkpoint.decode(bytes);
    } catch (e) {
      if (!(e instanceof WeightsError)) throw e;
      const why = e.message.replace(
        /; (re-download or re-train it|delete the checkpoint and start again)$/,
        "",
      );
      throw new WeightsError(`the checkpoint is unusable (${why}); delete it to start over`);
    }
    ckpt.check(this.#model, this.corpusSha256);
    ckpt.checkStep(this.settings.steps);
    const { threads: _, ...recipe } = this.settings;
    ckpt.checkSettings(recipe);
    this.#model.flat.set(ckpt.params);
    this.#optimizer.m.set(ckpt.m);
    this.#optimizer.v.set(ckpt.v);
    this.#optimizer.t = ckpt.adamT;
    if (this.#gpu !== null) {
      this.#gpu.upload(ckpt.params, ckpt.m, ckpt.v);
      this.#gpu.stepsTaken = ckpt.adamT;
    }
    this.#rng.state.set(ckpt.rngState);
    this.#step = ckpt.step;
    this.#restored = true;
    return { step: ckpt.step, threads: ckpt.metadata.threads, kernels: ckpt.metadata.kernels };
  }

  /** InputError when the trainer is closed or its model disposed (`what` says what to do). */
  #checkOpen(what: string): void {
    if (this.#closed) throw new InputError(`this trainer is closed; ${what}`);
    if (this.#model.disposed) {
      throw new InputError("this trainer's model was disposed; load or make it again");
    }
  }

  /**
   * Stops the worker threads, if any, and gives back the trainer's memory (the optimizer's state
   * and the activations). The trainer cannot step afterwards.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pool?.close();
    this.#gpu?.destroy();
    this.#lease?.release();
  }

  /** Same as {@linkcode Trainer.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }
}
