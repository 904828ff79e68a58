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
import { evalTokensOf, randomBatch, splitIndex, tokensOf } from "./data.ts";
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
  type TrainerOptions,
  type TrainSettings,
  trainSettings,
} from "./options.ts";
import { kernelBytes } from "./activations.ts";
import { WorkerPool } from "./pool.ts";
import { Rng } from "./rng.ts";
import { gradients, update } from "./train.ts";
import { float32, trainingCopy, webGpuChosen, weightsOf } from "./webgpu/backend.ts";
import type { GpuModel } from "./webgpu/model.ts";

export type { EvaluateOptions, TrainerOptions } from "./options.ts";

/** What one training step did. */
export interface StepInfo {
  /** Steps taken so far, this one included. */
  step: number;
  /** Mean cross-entropy of this step's batch (nats). */
  loss: number;
  /** Learning rate used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/**
 * Options of {@linkcode Trainer.run}.
 *
 * @example
 * ```ts
 * import type { RunOptions } from "@baregpt/baregpt";
 * const options: RunOptions = { steps: 100, signal: AbortSignal.timeout(60_000) };
 * console.log(options.steps);
 * ```
 */
export interface RunOptions {
  /** Steps to take. Default: the rest of the schedule. */
  steps?: number;
  /** Called after every step (awaited when it returns a promise). Default: none. */
  onProgress?: (info: StepInfo) => void | Promise<void>;
  /** Stops the run after the step in progress (no error is thrown). Default: none. */
  signal?: AbortSignal;
}

/**
 * What {@linkcode Trainer.run} did.
 *
 * @example
 * ```ts
 * import type { RunResult } from "@baregpt/baregpt";
 * const r: RunResult = { steps: 100, loss: 2.1, aborted: false };
 * console.log(r.aborted ? "stopped early" : `done, loss ${r.loss}`);
 * ```
 */
export interface RunResult {
  /** Steps taken by this run. */
  steps: number;
  /** Loss of the last step taken (NaN when none was). */
  loss: number;
  /** True when the signal stopped the run early. */
  aborted: boolean;
}

/** The sha256 of a text's UTF-8 bytes (for ids, of the text they decode to). */
async function sha256Hex(data: string | Uint16Array, model: GPT): Promise<string> {
  const text = typeof data === "string" ? data : model.tokenizer.decode(data);
  const bytes = new TextEncoder().encode(text);
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The WebAssembly kernels address at most 4 GiB: refuse a run that cannot fit, up front. */
function checkMemory(model: GPT, batch: number, threads: number): void {
  if (kernelTier() === "js") return;
  const c = model.config, bytes = kernelBytes(c, { batch, threads }) + 64 * 2 ** 20;
  if (bytes > 2 ** 32) {
    throw new InputError(
      `this model (${
        model.parameterCount.toLocaleString("en-US")
      } parameters, batch ${batch} x ${c.blockSize}) needs about ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB, more than the 4 GiB the WebAssembly kernels can address; use a smaller dModel, nLayers, blockSize or batch`,
      { options: ["dModel", "nLayers", "blockSize", "batch"] },
    );
  }
}

/**
 * Trains a model in place on a text, step by step or in a run. Holds the optimizer's state;
 * {@linkcode Trainer.close} it (or use `using`) when done if it started worker threads.
 *
 * After `selectKernels("webgpu")` the steps and evaluations run on the GPU (lib/webgpu), where
 * the parameters and the optimizer's state live; they are read back into the model and the
 * optimizer after every step, so the model, `checkpoint()` and saved weights are always current.
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
    let tokens: Uint16Array;
    try {
      tokens = tokensOf(model, data, "the training text");
    } catch (e) {
      if (!(e instanceof InputError) || !/outside the model's vocabulary/.test(e.message)) throw e;
      throw new InputError(
        `${e.message}, or grow the vocabulary first: extendVocabulary(model, text)`,
      );
    }
    const T = model.config.blockSize, train = splitIndex(tokens.length);
    if (train < T + 1) {
      throw new InputError(
        `the training split (the first 90% of the text) has ${train} characters, fewer than blockSize + 1 = ${
          T + 1
        }; use a longer text or a smaller blockSize`,
        { options: ["blockSize"] },
      );
    }
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
    checkMemory(model, o.batch, threads);
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
    this.#checkOpen("create a new one");
    const model = this.#model, o = this.settings, B = o.batch, T = model.config.blockSize;
    randomBatch(this.#inputs, this.#targets, this.trainTokens, B, T, this.#rng);
    if (this.#gpu !== null) return await this.#gpuStep(this.#gpu);
    // this step's dropout masks come from (seed, step): nothing to save for a resume
    const drop = this.#pass.dropout;
    if (drop !== null) drop.seed = ((o.seed + 1) % 0x8000) * 0x10000 + this.#step;
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
   * The step on the GPU, whose batch is drawn: one submission (gradients, clip, update), then
   * the loss and the new state read back together. A loss that is not finite throws before the
   * state is taken, and the GPU gets the state of before the step back.
   */
  async #gpuStep(gpu: GpuModel): Promise<StepInfo> {
    // the rates of lib/train.ts update: the schedule's, and Muon's at muonLr · lr / peak
    const lr = learningRate(this.#schedule, this.#step);
    const hiddenLr = (this.settings.muonLr * lr) / this.#schedule.lr;
    const clip = this.settings.clip;
    const result = gpu.trainStep(this.#inputs, this.#targets, { lr, hiddenLr, clip });
    const [{ loss, gradNorm }, state] = await Promise.all([result, gpu.download()]);
    const optimizer = this.#optimizer;
    try {
      this.#checkLoss(loss);
    } catch (e) {
      gpu.upload(weightsOf(this.#model), float32(optimizer.m), float32(optimizer.v));
      gpu.stepsTaken = optimizer.t;
      throw e;
    }
    this.#model.flat.set(state.params);
    optimizer.m.set(state.m);
    optimizer.v.set(state.v);
    optimizer.t = gpu.stepsTaken;
    return { step: ++this.#step, loss, lr, gradNorm };
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
    let loss = NaN, last = performance.now();
    for (let i = 0; i < steps; i++) {
      if (options.signal?.aborted) return { steps: i, loss, aborted: true };
      const info = await this.#trainStep();
      loss = info.loss;
      await options.onProgress?.(info);
      if (performance.now() - last > 15) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        last = performance.now();
      }
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
    const gpu = this.#gpu, [inputs, targets] = [this.#inputs, this.#targets];
    const runner = gpu !== null
      ? {
        B: settings.batch,
        inputs,
        targets,
        lossSum: (n: number) => gpu.evaluateLoss(inputs, targets, n),
      }
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
    return encodeCheckpoint(this.#model, this.#optimizer, this.#rng, this.#step, {
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
