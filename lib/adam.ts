/**
 * AdamW with bias correction and decoupled weight decay (2-D weights only; Muon, `muon.ts`, uses
 * it for its other tensors), the global gradient-norm clip, and the learning-rate schedule (linear
 * warmup, an optional constant phase, then a linear, cosine or 1-sqrt decay to a floor).
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
  /** Shape of the decay ("1-sqrt": 1 - √progress). */
  decay: "linear" | "cosine" | "1-sqrt";
  /** Fraction of the steps after warmup that decay (1: all; 0.3: the peak holds for 70%). */
  cooldown: number;
}

/** The learning rate of step `step` (0-based). */
export function learningRate(s: Schedule, step: number): number {
  if (step < s.warmup) return (s.lr * (step + 1)) / s.warmup;
  // the peak holds until the decay starts (at once for cooldown 1); p: its progress, 0 to 1
  const start = s.warmup + Math.round((s.steps - 1 - s.warmup) * (1 - s.cooldown));
  const p = Math.min(1, Math.max(0, step - start) / Math.max(1, s.steps - 1 - start));
  const f = { linear: 1 - p, cosine: (1 + Math.cos(Math.PI * p)) / 2, "1-sqrt": 1 - Math.sqrt(p) };
  return s.minLr + (s.lr - s.minLr) * f[s.decay];
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
  /** The tensors it updates, by GPT-2 name (default: all). */
  updates?: (name: string) => boolean;
}

/** AdamW state over a model's flat parameter buffer: m, v and the update count t. */
export class AdamW {
  readonly options: Required<Omit<AdamWOptions, "updates">>;
  /** First and second moment estimates, the parameters' layout. */
  readonly m: FloatArray;
  readonly v: FloatArray;
  /** Updates taken so far. */
  t = 0;
  /** [offset, length, decays] of each parameter tensor it updates. */
  readonly #segments: [number, number, boolean][] = [];
  /** The settings of one update (reused: the step allocates nothing). */
  readonly #update: AdamWStep;

  /** Moments for every tensor (the checkpoint's layout), updates for those of `updates`. */
  constructor(config: ModelConfig, alloc: (n: number) => FloatArray, options: AdamWOptions) {
    const { updates = () => true, ...settings } = options;
    this.options = { eps: 1e-8, ...settings };
    let offset = 0;
    for (const { name, shape } of parameterSpecs(config)) {
      const n = shape.reduce((a, b) => a * b, 1);
      if (updates(name)) this.#segments.push([offset, n, shape.length === 2]);
      offset += n;
    }
    this.m = alloc(offset);
    this.v = alloc(offset);
    this.#update = { ...this.options, lr: 0, bc1: 1, bc2: 1 };
  }

  /** One update of params from grad at learning rate lr. */
  step(params: FloatArray, grad: FloatArray, lr: number): void {
    const { beta1, beta2, weightDecay } = this.options, u = this.#update;
    u.lr = lr;
    [u.bc1, u.bc2] = [1 - beta1 ** ++this.t, 1 - beta2 ** this.t];
    for (const [at, n, decays] of this.#segments) {
      u.weightDecay = decays ? weightDecay : 0;
      const view = (a: FloatArray) => a.subarray(at, at + n);
      adamwUpdate(view(params), view(grad), view(this.m), view(this.v), n, u);
    }
  }
}
