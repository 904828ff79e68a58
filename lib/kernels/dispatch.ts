/**
 * Dispatch: which kernels run. Each operation of `lib/tensor.ts` is exported here under the same
 * name and signature; a call goes to the WebAssembly kernel of the current tier when every
 * float32 array it is given lives in the kernels' memory (an {@linkcode Arena} allocation), and
 * to the plain TypeScript reference otherwise (float64 arrays, the "js" tier). The model code
 * imports these and does not change with the tier.
 *
 * @module
 */

import { InputError } from "../errors.ts";
import * as ref from "../tensor.ts";
import type { AdamWStep, FloatArray } from "../tensor.ts";
import { Arena, memoryOf, registerMemory } from "./arena.ts";
import type { KernelExports, KernelTier } from "./mod.ts";
import { createKernels, createSharedMemory, detectTier, PACK_BYTES } from "./mod.ts";
import { VariantChooser } from "./tune.ts";

export type { FloatArray } from "../tensor.ts";
export { Arena, type Lease } from "./arena.ts";

let wasm: KernelExports | null = null;
let tier: KernelTier = "js";
let memory: WebAssembly.Memory | null = null;
/** The arena every model of this thread allocates from by default. */
let arena: Arena | null = null;

/** The matmul forms with variants: the register-tile forms and the dot-product forms. */
export interface KernelVariants {
  /** Variant of `matmul` (Y = X·W), -1 or absent: chosen by timing. */
  matmul?: number;
  /** Variant of `matmul_backward_weight` (dW += Xᵀ·dY). */
  backwardWeight?: number;
  /** Variant of `matmul_nt` and `matmul_backward_input` (products with a transposed operand). */
  nt?: number;
}
/** Time spent in each kernel of this thread while profiling (see profileKernels), else null. */
let profile: Map<string, { ms: number; calls: number }> | null = null;
/** The kernels without the profiling wrapper. */
let plainWasm: KernelExports | null = null;

/**
 * Starts (true) or stops (false) timing every kernel call of this thread; returns the time spent
 * in each kernel since the last start (ms and calls, by export name). For the benchmark: the
 * timing costs about a microsecond a call.
 */
export function profileKernels(on: boolean): Map<string, { ms: number; calls: number }> {
  const spent = profile ?? new Map();
  profile = on ? new Map() : null;
  wasm = on && plainWasm !== null ? timed(plainWasm, profile!) : plainWasm;
  return spent;
}

/** The kernels with each call timed into `into`. */
function timed(k: KernelExports, into: Map<string, { ms: number; calls: number }>): KernelExports {
  const wrapped: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(k)) {
    if (typeof f !== "function") continue;
    wrapped[name] = (...args: number[]) => {
      const t0 = performance.now();
      const result = f(...args);
      const entry = into.get(name) ?? { ms: 0, calls: 0 };
      entry.ms += performance.now() - t0;
      entry.calls++;
      into.set(name, entry);
      return result;
    };
  }
  return wrapped as unknown as KernelExports;
}

/** Forced variants, kept across useKernels (workers get them in their start message). */
let forced: KernelVariants = {};
let choosers = {
  matmul: new VariantChooser(1),
  backwardWeight: new VariantChooser(1),
  nt: new VariantChooser(1),
};

/**
 * Forces variants of the matmul forms for this thread (absent or -1: chosen by timing at first
 * use). Every variant gives the same bits; this is for measuring them. RangeError past the count.
 */
export function forceVariants(variants: KernelVariants): void {
  const before = forced;
  forced = { ...variants };
  try {
    if (wasm !== null) choosers = makeChoosers(wasm);
  } catch (e) {
    forced = before;
    throw e;
  }
}

/** The forced variants (for workers to force the same). */
export function forcedVariants(): KernelVariants {
  return { ...forced };
}

/** The variant chosen so far per form and shape ("MxKxN"), for the benchmark's report. */
export function variantChoices(): Record<keyof KernelVariants, Record<string, number>> {
  return {
    matmul: choosers.matmul.choices(),
    backwardWeight: choosers.backwardWeight.choices(),
    nt: choosers.nt.choices(),
  };
}

function makeChoosers(k: KernelExports) {
  const chooser = (form: number, v: number | undefined) => {
    const count = k.variant_count(form);
    if (v !== undefined && v >= count) {
      throw new RangeError(`variant ${v} does not exist: this form has ${count} (0..${count - 1})`);
    }
    return new VariantChooser(count, v ?? -1);
  };
  return {
    matmul: chooser(0, forced.matmul),
    backwardWeight: chooser(0, forced.backwardWeight),
    nt: chooser(1, forced.nt),
  };
}

/**
 * The scratch of the packed matmul variants in this thread (PACK_BYTES at this byte offset), or 0
 * to take it from the thread's arena at first use (a worker is given its own).
 */
let scratch = 0;

/**
 * This thread's scratch for the packed matmul variants; 0 (they then read in place, with the same
 * results) where a plain memory sized for its model has no room for it.
 */
function packScratch(): number {
  if (scratch === 0) {
    try {
      scratch = defaultArena().lease().reserve(PACK_BYTES);
    } catch {
      scratch = -1;
    }
  }
  return Math.max(scratch, 0);
}

/**
 * Routes the kernels of this thread to a WebAssembly tier over `memory` (shared, or plain for a
 * page without cross-origin isolation), or back to plain TypeScript with tier "js". A worker
 * gives the offset of its scratch for the packed matmul variants (PACK_BYTES); the main thread
 * takes one from its arena.
 */
export function useKernels(chosen: KernelTier, over?: WebAssembly.Memory, scratchAt = 0): void {
  tier = chosen;
  scratch = scratchAt;
  arena = null;
  wasm = null;
  plainWasm = null;
  memory = null;
  if (chosen === "js") return;
  if (!over) throw new Error(`kernel tier ${chosen} needs a WebAssembly.Memory`);
  plainWasm = createKernels(chosen, over);
  wasm = profile === null ? plainWasm : timed(plainWasm, profile);
  choosers = makeChoosers(plainWasm);
  memory = over;
  registerMemory(over);
}

/**
 * Picks the kernels of this thread: the tier asked for, or the fastest this runtime supports,
 * over a new memory: shared (growable, for workers) unless `shared` is false, then a plain one of
 * `bytes`. Returns the tier in use; InputError when the tier is not supported here.
 */
export function setupKernels(wanted?: KernelTier, shared = true, bytes = 1 << 20): KernelTier {
  const best = detectTier({ requireShared: shared });
  const rank = { js: 0, simd: 1, relaxed: 2 };
  const chosen = wanted ?? best;
  if (rank[chosen] > rank[best]) {
    throw new InputError(
      `kernel tier ${chosen} is not supported by this runtime (best: ${best}); choose another`,
    );
  }
  if (chosen === "js") useKernels("js");
  else if (shared) useKernels(chosen, createSharedMemory(bytes));
  else useKernels(chosen, new WebAssembly.Memory({ initial: Math.ceil(bytes / 65536) }));
  return chosen;
}

/** The kernel tier this thread runs ("relaxed", "simd" or "js"). */
export function kernelTier(): KernelTier {
  return tier;
}

/** The WebAssembly memory of this thread's kernels, or null for the "js" tier. */
export function kernelMemory(): WebAssembly.Memory | null {
  return memory;
}

/** The arena of this thread's kernel memory, shared by every model allocated without one. */
export function defaultArena(): Arena {
  arena ??= new Arena(memory);
  return arena;
}

/** True when the WebAssembly kernels can take every array given (null counts as "none"). */
function onWasm(...arrays: (FloatArray | Uint16Array | null)[]): boolean {
  if (wasm === null) return false;
  for (const a of arrays) {
    if (a === null) continue;
    if (a instanceof Float64Array || memoryOf(a) !== memory) return false;
  }
  return true;
}

function ptr(a: FloatArray | Uint16Array | null): number {
  return a === null ? 0 : a.byteOffset;
}

// ---------------------------------------------------------------------------------------------
// The operations (see lib/tensor.ts for what each computes)

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
    const [o, x, wp, b] = [ptr(out), ptr(inp), ptr(w), ptr(bias)];
    const sc = packScratch();
    choosers.matmul.run(M, K, N, (v) => wasm!.matmul(o, x, wp, b, M, K, N, v, sc));
  } else ref.matmul(out, inp, w, bias, M, K, N);
}

export function matmulNT(
  out: FloatArray,
  a: FloatArray,
  b: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(out, a, b)) {
    const [o, ap, bp] = [ptr(out), ptr(a), ptr(b)];
    choosers.nt.run(M, K, N, (v) => wasm!.matmul_nt(o, ap, bp, M, K, N, v));
  } else ref.matmulNT(out, a, b, M, K, N);
}

export function matmulBackwardInput(
  dInp: FloatArray,
  dOut: FloatArray,
  w: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(dInp, dOut, w)) {
    const [d, dy, wp] = [ptr(dInp), ptr(dOut), ptr(w)];
    choosers.nt.run(M, N, K, (v) => wasm!.matmul_backward_input(d, dy, wp, M, K, N, v));
  } else ref.matmulNT(dInp, dOut, w, M, N, K); // the same product as matmulNT, K and N swapped
}

export function matmulBackwardWeight(
  dW: FloatArray,
  inp: FloatArray,
  dOut: FloatArray,
  M: number,
  K: number,
  N: number,
): void {
  if (onWasm(dW, inp, dOut)) {
    const [d, x, dy] = [ptr(dW), ptr(inp), ptr(dOut)];
    const sc = packScratch();
    choosers.backwardWeight.run(
      K,
      M,
      N,
      (v) => wasm!.matmul_backward_weight(d, x, dy, M, K, N, v, sc),
    );
  } else ref.matmulBackwardWeight(dW, inp, dOut, M, K, N);
}

export function biasBackward(dBias: FloatArray, dOut: FloatArray, M: number, N: number): void {
  if (onWasm(dBias, dOut)) wasm!.bias_backward(ptr(dBias), ptr(dOut), M, N);
  else ref.biasBackward(dBias, dOut, M, N);
}

/**
 * Attention forward. Whole sequences (start 0, rows T) go to the batched kernel; a KV-cache
 * pass (`cached`: the rows of one sequence whose earlier rows of qkv are its cache) goes to the
 * row kernel, which reads only the cached rows.
 */
export function attentionForward(
  out: FloatArray,
  probs: FloatArray,
  qkv: FloatArray,
  B: number,
  T: number,
  C: number,
  H: number,
  start = 0,
  rows = T,
  cached = false,
): void {
  if (!(start >= 0 && rows >= 0 && start + rows <= T) || (B > 1 && rows !== T)) {
    throw new RangeError(`attention: rows ${start} .. ${start + rows - 1} of ${B} x ${T}`);
  }
  if (!onWasm(out, probs, qkv)) ref.attentionForward(out, probs, qkv, B, T, C, H, start, rows);
  else if (cached) wasm!.attention_rows(ptr(out), ptr(probs), ptr(qkv), T, start, rows, C, H);
  else wasm!.attention_forward(ptr(out), ptr(probs), ptr(qkv), B, T, C, H);
}

/** Floats of scratch {@link attentionBackward} needs for the WebAssembly kernels: T·(T + C/H). */
export function attentionScratchSize(T: number, C: number, H: number): number {
  return T * (T + Math.floor(C / H));
}

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
  const fast = onWasm(dQkv, scratch, dOut, qkv, probs) &&
    scratch.length >= attentionScratchSize(T, C, H);
  if (!fast) return ref.attentionBackward(dQkv, scratch, dOut, qkv, probs, B, T, C, H);
  wasm!.attention_backward(
    ptr(dQkv),
    ptr(scratch),
    ptr(dOut),
    ptr(qkv),
    ptr(probs),
    B,
    T,
    C,
    H,
  );
}

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
  if (!onWasm(out, mean, rstd, inp, weight, bias)) {
    return ref.layernormForward(out, mean, rstd, inp, weight, bias, N, C);
  }
  wasm!.layernorm_forward(
    ptr(out),
    ptr(mean),
    ptr(rstd),
    ptr(inp),
    ptr(weight),
    ptr(bias),
    N,
    C,
  );
}

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
  if (!onWasm(dInp, dWeight, dBias, dOut, inp, weight, mean, rstd)) {
    return ref.layernormBackward(dInp, dWeight, dBias, dOut, inp, weight, mean, rstd, N, C);
  }
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
}

export function geluForward(out: FloatArray, inp: FloatArray, n: number): void {
  if (onWasm(out, inp)) wasm!.gelu_forward(ptr(out), ptr(inp), n);
  else ref.geluForward(out, inp, n);
}

export function geluBackward(dInp: FloatArray, inp: FloatArray, dOut: FloatArray, n: number): void {
  if (onWasm(dInp, inp, dOut)) wasm!.gelu_backward(ptr(dInp), ptr(inp), ptr(dOut), n);
  else ref.geluBackward(dInp, inp, dOut, n);
}

export function softmaxCrossEntropy(
  losses: FloatArray,
  probs: FloatArray,
  logits: FloatArray,
  targets: Uint16Array,
  N: number,
  V: number,
): void {
  if (!onWasm(losses, probs, logits, targets)) {
    return ref.softmaxCrossEntropy(losses, probs, logits, targets, N, V);
  }
  wasm!.softmax_crossentropy(ptr(losses), ptr(probs), ptr(logits), ptr(targets), N, V);
}

export function softmaxCrossEntropyBackward(
  dLogits: FloatArray,
  probs: FloatArray,
  targets: Uint16Array,
  N: number,
  V: number,
  scale: number,
): void {
  if (!onWasm(dLogits, probs, targets)) {
    return ref.softmaxCrossEntropyBackward(dLogits, probs, targets, N, V, scale);
  }
  wasm!.crossentropy_softmax_backward(ptr(dLogits), ptr(probs), ptr(targets), N, V, scale);
}

export function add(out: FloatArray, a: FloatArray, b: FloatArray, n: number): void {
  if (onWasm(out, a, b)) wasm!.add(ptr(out), ptr(a), ptr(b), n);
  else ref.add(out, a, b, n);
}

/** Elementwise product (the dropout masks): plain TypeScript on every tier. */
export const mul = ref.mul;

export function addInPlace(dst: FloatArray, src: FloatArray, n: number): void {
  if (onWasm(dst, src)) wasm!.add_inplace(ptr(dst), ptr(src), n);
  else ref.addInPlace(dst, src, n);
}

export function scaleInPlace(x: FloatArray, n: number, s: number): void {
  if (onWasm(x)) wasm!.scale_inplace(ptr(x), n, s);
  else ref.scaleInPlace(x, n, s);
}

export function sumSquares(x: FloatArray, n: number): number {
  return onWasm(x) ? wasm!.sum_squares(ptr(x), n) : ref.sumSquares(x, n);
}

export function adamwUpdate(
  param: FloatArray,
  grad: FloatArray,
  m: FloatArray,
  v: FloatArray,
  n: number,
  s: AdamWStep,
): void {
  if (!onWasm(param, grad, m, v)) return ref.adamwUpdate(param, grad, m, v, n, s);
  wasm!.adamw(
    ptr(param),
    ptr(grad),
    ptr(m),
    ptr(v),
    n,
    s.lr,
    s.beta1,
    s.beta2,
    s.eps,
    s.weightDecay,
    s.bc1,
    s.bc2,
  );
}
