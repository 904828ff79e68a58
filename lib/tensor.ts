/**
 * Float tensors and the numeric kernels under the model.
 *
 * Every hot spot of the model (matrix products, attention, layernorm, GELU, softmax and
 * cross-entropy, the optimizer's update) is a function here. Each has a plain TypeScript
 * reference, written to read like the math, that accepts Float32Array or Float64Array storage (the
 * gradient checks run it in float64). When the WebAssembly kernels are enabled
 * ({@link useKernels}) and every float32 argument lives in the kernels' memory, the call goes to
 * the SIMD kernel instead; the model code does not change.
 *
 * Conventions: row-major storage, shapes in comments, `out` arguments first. A matrix product's
 * weight is stored [in, out] (GPT-2's Conv1D layout).
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { KernelExports, KernelTier } from "./kernels/mod.ts";
import { createKernels, createSharedMemory, detectTier } from "./kernels/mod.ts";

/** Storage of a tensor: float32 for real work, float64 for the gradient checks. */
export type FloatArray = Float32Array | Float64Array;

// ---------------------------------------------------------------------------------------------
// Backend: which kernels run. "js" is the plain TypeScript below; "simd" and "relaxed" are the
// WebAssembly kernels, used for float32 arrays that live in the kernels' memory.

let wasm: KernelExports | null = null;
let wasmTier: KernelTier = "js";
/** The buffers of the kernels' memory (a shared memory gives a new buffer object after a grow). */
const wasmBuffers = new Set<ArrayBufferLike>();
let wasmMemory: WebAssembly.Memory | null = null;
/** The arena every model of this thread allocates from by default (see {@link defaultArena}). */
let sharedArena: Arena | null = null;

/**
 * Routes the kernels of this thread to a WebAssembly tier over `memory`, or back to plain
 * TypeScript with tier "js". Float32 arrays allocated with {@link Arena} in that memory then run
 * on the SIMD kernels; any other array keeps using the TypeScript reference.
 */
export function useKernels(tier: KernelTier, memory?: WebAssembly.Memory): void {
  wasmTier = tier;
  wasmBuffers.clear();
  sharedArena = null;
  if (tier === "js") {
    wasm = null;
    wasmMemory = null;
    return;
  }
  if (!memory) throw new Error(`kernel tier ${tier} needs a WebAssembly.Memory`);
  wasm = createKernels(tier, memory);
  wasmMemory = memory;
  wasmBuffers.add(memory.buffer);
}

/**
 * Picks the kernels for this thread: the tier asked for, or the fastest this runtime supports,
 * over a new shared memory. Returns the tier in use. Throws InputError when the tier asked for
 * is not supported here.
 */
export function setupKernels(tier?: KernelTier): KernelTier {
  const best = detectTier();
  const rank = { js: 0, simd: 1, relaxed: 2 };
  const chosen = tier ?? best;
  if (rank[chosen] > rank[best]) {
    throw new InputError(
      `kernel tier ${chosen} is not supported by this runtime (best: ${best}); choose another`,
    );
  }
  useKernels(chosen, chosen === "js" ? undefined : createSharedMemory(1 << 20));
  return chosen;
}

/** The kernel tier this thread runs ("relaxed", "simd" or "js"). */
export function kernelTier(): KernelTier {
  return wasmTier;
}

/** The WebAssembly memory the kernels of this thread use, or null for the "js" tier. */
export function kernelMemory(): WebAssembly.Memory | null {
  return wasmMemory;
}

/**
 * The arena of this thread's kernel memory, shared by every model and buffer allocated without
 * an explicit arena (so two models never overlap in the same memory).
 */
export function defaultArena(): Arena {
  sharedArena ??= new Arena(wasmMemory);
  return sharedArena;
}

/** Byte offset of `a` in the kernels' memory, or -1 when `a` cannot go to a WebAssembly kernel. */
function at(a: FloatArray): number {
  return a instanceof Float32Array && wasmBuffers.has(a.buffer) ? a.byteOffset : -1;
}

/** True when the WebAssembly kernels can take every array given (null counts as "none"). */
function onWasm(...arrays: (FloatArray | Uint16Array | null)[]): boolean {
  if (wasm === null) return false;
  for (const a of arrays) {
    if (a === null) continue;
    if (a instanceof Uint16Array) {
      if (!wasmBuffers.has(a.buffer)) return false;
    } else if (at(a) < 0) return false;
  }
  return true;
}

function ptr(a: FloatArray | Uint16Array | null): number {
  return a === null ? 0 : a.byteOffset;
}

/**
 * A bump allocator of float32 and uint16 arrays in the kernels' memory (or on the JS heap for the
 * "js" tier). Buffers are allocated once, up front, and reused by every step. The first 64 KiB of
 * the memory are left free: offset 0 means "none" to the kernels.
 */
export class Arena {
  readonly memory: WebAssembly.Memory | null;
  #offset: number;

  constructor(memory: WebAssembly.Memory | null, offset = 65536) {
    this.memory = memory;
    this.#offset = offset;
  }

  /** Bytes handed out so far (the end of the last allocation). */
  get end(): number {
    return this.#offset;
  }

  /** Bytes an allocation of `bytes` takes (64-byte aligned, like a cache line). */
  static size(bytes: number): number {
    return Math.ceil(bytes / 64) * 64;
  }

  /** Reserves `bytes` of the memory (growing it if needed) and returns their byte offset. */
  reserve(bytes: number): number {
    return this.#reserve(bytes);
  }

  #reserve(bytes: number): number {
    const start = this.#offset;
    this.#offset = start + Arena.size(bytes);
    const memory = this.memory!;
    const need = this.#offset - memory.buffer.byteLength;
    if (need > 0) {
      memory.grow(Math.ceil(need / 65536));
      wasmBuffers.add(memory.buffer);
    }
    return start;
  }

  /** A zeroed float32 array of n elements. */
  f32(n: number): Float32Array {
    if (this.memory === null) return new Float32Array(n);
    const start = this.#reserve(n * 4);
    return new Float32Array(this.memory.buffer, start, n);
  }

  /** A zeroed uint16 array of n elements (token ids). */
  u16(n: number): Uint16Array {
    if (this.memory === null) return new Uint16Array(n);
    const start = this.#reserve(n * 2);
    return new Uint16Array(this.memory.buffer, start, n);
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix products. Weights are [in, out]; `inp` rows are the M tokens.

/** out[M,N] = inp[M,K] · w[K,N] + bias[N] (bias may be null). */
export function matmul(
  out: FloatArray,
  inp: FloatArray,
  w: FloatArray,
  bias: FloatArray | null,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(out, inp, w, bias)) {
    wasm!.matmul(ptr(out), ptr(inp), ptr(w), ptr(bias), M, K, N);
    return;
  }
  for (let i = 0; i < M; i++) {
    const o = i * N;
    for (let j = 0; j < N; j++) out[o + j] = bias === null ? 0 : bias[j];
    for (let k = 0; k < K; k++) {
      const a = inp[i * K + k];
      const wRow = k * N;
      for (let j = 0; j < N; j++) out[o + j] += a * w[wRow + j];
    }
  }
}

/** out[M,N] = a[M,K] · b[N,K]^T. The output head: logits = x · wte^T. */
export function matmulNT(
  out: FloatArray,
  a: FloatArray,
  b: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(out, a, b)) {
    wasm!.matmul_nt(ptr(out), ptr(a), ptr(b), M, K, N);
    return;
  }
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += a[i * K + k] * b[j * K + k];
      out[i * N + j] = sum;
    }
  }
}

/**
 * dInp[M,K] = dOut[M,N] · w[K,N]^T (overwrites dInp): the same product as matmulNT with the roles
 * of K and N swapped, with its own WebAssembly kernel (tiled for these shapes).
 */
export function matmulBackwardInput(
  dInp: FloatArray,
  dOut: FloatArray,
  w: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(dInp, dOut, w)) {
    wasm!.matmul_backward_input(ptr(dInp), ptr(dOut), ptr(w), M, K, N);
    return;
  }
  matmulNT(dInp, dOut, w, M, N, K);
}

/** dW[K,N] += inp[M,K]^T · dOut[M,N] (accumulates). */
export function matmulBackwardWeight(
  dW: FloatArray,
  inp: FloatArray,
  dOut: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(dW, inp, dOut)) {
    wasm!.matmul_backward_weight(ptr(dW), ptr(inp), ptr(dOut), M, K, N);
    return;
  }
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const a = inp[i * K + k];
      const dRow = k * N;
      for (let j = 0; j < N; j++) dW[dRow + j] += a * dOut[i * N + j];
    }
  }
}

/** dBias[N] += column sums of dOut[M,N]. */
export function biasBackward(dBias: FloatArray, dOut: FloatArray, M: number, N: number): void {
  if (onWasm(dBias, dOut)) {
    wasm!.bias_backward(ptr(dBias), ptr(dOut), M, N);
    return;
  }
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) dBias[j] += dOut[i * N + j];
  }
}

// ---------------------------------------------------------------------------------------------
// Causal self-attention over a fused qkv tensor. Row t of qkv holds q | k | v, each C wide; head
// h uses columns h*hs .. (h+1)*hs of each. Masked positions (j > t) are never computed.

/**
 * out[B,T,C] = softmax(q·k^T / sqrt(hs), causal) · v, heads concatenated; the probabilities are
 * kept in probs[B,H,T,T] for the backward pass (zero above the diagonal).
 */
export function attentionForward(
  out: FloatArray,
  probs: FloatArray,
  qkv: FloatArray,
  B: number,
  T: number,
  C: number,
  H: number,
): void {
  if (onWasm(out, probs, qkv)) {
    wasm!.attention_forward(ptr(out), ptr(probs), ptr(qkv), B, T, C, H);
    return;
  }
  // each sequence is attentionRows over all of its rows
  for (let b = 0; b < B; b++) {
    attentionRows(
      out.subarray(b * T * C, (b + 1) * T * C),
      probs.subarray(b * H * T * T, (b + 1) * H * T * T),
      qkv.subarray(b * T * 3 * C, (b + 1) * T * 3 * C),
      T,
      0,
      T,
      C,
      H,
    );
  }
}

/**
 * Backward of {@link attentionForward}: dQkv[B,T,3C] is overwritten. `scratch` holds
 * {@link attentionBackwardScratchSize}(T, C, H) floats for the WebAssembly kernels (the plain
 * TypeScript reference needs only T; a smaller scratch makes the call use the reference).
 */
export function attentionBackward(
  dQkv: FloatArray,
  scratch: FloatArray,
  dOut: FloatArray,
  qkv: FloatArray,
  probs: FloatArray,
  B: number,
  T: number,
  C: number,
  H: number,
): void {
  if (
    onWasm(dQkv, scratch, dOut, qkv, probs) &&
    scratch.length >= attentionBackwardScratchSize(T, C, H)
  ) {
    wasm!.attention_backward(ptr(dQkv), ptr(scratch), ptr(dOut), ptr(qkv), ptr(probs), B, T, C, H);
    return;
  }
  const hs = C / H;
  const C3 = 3 * C;
  const scale = 1 / Math.sqrt(hs);
  dQkv.fill(0, 0, B * T * C3);
  const dProbs = scratch;
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const q = (b * T + t) * C3 + h * hs;
        const p = ((b * H + h) * T + t) * T;
        const o = (b * T + t) * C + h * hs;
        // out_t = Σ_j P_j v_j  →  dP_j = dout_t · v_j,  dv_j += P_j dout_t
        let dot = 0; // Σ_j P_j dP_j
        for (let j = 0; j <= t; j++) {
          const v = (b * T + j) * C3 + 2 * C + h * hs;
          const pj = probs[p + j];
          let dp = 0;
          for (let i = 0; i < hs; i++) {
            dp += dOut[o + i] * qkv[v + i];
            dQkv[v + i] += pj * dOut[o + i];
          }
          dProbs[j] = dp;
          dot += pj * dp;
        }
        // softmax: dS_j = P_j (dP_j - Σ P dP);  S_j = scale q_t·k_j
        for (let j = 0; j <= t; j++) {
          const k = (b * T + j) * C3 + C + h * hs;
          const dS = probs[p + j] * (dProbs[j] - dot) * scale;
          for (let i = 0; i < hs; i++) {
            dQkv[q + i] += dS * qkv[k + i];
            dQkv[k + i] += dS * qkv[q + i];
          }
        }
      }
    }
  }
}

/**
 * Floats of scratch that {@link attentionBackward} needs to run on the WebAssembly kernels:
 * T·T (the gradient of one head's probabilities) + T·(C/H) (one head's values, transposed).
 */
export function attentionBackwardScratchSize(T: number, C: number, H: number): number {
  return T * (T + Math.floor(C / H));
}

/**
 * Causal attention of the query rows t = p0 .. p0+n-1 of ONE sequence (the KV-cache path).
 * qkv[T,3C] holds q | k | v per position (rows 0 .. p0+n-1 are read); row t attends to positions
 * 0..t. probs[H,T,T] receives rows (h, t) of those positions (zero after t; other rows are left
 * as they are); out[n,C] receives their outputs, heads concatenated (row r is position p0+r).
 */
export function attentionRows(
  out: FloatArray,
  probs: FloatArray,
  qkv: FloatArray,
  T: number,
  p0: number,
  n: number,
  C: number,
  H: number,
): void {
  if (!(p0 >= 0 && n >= 0 && p0 + n <= T)) {
    throw new RangeError(`attentionRows: rows ${p0} .. ${p0 + n - 1} are outside [0, ${T})`);
  }
  if (onWasm(out, probs, qkv)) {
    wasm!.attention_rows(ptr(out), ptr(probs), ptr(qkv), T, p0, n, C, H);
    return;
  }
  const hs = C / H;
  const C3 = 3 * C;
  const scale = 1 / Math.sqrt(hs);
  for (let r = 0; r < n; r++) {
    const t = p0 + r;
    for (let h = 0; h < H; h++) {
      const q = t * C3 + h * hs;
      const p = (h * T + t) * T;
      // scores[j] = q_t · k_j * scale, j <= t; then a stable softmax
      let max = -Infinity;
      for (let j = 0; j <= t; j++) {
        const k = j * C3 + C + h * hs;
        let dot = 0;
        for (let i = 0; i < hs; i++) dot += qkv[q + i] * qkv[k + i];
        probs[p + j] = dot * scale;
        if (probs[p + j] > max) max = probs[p + j];
      }
      let sum = 0;
      for (let j = 0; j <= t; j++) {
        const e = Math.exp(probs[p + j] - max);
        probs[p + j] = e;
        sum += e;
      }
      for (let j = 0; j <= t; j++) probs[p + j] /= sum;
      for (let j = t + 1; j < T; j++) probs[p + j] = 0;
      // out_r = Σ_j probs[j] v_j
      const o = r * C + h * hs;
      for (let i = 0; i < hs; i++) out[o + i] = 0;
      for (let j = 0; j <= t; j++) {
        const v = j * C3 + 2 * C + h * hs;
        const pj = probs[p + j];
        for (let i = 0; i < hs; i++) out[o + i] += pj * qkv[v + i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension, eps 1e-5.

/** out[N,C] = (inp - mean) * rstd * weight + bias; keeps mean[N] and rstd[N] for the backward. */
export function layernormForward(
  out: FloatArray,
  mean: FloatArray,
  rstd: FloatArray,
  inp: FloatArray,
  weight: FloatArray,
  bias: FloatArray,
  N: number,
  C: number,
): void {
  if (onWasm(out, mean, rstd, inp, weight, bias)) {
    wasm!.layernorm_forward(ptr(out), ptr(mean), ptr(rstd), ptr(inp), ptr(weight), ptr(bias), N, C);
    return;
  }
  for (let n = 0; n < N; n++) {
    const x = n * C;
    let m = 0;
    for (let i = 0; i < C; i++) m += inp[x + i];
    m /= C;
    let variance = 0;
    for (let i = 0; i < C; i++) variance += (inp[x + i] - m) ** 2;
    variance /= C;
    const s = 1 / Math.sqrt(variance + 1e-5);
    for (let i = 0; i < C; i++) out[x + i] = (inp[x + i] - m) * s * weight[i] + bias[i];
    mean[n] = m;
    rstd[n] = s;
  }
}

/** Backward of {@link layernormForward}: dInp, dWeight and dBias all accumulate (+=). */
export function layernormBackward(
  dInp: FloatArray,
  dWeight: FloatArray,
  dBias: FloatArray,
  dOut: FloatArray,
  inp: FloatArray,
  weight: FloatArray,
  mean: FloatArray,
  rstd: FloatArray,
  N: number,
  C: number,
): void {
  if (onWasm(dInp, dWeight, dBias, dOut, inp, weight, mean, rstd)) {
    wasm!.layernorm_backward(
      ptr(dInp),
      ptr(dWeight),
      ptr(dBias),
      ptr(dOut),
      ptr(inp),
      ptr(weight),
      ptr(mean),
      ptr(rstd),
      N,
      C,
    );
    return;
  }
  for (let n = 0; n < N; n++) {
    const x = n * C;
    const m = mean[n];
    const s = rstd[n];
    // xhat = (x - mean) * rstd;  dxhat = dout * weight
    let dNormMean = 0; // mean of dxhat
    let dNormNormMean = 0; // mean of dxhat * xhat
    for (let i = 0; i < C; i++) {
      const xhat = (inp[x + i] - m) * s;
      const dxhat = dOut[x + i] * weight[i];
      dNormMean += dxhat;
      dNormNormMean += dxhat * xhat;
    }
    dNormMean /= C;
    dNormNormMean /= C;
    for (let i = 0; i < C; i++) {
      const xhat = (inp[x + i] - m) * s;
      const dxhat = dOut[x + i] * weight[i];
      dBias[i] += dOut[x + i];
      dWeight[i] += xhat * dOut[x + i];
      dInp[x + i] += (dxhat - dNormMean - xhat * dNormNormMean) * s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

const GELU_SCALE = Math.sqrt(2 / Math.PI);

/** out[n] = gelu(inp[n]). */
export function geluForward(out: FloatArray, inp: FloatArray, n: number): void {
  if (onWasm(out, inp)) {
    wasm!.gelu_forward(ptr(out), ptr(inp), n);
    return;
  }
  for (let i = 0; i < n; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
  }
}

/** dInp[n] = gelu'(inp[n]) * dOut[n] (overwrites dInp). */
export function geluBackward(dInp: FloatArray, inp: FloatArray, dOut: FloatArray, n: number): void {
  if (onWasm(dInp, inp, dOut)) {
    wasm!.gelu_backward(ptr(dInp), ptr(inp), ptr(dOut), n);
    return;
  }
  for (let i = 0; i < n; i++) {
    const x = inp[i];
    const u = GELU_SCALE * (x + 0.044715 * x * x * x);
    const th = Math.tanh(u);
    const dU = GELU_SCALE * (1 + 3 * 0.044715 * x * x);
    dInp[i] = (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * dU) * dOut[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy over the vocabulary.

/** probs[N,V] = softmax(logits[N,V]); losses[N] = -log probs[n, targets[n]]. */
export function softmaxCrossEntropy(
  losses: FloatArray,
  probs: FloatArray,
  logits: FloatArray,
  targets: Uint16Array,
  N: number,
  V: number,
): void {
  if (onWasm(losses, probs, logits, targets)) {
    wasm!.softmax_crossentropy(ptr(losses), ptr(probs), ptr(logits), ptr(targets), N, V);
    return;
  }
  for (let n = 0; n < N; n++) {
    const row = n * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[row + v] > max) max = logits[row + v];
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(logits[row + v] - max);
      probs[row + v] = e;
      sum += e;
    }
    for (let v = 0; v < V; v++) probs[row + v] /= sum;
    losses[n] = -Math.log(probs[row + targets[n]]);
  }
}

/** dLogits[N,V] = (probs - onehot(targets)) * scale (overwrites); scale is 1/N for a mean loss. */
export function softmaxCrossEntropyBackward(
  dLogits: FloatArray,
  probs: FloatArray,
  targets: Uint16Array,
  N: number,
  V: number,
  scale: number,
): void {
  if (onWasm(dLogits, probs, targets)) {
    wasm!.crossentropy_softmax_backward(ptr(dLogits), ptr(probs), ptr(targets), N, V, scale);
    return;
  }
  for (let n = 0; n < N; n++) {
    const row = n * V;
    for (let v = 0; v < V; v++) dLogits[row + v] = probs[row + v] * scale;
    dLogits[row + targets[n]] -= scale;
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise helpers and the optimizer's update.

/** out[n] = a[n] + b[n] (out may alias a). */
export function add(out: FloatArray, a: FloatArray, b: FloatArray, n: number): void {
  if (onWasm(out, a, b)) {
    wasm!.add(ptr(out), ptr(a), ptr(b), n);
    return;
  }
  for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/** out[n] = a[n] * b[n]. */
export function mul(out: FloatArray, a: FloatArray, b: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
}

/** x[n] *= m[n]. */
export function mulInPlace(x: FloatArray, m: FloatArray, n: number): void {
  for (let i = 0; i < n; i++) x[i] *= m[i];
}

/** dst[n] += src[n]. */
export function addInPlace(dst: FloatArray, src: FloatArray, n: number): void {
  if (onWasm(dst, src)) {
    wasm!.add_inplace(ptr(dst), ptr(src), n);
    return;
  }
  for (let i = 0; i < n; i++) dst[i] += src[i];
}

/** x[n] *= s. */
export function scaleInPlace(x: FloatArray, n: number, s: number): void {
  if (onWasm(x)) {
    wasm!.scale_inplace(ptr(x), n, s);
    return;
  }
  for (let i = 0; i < n; i++) x[i] *= s;
}

/** Σ x[i]^2, accumulated in float64. */
export function sumSquares(x: FloatArray, n: number): number {
  if (onWasm(x)) return wasm!.sum_squares(ptr(x), n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[i] * x[i];
  return sum;
}

/**
 * One AdamW update of n parameters: m, v are the moment estimates; bc1 = 1 - beta1^t and
 * bc2 = 1 - beta2^t the bias corrections; weight decay is decoupled (applied to the parameter).
 */
export function adamwUpdate(
  param: FloatArray,
  grad: FloatArray,
  m: FloatArray,
  v: FloatArray,
  n: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  bc1: number,
  bc2: number,
): void {
  if (onWasm(param, grad, m, v)) {
    wasm!.adamw(
      ptr(param),
      ptr(grad),
      ptr(m),
      ptr(v),
      n,
      lr,
      beta1,
      beta2,
      eps,
      weightDecay,
      bc1,
      bc2,
    );
    return;
  }
  for (let i = 0; i < n; i++) {
    const g = grad[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    const mHat = m[i] / bc1;
    const vHat = v[i] / bc2;
    param[i] -= lr * (mHat / (Math.sqrt(vHat) + eps) + weightDecay * param[i]);
  }
}
