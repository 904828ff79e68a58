/**
 * A layer of the reference math, callable on its own: LayerNorm's forward and backward from
 * `tensor.ts` (the plain loops the model runs with the `js` kernels), over float64 arrays, so
 * that a reader can check a hand-written gradient against finite differences in a few lines, as
 * the tests do for every layer.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { layernormBackward, layernormForward } from "./tensor.ts";

/** What {@linkcode layerNorm} computes: its output and what its backward needs. */
export interface LayerNormResult {
  /** The output [rows, C]: (x - mean) / std · weight + bias, row by row. */
  out: Float64Array;
  /** The mean of each row [rows]. */
  mean: Float64Array;
  /** 1 / sqrt(variance + 1e-5) of each row [rows]. */
  rstd: Float64Array;
}

/** What {@linkcode layerNormBackward} computes: the gradients of the loss. */
export interface LayerNormGradients {
  /** Of the input [rows, C]. */
  dX: Float64Array;
  /** Of the weight [C]. */
  dWeight: Float64Array;
  /** Of the bias [C]. */
  dBias: Float64Array;
}

/** Rows of x for C = weight.length, or an InputError naming what does not fit. */
function rowsOf(x: Float64Array, weight: Float64Array, bias?: Float64Array): number {
  const C = weight.length;
  if (C === 0 || x.length % C !== 0 || (bias !== undefined && bias.length !== C)) {
    throw new InputError(
      `layerNorm: x has ${x.length} values, weight ${C}${
        bias === undefined ? "" : `, bias ${bias.length}`
      }; x must be whole rows of weight.length values, and bias as long as weight`,
    );
  }
  return x.length / C;
}

/**
 * LayerNorm over the last dimension (eps 1e-5), the model's `ln_1`, `ln_2` and `ln_f`: each row
 * of `x` is centred, scaled to unit variance, then multiplied by `weight` and shifted by `bias`.
 *
 * @param x the input, rows of `weight.length` values.
 * @param weight the scale [C].
 * @param bias the shift [C].
 * @returns the output and each row's mean and 1/std.
 * @throws {InputError} when x is not whole rows of C values or bias is not C long.
 *
 * @example
 * ```ts
 * import { layerNorm } from "@baregpt/baregpt";
 * const { out } = layerNorm(new Float64Array([1, 2, 3]), new Float64Array([1, 1, 1]), new Float64Array(3));
 * console.log(Array.from(out, (v) => v.toFixed(3))); // ["-1.225", "0.000", "1.225"]
 * ```
 */
export function layerNorm(
  x: Float64Array,
  weight: Float64Array,
  bias: Float64Array,
): LayerNormResult {
  const rows = rowsOf(x, weight, bias), C = weight.length;
  const out = new Float64Array(x.length), mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  layernormForward(out, mean, rstd, x, weight, bias, rows, C);
  return { out, mean, rstd };
}

/**
 * The backward of {@linkcode layerNorm}, written by hand: given the gradient of a loss with
 * respect to the output, its gradients with respect to the input, the weight and the bias.
 *
 * @param dOut the gradient of the loss with respect to `out` [rows, C].
 * @param x the input the forward saw.
 * @param weight the weight the forward used.
 * @param mean the forward's `mean`.
 * @param rstd the forward's `rstd`.
 * @returns the gradients.
 * @throws {InputError} when the sizes do not fit together.
 *
 * @example Check dX against a finite difference
 * ```ts
 * import { layerNorm, layerNormBackward } from "@baregpt/baregpt";
 * const x = new Float64Array([0.3, -1.2, 2.0, 0.5]), w = new Float64Array([1, 2, 0.5, 1.5]);
 * const b = new Float64Array(4), g = new Float64Array([1, -1, 0.5, 2]); // loss = Σ out · g
 * const loss = (x: Float64Array) => layerNorm(x, w, b).out.reduce((s, o, i) => s + o * g[i], 0);
 * const { mean, rstd } = layerNorm(x, w, b);
 * const { dX } = layerNormBackward(g, x, w, mean, rstd);
 * const h = 1e-6, up = x.slice(), down = x.slice();
 * up[0] += h;
 * down[0] -= h;
 * console.log(dX[0], (loss(up) - loss(down)) / (2 * h)); // the same to about 9 digits
 * ```
 */
export function layerNormBackward(
  dOut: Float64Array,
  x: Float64Array,
  weight: Float64Array,
  mean: Float64Array,
  rstd: Float64Array,
): LayerNormGradients {
  const rows = rowsOf(x, weight), C = weight.length;
  if (dOut.length !== x.length || mean.length !== rows || rstd.length !== rows) {
    throw new InputError(
      `layerNormBackward: dOut has ${dOut.length} values and x ${x.length}, mean ${mean.length} and rstd ${rstd.length} for ${rows} rows; pass the forward's own`,
    );
  }
  const dX = new Float64Array(x.length), dWeight = new Float64Array(C);
  const dBias = new Float64Array(C);
  layernormBackward(dX, dWeight, dBias, dOut, x, weight, mean, rstd, rows, C);
  return { dX, dWeight, dBias };
}
