/**
 * The optimizer: AdamW with bias correction and decoupled weight decay (2-D weights only), the
 * global gradient-norm clip, and the learning-rate schedule (linear warmup, then a linear or
 * cosine decay to a floor).
 *
 * @module
 */

import { adamwUpdate, type FloatArray, scaleInPlace, sumSquares } from "./kernels/dispatch.ts";
import type { AdamWStep } from "./tensor.ts";
import { type ModelConfig, parameterSpecs } from "./model.ts";

/** The learning-rate schedule. */
export interface Schedule {
  /** Peak learning rate, reached after `warmup` steps. */
  lr: number;
  /** Final learning rate, reached at the last step. */
  minLr: number;
  /** Steps of linear warmup from lr / warmup to lr. */
  warmup: number;
  /** Total steps. */
  steps: number;
  /** Shape of the decay after warmup. */
  decay: "linear" | "cosine";
}

/** The learning rate of step `step` (0-based). */
export function learningRate(s: Schedule, step: number): number {
  if (step < s.warmup) return (s.lr * (step + 1)) / s.warmup;
  const progress = Math.min(1, (step - s.warmup) / Math.max(1, s.steps - 1 - s.warmup));
  const fraction = s.decay === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.minLr + (s.lr - s.minLr) * fraction;
}

/** Scales grad so that its global L2 norm is at most maxNorm (0: off); returns the norm before. */
export function clipGradNorm(grad: FloatArray, maxNorm: number): number {
  const norm = Math.sqrt(sumSquares(grad, grad.length));
  if (maxNorm > 0 && norm > maxNorm) scaleInPlace(grad, grad.length, maxNorm / (norm + 1e-6));
  return norm;
}

/** AdamW's settings. */
export interface AdamWOptions {
  beta1: number;
  beta2: number;
  /** Decoupled weight decay, applied to 2-D weights only. */
  weightDecay: number;
  /** Default 1e-8. */
  eps?: number;
}

/** AdamW state over a model's flat parameter buffer: m, v and the update count t. */
export class AdamW {
  readonly options: Required<AdamWOptions>;
  /** First and second moment estimates, the parameters' layout. */
  readonly m: FloatArray;
  readonly v: FloatArray;
  /** Updates taken so far. */
  t = 0;
  /** [offset, length, decays] of each parameter tensor. */
  readonly #segments: [number, number, boolean][] = [];
  /** The settings of one update (reused: the step allocates nothing). */
  readonly #update: AdamWStep;

  constructor(config: ModelConfig, alloc: (n: number) => FloatArray, options: AdamWOptions) {
    this.options = { eps: 1e-8, ...options };
    let offset = 0;
    for (const { shape } of parameterSpecs(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      this.#segments.push([offset, n, shape.length === 2]);
      offset += n;
    }
    this.m = alloc(offset);
    this.v = alloc(offset);
    this.#update = { ...this.options, lr: 0, bc1: 1, bc2: 1 };
  }

  /** One update of params from grad at learning rate lr. */
  step(params: FloatArray, grad: FloatArray, lr: number): void {
    const { beta1, beta2, weightDecay } = this.options, u = this.#update;
    this.t++;
    u.lr = lr;
    u.bc1 = 1 - beta1 ** this.t;
    u.bc2 = 1 - beta2 ** this.t;
    for (const [at, n, decays] of this.#segments) {
      u.weightDecay = decays ? weightDecay : 0;
      const end = at + n;
      const [p, g] = [params.subarray(at, end), grad.subarray(at, end)];
      adamwUpdate(p, g, this.m.subarray(at, end), this.v.subarray(at, end), n, u);
    }
  }
}
