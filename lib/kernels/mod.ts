/**
 * Fast float32 kernels of a GPT training step, as WebAssembly SIMD modules.
 *
 * Two tiers are built from the same source by `scripts/build_kernels.ts`:
 * - `"relaxed"`: matmul tiles use `f32x4.relaxed_madd` (fused multiply-add; Deno's V8 has it);
 * - `"simd"`: plain WebAssembly SIMD128 (`f32x4.mul` + `f32x4.add`), for browsers without relaxed
 *   SIMD.
 * A third tier, `"js"`, means neither works and the caller must use its plain TypeScript kernels.
 *
 * Every instance imports one `WebAssembly.Memory` (normally shared, so that several workers, each
 * with its own instance, work on the same buffers) and touches it only through the pointers it is
 * given: byte offsets of float32 arrays, 16-byte aligned for speed (4-byte alignment is enough for
 * correctness). Pointer 0 means "none" for optional arguments, so callers keep the first 64 KiB
 * free. The modules have no data segments, no stack and no globals.
 *
 * All kernels are bit-deterministic: the order of every sum depends only on the shapes.
 *
 * @example
 * ```ts
 * import { createKernels, createSharedMemory, detectTier } from "./mod.ts";
 *
 * const tier = detectTier();
 * if (tier !== "js") {
 *   const memory = createSharedMemory(1 << 20);
 *   const k = createKernels(tier, memory);
 *   const f32 = new Float32Array(memory.buffer);
 *   const [x, w, out] = [65536, 65536 + 64, 65536 + 128]; // byte offsets
 *   f32.set([1, 2, 3, 4], x / 4); // x [1, 4]
 *   f32.set([1, 1, 1, 1], w / 4); // w [4, 1]
 *   k.matmul(out, x, w, 0, 1, 4, 1);
 *   console.log(f32[out / 4]); // 10
 * }
 * ```
 *
 * @module
 */

import { RELAXED_WASM_BASE64, SIMD_WASM_BASE64 } from "./wasm_bytes.ts";

/**
 * Bytes of the scratch of the packed matmul variants: a panel of B (256 rows of up to 16 floats,
 * 16 KiB), then a block of A (128 rows of 96 floats, 48 KiB).
 */
export const PACK_BYTES = 65536;

/** Which kernels can run here: relaxed SIMD, plain SIMD128, or none (plain TypeScript). */
export type KernelTier = "relaxed" | "simd" | "js";

/**
 * The exported WebAssembly functions. Pointers are byte offsets into the memory; float32 arrays,
 * row-major; shapes in brackets. "Overwrite" outputs may hold anything before the call,
 * "accumulate" (+=) ones must be initialised by the caller.
 */
export interface KernelExports {
  /**
   * out[M, N] = inp[M, K] · w[K, N] + bias[N] (bias = 0: no bias). Overwrites out. `variant`
   * (default 0) picks the register tile; every variant of a form gives the same bits. A packed
   * variant copies panels of w into `scratch` ({@linkcode PACK_BYTES}; 0: none, read in place).
   */
  matmul(
    out: number,
    inp: number,
    w: number,
    bias: number,
    M: number,
    K: number,
    N: number,
    variant?: number,
    scratch?: number,
  ): void;
  /** out[M, N] = a[M, K] · b[N, K]ᵀ. Overwrites out. `variant`: the row blocks (same bits). */
  matmul_nt(
    out: number,
    a: number,
    b: number,
    M: number,
    K: number,
    N: number,
    variant?: number,
  ): void;
  /** dinp[M, K] = dout[M, N] · w[K, N]ᵀ. Overwrites dinp. */
  matmul_backward_input(
    dinp: number,
    dout: number,
    w: number,
    M: number,
    K: number,
    N: number,
    variant?: number,
  ): void;
  /** dw[K, N] += inp[M, K]ᵀ · dout[M, N]. Accumulates. `variant`, `scratch` as for `matmul`. */
  matmul_backward_weight(
    dw: number,
    inp: number,
    dout: number,
    M: number,
    K: number,
    N: number,
    variant?: number,
    scratch?: number,
  ): void;
  /** Variants of a form: 0 = matmul and matmul_backward_weight, 1 = the two NT products. */
  variant_count(form: number): number;
  /**
   * n rounds of 12 independent f32x4 multiply-add chains (96 flops a round; fused in the relaxed
   * tier, mul + add in the simd tier): the machine's peak for the matmul tiles' instruction.
   */
  madd_peak(n: number): number;
  /** dbias[N] += column sums of dout[M, N]. Accumulates. */
  bias_backward(dbias: number, dout: number, M: number, N: number): void;
  /**
   * Causal multi-head self-attention. qkv [B, T, 3C] holds q | k | v per row, head h in columns
   * h·hs..(h+1)·hs of each (hs = C / H). probs [B, H, T, T] = softmax(q·kᵀ / √hs) over j ≤ t
   * (zeros for j > t); out [B, T, C] = probs · v, heads concatenated. Overwrites out and probs.
   */
  attention_forward(
    out: number,
    probs: number,
    qkv: number,
    B: number,
    T: number,
    C: number,
    H: number,
  ): void;
  /**
   * Backward of {@linkcode KernelExports.attention_forward}. dqkv [B, T, 3C] is OVERWRITTEN;
   * scratch is a scratch area of T·(T + C/H) floats (one head's score gradients [T, T], then its
   * values transposed [C/H, T]).
   */
  attention_backward(
    dqkv: number,
    scratch: number,
    dout: number,
    qkv: number,
    probs: number,
    B: number,
    T: number,
    C: number,
    H: number,
  ): void;
  /**
   * Causal attention of the query rows t = p0 .. p0+n-1 of ONE sequence (the KV-cache path):
   * qkv [T, 3C] as in attention_forward (only rows 0 .. p0+n-1 are read); probs [H, T, T] gets
   * rows (h, t) for those t (zeros after t; other rows untouched); out [n, C] gets their outputs,
   * heads concatenated. Needs p0 + n <= T.
   */
  attention_rows(
    out: number,
    probs: number,
    qkv: number,
    T: number,
    p0: number,
    n: number,
    C: number,
    H: number,
  ): void;
  /** out[N, C] = (inp - mean) · rstd · weight + bias per row (eps 1e-5); saves mean[N], rstd[N]. */
  layernorm_forward(
    out: number,
    mean: number,
    rstd: number,
    inp: number,
    weight: number,
    bias: number,
    N: number,
    C: number,
  ): void;
  /** Backward of layernorm: dinp[N, C], dweight[C] and dbias[C] all ACCUMULATE (+=). */
  layernorm_backward(
    dinp: number,
    dweight: number,
    dbias: number,
    dout: number,
    inp: number,
    weight: number,
    mean: number,
    rstd: number,
    N: number,
    C: number,
  ): void;
  /** out[n] = gelu(inp[n]), tanh approximation. Overwrites out (may alias inp). */
  gelu_forward(out: number, inp: number, n: number): void;
  /** dinp[n] = gelu'(inp) · dout. Overwrites dinp (may alias dout). */
  gelu_backward(dinp: number, inp: number, dout: number, n: number): void;
  /**
   * probs[N, V] = softmax(logits[N, V]) per row; losses[N] = -log probs[n, targets[n]].
   * targets is a Uint16 array (byte offset, 2-byte aligned).
   */
  softmax_crossentropy(
    losses: number,
    probs: number,
    logits: number,
    targets: number,
    N: number,
    V: number,
  ): void;
  /** dlogits[N, V] = (probs - onehot(targets)) · scale. Overwrites dlogits (may alias probs). */
  crossentropy_softmax_backward(
    dlogits: number,
    probs: number,
    targets: number,
    N: number,
    V: number,
    scale: number,
  ): void;
  /**
   * AdamW step on n floats: m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
   * param -= lr · ((m / bc1) / (√(v / bc2) + eps) + weightDecay · param).
   */
  adamw(
    param: number,
    grad: number,
    m: number,
    v: number,
    n: number,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    bc1: number,
    bc2: number,
  ): void;
  /** x[n] *= s. */
  scale_inplace(x: number, n: number, s: number): void;
  /** dst[n] += src[n]. */
  add_inplace(dst: number, src: number, n: number): void;
  /** out[n] = a[n] + b[n] (out may alias a or b). */
  add(out: number, a: number, b: number, n: number): void;
  /** Σ x[i]², accumulated in float64 in a fixed order, returned rounded to float32. */
  sum_squares(x: number, n: number): number;
}

// ---------------------------------------------------------------------------------------------
// Feature detection.

/** Decodes base64 with web APIs only. */
function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

/** A module importing a shared memory and using `f32x4.relaxed_madd` (a wabt build, base64). */
const RELAXED_PROBE = fromBase64(
  "AGFzbQEAAAABBQFgAX8AAhIBA2VudgZtZW1vcnkCAwGAgAQDAgEABwUBAWYAAAofAR0AIAAgAP0ABAAgAP0ABAAgAP0ABAD9hQL9CwQACw==",
);

/** A module importing a shared memory and using plain SIMD (`f32x4.mul`). */
const SIMD_PROBE = fromBase64(
  "AGFzbQEAAAABBQFgAX8AAhIBA2VudgZtZW1vcnkCAwGAgAQDAgEABwUBAWYAAAoZARcAIAAgAP0ABAAgAP0ABAD95gH9CwQACw==",
);

/** Whether shared WebAssembly memories can be created (needs SharedArrayBuffer). */
function sharedMemoryWorks(): boolean {
  try {
    const m = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return typeof SharedArrayBuffer !== "undefined" && m.buffer instanceof SharedArrayBuffer;
  } catch {
    return false;
  }
}

/**
 * The best tier this runtime supports: `"relaxed"` if relaxed SIMD validates and shared memory
 * works, else `"simd"` if SIMD128 does, else `"js"`.
 *
 * Without shared memory (a browser page that is not cross-origin isolated) the wasm tiers still
 * work single-threaded: pass a non-shared memory to {@linkcode createKernels}; this function then
 * reports `"js"` only if SIMD itself is missing. Use {@linkcode detectTier}`({ requireShared:
 * false })` for that case.
 */
export function detectTier(options: { requireShared?: boolean } = {}): KernelTier {
  const requireShared = options.requireShared ?? true;
  if (typeof WebAssembly !== "object") return "js";
  const shared = sharedMemoryWorks();
  if (requireShared && !shared) return "js";
  // The probes import a shared memory; validation does not instantiate, so it only checks the
  // instruction set (and that the threads proposal is understood).
  const validates = (bytes: Uint8Array<ArrayBuffer>) => {
    try {
      return WebAssembly.validate(shared ? bytes : toUnshared(bytes));
    } catch {
      return false;
    }
  };
  if (validates(RELAXED_PROBE)) return "relaxed";
  if (validates(SIMD_PROBE)) return "simd";
  return "js";
}

// ---------------------------------------------------------------------------------------------
// Instantiation.

/** Reads an unsigned LEB128 at `pos`; returns [value, next position]. */
function readLeb(bytes: Uint8Array, pos: number): [number, number] {
  let value = 0;
  let shift = 0;
  for (;;) {
    const b = bytes[pos++];
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) return [value, pos];
    shift += 7;
  }
}

/** Encodes an unsigned LEB128. */
function leb(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value & 0x7f;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

/**
 * A copy of a module binary whose memory import (its only import) is declared plain instead of
 * shared, with no maximum: `(memory 1 65536 shared)` becomes `(memory 1)`, which any memory of
 * at least one page matches. The kernels use no atomics, so the module stays valid and behaves
 * the same on a non-shared memory.
 */
function toUnshared(bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  let pos = 8; // magic + version
  while (pos < bytes.length) {
    const id = bytes[pos];
    const [size, start] = readLeb(bytes, pos + 1);
    const end = start + size;
    if (id === 2) { // the import section: count, then one entry (module, field, kind, limits)
      const [count, afterCount] = readLeb(bytes, start);
      const [moduleLen, moduleName] = readLeb(bytes, afterCount);
      const [fieldLen, fieldName] = readLeb(bytes, moduleName + moduleLen);
      const p = fieldName + fieldLen; // the import kind byte
      if (count !== 1 || bytes[p] !== 2) throw new Error("kernels: unexpected imports");
      const names = bytes.subarray(start, p + 1); // count .. kind
      const flags = bytes[p + 1];
      const [initial, q] = readLeb(bytes, p + 2);
      let after = q;
      if (flags & 1) after = readLeb(bytes, q)[1]; // skip the maximum
      if (after !== end) throw new Error("kernels: unexpected import section");
      const content = [...names, 0x00, ...leb(initial)];
      return Uint8Array.from([
        ...bytes.subarray(0, pos),
        2,
        ...leb(content.length),
        ...content,
        ...bytes.subarray(end),
      ]);
    }
    pos = end;
  }
  throw new Error("kernels: memory import not found");
}

/** Compiled modules per tier and memory sharing, so workers can reuse them. */
const moduleCache = new Map<string, WebAssembly.Module>();

/**
 * The compiled kernel module of a tier (cached). `shared` selects the variant that imports a
 * shared memory (default) or a plain one. A `WebAssembly.Module` can be posted to workers.
 */
export function kernelModule(tier: "relaxed" | "simd", shared = true): WebAssembly.Module {
  const key = `${tier}:${shared}`;
  let module = moduleCache.get(key);
  if (module === undefined) {
    const bytes = fromBase64(tier === "relaxed" ? RELAXED_WASM_BASE64 : SIMD_WASM_BASE64);
    module = new WebAssembly.Module(shared ? bytes : toUnshared(bytes));
    moduleCache.set(key, module);
  }
  return module;
}

/** Whether a memory is backed by a SharedArrayBuffer. */
function isShared(memory: WebAssembly.Memory): boolean {
  return typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
}

/**
 * Instantiates the kernels of `tier` on `memory`, synchronously. Works with a shared memory
 * (normal case, see {@linkcode createSharedMemory}) and with a plain one (single-threaded
 * browsers without cross-origin isolation). Pass `module` (from {@linkcode kernelModule}, e.g.
 * received by a worker) to skip compilation.
 */
export function createKernels(
  tier: "relaxed" | "simd",
  memory: WebAssembly.Memory,
  module?: WebAssembly.Module,
): KernelExports {
  const compiled = module ?? kernelModule(tier, isShared(memory));
  const instance = new WebAssembly.Instance(compiled, { env: { memory } });
  return instance.exports as unknown as KernelExports;
}

/** A shared memory of at least `bytes` bytes (64 KiB pages), growable to 4 GiB. */
export function createSharedMemory(bytes: number): WebAssembly.Memory {
  const initial = Math.max(1, Math.ceil(bytes / 65536));
  return new WebAssembly.Memory({ initial, maximum: 65536, shared: true });
}
