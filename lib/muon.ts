/**
 * Muon (Keller Jordan's, of the modded-nanogpt speedrun) for the hidden matrices, each block's
 * c_attn, attn.c_proj, c_fc and mlp.c_proj; AdamW for the rest (the embeddings, which the head
 * shares, the biases and the LayerNorms). For W [R, S] with gradient G, at learning rate η and
 * weight decay λ:
 *
 *     M ← μ·M + G,  U ← G + μ·M             momentum, Nesterov's look-ahead (M is in AdamW's m)
 *     O ← NS(U / ‖U‖)                       ≈ the orthogonal factor: U = PΣQᵀ gives O ≈ PQᵀ
 *     W ← W − η·(0.2·√max(R, S)·O + λ·W)    O scaled to AdamW's update size (the Moonlight report)
 *
 * NS, the quintic Newton–Schulz iteration on X of n = min(R, S) rows (the Gram matrix Xᵀ·X where
 * X is tall), A ← X·Xᵀ [n, n], X ← (a·I + b·A + c·A²)·X, drives every singular value towards
 * [0.7, 1.2] in five steps on the project's matmul kernels; only the singular vectors are kept.
 *
 * @module
 */

import { AdamW, type AdamWOptions } from "./adam.ts";
import {
  type FloatArray,
  matmul,
  matmulBackwardWeight,
  matmulNT,
  scaleInPlace,
  sumSquares,
} from "./kernels/dispatch.ts";
import { type ModelConfig, parameterSpecs } from "./model.ts";

/** The quintic's coefficients, chosen (by Keller Jordan) for the steepest rise near zero. */
export const [QA, QB, QC] = [3.4445, -4.775, 2.0315];

/** The update's scale: an orthogonal R x S matrix has RMS 1/√max(R, S); this makes it 0.2. */
export const RMS_MATCH = 0.2;

/** True for the matrices Muon updates: each block's four projections. */
export function isHiddenMatrix(name: string): boolean {
  return /^h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/.test(name);
}

/** A hidden matrix: its offset in the flat parameters and its shape [rows, cols]. */
export interface HiddenMatrix {
  at: number;
  rows: number;
  cols: number;
}

/** The hidden matrices of a configuration, in storage order. */
export function hiddenMatrices(config: ModelConfig): HiddenMatrix[] {
  const out: HiddenMatrix[] = [];
  let at = 0;
  for (const { name, shape } of parameterSpecs(config)) {
    if (isHiddenMatrix(name)) out.push({ at, rows: shape[0], cols: shape[1] });
    at += shape.reduce((a, b) => a * b, 1);
  }
  return out;
}

/** Floats of Newton–Schulz scratch for a configuration's largest hidden matrix. */
export function newtonSchulzFloats(config: ModelConfig): number {
  return hiddenMatrices(config).reduce((most, m) => {
    const n = Math.min(m.rows, m.cols);
    return Math.max(most, m.rows * m.cols + 2 * n * n);
  }, 0);
}

/**
 * Replaces u [rows, cols] by NS(u / ‖u‖) after `steps` iterations, using `scratch` (at least
 * rows·cols + 2·n² floats, n = min(rows, cols)). Float32 or float64, on any kernel tier.
 */
export function newtonSchulz(
  u: FloatArray,
  rows: number,
  cols: number,
  steps: number,
  scratch: FloatArray,
): void {
  const size = rows * cols, n = Math.min(rows, cols), wide = rows <= cols;
  let x = u, y = scratch.subarray(0, size);
  const gram = scratch.subarray(size, size + n * n); // A [n, n]
  const poly = scratch.subarray(size + n * n, size + 2 * n * n); // A², then a·I + b·A + c·A²
  scaleInPlace(x, size, 1 / (Math.sqrt(sumSquares(x, size)) + 1e-7));
  for (let s = 0; s < steps; s++) {
    if (wide) matmulNT(gram, x, x, rows, cols, rows); // X·Xᵀ
    else {
      gram.fill(0);
      matmulBackwardWeight(gram, x, x, rows, cols, cols); // Xᵀ·X
    }
    matmul(poly, gram, gram, null, n, n, n);
    for (let i = 0; i < n * n; i++) poly[i] = QB * gram[i] + QC * poly[i];
    for (let i = 0; i < n; i++) poly[i * n + i] += QA;
    if (wide) matmul(y, poly, x, null, n, n, cols); // p(X·Xᵀ)·X
    else matmul(y, x, poly, null, rows, n, n); // X·p(Xᵀ·X), the same matrix
    [x, y] = [y, x];
  }
  if (x !== u) u.set(x);
}

/** Muon's settings (AdamW's for the other tensors). */
export interface MuonOptions extends AdamWOptions {
  /** Momentum μ of the hidden matrices. */
  momentum: number;
  /** Newton–Schulz iterations. */
  steps: number;
}

/**
 * Orthogonalises the given hidden matrices of `update` in place (each by `newtonSchulz`); the
 * trainer spreads them over its threads. The bits do not depend on which thread runs which.
 */
export type Orthogonalize = (matrices: HiddenMatrix[], steps: number) => Promise<void>;

/** Muon's state: AdamW's (its m holds Muon's momentum for the hidden matrices) and the update. */
export class Muon {
  readonly options: MuonOptions;
  readonly adamw: AdamW;
  /** The hidden matrices, and the update being formed, in the parameters' layout. */
  readonly matrices: HiddenMatrix[];
  readonly update: FloatArray;
  /** This thread's Newton–Schulz scratch. */
  readonly #scratch: FloatArray;

  constructor(config: ModelConfig, alloc: (n: number) => FloatArray, options: MuonOptions) {
    this.options = options;
    const { momentum: _, steps: __, ...adamw } = options;
    this.adamw = new AdamW(config, alloc, { ...adamw, updates: (name) => !isHiddenMatrix(name) });
    this.matrices = hiddenMatrices(config);
    this.update = alloc(this.adamw.m.length);
    this.#scratch = alloc(newtonSchulzFloats(config));
  }

  /** First and second moments (the second is zero on the hidden matrices) and updates taken. */
  get m(): FloatArray {
    return this.adamw.m;
  }
  get v(): FloatArray {
    return this.adamw.v;
  }
  get t(): number {
    return this.adamw.t;
  }
  set t(t: number) {
    this.adamw.t = t;
  }

  /** Orthogonalises matrices of the update on this thread (the single-thread Orthogonalize). */
  orthogonalizeHere: Orthogonalize = (matrices, steps) => {
    for (const { at, rows, cols } of matrices) {
      newtonSchulz(this.update.subarray(at, at + rows * cols), rows, cols, steps, this.#scratch);
    }
    return Promise.resolve();
  };

  /** One update of params from grad: the hidden matrices at hiddenLr, the rest at lr. */
  async step(
    params: FloatArray,
    grad: FloatArray,
    lr: number,
    hiddenLr: number,
    orthogonalize: Orthogonalize = this.orthogonalizeHere,
  ): Promise<void> {
    const { momentum: mu, weightDecay, steps } = this.options, m = this.adamw.m, u = this.update;
    for (const { at, rows, cols } of this.matrices) {
      for (let i = at; i < at + rows * cols; i++) {
        m[i] = mu * m[i] + grad[i];
        u[i] = grad[i] + mu * m[i];
      }
    }
    await orthogonalize(this.matrices, steps);
    for (const { at, rows, cols } of this.matrices) {
      const step = hiddenLr * RMS_MATCH * Math.sqrt(Math.max(rows, cols));
      const shrink = 1 - hiddenLr * weightDecay;
      for (let i = at; i < at + rows * cols; i++) params[i] = shrink * params[i] - step * u[i];
    }
    this.adamw.step(params, grad, lr);
  }
}
