/**
 * AdamW with bias correction and decoupled weight decay (2-D weights only), global gradient-norm
 * clipping, and the learning-rate schedule: linear warmup, then a cosine (or linear) decay to a
 * floor.
 *
 * @module
 */

import { type GPTConfig, parameterSpecs } from "./model.ts";
import { adamwUpdate, type FloatArray, scaleInPlace, sumSquares } from "./tensor.ts";

/** Optimizer settings. */
export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay, applied to 2-D weights only (default 0.1). */
  weightDecay?: number;
}

/** Learning-rate schedule settings. */
export interface Schedule {
  /** Peak learning rate. */
  lr: number;
  /** Final learning rate of the cosine decay. */
  minLr: number;
  /** Steps of linear warmup from lr / warmup to lr. */
  warmup: number;
  /** Total steps; the decay reaches minLr at the last one. */
  steps: number;
  /** Shape of the decay after warmup (default "cosine"). */
  decay?: "cosine" | "linear";
}

/**
 * The learning rate of step `step` (0-based): linear warmup, then a cosine (default) or linear
 * decay from lr to minLr at the last step.
 */
export function learningRate(s: Schedule, step: number): number {
  if (step < s.warmup) return (s.lr * (step + 1)) / s.warmup;
  const decaySteps = Math.max(1, s.steps - 1 - s.warmup);
  const progress = Math.min(1, (step - s.warmup) / decaySteps);
  const fraction = s.decay === "linear" ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return s.minLr + (s.lr - s.minLr) * fraction;
}

/**
 * Scales the gradient so that its global L2 norm is at most maxNorm (0 turns clipping off).
 * Returns the norm before clipping.
 */
export function clipGradNorm(grad: FloatArray, maxNorm: number): number {
  const norm = Math.sqrt(sumSquares(grad, grad.length));
  if (maxNorm > 0 && norm > maxNorm) scaleInPlace(grad, grad.length, maxNorm / (norm + 1e-6));
  return norm;
}

/** AdamW state over a flat parameter buffer. */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** First and second moment estimates, same layout as the parameters. */
  readonly m: FloatArray;
  readonly v: FloatArray;
  /** Updates taken so far. */
  t = 0;
  /** [offset, length, decays] of each parameter tensor. */
  readonly #segments: [number, number, boolean][] = [];

  constructor(config: GPTConfig, alloc: (n: number) => FloatArray, options: AdamWOptions = {}) {
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.99;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.1;
    let offset = 0;
    for (const { shape } of parameterSpecs(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      this.#segments.push([offset, n, shape.length === 2]);
      offset += n;
    }
    this.m = alloc(offset);
    this.v = alloc(offset);
  }

  /** One update of params from grad at learning rate lr. */
  step(params: FloatArray, grad: FloatArray, lr: number): void {
    this.t++;
    const bc1 = 1 - this.beta1 ** this.t;
    const bc2 = 1 - this.beta2 ** this.t;
    for (const [offset, n, decays] of this.#segments) {
      const end = offset + n;
      adamwUpdate(
        params.subarray(offset, end),
        grad.subarray(offset, end),
        this.m.subarray(offset, end),
        this.v.subarray(offset, end),
        n,
        lr,
        this.beta1,
        this.beta2,
        this.eps,
        decays ? this.weightDecay : 0,
        bc1,
        bc2,
      );
    }
  }
}
