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
import { Rng } from "./rng.ts";
import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { modelFromTensors, modelMetadata, modelTensors, readParams } from "./weights.ts";

/** Training settings; every field has a default (the recipe of the shipped weights). */
export interface TrainOptions {
  /** Sequences per step. Default 16. */
  batch?: number;
  /** Total optimizer steps (for the schedule). Default 2000. */
  steps?: number;
  /** Peak learning rate. Default 2e-3. */
  lr?: number;
  /** Final learning rate of the cosine decay. Default lr / 10. */
  minLr?: number;
  /** Linear warmup steps. Default 100. */
  warmup?: number;
  /** AdamW decoupled weight decay on 2-D weights. Default 0.1. */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  /** Global gradient-norm clip (0: off). Default 1. */
  clip?: number;
  /** Seed of the batch sampler. Default 0. */
  seed?: number;
  /** Worker threads (default 1). */
  threads?: number;
}

/** The defaults of {@link TrainOptions}. */
export const TRAIN_DEFAULTS = {
  batch: 16,
  steps: 2000,
  lr: 2e-3,
  warmup: 100,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.99,
  clip: 1,
  seed: 0,
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
  /** The batch sampler's generator (its state is the data position). */
  readonly rng: Rng;
  /** Steps taken so far. */
  step = 0;
  readonly #train: Uint16Array;
  readonly #acts: Activations;

  constructor(model: GPT, trainTokens: Uint16Array, options: TrainOptions = {}) {
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
    this.schedule = {
      lr: o.lr,
      minLr: options.minLr ?? o.lr / 10,
      warmup: o.warmup,
      steps: o.steps,
    };
    this.optimizer = new AdamW(model.config, model.alloc, {
      beta1: o.beta1,
      beta2: o.beta2,
      weightDecay: o.weightDecay,
    });
    this.rng = new Rng(o.seed);
    this.#train = trainTokens;
    this.#acts = model.activations(o.batch);
  }

  /** A trainer; async so that a multi-threaded trainer can start its workers. */
  static create(
    model: GPT,
    trainTokens: Uint16Array,
    options: TrainOptions = {},
  ): Promise<Trainer> {
    return Promise.resolve(new Trainer(model, trainTokens, options));
  }

  /** Activations to evaluate with (the training batch's buffers, reused). */
  get evalActivations(): Activations {
    return this.#acts;
  }

  /** One optimizer step on a random batch; returns its mean loss. Throws on a NaN/Inf loss. */
  trainStep(): Promise<StepResult> {
    return Promise.resolve(this.trainStepSync());
  }

  /** {@link trainStep}, synchronously (single thread). */
  trainStepSync(): StepResult {
    const { model, batch: B } = this;
    const c = model.config;
    const T = c.blockSize;
    const acts = this.#acts;
    randomBatch(acts.inputs, acts.targets, this.#train, B, T, this.rng);
    model.zeroGrad();
    const loss = forward(c, model.params, acts, B, T) / (B * T);
    if (!Number.isFinite(loss)) {
      throw new BareGPTError(
        `the loss became ${loss} at step ${
          this.step + 1
        }; lower --lr or check the corpus (the last checkpoint is kept)`,
      );
    }
    backward(c, model.params, model.grads, acts, B, T, 1 / (B * T));
    return this.#update(loss);
  }

  /** Clips the gradient and takes the AdamW step at the schedule's learning rate. */
  #update(loss: number): StepResult {
    const { model } = this;
    const gradNorm = clipGradNorm(model.gradFlat, this.clip);
    const lr = learningRate(this.schedule, this.step);
    this.optimizer.step(model.flat, model.gradFlat, lr);
    this.step++;
    return { step: this.step, loss, lr, gradNorm };
  }

  /**
   * The full training state as checkpoint bytes (safetensors): weights, both Adam moments, and in
   * the metadata the config, vocab, step, optimizer count and RNG state, plus `facts`.
   */
  checkpoint(facts: Record<string, string>, tokenizer: Tokenizer): Uint8Array {
    const { model, optimizer } = this;
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

  /** Stops any workers. */
  close(): void {}
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
    const same = JSON.stringify(config) === JSON.stringify(this.config) &&
      JSON.stringify(tokenizer.vocab) === JSON.stringify(this.vocab);
    if (!same) {
      throw new InputError(
        `checkpoint ${path} is of another model (config or vocab differ); delete it or train with its settings`,
      );
    }
    if (this.metadata.corpus_sha256 !== corpusSha) {
      throw new InputError(
        `checkpoint ${path} was made on another corpus (sha256 differs); delete it or train on that corpus`,
      );
    }
  }
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
  const total = windowCount(tokens.length, T);
  if (total === 0) {
    throw new InputError(
      `the text to evaluate has ${tokens.length} characters, fewer than block_size + 1 = ${
        T + 1
      }; use a longer text`,
    );
  }
  const acts = options.acts ?? model.activations(options.batch ?? 16);
  const chosen = options.maxWindows !== undefined && options.maxWindows < total
    ? Array.from(
      { length: options.maxWindows },
      (_, i) => Math.floor((i * total) / options.maxWindows!),
    )
    : null;
  const n = chosen?.length ?? total;
  let sum = 0;
  for (let first = 0; first < n; first += acts.B) {
    const count = Math.min(acts.B, n - first);
    if (chosen === null) windowBatch(acts.inputs, acts.targets, tokens, first, count, T);
    else {
      for (let b = 0; b < count; b++) {
        windowBatch(
          acts.inputs.subarray(b * T),
          acts.targets.subarray(b * T),
          tokens,
          chosen[first + b],
          1,
          T,
        );
      }
    }
    sum += forward(c, model.params, acts, count, T);
  }
  const loss = sum / (n * T);
  return { loss, bpc: loss / Math.LN2, tokens: n * T, windows: n };
}
