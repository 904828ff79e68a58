/**
 * Training and evaluation: a Trainer that owns the model's optimizer state, batches and schedule
 * and can be stepped; the validation loss of DESIGN.md (every non-overlapping window of a split).
 *
 * @module
 */

import { AdamW, clipGradNorm, learningRate, type Schedule } from "./adam.ts";
import { randomBatch, windowBatch, windowCount } from "./data.ts";
import { BareGPTError, InputError, WeightsError } from "./errors.ts";
import { type Activations, backward, forward, type GPT, type GPTConfig } from "./model.ts";
import { WorkerPool } from "./pool.ts";
import { Rng } from "./rng.ts";
import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
import { kernelTier } from "./tensor.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { modelFromTensors, modelMetadata, modelTensors, readParams } from "./weights.ts";

/**
 * Training settings (the library exports them as `TrainerOptions`, the options of
 * `createTrainer`). Every field has a default: the recipe of the shipped weights (AdamW, linear
 * warmup, then a linear decay to `minLr` at step `steps`).
 *
 * @example
 * ```ts
 * import type { TrainerOptions } from "@baregpt/baregpt";
 * const quick: TrainerOptions = { steps: 200, batch: 8, lr: 3e-3, warmup: 20, seed: 1 };
 * console.log(quick);
 * ```
 */
export interface TrainOptions {
  /** Sequences of blockSize characters per step. Default 16. */
  batch?: number;
  /** Length of the learning-rate schedule, and the steps a trainer's `run` takes. Default 2600. */
  steps?: number;
  /** Peak learning rate. Default 4e-3. */
  lr?: number;
  /** Final learning rate of the decay. Default 0. */
  minLr?: number;
  /** Shape of the decay after warmup: "linear" (default) or "cosine". */
  decay?: "cosine" | "linear";
  /** Steps of linear warmup. Default 50 (`createTrainer` caps it at `steps`). */
  warmup?: number;
  /** AdamW decoupled weight decay, on 2-D weights only. Default 0.3. */
  weightDecay?: number;
  /** AdamW decay rate of the gradient's running average. Default 0.8. */
  beta1?: number;
  /** AdamW decay rate of the squared gradient's running average. Default 0.95. */
  beta2?: number;
  /** Clip the gradient's global L2 norm to this (0: off). Default 1. */
  clip?: number;
  /** Seed of the random batches. Default 0. */
  seed?: number;
  /**
   * Threads that share each batch (workers over shared WebAssembly memory; needs the fast
   * kernels, else one thread is used). Default 1.
   */
  threads?: number;
  /**
   * Dropout on the embedding and on every attention and MLP output during training (default 0:
   * off). Each step's masks come from the seed and the step, so a resumed run draws the same ones.
   */
  dropout?: number;
}

/** The defaults of {@link TrainOptions}. */
export const TRAIN_DEFAULTS = {
  batch: 16,
  steps: 2600,
  lr: 4e-3,
  minLr: 0,
  warmup: 50,
  weightDecay: 0.3,
  beta1: 0.8,
  beta2: 0.95,
  clip: 1,
  seed: 0,
  dropout: 0,
  decay: "linear" as "cosine" | "linear",
};

/** What one training step did. */
export interface StepResult {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
}

/** Steps a model through training on a token sequence. */
export class Trainer {
  readonly model: GPT;
  readonly optimizer: AdamW;
  readonly schedule: Schedule;
  readonly batch: number;
  readonly clip: number;
  readonly dropout: number;
  readonly #seed: number;
  /** The batch sampler's generator (its state is the data position). */
  readonly rng: Rng;
  /** Steps taken so far. */
  step = 0;
  readonly #train: Uint16Array;
  /** Workers sharing the batch, or null on one thread. */
  readonly #pool: WorkerPool | null;
  /** This thread's activations: the whole batch on one thread, its share with a pool. */
  readonly #acts: Activations;
  /** The batch being trained on, [B, T] (with a pool; on one thread the activations hold it). */
  readonly #inputs: Uint16Array;
  readonly #targets: Uint16Array;

  /** A single-threaded trainer; {@link Trainer.create} starts workers for more threads. */
  constructor(
    model: GPT,
    trainTokens: Uint16Array,
    options: TrainOptions = {},
    pool: WorkerPool | null = null,
  ) {
    const o = { ...TRAIN_DEFAULTS, ...options };
    const T = model.config.blockSize;
    if (trainTokens.length < T + 1) {
      throw new InputError(
        `the training text has ${trainTokens.length} characters, fewer than block_size + 1 = ${
          T + 1
        }; use a longer corpus or a smaller --block`,
      );
    }
    this.model = model;
    this.batch = o.batch;
    this.clip = o.clip;
    this.dropout = o.dropout;
    this.#seed = o.seed;
    this.schedule = {
      lr: o.lr,
      minLr: o.minLr,
      warmup: o.warmup,
      steps: o.steps,
      decay: o.decay,
    };
    this.optimizer = new AdamW(model.config, model.alloc, {
      beta1: o.beta1,
      beta2: o.beta2,
      weightDecay: o.weightDecay,
    });
    this.rng = new Rng(o.seed);
    this.#train = trainTokens;
    this.#pool = pool;
    this.#acts = pool?.acts ?? model.activations(o.batch, o.dropout > 0);
    this.#inputs = pool ? new Uint16Array(o.batch * T) : this.#acts.inputs;
    this.#targets = pool ? new Uint16Array(o.batch * T) : this.#acts.targets;
  }

  /**
   * A trainer over `threads` threads (default 1): with more than one and the WebAssembly kernels
   * in use, workers share the batch (on the plain TypeScript tier it runs on one thread).
   */
  static async create(
    model: GPT,
    trainTokens: Uint16Array,
    options: TrainOptions = {},
  ): Promise<Trainer> {
    const threads = Math.min(options.threads ?? 1, options.batch ?? TRAIN_DEFAULTS.batch);
    const pool = threads > 1 && kernelTier() !== "js"
      ? await WorkerPool.start(
        model,
        options.batch ?? TRAIN_DEFAULTS.batch,
        threads,
        (options.dropout ?? 0) > 0,
      )
      : null;
    try {
      return new Trainer(model, trainTokens, options, pool);
    } catch (e) {
      pool?.close();
      throw e;
    }
  }

  /** Threads in use (1 without workers). */
  get threads(): number {
    return this.#pool?.threads ?? 1;
  }

  /** Activations to evaluate with (this thread's training buffers, reused). */
  get evalActivations(): Activations {
    return this.#acts;
  }

  /** One optimizer step on a random batch; returns its mean loss. Throws on a NaN/Inf loss. */
  async trainStep(): Promise<StepResult> {
    const { model, batch: B } = this;
    const c = model.config;
    const T = c.blockSize;
    randomBatch(this.#inputs, this.#targets, this.#train, B, T, this.rng);
    // this step's dropout masks come from (seed, step): nothing to save for a resume
    const drop = this.dropout > 0
      ? { p: this.dropout, seed: (this.#seed % 0x8000) * 0x10000 + this.step, firstRow: 0 }
      : null;
    let lossSum: number;
    if (this.#pool) {
      lossSum = await this.#pool.forwardBackward(this.#inputs, this.#targets, 1 / (B * T), drop);
    } else {
      model.zeroGrad();
      lossSum = forward(c, model.params, this.#acts, B, T, true, drop);
      backward(c, model.params, model.grads, this.#acts, B, T, 1 / (B * T));
    }
    const loss = lossSum / (B * T);
    if (!Number.isFinite(loss)) {
      throw new BareGPTError(
        `the loss became ${loss} at step ${
          this.step + 1
        }; lower --lr or check the corpus (the last checkpoint is kept)`,
      );
    }
    const gradNorm = clipGradNorm(model.gradFlat, this.clip);
    const lr = learningRate(this.schedule, this.step);
    this.optimizer.step(model.flat, model.gradFlat, lr);
    this.step++;
    return { step: this.step, loss, lr, gradNorm };
  }

  /**
   * The validation loss of DESIGN.md over `tokens` (or an estimate on `maxWindows` evenly spaced
   * windows), spread over the trainer's threads.
   */
  async evaluate(tokens: Uint16Array, maxWindows?: number): Promise<EvalResult> {
    const pool = this.#pool;
    if (pool === null) return evaluate(this.model, tokens, { maxWindows, acts: this.#acts });
    const T = this.model.config.blockSize;
    const windows = evalWindows(tokens.length, T, maxWindows);
    let sum = 0;
    for (let first = 0; first < windows.length; first += this.batch) {
      const count = Math.min(this.batch, windows.length - first);
      windowBatch(this.#inputs, this.#targets, tokens, windows, first, count, T);
      sum += await pool.forwardLoss(this.#inputs, this.#targets, count);
    }
    return evalResult(sum, windows.length, T);
  }

  /**
   * The full training state as checkpoint bytes (safetensors): weights, both Adam moments, and in
   * the metadata the config, vocab, step, optimizer count and RNG state (the data position), plus
   * `facts`. Throws BareGPTError when the state holds NaN or Inf (training diverged), so that a
   * good checkpoint on disk is never replaced by a poisoned one.
   */
  checkpoint(facts: Record<string, string>, tokenizer: Tokenizer): Uint8Array {
    const { model, optimizer } = this;
    if (!allFinite(model.flat) || !allFinite(optimizer.m) || !allFinite(optimizer.v)) {
      throw new BareGPTError(
        `the model or optimizer state holds NaN or Inf at step ${this.step} (training diverged); lower --lr (the last checkpoint is kept)`,
      );
    }
    const tensors = [
      ...modelTensors(model),
      ...modelTensors(model, "optimizer.m.", optimizer.m),
      ...modelTensors(model, "optimizer.v.", optimizer.v),
    ];
    return encodeSafetensors(tensors, {
      ...modelMetadata(model, tokenizer, facts),
      step: String(this.step),
      adam_t: String(optimizer.t),
      rng_state: JSON.stringify([...this.rng.state]),
    });
  }

  /** Restores the state saved by {@link checkpoint} (after {@link Checkpoint.check}). */
  restore(ckpt: Checkpoint): void {
    this.model.flat.set(ckpt.params);
    this.optimizer.m.set(ckpt.m);
    this.optimizer.v.set(ckpt.v);
    this.optimizer.t = ckpt.adamT;
    this.rng.state.set(ckpt.rngState);
    this.step = ckpt.step;
  }

  /** Stops the workers. */
  close(): void {
    this.#pool?.close();
  }
}

/** A decoded training checkpoint. */
export class Checkpoint {
  constructor(
    readonly config: GPTConfig,
    readonly vocab: readonly string[],
    readonly params: Float32Array,
    readonly m: Float32Array,
    readonly v: Float32Array,
    readonly step: number,
    readonly adamT: number,
    readonly rngState: Uint32Array,
    readonly metadata: Record<string, string>,
  ) {}

  /** Decodes and validates checkpoint bytes; throws WeightsError. */
  static decode(bytes: Uint8Array): Checkpoint {
    const { tensors, metadata } = decodeSafetensors(bytes);
    const { model, tokenizer } = modelFromTensors(
      tensors,
      metadata,
      { dtype: "float64" },
      "optimizer.",
    );
    const config = model.config;
    const n = model.size;
    const m = new Float32Array(n), v = new Float32Array(n);
    readParams(tensors, config, m, "optimizer.m.");
    readParams(tensors, config, v, "optimizer.v.");
    const int = (key: string) => {
      const x = Number(metadata[key]);
      if (!Number.isInteger(x) || x < 0) {
        throw new WeightsError(
          `checkpoint's ${key} is missing or invalid; delete the checkpoint and start again`,
        );
      }
      return x;
    };
    let rng: unknown;
    try {
      rng = JSON.parse(metadata.rng_state ?? "");
    } catch { /* reported below */ }
    if (
      !Array.isArray(rng) || rng.length !== 4 ||
      rng.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffffffff)
    ) {
      throw new WeightsError(
        "checkpoint's rng_state is missing or invalid; delete the checkpoint and start again",
      );
    }
    return new Checkpoint(
      config,
      tokenizer.vocab,
      Float32Array.from(model.flat),
      m,
      v,
      int("step"),
      int("adam_t"),
      Uint32Array.from(rng),
      metadata,
    );
  }

  /** Throws InputError when this checkpoint is of another model or corpus. */
  check(config: GPTConfig, corpusSha: string, tokenizer: Tokenizer, path: string): void {
    const names: [keyof GPTConfig, string][] = [
      ["blockSize", "block_size"],
      ["dModel", "d_model"],
      ["nLayers", "n_layers"],
      ["nHeads", "n_heads"],
      ["vocabSize", "vocab_size"],
    ];
    const differ = names.filter(([k]) => config[k] !== this.config[k])
      .map(([k, n]) => `${n} ${this.config[k]} there, ${config[k]} here`);
    if (differ.length === 0 && JSON.stringify(tokenizer.vocab) !== JSON.stringify(this.vocab)) {
      differ.push("the vocabularies differ");
    }
    if (differ.length > 0) {
      throw new InputError(
        `checkpoint ${path} is of another model (${
          differ.join(", ")
        }); delete it or train with its settings`,
      );
    }
    if (this.metadata.corpus_sha256 !== corpusSha) {
      throw new InputError(
        `checkpoint ${path} was made on another corpus (sha256 differs); delete it or train on that corpus`,
      );
    }
  }

  /**
   * Throws InputError when the checkpoint was made with other training settings (stored under
   * `train_settings` as JSON of flag name to value): resuming them would not continue that run.
   * A checkpoint without stored settings is accepted.
   */
  checkSettings(settings: Record<string, number | string>, path: string): void {
    let stored: Record<string, unknown>;
    try {
      stored = JSON.parse(this.metadata.train_settings ?? "null");
    } catch {
      stored = {};
    }
    if (stored === null || typeof stored !== "object") return;
    const differ = Object.keys(settings).filter((k) => k in stored && stored[k] !== settings[k]);
    if (differ.length > 0) {
      throw new InputError(
        `checkpoint ${path} was made with ${
          differ.map((k) => `--${k} ${stored[k]}`).join(" ")
        }, this run has ${
          differ.map((k) => `--${k} ${settings[k]}`).join(" ")
        }; resume with the checkpoint's settings or delete it`,
      );
    }
  }
}

/** True when every value of `a` is finite. */
function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return false;
  }
  return true;
}

/** Result of {@link evaluate}. */
export interface EvalResult {
  /** Mean cross-entropy per predicted token (nats). */
  loss: number;
  /** Bits per character: loss / ln 2. */
  bpc: number;
  /** Predicted tokens counted. */
  tokens: number;
  /** Windows evaluated. */
  windows: number;
}

/**
 * Mean cross-entropy over the non-overlapping blockSize windows of `tokens` (window i reads
 * [iT, (i+1)T) and predicts iT+1 .. (i+1)T). With `maxWindows`, an estimate from that many evenly
 * spaced windows. `acts` may be passed to reuse buffers; its batch size sets how many windows run
 * at once.
 */
export function evaluate(
  model: GPT,
  tokens: Uint16Array,
  options: { batch?: number; maxWindows?: number; acts?: Activations } = {},
): EvalResult {
  const c = model.config;
  const T = c.blockSize;
  const windows = evalWindows(tokens.length, T, options.maxWindows);
  const acts = options.acts ?? model.activations(options.batch ?? 16);
  let sum = 0;
  for (let first = 0; first < windows.length; first += acts.B) {
    const count = Math.min(acts.B, windows.length - first);
    windowBatch(acts.inputs, acts.targets, tokens, windows, first, count, T);
    sum += forward(c, model.params, acts, count, T);
  }
  return evalResult(sum, windows.length, T);
}

/**
 * Indices of the windows to evaluate: all floor((n - 1) / T) of them, or maxWindows evenly spaced
 * ones. Throws InputError when the text holds no window.
 */
export function evalWindows(n: number, T: number, maxWindows?: number): number[] {
  const total = windowCount(n, T);
  if (total === 0) {
    throw new InputError(
      `the text to evaluate has ${n} characters, fewer than block_size + 1 = ${
        T + 1
      }; use a longer text`,
    );
  }
  const count = maxWindows !== undefined && maxWindows < total ? maxWindows : total;
  return Array.from({ length: count }, (_, i) => Math.floor((i * total) / count));
}

function evalResult(lossSum: number, windows: number, T: number): EvalResult {
  const loss = lossSum / (windows * T);
  return { loss, bpc: loss / Math.LN2, tokens: windows * T, windows };
}
