/**
 * WGSL of the elementwise kernels (GELU, the embedding, sums and scales of arrays, the gradient
 * of the cross-entropy, the AdamW update) and of the reductions that have no row structure (the
 * embedding's gradients, the sum of squares).
 *
 * An elementwise kernel runs {@linkcode ELEMENT_THREADS} threads per workgroup on a 1-D grid of
 * at most 65535 workgroups; each thread strides over the elements (i += threads in the grid), so
 * any n works with one dispatch.
 *
 * @module
 */

import type { KernelSource } from "./pipelines.ts";
import { ROW_HELPERS, ROW_THREADS } from "./rows.ts";

/** Threads of a workgroup of an elementwise kernel. */
export const ELEMENT_THREADS = 256;

/** Workgroups of a sum-of-squares first pass: each sums a stretch of about n / groups values. */
export function sumSquaresGroups(n: number): number {
  return Math.max(1, Math.min(ROW_THREADS, Math.ceil(n / (ROW_THREADS * 8))));
}

/**
 * An elementwise kernel: `params` are the uniform block's fields after the buffers' offsets,
 * `body` computes element i (the loop bound is `p.n`).
 */
export function elementwise(
  name: string,
  buffers: readonly [string, string][],
  params: string,
  body: string,
  helpers = "",
): KernelSource {
  const offsets = buffers.map(([b]) => `o_${b}: u32`).join(", ");
  const bindings = buffers.map(([b, type], i) =>
    `@group(0) @binding(${i}) var<storage, read_write> ${b}: array<${type}>;`
  ).join("\n");
  const code = /* wgsl */ `
struct Params { ${offsets}, ${params} }
${bindings}
@group(0) @binding(${buffers.length}) var<uniform> p: Params;
${helpers}
@compute @workgroup_size(${ELEMENT_THREADS})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var i = g.x; i < p.n; i += nwg.x * ${ELEMENT_THREADS}u) {
    ${body}
  }
}
`;
  return { name, code, buffers: buffers.length };
}

/**
 * GELU, tanh form: gelu(x) = 0.5 x (1 + tanh(u)), u = √(2/π) (x + 0.044715 x³); its derivative
 * 0.5 (1 + tanh u) + 0.5 x (1 - tanh² u) · √(2/π) (1 + 3 · 0.044715 x²). The argument of tanh is
 * clamped to ±15, where tanh is ±1 in float32, so that no implementation overflows to NaN.
 */
const GELU = /* wgsl */ `
const GELU_SCALE = 0.7978845608028654;
fn tanhU(x: f32) -> f32 {
  return tanh(clamp(GELU_SCALE * (x + 0.044715 * x * x * x), -15.0, 15.0));
}
`;

/** out[n] = gelu(inp[n]). */
const geluForward = elementwise(
  "gelu_forward",
  [["out", "f32"], ["inp", "f32"]],
  "n: u32",
  `let x = inp[p.o_inp + i];
    out[p.o_out + i] = 0.5 * x * (1.0 + tanhU(x));`,
  GELU,
);

/** dInp[n] = gelu'(inp[n]) · dOut[n] (overwrites). */
const geluBackward = elementwise(
  "gelu_backward",
  [["dinp", "f32"], ["inp", "f32"], ["dout", "f32"]],
  "n: u32",
  `let x = inp[p.o_inp + i];
    let th = tanhU(x);
    let dU = GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
    dinp[p.o_dinp + i] = (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * dU) * dout[p.o_dout + i];`,
  GELU,
);

/** out[n] = a[n] + b[n] (out may be a). */
const add = elementwise(
  "add",
  [["out", "f32"], ["a", "f32"], ["b", "f32"]],
  "n: u32",
  "out[p.o_out + i] = a[p.o_a + i] + b[p.o_b + i];",
);

/** dst[n] += src[n]. */
const addInPlace = elementwise(
  "add_in_place",
  [["dst", "f32"], ["src", "f32"]],
  "n: u32",
  "dst[p.o_dst + i] += src[p.o_src + i];",
);

/** x[n] *= s. */
const scaleInPlace = elementwise(
  "scale_in_place",
  [["x", "f32"]],
  "n: u32, s: f32",
  "x[p.o_x + i] *= p.s;",
);

/** dLogits[N,V] = (probs - onehot(targets)) · scale (overwrites); n = N·V, targets u32. */
const crossEntropyBackward = elementwise(
  "softmax_cross_entropy_backward",
  [["dlogits", "f32"], ["probs", "f32"], ["targets", "u32"]],
  "n: u32, V: u32, scale: f32",
  `let hit = targets[p.o_targets + i / p.V] == i % p.V;
    dlogits[p.o_dlogits + i] = probs[p.o_probs + i] * p.scale - select(0.0, p.scale, hit);`,
);

/** out[B·T, C] = wte[tokens[r]] + wpe[r mod T] for rows r of B sequences of T; n = B·T·C. */
const embeddingForward = elementwise(
  "embedding_forward",
  [["out", "f32"], ["tokens", "u32"], ["wte", "f32"], ["wpe", "f32"]],
  "n: u32, T: u32, C: u32",
  `let r = i / p.C;
    let c = i % p.C;
    let token = tokens[p.o_tokens + r];
    out[p.o_out + i] = wte[p.o_wte + token * p.C + c] + wpe[p.o_wpe + (r % p.T) * p.C + c];`,
);

/** dWpe[t, c] += Σ_b dOut[b, t, c] (accumulates); n = T·C. */
const embeddingBackwardPositions = elementwise(
  "embedding_backward_positions",
  [["dwpe", "f32"], ["dout", "f32"]],
  "n: u32, B: u32",
  `var sum = 0.0;
    for (var b = 0u; b < p.B; b++) { sum += dout[p.o_dout + b * p.n + i]; }
    dwpe[p.o_dwpe + i] += sum;`,
);

/**
 * dWte[v, c] += Σ_{r: tokens[r] = v} dOut[r, c] (accumulates), without atomics: the thread of
 * (v, c) scans all B·T tokens (every thread of a workgroup reads the same token, so the scan is
 * one read per row for 64 columns). The work grows with V·B·T: fine for a vocabulary of
 * characters. Grid (⌈C/64⌉, V).
 */
const embeddingBackwardTokens: KernelSource = {
  name: "embedding_backward_tokens",
  buffers: 3,
  code: /* wgsl */ `
struct Params { o_dwte: u32, o_dout: u32, o_tokens: u32, rows: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x * 64u + lid;
  let v = wid.y;
  if (c >= p.C) { return; }
  var sum = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    if (tokens[p.o_tokens + r] == v) { sum += dout[p.o_dout + r * p.C + c]; }
  }
  dwte[p.o_dwte + v * p.C + c] += sum;
}
`,
};

/**
 * Sum of squares, first pass: workgroup w sums x[i]² over i = w·WG + lid, strided by the grid,
 * into partials[w] (a tree in workgroup memory). The second pass sums the partials.
 */
const sumSquaresPartials: KernelSource = {
  name: "sum_squares_partials",
  buffers: 2,
  code: /* wgsl */ `
struct Params { o_partials: u32, o_x: u32, n: u32 }
@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var i = wid.x * WG + lid; i < p.n; i += nwg.x * WG) {
    let v = x[p.o_x + i];
    sum += v * v;
  }
  let total = reduceSum(sum, lid);
  if (lid == 0u) { partials[p.o_partials + wid.x] = total; }
}
`,
};

/** Sum of squares, second pass: out[0] = Σ partials[0 .. groups-1] (one workgroup). */
const sumSquaresTotal: KernelSource = {
  name: "sum_squares_total",
  buffers: 2,
  code: /* wgsl */ `
struct Params { o_out: u32, o_partials: u32, groups: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let mine = select(0.0, partials[p.o_partials + lid], lid < p.groups);
  let total = reduceSum(mine, lid);
  if (lid == 0u) { out[p.o_out] = total; }
}
`,
};

/**
 * AdamW, per parameter: m = β1 m + (1-β1) g,  v = β2 v + (1-β2) g²,
 * param -= lr (m/bc1 / (√(v/bc2) + eps) + weightDecay · param)   (decoupled weight decay).
 */
const adamw = elementwise(
  "adamw",
  [["param", "f32"], ["grad", "f32"], ["m", "f32"], ["v", "f32"]],
  "n: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, bc1: f32, bc2: f32",
  `let g = grad[p.o_grad + i];
    let m1 = p.beta1 * m[p.o_m + i] + (1.0 - p.beta1) * g;
    let v1 = p.beta2 * v[p.o_v + i] + (1.0 - p.beta2) * g * g;
    m[p.o_m + i] = m1;
    v[p.o_v + i] = v1;
    let w = param[p.o_param + i];
    let step = (m1 / p.bc1) / (sqrt(v1 / p.bc2) + p.eps) + p.weightDecay * w;
    param[p.o_param + i] = w - p.lr * step;`,
);

/** The elementwise kernels and the reductions. */
export const ELEMENTWISE_SOURCES: readonly KernelSource[] = [
  geluForward,
  geluBackward,
  add,
  addInPlace,
  scaleInPlace,
  crossEntropyBackward,
  embeddingForward,
  embeddingBackwardPositions,
  embeddingBackwardTokens,
  sumSquaresPartials,
  sumSquaresTotal,
  adamw,
];
