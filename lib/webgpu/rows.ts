/**
 * WGSL of the row-wise kernels: LayerNorm (forward, and the backward of its input and of its
 * parameters) and the softmax with cross-entropy. A row kernel gives each row to one workgroup
 * of {@linkcode ROW_THREADS} threads, which stride along the row and combine their partial sums
 * (or maxima) with a tree in workgroup memory, or with subgroup operations where the device has
 * them ({@linkcode SUBGROUP_ROW_HELPERS}); the column sums of the parameter gradients give
 * each workgroup 16 columns and split the rows among 16 lanes per column.
 *
 * Rows are numbered by workgroup, folded into y past 65535 rows: row = wid.y · nwg.x + wid.x.
 *
 * @module
 */

import type { KernelSource } from "./pipelines.ts";

/** Threads of a workgroup that works on one row. */
export const ROW_THREADS = 128;

/**
 * WGSL helpers of a row kernel: `rowIndex` and the workgroup reductions `reduceSum` and
 * `reduceMax` of one value per thread, here the trees `treeSum` and `treeMax` (every thread gets
 * the result; call them from uniform control flow, as they hold barriers).
 */
export const ROW_HELPERS = /* wgsl */ `
const WG = ${ROW_THREADS}u;
var<workgroup> partial: array<f32, ${ROW_THREADS}>;

fn rowIndex(wid: vec3u, nwg: vec3u) -> u32 {
  return wid.y * nwg.x + wid.x;
}

fn reduceSum(x: f32, lid: u32) -> f32 {
  return treeSum(x, lid);
}

fn reduceMax(x: f32, lid: u32) -> f32 {
  return treeMax(x, lid);
}

fn treeSum(x: f32, lid: u32) -> f32 {
  partial[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}

fn treeMax(x: f32, lid: u32) -> f32 {
  partial[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
    workgroupBarrier();
  }
  let best = partial[0];
  workgroupBarrier();
  return best;
}
`;

/**
 * {@linkcode ROW_HELPERS} with subgroup operations, for a device with the "subgroups" feature
 * ({@linkcode withSubgroups} puts them in a kernel): each subgroup reduces its threads' values at
 * once (subgroupAdd, subgroupMax), its first thread writes the result to workgroup memory at the
 * subgroup's index, and every thread combines those few partials, in order. That indexing needs
 * the subgroups to be aligned runs of consecutive threads, as GPUs form them; WGSL does not
 * promise it, so each reduction checks (ballot, scan, broadcast), and a workgroup that finds
 * otherwise takes the tree instead.
 */
export const SUBGROUP_ROW_HELPERS = ROW_HELPERS.replace(
  /fn reduceSum[^]*?\n}\n\nfn reduceMax[^]*?\n}\n/,
  /* wgsl */ `var<workgroup> scattered: u32;

/** This thread's subgroup size, and its lane; flags a workgroup whose subgroups are not runs. */
fn subgroupShape(lid: u32) -> vec2u {
  let b = subgroupBallot(true);
  let size = countOneBits(b.x) + countOneBits(b.y) + countOneBits(b.z) + countOneBits(b.w);
  let lane = subgroupExclusiveAdd(1u);
  let first = subgroupBroadcastFirst(lid);
  if (first + lane != lid || first % size != 0u) { scattered = 1u; }
  return vec2u(size, lane);
}

fn reduceSum(x: f32, lid: u32) -> f32 {
  let shape = subgroupShape(lid);
  let s = subgroupAdd(x);
  if (shape.y == 0u) { partial[lid / shape.x] = s; }
  if (workgroupUniformLoad(&scattered) != 0u) { return treeSum(x, lid); }
  var total = 0.0;
  for (var i = 0u; i < WG / shape.x; i++) { total += partial[i]; }
  workgroupBarrier();
  return total;
}

fn reduceMax(x: f32, lid: u32) -> f32 {
  let shape = subgroupShape(lid);
  let s = subgroupMax(x);
  if (shape.y == 0u) { partial[lid / shape.x] = s; }
  if (workgroupUniformLoad(&scattered) != 0u) { return treeMax(x, lid); }
  var best = partial[0];
  for (var i = 1u; i < WG / shape.x; i++) { best = max(best, partial[i]); }
  workgroupBarrier();
  return best;
}
`,
);

/** A kernel with {@linkcode SUBGROUP_ROW_HELPERS} in place of ROW_HELPERS (others unchanged). */
export function withSubgroups(source: KernelSource): KernelSource {
  if (!source.code.includes(ROW_HELPERS)) return source;
  const code = `enable subgroups;\n${source.code.replace(ROW_HELPERS, SUBGROUP_ROW_HELPERS)}`;
  return { ...source, code };
}

/** The builtins of a row kernel's entry point. */
const ROW_ARGS = "@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, " +
  "@builtin(local_invocation_index) lid: u32";

/**
 * LayerNorm forward, per row n of inp[N,C] (eps 1e-5):
 *   mean = Σ x / C,  rstd = 1 / √(Σ (x - mean)² / C + eps)
 *   out = (x - mean) · rstd · weight + bias;  mean[n], rstd[n] kept for the backward.
 */
const layernormForward: KernelSource = {
  name: "layernorm_forward",
  buffers: 6,
  code: /* wgsl */ `
struct Params { o_out: u32, o_mean: u32, o_rstd: u32, o_inp: u32, o_weight: u32, o_bias: u32,
                N: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> inp: array<f32>;
@group(0) @binding(4) var<storage, read_write> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> bias: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ROW_ARGS}) {
  let n = rowIndex(wid, nwg);
  if (n >= p.N) { return; }
  let x = p.o_inp + n * p.C;
  var sum = 0.0;
  for (var i = lid; i < p.C; i += WG) { sum += inp[x + i]; }
  let m = reduceSum(sum, lid) / f32(p.C);
  var squares = 0.0;
  for (var i = lid; i < p.C; i += WG) { let d = inp[x + i] - m; squares += d * d; }
  let s = 1.0 / sqrt(reduceSum(squares, lid) / f32(p.C) + 1e-5);
  let o = p.o_out + n * p.C;
  for (var i = lid; i < p.C; i += WG) {
    out[o + i] = (inp[x + i] - m) * s * weight[p.o_weight + i] + bias[p.o_bias + i];
  }
  if (lid == 0u) {
    mean[p.o_mean + n] = m;
    rstd[p.o_rstd + n] = s;
  }
}
`,
};

/**
 * LayerNorm backward of the input, per row (accumulates): with xhat = (x - mean) · rstd and
 * dxhat = dout · weight,  dInp += (dxhat - mean(dxhat) - xhat · mean(dxhat · xhat)) · rstd.
 */
const layernormBackwardInput: KernelSource = {
  name: "layernorm_backward_input",
  buffers: 6,
  code: /* wgsl */ `
struct Params { o_dinp: u32, o_dout: u32, o_inp: u32, o_weight: u32, o_mean: u32, o_rstd: u32,
                N: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> inp: array<f32>;
@group(0) @binding(3) var<storage, read_write> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ROW_ARGS}) {
  let n = rowIndex(wid, nwg);
  if (n >= p.N) { return; }
  let x = n * p.C;
  let m = mean[p.o_mean + n];
  let s = rstd[p.o_rstd + n];
  var sumD = 0.0;
  var sumDX = 0.0;
  for (var i = lid; i < p.C; i += WG) {
    let xhat = (inp[p.o_inp + x + i] - m) * s;
    let dxhat = dout[p.o_dout + x + i] * weight[p.o_weight + i];
    sumD += dxhat;
    sumDX += dxhat * xhat;
  }
  let dNormMean = reduceSum(sumD, lid) / f32(p.C);
  let dNormNormMean = reduceSum(sumDX, lid) / f32(p.C);
  for (var i = lid; i < p.C; i += WG) {
    let xhat = (inp[p.o_inp + x + i] - m) * s;
    let dxhat = dout[p.o_dout + x + i] * weight[p.o_weight + i];
    dinp[p.o_dinp + x + i] += (dxhat - dNormMean - xhat * dNormNormMean) * s;
  }
}
`,
};

/**
 * LayerNorm backward of its parameters (accumulates), column sums over the N rows:
 *   dWeight[i] += Σ_n xhat[n,i] · dout[n,i],   dBias[i] += Σ_n dout[n,i].
 * A workgroup of 16 x 16 threads takes columns 16·wid.x + tx; lane ty sums rows ty, ty+16, ...;
 * a tree over the 16 lanes finishes. dWeight and dBias are one binding, `dparams`, at words
 * weight_at and bias_at of it: both are written, and WebGPU forbids two written bindings of a
 * dispatch to overlap, as the windows of neighbouring tensors of a packed buffer do.
 */
const layernormBackwardParams: KernelSource = {
  name: "layernorm_backward_params",
  buffers: 5,
  code: /* wgsl */ `
struct Params { o_dparams: u32, o_dout: u32, o_inp: u32, o_mean: u32, o_rstd: u32,
                weight_at: u32, bias_at: u32, N: u32, C: u32 }
@group(0) @binding(0) var<storage, read_write> dparams: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> inp: array<f32>;
@group(0) @binding(3) var<storage, read_write> mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
var<workgroup> sumW: array<f32, 256>; // [lane][column]
var<workgroup> sumB: array<f32, 256>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let col = wid.x * 16u + l.x;
  var w = 0.0;
  var b = 0.0;
  if (col < p.C) {
    for (var n = l.y; n < p.N; n += 16u) {
      let d = dout[p.o_dout + n * p.C + col];
      let xhat = (inp[p.o_inp + n * p.C + col] - mean[p.o_mean + n]) * rstd[p.o_rstd + n];
      w += xhat * d;
      b += d;
    }
  }
  let at = l.y * 16u + l.x;
  sumW[at] = w;
  sumB[at] = b;
  workgroupBarrier();
  for (var s = 8u; s > 0u; s >>= 1u) {
    if (l.y < s) {
      sumW[at] += sumW[at + s * 16u];
      sumB[at] += sumB[at + s * 16u];
    }
    workgroupBarrier();
  }
  if (l.y == 0u && col < p.C) {
    dparams[p.o_dparams + p.weight_at + col] += sumW[l.x];
    dparams[p.o_dparams + p.bias_at + col] += sumB[l.x];
  }
}
`,
};

/**
 * Bias backward (accumulates): dBias[j] += Σ_i dOut[i,j] over the M rows, laid out as the
 * parameter sums of the LayerNorm above.
 */
const biasBackward: KernelSource = {
  name: "bias_backward",
  buffers: 2,
  code: /* wgsl */ `
struct Params { o_dbias: u32, o_dout: u32, M: u32, N: u32 }
@group(0) @binding(0) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> sums: array<f32, 256>; // [lane][column]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) l: vec3u) {
  let col = wid.x * 16u + l.x;
  var sum = 0.0;
  if (col < p.N) {
    for (var i = l.y; i < p.M; i += 16u) { sum += dout[p.o_dout + i * p.N + col]; }
  }
  let at = l.y * 16u + l.x;
  sums[at] = sum;
  workgroupBarrier();
  for (var s = 8u; s > 0u; s >>= 1u) {
    if (l.y < s) { sums[at] += sums[at + s * 16u]; }
    workgroupBarrier();
  }
  if (l.y == 0u && col < p.N) { dbias[p.o_dbias + col] += sums[l.x]; }
}
`,
};

/**
 * Softmax with cross-entropy, per row n of logits[N,V]:
 *   probs = exp(logits - max) / Σ exp(logits - max),   losses[n] = -log probs[target[n]].
 * Targets are u32. The thread that writes the loss recomputes its probability with the same
 * operations as the thread that stored it, so no barrier is needed.
 */
const softmaxCrossEntropy: KernelSource = {
  name: "softmax_cross_entropy",
  buffers: 4,
  code: /* wgsl */ `
struct Params { o_losses: u32, o_probs: u32, o_logits: u32, o_targets: u32, N: u32, V: u32 }
@group(0) @binding(0) var<storage, read_write> losses: array<f32>;
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> targets: array<u32>;
@group(0) @binding(4) var<uniform> p: Params;
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ROW_ARGS}) {
  let n = rowIndex(wid, nwg);
  if (n >= p.N) { return; }
  let row = p.o_logits + n * p.V;
  var best = -3.4e38;
  for (var v = lid; v < p.V; v += WG) { best = max(best, logits[row + v]); }
  let m = reduceMax(best, lid);
  var sum = 0.0;
  for (var v = lid; v < p.V; v += WG) { sum += exp(logits[row + v] - m); }
  let total = reduceSum(sum, lid);
  let out = p.o_probs + n * p.V;
  for (var v = lid; v < p.V; v += WG) { probs[out + v] = exp(logits[row + v] - m) / total; }
  if (lid == 0u) {
    let answer = targets[p.o_targets + n];
    losses[p.o_losses + n] = -log(exp(logits[row + answer] - m) / total);
  }
}
`,
};

/** The row-wise kernels. */
export const ROW_SOURCES: readonly KernelSource[] = [
  layernormForward,
  layernormBackwardInput,
  layernormBackwardParams,
  biasBackward,
  softmaxCrossEntropy,
];
