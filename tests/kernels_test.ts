/**
 * Tests of the WebAssembly kernels (lib/kernels) at both wasm tiers, against plain float64
 * TypeScript references written here; backward kernels also against central finite differences
 * of the float64 forward references. Also: bit determinism, non-shared memories, the dispatch of
 * lib/kernels/dispatch.ts's attentionForward (the KV-cache rows of lib/tensor.ts), and that the committed binaries are exactly what
 * scripts/build_kernels.ts builds.
 */

import {
  createKernels,
  createSharedMemory,
  detectTier,
  type KernelExports,
} from "../lib/kernels/mod.ts";
import { RELAXED_WASM_BASE64, SIMD_WASM_BASE64 } from "../lib/kernels/wasm_bytes.ts";
import { buildKernels, toBase64 } from "../scripts/build_kernels.ts";
import { attentionForward, useKernels } from "../lib/kernels/dispatch.ts";
import { attentionForward as refAttentionForward } from "../lib/tensor.ts";

// ---------------------------------------------------------------------------------------------
// Assertions (local: the JSR registry is not reachable from this project's machines).

function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new Error(msg);
}

/** Strict equality; element-wise (with Object.is, so bit patterns of floats) for arrays. */
function assertEquals(actual: unknown, expected: unknown, msg = ""): void {
  if (ArrayBuffer.isView(actual) && ArrayBuffer.isView(expected)) {
    const a = actual as unknown as ArrayLike<number>;
    const e = expected as unknown as ArrayLike<number>;
    assert(a.length === e.length, `${msg}: length ${a.length} !== ${e.length}`);
    for (let i = 0; i < a.length; i++) {
      assert(Object.is(a[i], e[i]), `${msg}: element ${i}: ${a[i]} !== ${e[i]}`);
    }
    return;
  }
  assert(Object.is(actual, expected), `${msg}: ${String(actual)} !== ${String(expected)}`);
}

// ---------------------------------------------------------------------------------------------
// Harness: one shared memory, a bump allocator, seeded random data.

const memory = createSharedMemory(96 << 20);
const TIERS = ["relaxed", "simd"] as const;
const kernels: Record<(typeof TIERS)[number], KernelExports> = {
  relaxed: createKernels("relaxed", memory),
  simd: createKernels("simd", memory),
};

let top = 65536;
/** Allocates n floats (64-byte aligned) and returns the byte offset. */
function alloc(n: number): number {
  const p = top;
  top += Math.ceil((n * 4) / 64) * 64 + 64;
  if (top > memory.buffer.byteLength) throw new Error("test memory exhausted");
  return p;
}
/** Frees everything allocated since the start of a test. */
function reset(): void {
  top = 65536;
}
function view(p: number, n: number): Float32Array {
  return new Float32Array(memory.buffer, p, n);
}
/** Copies values to a new allocation, returns its pointer. */
function put(values: ArrayLike<number>): number {
  const p = alloc(values.length);
  view(p, values.length).set(values);
  return p;
}
function get(p: number, n: number): Float64Array {
  return Float64Array.from(view(p, n));
}

/** mulberry32: deterministic uniform numbers in [-scale, scale). */
function randoms(n: number, seed: number, scale = 1): Float64Array {
  let a = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return Float64Array.from(new Float32Array(out)); // exactly representable in float32
}

/** Asserts |actual - expected| <= tol * magnitude (+ 1e-30) elementwise. */
function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
  what: string,
  magnitude: ArrayLike<number> | number = 1,
): void {
  assertEquals(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const mag = typeof magnitude === "number" ? magnitude : magnitude[i];
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= tol * mag + 1e-30)) {
      throw new Error(
        `${what}: element ${i}: got ${actual[i]}, expected ${expected[i]} (tolerance ${tol * mag})`,
      );
    }
  }
}

/** max(|x|, 1) per element: relative tolerance for big values, absolute near zero. */
function relMag(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x, (v) => Math.max(Math.abs(v), 1));
}

// ---------------------------------------------------------------------------------------------
// Float64 references.

/** out[M, N] = x[M, K] w[K, N] (+ bias), and the sum of |terms| per output (for tolerances). */
function refMatmul(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  M: number,
  K: number,
  N: number,
  rows: number[] = [...Array(M).keys()],
): { out: Float64Array; mag: Float64Array } {
  const out = new Float64Array(rows.length * N);
  const mag = new Float64Array(rows.length * N);
  rows.forEach((i, r) => {
    for (let j = 0; j < N; j++) {
      let s = bias ? bias[j] : 0;
      let m = bias ? Math.abs(bias[j]) : 0;
      for (let k = 0; k < K; k++) {
        const t = x[i * K + k] * w[k * N + j];
        s += t;
        m += Math.abs(t);
      }
      out[r * N + j] = s;
      mag[r * N + j] = m + 1e-6;
    }
  });
  return { out, mag };
}

/** [R, C] -> [C, R]. */
function transpose(a: Float64Array, R: number, C: number): Float64Array {
  const t = new Float64Array(R * C);
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) t[j * R + i] = a[i * C + j];
  return t;
}

/** Causal attention forward: returns out [B, T, C] and probs [B, H, T, T]. */
function refAttention(qkv: ArrayLike<number>, B: number, T: number, C: number, H: number) {
  const hs = C / H;
  const out = new Float64Array(B * T * C);
  const probs = new Float64Array(B * H * T * T);
  const scale = 1 / Math.sqrt(hs);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const q = (b * T + t) * 3 * C + h * hs;
        const prow = ((b * H + h) * T + t) * T;
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          const k = (b * T + j) * 3 * C + C + h * hs;
          let s = 0;
          for (let i = 0; i < hs; i++) s += qkv[q + i] * qkv[k + i];
          probs[prow + j] = s * scale;
          max = Math.max(max, s * scale);
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) sum += probs[prow + j] = Math.exp(probs[prow + j] - max);
        for (let j = 0; j <= t; j++) probs[prow + j] /= sum;
        for (let j = 0; j <= t; j++) {
          const v = (b * T + j) * 3 * C + 2 * C + h * hs;
          for (let i = 0; i < hs; i++) {
            out[(b * T + t) * C + h * hs + i] += probs[prow + j] * qkv[v + i];
          }
        }
      }
    }
  }
  return { out, probs };
}

function refLayernorm(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  bias: ArrayLike<number>,
  N: number,
  C: number,
) {
  const out = new Float64Array(N * C);
  const mean = new Float64Array(N);
  const rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let m = 0;
    for (let c = 0; c < C; c++) m += x[n * C + c];
    m /= C;
    let v = 0;
    for (let c = 0; c < C; c++) v += (x[n * C + c] - m) ** 2;
    const r = 1 / Math.sqrt(v / C + 1e-5);
    for (let c = 0; c < C; c++) out[n * C + c] = (x[n * C + c] - m) * r * w[c] + bias[c];
    mean[n] = m;
    rstd[n] = r;
  }
  return { out, mean, rstd };
}

const S2PI = Math.sqrt(2 / Math.PI);
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(S2PI * (x + 0.044715 * x ** 3)));
function geluGrad(x: number): number {
  const th = Math.tanh(S2PI * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * S2PI * (1 + 3 * 0.044715 * x * x);
}

function refSoftmaxCE(logits: ArrayLike<number>, targets: ArrayLike<number>, N: number, V: number) {
  const probs = new Float64Array(N * V);
  const losses = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[n * V + v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += probs[n * V + v] = Math.exp(logits[n * V + v] - max);
    for (let v = 0; v < V; v++) probs[n * V + v] /= sum;
    losses[n] = Math.log(sum) - (logits[n * V + targets[n]] - max);
  }
  return { probs, losses };
}

/**
 * Central finite differences of f (a float64 function of x) contracted with weights r:
 * d/dx_i sum_o r_o f(x)_o, for every i.
 */
function numericGrad(
  f: (x: Float64Array) => Float64Array,
  x: Float64Array,
  r: Float64Array,
): Float64Array {
  const g = new Float64Array(x.length);
  const h = 1e-5;
  for (let i = 0; i < x.length; i++) {
    const save = x[i];
    x[i] = save + h;
    const fp = f(x);
    x[i] = save - h;
    const fm = f(x);
    x[i] = save;
    let s = 0;
    for (let o = 0; o < r.length; o++) s += r[o] * (fp[o] - fm[o]);
    g[i] = s / (2 * h);
  }
  return g;
}

// ---------------------------------------------------------------------------------------------
// Matmul forms.

const SMALL_SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [3, 5, 7],
  [9, 17, 13],
  [7, 16, 65],
  [33, 64, 36],
  [13, 300, 9],
  [5, 520, 30],
];

/** The real shapes of the default model; checked on a sample of rows / entries. */
const REAL_SHAPES: [number, number, number][] = [
  [2048, 256, 768],
  [2048, 256, 1024],
  [2048, 1024, 256],
  [2048, 256, 65],
];
const SAMPLE_ROWS = [0, 1, 5, 511, 1000, 1023, 1024, 1500, 2046, 2047];

for (const tier of TIERS) {
  const k = kernels[tier];

  Deno.test(`${tier}: matmul and matmul_nt, small shapes`, () => {
    for (const [M, K, N] of SMALL_SHAPES) {
      reset();
      const x = randoms(M * K, 1), w = randoms(K * N, 2), bias = randoms(N, 3);
      const px = put(x), pw = put(w), pb = put(bias), pwt = put(transpose(w, K, N));
      const out = alloc(M * N), outNt = alloc(M * N);
      view(out, M * N).fill(NaN); // overwrite: old contents must not matter
      view(outNt, M * N).fill(NaN);
      k.matmul(out, px, pw, pb, M, K, N);
      k.matmul_nt(outNt, px, pwt, M, K, N);
      const withBias = refMatmul(x, w, bias, M, K, N);
      const noBias = refMatmul(x, w, null, M, K, N);
      assertClose(get(out, M * N), withBias.out, 1e-6, `matmul ${M}x${K}x${N}`, withBias.mag);
      assertClose(get(outNt, M * N), noBias.out, 1e-6, `matmul_nt ${M}x${K}x${N}`, noBias.mag);
      k.matmul(out, px, pw, 0, M, K, N);
      assertClose(get(out, M * N), noBias.out, 1e-6, `matmul (no bias) ${M}x${K}x${N}`, noBias.mag);
    }
  });

  Deno.test(`${tier}: matmul with few rows (sampling) and row remainders`, () => {
    // (K, N): the model's, column chunks past 1024, K % 8 remainders, N % 4 tails
    const shapes = [[256, 768], [256, 1024], [1024, 256], [256, 65], [13, 2100], [5, 1030], [3, 3]];
    for (const [K, N] of shapes) {
      for (const M of [1, 2, 3, 4, 5, 7, 8, 11]) {
        reset();
        const x = randoms(M * K, 101 + M), w = randoms(K * N, 102), bias = randoms(N, 103);
        const px = put(x), pw = put(w), pb = put(bias), out = alloc(M * N);
        view(out, M * N).fill(NaN);
        k.matmul(out, px, pw, pb, M, K, N);
        const ref = refMatmul(x, w, bias, M, K, N);
        assertClose(get(out, M * N), ref.out, 1e-6, `matmul ${M}x${K}x${N}`, ref.mag);
        k.matmul(out, px, pw, 0, M, K, N);
        const noBias = refMatmul(x, w, null, M, K, N);
        assertClose(
          get(out, M * N),
          noBias.out,
          1e-6,
          `matmul (no bias) ${M}x${K}x${N}`,
          noBias.mag,
        );
        if (M <= 3) {
          const pwt = put(transpose(w, K, N));
          k.matmul_nt(out, px, pwt, M, K, N);
          assertClose(get(out, M * N), noBias.out, 1e-6, `matmul_nt ${M}x${K}x${N}`, noBias.mag);
        }
      }
    }
  });

  Deno.test(`${tier}: matmul backward forms, small shapes`, () => {
    for (const [M, K, N] of SMALL_SHAPES) {
      reset();
      const x = randoms(M * K, 4), w = randoms(K * N, 5), dout = randoms(M * N, 6);
      const dw0 = randoms(K * N, 7), db0 = randoms(N, 8);
      const px = put(x), pw = put(w), pdout = put(dout), pdw = put(dw0), pdb = put(db0);
      const pdx = alloc(M * K);
      view(pdx, M * K).fill(NaN);
      k.matmul_backward_input(pdx, pdout, pw, M, K, N);
      k.matmul_backward_weight(pdw, px, pdout, M, K, N);
      k.bias_backward(pdb, pdout, M, N);
      const dx = refMatmul(dout, transpose(w, K, N), null, M, N, K);
      assertClose(get(pdx, M * K), dx.out, 1e-6, `backward_input ${M}x${K}x${N}`, dx.mag);
      const dw = refMatmul(transpose(x, M, K), dout, null, K, M, N);
      assertClose(
        get(pdw, K * N),
        dw.out.map((v, i) => v + dw0[i]),
        1e-6,
        `backward_weight ${M}x${K}x${N}`,
        dw.mag.map((v, i) => v + Math.abs(dw0[i])),
      );
      const db = Float64Array.from(db0);
      const dbMag = db0.map(Math.abs);
      for (let i = 0; i < M; i++) {
        for (let j = 0; j < N; j++) {
          db[j] += dout[i * N + j];
          dbMag[j] += Math.abs(dout[i * N + j]);
        }
      }
      assertClose(get(pdb, N), db, 1e-6, `bias_backward ${M}x${N}`, dbMag);
    }
  });

  Deno.test(`${tier}: matmul forms at the model's shapes (sampled) and determinism`, () => {
    for (const [M, K, N] of REAL_SHAPES) {
      reset();
      const x = randoms(M * K, 11), w = randoms(K * N, 12), bias = randoms(N, 13);
      const px = put(x), pw = put(w), pb = put(bias), pwt = put(transpose(w, K, N));
      const out = alloc(M * N), out2 = alloc(M * N);
      // forward, with and without the transposed weight
      k.matmul(out, px, pw, pb, M, K, N);
      const ref = refMatmul(x, w, bias, M, K, N, SAMPLE_ROWS);
      const sample = (p: number, cols: number) =>
        Float64Array.from(SAMPLE_ROWS.flatMap((i) => [...view(p + i * cols * 4, cols)]));
      assertClose(sample(out, N), ref.out, 2e-6, `matmul ${M}x${K}x${N}`, ref.mag);
      k.matmul(out2, px, pw, pb, M, K, N);
      assertEquals(view(out2, M * N), view(out, M * N), "matmul is deterministic");
      k.matmul_nt(out2, px, pwt, M, K, N);
      const refNb = refMatmul(x, w, null, M, K, N, SAMPLE_ROWS);
      assertClose(sample(out2, N), refNb.out, 2e-6, `matmul_nt ${M}x${K}x${N}`, refNb.mag);
      // backward: dx = dout w^T on sampled rows; dw += x^T dout on sampled entries
      const dout = get(out, M * N).map((v, i) => v * 0.01 * ((i % 7) - 3));
      view(out, M * N).set(dout);
      const pdx = alloc(M * K);
      k.matmul_backward_input(pdx, out, pw, M, K, N);
      const refDx = refMatmul(dout, transpose(w, K, N), null, M, N, K, SAMPLE_ROWS);
      assertClose(sample(pdx, K), refDx.out, 2e-6, `backward_input ${M}x${K}x${N}`, refDx.mag);
      const pdw = alloc(K * N), pdw2 = alloc(K * N);
      view(pdw, K * N).fill(0);
      view(pdw2, K * N).fill(0);
      k.matmul_backward_weight(pdw, px, out, M, K, N);
      k.matmul_backward_weight(pdw2, px, out, M, K, N);
      assertEquals(view(pdw2, K * N), view(pdw, K * N), "backward_weight is deterministic");
      for (const [kk, n] of [[0, 0], [K - 1, N - 1], [7, N >> 1], [K >> 1, 3], [K - 2, N - 5]]) {
        let s = 0, m = 0;
        for (let i = 0; i < M; i++) {
          s += x[i * K + kk] * dout[i * N + n];
          m += Math.abs(x[i * K + kk] * dout[i * N + n]);
        }
        assertClose([view(pdw, K * N)[kk * N + n]], [s], 2e-6, `backward_weight [${kk},${n}]`, m);
      }
    }
  });

  // -------------------------------------------------------------------------------------------
  // Attention.

  const attentionShapes: [number, number, number, number][] = [
    [1, 1, 4, 1],
    [2, 5, 6, 2], // hs = 3: scalar tails
    [1, 9, 20, 4], // hs = 5
    [2, 128, 256, 4], // the model's T, C, H (B reduced)
  ];

  Deno.test(`${tier}: attention forward and backward against the reference`, () => {
    for (const [B, T, C, H] of attentionShapes) {
      reset();
      const qkv = randoms(B * T * 3 * C, 21, 2);
      const pqkv = put(qkv), pout = alloc(B * T * C), pprobs = alloc(B * H * T * T);
      view(pprobs, B * H * T * T).fill(NaN);
      k.attention_forward(pout, pprobs, pqkv, B, T, C, H);
      const ref = refAttention(qkv, B, T, C, H);
      assertClose(get(pout, B * T * C), ref.out, 2e-6, `attention out ${[B, T, C, H]}`, 2);
      assertClose(get(pprobs, B * H * T * T), ref.probs, 2e-6, `attention probs ${[B, T, C, H]}`);
      // backward: against the analytic float64 gradient
      const dout = randoms(B * T * C, 22);
      const pdout = put(dout), pdqkv = alloc(B * T * 3 * C), scratch = alloc(T * (T + C / H));
      view(pdqkv, B * T * 3 * C).fill(NaN); // overwritten
      view(scratch, T * (T + C / H)).fill(NaN); // scratch: written before it is read
      k.attention_backward(pdqkv, scratch, pdout, pqkv, pprobs, B, T, C, H);
      const dqkv = refAttentionBackward(qkv, ref.probs, dout, B, T, C, H);
      assertClose(get(pdqkv, B * T * 3 * C), dqkv, 1e-5, `attention dqkv ${[B, T, C, H]}`, 1);
      // deterministic
      const first = view(pdqkv, B * T * 3 * C).slice();
      k.attention_backward(pdqkv, scratch, pdout, pqkv, pprobs, B, T, C, H);
      assertEquals(view(pdqkv, B * T * 3 * C), first);
    }
  });

  Deno.test(`${tier}: attention backward matches finite differences`, () => {
    reset();
    const [B, T, C, H] = [2, 4, 6, 2];
    const qkv = randoms(B * T * 3 * C, 31);
    const r = randoms(B * T * C, 32);
    const pqkv = put(qkv), pout = alloc(B * T * C), pprobs = alloc(B * H * T * T);
    k.attention_forward(pout, pprobs, pqkv, B, T, C, H);
    const pdqkv = alloc(B * T * 3 * C);
    k.attention_backward(pdqkv, alloc(T * (T + C / H)), put(r), pqkv, pprobs, B, T, C, H);
    const num = numericGrad((x) => refAttention(x, B, T, C, H).out, Float64Array.from(qkv), r);
    assertClose(get(pdqkv, B * T * 3 * C), num, 1e-5, "attention dqkv vs finite differences", 1);
  });

  /** [T, C, H, [p0, n] pairs] of attention_rows: one row, batches, the whole window. */
  const rowsCases: [number, number, number, [number, number][]][] = [
    [1, 4, 1, [[0, 1]]],
    [5, 6, 2, [[0, 1], [0, 5], [4, 1], [1, 3]]], // hs = 3: scalar tails
    [9, 20, 4, [[0, 9], [3, 1], [8, 1], [2, 6], [5, 4]]], // hs = 5
    [16, 32, 4, [[0, 16], [0, 1], [7, 1], [15, 1], [8, 8], [3, 10]]],
    [128, 256, 4, [[0, 128], [0, 64], [64, 1], [127, 1], [31, 7], [100, 28]]], // the model's
  ];

  Deno.test(`${tier}: attention_rows (KV cache) against the reference`, () => {
    for (const [T, C, H, ranges] of rowsCases) {
      const qkv = randoms(T * 3 * C, 81, 2);
      const ref = refAttention(qkv, 1, T, C, H);
      for (const [p0, n] of ranges) {
        reset();
        const pqkv = put(qkv), pout = alloc(n * C), pprobs = alloc(H * T * T);
        view(pout, n * C).fill(NaN);
        view(pprobs, H * T * T).fill(7); // rows outside p0 .. p0+n-1 must stay as they are
        // rows after p0 + n - 1 must not be read: poison them
        view(pqkv + (p0 + n) * 3 * C * 4, (T - p0 - n) * 3 * C).fill(NaN);
        k.attention_rows(pout, pprobs, pqkv, T, p0, n, C, H);
        const what = `attention_rows T ${T} C ${C} H ${H} rows ${p0}+${n}`;
        const rows = ref.out.subarray(p0 * C, (p0 + n) * C);
        assertClose(get(pout, n * C), rows, 2e-6, `${what}: out`, 2);
        const probs = get(pprobs, H * T * T);
        const expected = probs.map((_, i) => {
          const t = Math.floor(i / T) % T;
          return t >= p0 && t < p0 + n ? ref.probs[i] : 7;
        });
        assertClose(probs, expected, 2e-6, `${what}: probs`);
        // deterministic
        const first = view(pout, n * C).slice();
        k.attention_rows(pout, pprobs, pqkv, T, p0, n, C, H);
        assertEquals(view(pout, n * C), first, `${what}: deterministic`);
      }
    }
  });

  Deno.test(`${tier}: attention rows: lib/tensor.ts (float64, float32) and the dispatch`, () => {
    const [T, C, H] = [16, 32, 4];
    const qkv = randoms(T * 3 * C, 91, 2);
    const ref = refAttention(qkv, 1, T, C, H);
    for (const [p0, n] of [[0, 16], [0, 1], [5, 1], [15, 1], [4, 9]]) {
      const what = `attention rows ${p0}+${n}`;
      const rows = ref.out.subarray(p0 * C, (p0 + n) * C);
      const inRows = (i: number) => Math.floor(i / T) % T >= p0 && Math.floor(i / T) % T < p0 + n;
      // the plain TypeScript reference, in float64 and in float32 (arrays outside the kernels)
      for (const Arr of [Float64Array, Float32Array]) {
        const out = new Arr(n * C), probs = new Arr(H * T * T).fill(7);
        refAttentionForward(out, probs, Arr.from(qkv), 1, T, C, H, p0, n);
        const tol = Arr === Float64Array ? 1e-12 : 2e-6;
        assertClose(out, rows, tol, `${what} (${Arr.name}): out`, 2);
        assertClose(probs, ref.probs.map((v, i) => inRows(i) ? v : 7), tol, `${what}: probs`);
      }
      // dispatched to this tier's kernel: arrays in the kernels' memory
      useKernels(tier, memory);
      try {
        reset();
        const out = view(alloc(n * C), n * C), probs = view(alloc(H * T * T), H * T * T);
        const q = view(put(qkv), T * 3 * C);
        probs.fill(7);
        attentionForward(out, probs, q, 1, T, C, H, p0, n, true); // the KV cache's row kernel
        assertClose(out, rows, 2e-6, `${what} (${tier} dispatch): out`, 2);
        assertClose(probs, ref.probs.map((v, i) => inRows(i) ? v : 7), 2e-6, `${what}: probs`);
        if (p0 === 0 && n === T) {
          // whole sequences, not cached: the batched kernel
          out.fill(0);
          probs.fill(7);
          attentionForward(out, probs, q, 1, T, C, H);
          assertClose(out, rows, 2e-6, `${what} (${tier} batched dispatch): out`, 2);
          assertClose(probs, ref.probs, 2e-6, `${what} (batched): probs`);
        }
      } finally {
        useKernels("js");
      }
    }
    let threw = false;
    try {
      attentionForward(
        new Float64Array(2 * C),
        new Float64Array(H * T * T),
        qkv,
        1,
        T,
        C,
        H,
        T - 1,
        2,
      );
    } catch (e) {
      threw = e instanceof RangeError;
    }
    assert(threw, "attentionForward rejects rows past T");
  });

  // -------------------------------------------------------------------------------------------
  // Layernorm, GELU, softmax + cross-entropy.

  Deno.test(`${tier}: layernorm forward and backward`, () => {
    for (const [N, C] of [[1, 1], [3, 5], [4, 7], [16, 256]]) {
      reset();
      const x = randoms(N * C, 41, 3), w = randoms(C, 42), bias = randoms(C, 43);
      const px = put(x), pw = put(w), pb = put(bias);
      const pout = alloc(N * C), pmean = alloc(N), prstd = alloc(N);
      k.layernorm_forward(pout, pmean, prstd, px, pw, pb, N, C);
      const ref = refLayernorm(x, w, bias, N, C);
      assertClose(get(pout, N * C), ref.out, 1e-5, `layernorm out ${N}x${C}`, relMag(ref.out));
      assertClose(get(pmean, N), ref.mean, 1e-6, `layernorm mean ${N}x${C}`, 3);
      assertClose(get(prstd, N), ref.rstd, 1e-5, `layernorm rstd ${N}x${C}`, relMag(ref.rstd));
      if (C === 1) continue; // the gradient of a 1-wide layernorm is ill-conditioned (rstd ~ 316)
      // backward accumulates into dinp, dweight, dbias
      const r = randoms(N * C, 44);
      const dx0 = randoms(N * C, 45), dw0 = randoms(C, 46), db0 = randoms(C, 47);
      const pdx = put(dx0), pdw = put(dw0), pdb = put(db0);
      k.layernorm_backward(pdx, pdw, pdb, put(r), px, pw, pmean, prstd, N, C);
      const f = (xx: Float64Array) => refLayernorm(xx, w, bias, N, C).out;
      const dx = numericGrad(f, Float64Array.from(x), r).map((g, i) => g + dx0[i]);
      const dw = numericGrad((ww) => refLayernorm(x, ww, bias, N, C).out, Float64Array.from(w), r)
        .map((g, i) => g + dw0[i]);
      const db = numericGrad((bb) => refLayernorm(x, w, bb, N, C).out, Float64Array.from(bias), r)
        .map((g, i) => g + db0[i]);
      assertClose(get(pdx, N * C), dx, 1e-4, `layernorm dinp ${N}x${C}`, relMag(dx));
      assertClose(get(pdw, C), dw, 1e-4, `layernorm dweight ${N}x${C}`, relMag(dw));
      assertClose(get(pdb, C), db, 1e-4, `layernorm dbias ${N}x${C}`, relMag(db));
    }
  });

  Deno.test(`${tier}: gelu forward and backward, including large |x|`, () => {
    reset();
    const special = [0, -0, 1e-7, -1e-7, 1e-3, -1e-3, 0.5, -0.5, 3, -3, 8, -8, 10, -10, 20, -20];
    const extreme = [100, -100, 1e4, -1e4, 1e30, -1e30, 3e38, -3e38];
    const x = Float64Array.from([...special, ...extreme, ...randoms(1003, 51, 6)]);
    const dout = randoms(x.length, 52);
    const n = x.length;
    const px = put(x), pout = alloc(n), pdx = alloc(n), pd = put(dout);
    k.gelu_forward(pout, px, n);
    k.gelu_backward(pdx, px, pd, n);
    const out = get(pout, n), dx = get(pdx, n);
    for (let i = 0; i < n; i++) {
      assert(Number.isFinite(out[i]) && Number.isFinite(dx[i]), `finite at x = ${x[i]}`);
    }
    const refOut = Array.from(x, gelu);
    const refDx = Array.from(x, (v, i) => geluGrad(v) * dout[i]);
    // relative to the value; where float64 tanh rounds to -1 (x < -5.5) the reference is 0 while
    // the kernel keeps the tiny true value (~1e-21 at x = -8): absolute floor 1e-17
    assertClose(out, refOut, 1e-5, "gelu", Array.from(refOut, (v) => Math.max(Math.abs(v), 1e-12)));
    assertClose(dx, refDx, 1e-5, "gelu backward", Array.from(dout, Math.abs));
    // in place
    k.gelu_forward(px, px, n);
    assertEquals(view(px, n), view(pout, n));
  });

  Deno.test(`${tier}: softmax + cross-entropy forward and backward`, () => {
    for (const [N, V] of [[1, 1], [3, 5], [4, 65], [64, 65], [2, 8]]) {
      reset();
      const logits = randoms(N * V, 61, 8);
      if (N === 2) logits[3] = 80; // a dominant logit
      const targets = Array.from({ length: N }, (_, i) => (i * 7 + 3) % V);
      const ptg = alloc(N);
      new Uint16Array(memory.buffer, ptg, N).set(targets);
      const plog = put(logits), pprobs = alloc(N * V), plosses = alloc(N);
      k.softmax_crossentropy(plosses, pprobs, plog, ptg, N, V);
      const ref = refSoftmaxCE(logits, targets, N, V);
      assertClose(get(pprobs, N * V), ref.probs, 1e-6, `probs ${N}x${V}`, relMag(ref.probs));
      assertClose(get(plosses, N), ref.losses, 2e-6, `losses ${N}x${V}`, relMag(ref.losses));
      const scale = 1 / N;
      const pd = alloc(N * V);
      k.crossentropy_softmax_backward(pd, pprobs, ptg, N, V, scale);
      const num = numericGrad(
        (l) => refSoftmaxCE(l, targets, N, V).losses,
        Float64Array.from(logits),
        new Float64Array(N).fill(scale),
      );
      assertClose(get(pd, N * V), num, 1e-5, `dlogits ${N}x${V}`, scale);
      // in place (dlogits aliasing probs)
      const expected = view(pd, N * V).slice();
      k.crossentropy_softmax_backward(pprobs, pprobs, ptg, N, V, scale);
      assertEquals(view(pprobs, N * V), expected);
    }
  });

  // -------------------------------------------------------------------------------------------
  // Optimizer and vector utilities.

  Deno.test(`${tier}: adamw, scale_inplace, add_inplace, add, sum_squares`, () => {
    for (const n of [1, 3, 4, 7, 1001]) {
      reset();
      const p = randoms(n, 71), g = randoms(n, 72), m = randoms(n, 73, 0.1);
      const v = randoms(n, 74, 0.01).map(Math.abs);
      const pp = put(p), pg = put(g), pm = put(m), pv = put(v);
      const [lr, b1, b2, eps, wd, bc1, bc2] = [1e-3, 0.9, 0.95, 1e-8, 0.1, 0.19, 0.0975];
      k.adamw(pp, pg, pm, pv, n, lr, b1, b2, eps, wd, bc1, bc2);
      const f = Math.fround;
      const mRef = m.map((mi, i) => f(b1) * mi + (1 - f(b1)) * g[i]);
      const vRef = v.map((vi, i) => f(b2) * vi + (1 - f(b2)) * g[i] * g[i]);
      const pRef = p.map((pi, i) =>
        pi - f(lr) * ((mRef[i] / f(bc1)) / (Math.sqrt(vRef[i] / f(bc2)) + f(eps)) + f(wd) * pi)
      );
      assertClose(get(pm, n), mRef, 1e-6, `adamw m ${n}`, relMag(mRef));
      assertClose(get(pv, n), vRef, 1e-6, `adamw v ${n}`, relMag(vRef));
      assertClose(get(pp, n), pRef, 1e-6, `adamw param ${n}`, relMag(pRef));

      const a = randoms(n, 75), b = randoms(n, 76);
      const pa = put(a), pb = put(b), pout = alloc(n);
      k.add(pout, pa, pb, n);
      assertEquals(view(pout, n), new Float32Array(a.map((x, i) => x + b[i])));
      k.add_inplace(pa, pb, n);
      assertEquals(view(pa, n), view(pout, n));
      k.scale_inplace(pb, n, 0.5);
      assertEquals(view(pb, n), new Float32Array(b.map((x) => x * 0.5)));
      const ss = k.sum_squares(pout, n);
      const ssRef = get(pout, n).reduce((s, x) => s + x * x, 0);
      assertEquals(ss, Math.fround(ssRef), `sum_squares ${n}`);
    }
  });
}

/** Float64 reference attention backward (the analytic gradient, as llm.c). */
function refAttentionBackward(
  qkv: Float64Array,
  probs: Float64Array,
  dout: Float64Array,
  B: number,
  T: number,
  C: number,
  H: number,
): Float64Array {
  const hs = C / H;
  const scale = 1 / Math.sqrt(hs);
  const dqkv = new Float64Array(B * T * 3 * C);
  const dp = new Float64Array(T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < H; h++) {
        const q = (b * T + t) * 3 * C + h * hs;
        const o = (b * T + t) * C + h * hs;
        const prow = ((b * H + h) * T + t) * T;
        for (let j = 0; j <= t; j++) {
          const v = (b * T + j) * 3 * C + 2 * C + h * hs;
          let s = 0;
          for (let i = 0; i < hs; i++) {
            s += dout[o + i] * qkv[v + i];
            dqkv[v + i] += probs[prow + j] * dout[o + i];
          }
          dp[j] = s;
        }
        let dsum = 0;
        for (let j = 0; j <= t; j++) dsum += probs[prow + j] * dp[j];
        for (let j = 0; j <= t; j++) {
          const dpre = probs[prow + j] * (dp[j] - dsum) * scale;
          const k = (b * T + j) * 3 * C + C + h * hs;
          for (let i = 0; i < hs; i++) {
            dqkv[q + i] += dpre * qkv[k + i];
            dqkv[k + i] += dpre * qkv[q + i];
          }
        }
      }
    }
  }
  return dqkv;
}

// ---------------------------------------------------------------------------------------------
// Loading, tiers and the build.

Deno.test("detectTier finds relaxed SIMD in Deno", () => {
  assertEquals(detectTier(), "relaxed");
  assertEquals(detectTier({ requireShared: false }), "relaxed");
});

Deno.test("kernels also run on a non-shared memory (browser without isolation)", () => {
  const plain = new WebAssembly.Memory({ initial: 2 });
  for (const tier of TIERS) {
    const k = createKernels(tier, plain);
    const f32 = new Float32Array(plain.buffer);
    const [x, w, out] = [65536, 65536 + 64, 65536 + 128];
    f32.set([1, 2, 3, 4], x / 4);
    f32.set([1, 1, 1, 1], w / 4);
    k.matmul(out, x, w, 0, 1, 4, 1);
    assertEquals(f32[out / 4], 10);
  }
});

Deno.test("the committed kernels are exactly a fresh build of scripts/build_kernels.ts", async () => {
  const built = await buildKernels();
  assert(
    toBase64(built.relaxedBytes) === RELAXED_WASM_BASE64,
    "lib/kernels/wasm_bytes.ts (relaxed) is stale: run `deno task build:kernels`",
  );
  assert(
    toBase64(built.simdBytes) === SIMD_WASM_BASE64,
    "lib/kernels/wasm_bytes.ts (simd) is stale: run `deno task build:kernels`",
  );
  const dir = new URL("../lib/kernels/", import.meta.url);
  assertEquals(await Deno.readTextFile(new URL("kernels_relaxed.wat", dir)), built.relaxedWat);
  assertEquals(await Deno.readTextFile(new URL("kernels_simd.wat", dir)), built.simdWat);
});
