/**
 * WGSL of causal self-attention over whole sequences, forward and backward, on the fused qkv
 * tensor of `lib/tensor.ts`: row t of qkv [B, T, 3C] holds q | k | v, each C wide; head h uses
 * columns h·hs .. (h+1)·hs of each, hs = C / H; position t attends to positions 0..t.
 *
 * Each kernel gives one (sequence b, head h, position t) row to a workgroup of
 * {@linkcode ROW_THREADS} threads (rows numbered (b·H + h)·T + t; the forward of a KV cache
 * computes only positions start .. start+rows-1, numbered (b·H + h)·rows + t - start): threads
 * stride over the
 * positions j for the scores and over the head's columns for the weighted sums. The backward runs
 * in two dispatches so that every element of dQkv is written by one thread, once, without atomics:
 * first the score gradients dS of every row into the scratch, then dq, dk and dv of every row.
 *
 * @module
 */

import type { KernelSource } from "./pipelines.ts";
import { ROW_HELPERS } from "./rows.ts";

/**
 * The head's geometry, shared by the attention kernels; each declares its uniform block `p`:
 * the element offsets of its buffers, then B, T, C, H and scale = 1/√hs.
 */
const GEOMETRY = /* wgsl */ `
// The row of workgroup "row" = (b·H + h)·count + t - first, over positions first ..
// first+count-1, and where its head's q, k, v columns start.
struct Row { b: u32, h: u32, t: u32, hs: u32, q: u32, k: u32, v: u32 }

fn rowOf(row: u32, first: u32, count: u32) -> Row {
  let t = first + row % count;
  let bh = row / count;
  let h = bh % p.H;
  let hs = p.C / p.H;
  let b = bh / p.H;
  return Row(b, h, t, hs, h * hs, p.C + h * hs, 2u * p.C + h * hs);
}

// Offset of row j of sequence b in qkv [B, T, 3C] (relative to the tensor's start).
fn qkvRow(b: u32, j: u32) -> u32 {
  return (b * p.T + j) * 3u * p.C;
}
`;

const ENTRY_ARGS = "@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, " +
  "@builtin(local_invocation_index) lid: u32";

/**
 * Forward, per row (b, h, t), t = start .. start+rows-1 (training: 0 .. T-1):
 *   S_j = q_t · k_j · scale (j <= t),  P = softmax(S) (stable: minus the max),  P_j = 0 for j > t
 *   out_t = Σ_j P_j v_j.
 * Row (h, t) of probs [B, H, T, T] holds S, then exp(S - max), then P; a storage barrier
 * publishes the row before the threads switch from positions to columns. Bindings: out
 * [B, rows, C], probs, qkv [B, T, 3C] (rows 0 .. start+rows-1 filled: a KV cache's).
 */
const attentionForward: KernelSource = {
  name: "attention_forward",
  buffers: 3,
  code: /* wgsl */ `
struct Params { o_out: u32, o_probs: u32, o_qkv: u32, B: u32, T: u32, C: u32, H: u32, start: u32,
                rows: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;
${GEOMETRY}
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ENTRY_ARGS}) {
  let row = rowIndex(wid, nwg);
  if (row >= p.B * p.H * p.rows) { return; }
  let r = rowOf(row, p.start, p.rows);
  let q = p.o_qkv + qkvRow(r.b, r.t) + r.q;
  let pr = p.o_probs + ((r.b * p.H + r.h) * p.T + r.t) * p.T;
  var best = -3.4e38;
  for (var j = lid; j <= r.t; j += WG) {
    let k = p.o_qkv + qkvRow(r.b, j) + r.k;
    var dot = 0.0;
    for (var i = 0u; i < r.hs; i++) { dot += qkv[q + i] * qkv[k + i]; }
    let s = dot * p.scale;
    probs[pr + j] = s;
    best = max(best, s);
  }
  let m = reduceMax(best, lid);
  var sum = 0.0;
  for (var j = lid; j <= r.t; j += WG) {
    let e = exp(probs[pr + j] - m);
    probs[pr + j] = e;
    sum += e;
  }
  let total = reduceSum(sum, lid);
  for (var j = lid; j < p.T; j += WG) {
    probs[pr + j] = select(0.0, probs[pr + j] / total, j <= r.t);
  }
  storageBarrier();
  let o = p.o_out + (r.b * p.rows + r.t - p.start) * p.C + r.h * r.hs;
  for (var i = lid; i < r.hs; i += WG) {
    var acc = 0.0;
    for (var j = 0u; j <= r.t; j++) {
      acc += probs[pr + j] * qkv[p.o_qkv + qkvRow(r.b, j) + r.v + i];
    }
    out[o + i] = acc;
  }
}
`,
};

/**
 * Backward, first dispatch, per row (b, h, t): the score gradients
 *   dP_j = dout_t · v_j,   dS_j = P_j (dP_j - Σ_j' P_j' dP_j') · scale   (j <= t)
 * into scratch [B, H, T, T] (entries j > t are not written; nothing reads them).
 * Bindings: scratch, dOut [B,T,C], qkv, probs.
 */
const attentionBackwardScores: KernelSource = {
  name: "attention_backward_scores",
  buffers: 4,
  code: /* wgsl */ `
struct Params { o_scratch: u32, o_dout: u32, o_qkv: u32, o_probs: u32, B: u32, T: u32, C: u32,
                H: u32, scale: f32 }
@group(0) @binding(0) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(1) var<storage, read_write> dout: array<f32>;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> probs: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;
${GEOMETRY}
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ENTRY_ARGS}) {
  let row = rowIndex(wid, nwg);
  if (row >= p.B * p.H * p.T) { return; }
  let r = rowOf(row, 0u, p.T);
  let o = p.o_dout + (r.b * p.T + r.t) * p.C + r.h * r.hs;
  let pr = row * p.T;
  var dot = 0.0;
  for (var j = lid; j <= r.t; j += WG) {
    let v = p.o_qkv + qkvRow(r.b, j) + r.v;
    var dp = 0.0;
    for (var i = 0u; i < r.hs; i++) { dp += dout[o + i] * qkv[v + i]; }
    scratch[p.o_scratch + pr + j] = dp;
    dot += probs[p.o_probs + pr + j] * dp;
  }
  let total = reduceSum(dot, lid);
  for (var j = lid; j <= r.t; j += WG) {
    let at = p.o_scratch + pr + j;
    scratch[at] = probs[p.o_probs + pr + j] * (scratch[at] - total) * p.scale;
  }
}
`,
};

/**
 * Backward, second dispatch, per row (b, h, r) (overwrites dQkv; each element written once):
 *   dq_r = Σ_{j<=r} dS[r,j] k_j,   dk_r = Σ_{t>=r} dS[t,r] q_t,   dv_r = Σ_{t>=r} P[t,r] dout_t.
 * Bindings: dQkv [B,T,3C], scratch (dS), dOut, qkv, probs.
 */
const attentionBackwardQkv: KernelSource = {
  name: "attention_backward_qkv",
  buffers: 5,
  code: /* wgsl */ `
struct Params { o_dqkv: u32, o_scratch: u32, o_dout: u32, o_qkv: u32, o_probs: u32, B: u32,
                T: u32, C: u32, H: u32 }
@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(2) var<storage, read_write> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(4) var<storage, read_write> probs: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;
${GEOMETRY}
${ROW_HELPERS}
@compute @workgroup_size(WG)
fn main(${ENTRY_ARGS}) {
  let row = rowIndex(wid, nwg);
  if (row >= p.B * p.H * p.T) { return; }
  let r = rowOf(row, 0u, p.T);
  let mine = qkvRow(r.b, r.t);
  let head = row - r.t; // row (b, h, 0): the head's T x T block of scratch and probs
  for (var i = lid; i < r.hs; i += WG) {
    var dq = 0.0;
    for (var j = 0u; j <= r.t; j++) {
      dq += scratch[p.o_scratch + (head + r.t) * p.T + j] * qkv[p.o_qkv + qkvRow(r.b, j) + r.k + i];
    }
    var dk = 0.0;
    var dv = 0.0;
    for (var t = r.t; t < p.T; t++) {
      let at = (head + t) * p.T + r.t;
      dk += scratch[p.o_scratch + at] * qkv[p.o_qkv + qkvRow(r.b, t) + r.q + i];
      dv += probs[p.o_probs + at] * dout[p.o_dout + (r.b * p.T + t) * p.C + r.h * r.hs + i];
    }
    dqkv[p.o_dqkv + mine + r.q + i] = dq;
    dqkv[p.o_dqkv + mine + r.k + i] = dk;
    dqkv[p.o_dqkv + mine + r.v + i] = dv;
  }
}
`,
};

/** The attention kernels. */
export const ATTENTION_SOURCES: readonly KernelSource[] = [
  attentionForward,
  attentionBackwardScores,
  attentionBackwardQkv,
];
