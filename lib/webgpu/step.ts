/**
 * The optimizer's half of a training step on the GPU, recorded after the backward in the same
 * pass: the global gradient-norm clip (`lib/adam.ts` clipGradNorm) computed and applied on the
 * GPU, then AdamW (`lib/adam.ts`) for every tensor, or Muon (`lib/muon.ts`) for the hidden
 * matrices and AdamW for the rest. The state is AdamW's m and v in the parameters' layout; Muon's
 * momentum lives in m for the hidden matrices (v stays zero there), exactly as on the CPU, so a
 * checkpoint moves between the two.
 *
 * Muon takes its matrices one at a time (momentum, Newton–Schulz, update), where the CPU does
 * each phase for all of them: the matrices are independent, so the numbers are the same, and
 * one matrix of scratch suffices.
 *
 * @module
 */

import type { AdamWOptions } from "../adam.ts";
import type { ModelConfig } from "../model.ts";
import { parameterSpecs } from "../model.ts";
import {
  hiddenMatrices,
  type HiddenMatrix,
  isHiddenMatrix,
  type MuonOptions,
  QA,
  QB,
  QC,
  RMS_MATCH,
} from "../muon.ts";
import type { AdamWStep } from "../tensor.ts";
import type { GpuKernels } from "./kernels.ts";
import { type Layout, shifted, stretches } from "./memory.ts";
import type { GpuArray } from "./pipelines.ts";

type A = GpuArray;
type P = GPUComputePassEncoder;

/** AdamW's settings (which tensors it updates follows from the optimizer's name). */
type GpuAdamW = Omit<AdamWOptions, "updates">;

/** The optimizer of a GPU model: AdamW's settings, or Muon's. */
export type GpuOptimizerOptions =
  | ({ name: "adamw" } & GpuAdamW)
  | ({ name: "muon" } & Omit<MuonOptions, "updates">);

/** The settings of one step that the schedule gives. */
export interface GpuStepSettings {
  /** AdamW's learning rate (of every tensor, or under Muon of the rest). */
  lr: number;
  /** Muon's learning rate of the hidden matrices (default lr). */
  hiddenLr?: number;
  /** Clip the gradient's global L2 norm to this (0: off). */
  clip: number;
  /** The step's dropout seed (lib/rng.ts dropoutSeed): needed when the model has dropout, ignored without. */
  dropoutSeed?: number;
}

/** A stretch of the flat parameters that AdamW updates with one dispatch. */
interface Segment {
  at: number;
  n: number;
  /** Weight decay applies (2-D weights only). */
  decays: boolean;
}

/** Optimizer state and scratch on the GPU, and the recording of its update. */
export class GpuOptimizer {
  readonly options: Required<GpuAdamW> & GpuOptimizerOptions;
  /** First and second moments [P], the parameters' layout. */
  readonly m: A;
  readonly v: A;
  /** Updates taken so far (AdamW's bias corrections come from it). */
  t = 0;
  /** The clip's [norm, scale] and Newton–Schulz's [norm, scale], then the sums of squares. */
  readonly clipStats: A;
  readonly #nsStats: A;
  readonly #sums: A;
  readonly #segments: Segment[] = [];
  /** Muon's hidden matrices (none under AdamW), momentum and Newton–Schulz steps. */
  readonly #matrices: HiddenMatrix[];
  readonly #momentum: number;
  readonly #nsSteps: number;
  /** Muon's scratch: the update U and the iteration's other X [largest matrix], A and poly. */
  readonly #update: A;
  readonly #other: A;
  readonly #gram: A;
  readonly #poly: A;
  /** Parameters, and elements per stretch of work over the whole gradient (one binding each). */
  readonly #count: number;
  readonly #stretch: number;
  readonly #setting: AdamWStep;

  /**
   * Lays out the state in `layout` (regions "optimizer m", "optimizer v" and "optimizer
   * scratch"); `stretch` is the most elements one binding holds.
   */
  constructor(layout: Layout, config: ModelConfig, options: GpuOptimizerOptions, stretch: number) {
    this.options = { eps: 1e-8, ...options };
    const muon = options.name === "muon";
    let offset = 0;
    for (const { name, shape } of parameterSpecs(config)) {
      const n = shape.reduce((a, b) => a * b, 1), decays = shape.length === 2;
      if (!(muon && isHiddenMatrix(name))) {
        // neighbours with the same decay merge into one dispatch, within one binding
        const last = this.#segments.at(-1);
        if (
          last && last.at + last.n === offset && last.decays === decays && last.n + n <= stretch
        ) {
          last.n += n;
        } else this.#segments.push({ at: offset, n, decays });
      }
      offset += n;
    }
    this.#matrices = muon ? hiddenMatrices(config) : [];
    [this.#momentum, this.#nsSteps] = muon ? [options.momentum, options.steps] : [0, 0];
    this.m = layout.region("optimizer m").take("m", offset);
    this.v = layout.region("optimizer v").take("v", offset);
    const scratch = layout.region("optimizer scratch");
    this.#count = offset;
    this.#stretch = stretch;
    this.clipStats = scratch.take("clip norm and scale", 2);
    this.#nsStats = scratch.take("Newton-Schulz norm and scale", 2);
    this.#sums = scratch.take("sums of squares", Math.ceil(offset / stretch));
    const size = Math.max(0, ...this.#matrices.map((x) => x.rows * x.cols));
    const side = Math.max(0, ...this.#matrices.map((x) => Math.min(x.rows, x.cols)));
    this.#update = scratch.take("Muon update", size);
    this.#other = scratch.take("Newton-Schulz X", size);
    this.#gram = scratch.take("Newton-Schulz A", side * side);
    this.#poly = scratch.take("Newton-Schulz polynomial", side * side);
    this.#setting = { ...this.options, lr: 0, bc1: 1, bc2: 1 };
  }

  /**
   * Records step t + 1 of params from grads [P] (lib/train.ts `update`): the clip, then the
   * update. clipStats holds the gradient's norm before the clip once the work has run.
   */
  record(k: GpuKernels, pass: P, params: A, grads: A, s: GpuStepSettings): void {
    this.#recordClip(k, pass, grads, s.clip);
    for (const x of this.#matrices) {
      this.#recordMuon(k, pass, params, grads, x, s.hiddenLr ?? s.lr);
    }
    const { beta1, beta2, weightDecay } = this.options, u = this.#setting;
    this.t++;
    u.lr = s.lr;
    u.bc1 = 1 - beta1 ** this.t;
    u.bc2 = 1 - beta2 ** this.t;
    for (const { at, n, decays } of this.#segments) {
      u.weightDecay = decays ? weightDecay : 0;
      const [p, g, m, v] = [params, grads, this.m, this.v].map((a) => shifted(a, at));
      k.adamwUpdate(pass, p, g, m, v, n, u);
    }
  }

  /**
   * The global norm of grads [P] into clipStats[0], and grads *= maxNorm / (norm + 1e-6) where
   * the norm is over maxNorm > 0 (clipStats[1] holds the scale, 1 otherwise).
   */
  #recordClip(k: GpuKernels, pass: P, grads: A, maxNorm: number): void {
    const parts = stretches(grads, this.#count, this.#stretch);
    parts.forEach(([part, count], i) => k.sumSquares(pass, shifted(this.#sums, i), part, count));
    k.normScale(pass, this.clipStats, this.#sums, parts.length, maxNorm, 1e-6, false);
    if (maxNorm <= 0) return;
    const scale = shifted(this.clipStats, 1);
    for (const [part, count] of parts) k.scaleBy(pass, part, scale, count);
  }

  /**
   * Muon on one hidden matrix W [rows, cols] at learning rate lr (see lib/muon.ts):
   *   M ← μM + G;  U ← G + μM;  O ← NS(U / ‖U‖);  W ← (1 − lr·λ)·W − lr·0.2·√max(rows, cols)·O.
   */
  #recordMuon(k: GpuKernels, pass: P, params: A, grads: A, x: HiddenMatrix, lr: number): void {
    const { rows, cols } = x, size = rows * cols, mu = this.#momentum;
    k.muonMomentum(pass, shifted(this.m, x.at), shifted(grads, x.at), this.#update, size, mu);
    const ortho = this.#recordNewtonSchulz(k, pass, rows, cols);
    const step = lr * RMS_MATCH * Math.sqrt(Math.max(rows, cols));
    const shrink = 1 - lr * this.options.weightDecay;
    k.muonUpdate(pass, shifted(params, x.at), ortho, size, shrink, step);
  }

  /**
   * Newton–Schulz on the update U [rows, cols] (lib/muon.ts newtonSchulz): X = U / (‖U‖ + 1e-7),
   * then per step, with n = min(rows, cols):
   *   wide (rows <= cols): A = X·Xᵀ [n, n], X ← (a·I + b·A + c·A²)·X;
   *   tall: A = Xᵀ·X [n, n], X ← X·(a·I + b·A + c·A²).
   * Returns where the result is (the update or the other buffer, by the parity of the steps).
   */
  #recordNewtonSchulz(k: GpuKernels, pass: P, rows: number, cols: number): A {
    const size = rows * cols, n = Math.min(rows, cols), wide = rows <= cols;
    const [gram, poly] = [this.#gram, this.#poly];
    let [x, y] = [this.#update, this.#other];
    k.sumSquares(pass, this.#sums, x, size);
    k.normScale(pass, this.#nsStats, this.#sums, 1, 1, 1e-7, true);
    k.scaleBy(pass, x, shifted(this.#nsStats, 1), size);
    for (let s = 0; s < this.#nsSteps; s++) {
      if (wide) k.matmulNT(pass, gram, x, x, rows, cols, rows);
      else {
        k.fill(pass, gram, n * n, 0);
        k.matmulBackwardWeight(pass, gram, x, x, rows, cols, cols);
      }
      k.matmul(pass, poly, gram, gram, null, n, n, n);
      k.newtonSchulzPoly(pass, poly, gram, n, QA, QB, QC);
      if (wide) k.matmul(pass, y, poly, x, null, n, n, cols);
      else k.matmul(pass, y, x, poly, null, rows, n, n);
      [x, y] = [y, x];
    }
    return x;
  }
}
