/**
 * WGSL of the small kernels of the optimizer's step that `lib/tensor.ts` has no counterpart for
 * (there the CPU does them between kernel calls): filling an array, turning a sum of squares
 * into a norm and a scale without a readback (the gradient clip, Newton–Schulz's normalisation),
 * scaling by a scale that lives on the GPU, and Muon's momentum, quintic and update
 * (`lib/muon.ts`).
 *
 * @module
 */

import { elementwise } from "./elementwise.ts";
import type { KernelSource } from "./pipelines.ts";
import { ROW_HELPERS } from "./rows.ts";

/** x[n] = value. */
const fill = elementwise("fill", [["x", "f32"]], "n: u32, value: f32", "x[p.o_x + i] = p.value;");

/**
 * From sums of squares of `count` stretches of one vector (one workgroup):
 *   norm = √(Σ sums),   scale = limit / (norm + eps) if `always`, or if limit > 0 and
 *   norm > limit; else 1.
 * out[0] = norm, out[1] = scale. The clip is limit = maxNorm, eps 1e-6 (lib/adam.ts's
 * clipGradNorm); Newton–Schulz's normalisation is limit 1, eps 1e-7, always.
 */
const normScale: KernelSource = {
  name: "norm_scale",
  buffers: 2,
  code: /* wgsl */ `
struct Params { o_out: u32, o_sums: u32, count: u32, always: u32, limit: f32, eps: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var mine = 0.0;
  for (var i = lid; i < p.count; i += WG) { mine += sums[p.o_sums + i]; }
  let total = reduceSum(mine, lid);
  if (lid == 0u) {
    let norm = sqrt(total);
    var scale = 1.0;
    if (p.always != 0u || (p.limit > 0.0 && norm > p.limit)) { scale = p.limit / (norm + p.eps); }
    out[p.o_out] = norm;
    out[p.o_out + 1u] = scale;
  }
}
`,
};

/** x[n] *= s[0], a scale computed on the GPU. */
const scaleBy = elementwise(
  "scale_by",
  [["x", "f32"], ["s", "f32"]],
  "n: u32",
  "x[p.o_x + i] *= s[p.o_s];",
);

/**
 * Muon's momentum with Nesterov's look-ahead, per element of a hidden matrix:
 *   M ← μ·M + G,   U ← G + μ·M.
 */
const muonMomentum = elementwise(
  "muon_momentum",
  [["m", "f32"], ["grad", "f32"], ["u", "f32"]],
  "n: u32, mu: f32",
  `let g = grad[p.o_grad + i];
    let m1 = p.mu * m[p.o_m + i] + g;
    m[p.o_m + i] = m1;
    u[p.o_u + i] = g + p.mu * m1;`,
);

/**
 * The quintic of a Newton–Schulz step on A [side, side], in place over A² (in `poly`):
 *   poly ← b·A + c·A² + a·I.
 */
const newtonSchulzPoly = elementwise(
  "newton_schulz_poly",
  [["poly", "f32"], ["gram", "f32"]],
  "n: u32, side: u32, a: f32, b: f32, c: f32",
  `var v = p.b * gram[p.o_gram + i] + p.c * poly[p.o_poly + i];
    if (i / p.side == i % p.side) { v += p.a; }
    poly[p.o_poly + i] = v;`,
);

/** Muon's update of a hidden matrix W from its orthogonalised O: W ← shrink·W − step·O. */
const muonUpdate = elementwise(
  "muon_update",
  [["param", "f32"], ["ortho", "f32"]],
  "n: u32, shrink: f32, step: f32",
  "param[p.o_param + i] = p.shrink * param[p.o_param + i] - p.step * ortho[p.o_ortho + i];",
);

/** The optimizer step's own kernels. */
export const UPDATE_SOURCES: readonly KernelSource[] = [
  fill,
  normScale,
  scaleBy,
  muonMomentum,
  newtonSchulzPoly,
  muonUpdate,
];
