/**
 * Benchmarks of the WebAssembly kernels (lib/kernels) at the default model's shapes, one thread.
 *
 * - `deno bench bench/kernels_bench.ts`: Deno.bench, time per call of every matmul form (and
 *   attention, layernorm, GELU, softmax) for both tiers.
 * - `deno run bench/kernels_bench.ts`: a table of GFLOP/s per matmul form, tier and variant,
 *   and the best as a share of the tier's measured multiply-add peak; then causal attention
 *   (GFLOP/s counting the causal half only), the few-rows matmuls of sampling (GB/s of weights read) and the KV-cache attention.
 *   Times are the median of 9 runs (and the best, as other jobs on the machine add noise).
 *
 * @module
 */

import {
  createKernels,
  createSharedMemory,
  type KernelExports,
  PACK_BYTES,
} from "../lib/kernels/mod.ts";

/** A matmul form at one shape. */
interface MatmulCase {
  name: string;
  M: number;
  K: number;
  N: number;
  /** Which variants: 0 = the register-tile forms, 1 = the dot-product (NT) forms. */
  form: number;
  run: (k: KernelExports, p: Pointers, variant?: number) => void;
}

/** Byte offsets of the operands of every case (sized for the largest). */
interface Pointers {
  x: number;
  w: number;
  bias: number;
  out: number;
  /** The packed variants' scratch. */
  scratch: number;
}

const M = 2048; // batch 16 x block 128
const SHAPES: [number, number][] = [[256, 768], [256, 1024], [1024, 256]];

/** Every matmul form at the model's shapes: the flop count of each is 2 M K N. */
export const MATMUL_CASES: MatmulCase[] = SHAPES.flatMap(([K, N]) => [
  {
    name: `matmul ${M}x${K} . ${K}x${N}`,
    M,
    K,
    N,
    form: 0,
    run: (k: KernelExports, p: Pointers, v?: number) =>
      k.matmul(p.out, p.x, p.w, p.bias, M, K, N, v, p.scratch),
  },
  {
    name: `matmul_nt ${M}x${K} . (${N}x${K})^T`,
    M,
    K,
    N,
    form: 1,
    run: (k: KernelExports, p: Pointers, v?: number) => k.matmul_nt(p.out, p.x, p.w, M, K, N, v),
  },
  {
    name: `backward_input ${M}x${N} . (${K}x${N})^T`,
    M,
    K,
    N,
    form: 1,
    run: (k: KernelExports, p: Pointers, v?: number) =>
      k.matmul_backward_input(p.x, p.out, p.w, M, K, N, v),
  },
  {
    name: `backward_weight (${M}x${K})^T . ${M}x${N}`,
    M,
    K,
    N,
    form: 0,
    run: (k: KernelExports, p: Pointers, v?: number) =>
      k.matmul_backward_weight(p.w, p.x, p.out, M, K, N, v, p.scratch),
  },
]);

// One memory for everything: operands sized for the largest shape, random-ish contents.
const memory = createSharedMemory(64 << 20);
const f32 = new Float32Array(memory.buffer);
let top = 65536;
function alloc(n: number): number {
  const p = top;
  top += Math.ceil((n * 4) / 64) * 64;
  for (let i = 0; i < n; i++) f32[p / 4 + i] = Math.sin(i * 0.37) * 0.1;
  return p;
}
const pointers: Pointers = {
  x: alloc(M * 1024),
  w: alloc(1024 * 1024),
  bias: alloc(1024),
  out: alloc(M * 1024),
  scratch: alloc(PACK_BYTES / 4),
};
// attention: B 16, T 128, C 256, H 4
const [B, T, C, H] = [16, 128, 256, 4];
const att = {
  qkv: alloc(B * T * 3 * C),
  out: alloc(B * T * C),
  probs: alloc(B * H * T * T),
  dqkv: alloc(B * T * 3 * C),
  scratch: alloc(T * (T + C / H)), // attention_backward: T * (T + hs) floats
  mean: alloc(B * T),
  rstd: alloc(B * T),
  targets: alloc(B * T),
};
new Uint16Array(memory.buffer, att.targets, B * T).fill(7);

const TIERS = ["relaxed", "simd"] as const;
/** The (K, N) of the model's matmuls, run with M = 1..3 rows when sampling with the KV cache. */
const SAMPLING_SHAPES: [number, number][] = [[256, 768], [256, 256], [256, 1024], [1024, 256]];

for (const tier of TIERS) {
  const k = createKernels(tier, memory);
  for (const c of MATMUL_CASES) {
    Deno.bench({
      name: `${tier}: ${c.name} (${((2 * c.M * c.K * c.N) / 1e9).toFixed(2)} GFLOP)`,
      group: c.name,
      baseline: tier === "relaxed",
      fn: () => c.run(k, pointers),
    });
  }
  Deno.bench({
    name: `${tier}: attention_forward B${B} T${T} C${C} H${H}`,
    group: "attention_forward",
    fn: () => k.attention_forward(att.out, att.probs, att.qkv, B, T, C, H),
  });
  Deno.bench({
    name: `${tier}: attention_backward B${B} T${T} C${C} H${H}`,
    group: "attention_backward",
    fn: () => k.attention_backward(att.dqkv, att.scratch, att.out, att.qkv, att.probs, B, T, C, H),
  });
  for (const [K, N] of SAMPLING_SHAPES) {
    Deno.bench({
      name: `${tier}: matmul 1x${K} . ${K}x${N} (sampling)`,
      group: `matmul 1x${K} . ${K}x${N}`,
      baseline: tier === "relaxed",
      fn: () => k.matmul(pointers.out, pointers.x, pointers.w, pointers.bias, 1, K, N),
    });
  }
  Deno.bench({
    name: `${tier}: attention_rows T${T} C${C} H${H}, one row at t = ${T - 1}`,
    group: "attention_rows",
    fn: () => k.attention_rows(att.out, att.probs, att.qkv, T, T - 1, 1, C, H),
  });
  Deno.bench({
    name: `${tier}: layernorm_forward ${B * T}x${C}`,
    group: "layernorm_forward",
    fn: () => k.layernorm_forward(att.out, att.mean, att.rstd, att.qkv, att.qkv, att.qkv, B * T, C),
  });
  Deno.bench({
    name: `${tier}: gelu_forward ${B * T}x${4 * C}`,
    group: "gelu_forward",
    fn: () => k.gelu_forward(pointers.out, pointers.x, B * T * 4 * C),
  });
  Deno.bench({
    name: `${tier}: softmax_crossentropy ${B * T}x65`,
    group: "softmax_crossentropy",
    fn: () => k.softmax_crossentropy(att.mean, att.probs, att.out, att.targets, B * T, 65),
  });
}

/**
 * Median and best time of `fn` over 9 runs after warm-up, in milliseconds; each run repeats `fn`
 * `reps` times (for calls of a few microseconds).
 */
function timeMs(fn: () => void, reps = 1): { median: number; best: number } {
  for (let i = 0; i < 3 * reps; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) fn();
    times.push((performance.now() - t0) / reps);
  }
  times.sort((a, b) => a - b);
  return { median: times[4], best: times[0] };
}

/** This machine's peak of a tier's multiply-add (12 independent f32x4 chains), GFLOP/s. */
function maddPeak(k: KernelExports): number {
  const ms = timeMs(() => k.madd_peak(5e6)).best;
  return (5e6 * 96) / ms / 1e6;
}

if (import.meta.main) {
  const kernels = TIERS.map((t) => createKernels(t, memory));
  const peaks = kernels.map(maddPeak);
  console.log(
    `single-thread GFLOP/s at M = ${M} of every variant (v0 v1 ...), and the best as a share of ` +
      `the tier's multiply-add peak: ${
        TIERS.map((t, i) => `${t} ${peaks[i].toFixed(1)} GFLOP/s`).join(", ")
      }`,
  );
  for (const c of MATMUL_CASES) {
    const cells = kernels.map((k, i) => {
      const rates = Array.from({ length: k.variant_count(c.form) }, (_, v) => {
        const ms = timeMs(() => c.run(k, pointers, v)).median;
        return (2 * c.M * c.K * c.N) / ms / 1e6;
      });
      const best = Math.max(...rates);
      return `${TIERS[i]} ${rates.map((r) => r.toFixed(1)).join(" ")} (${
        (100 * best / peaks[i]).toFixed(0)
      }%)`;
    });
    console.log(`${c.name.padEnd(42)} ${cells.join("   ")}`);
  }
  // causal attention: B·H·T(T+1)/2·hs multiply-adds per product, 2 products forward, 4 backward
  const causal = B * H * (T * (T + 1) / 2) * (C / H) * 2;
  const rate = (flops: number, t: { median: number; best: number }) =>
    `${t.median.toFixed(2)} ms ${(flops / t.median / 1e6).toFixed(1)} GFLOP/s ` +
    `(best ${t.best.toFixed(2)} ms ${(flops / t.best / 1e6).toFixed(1)})`;
  for (const [i, k] of kernels.entries()) {
    const fwd = timeMs(() => k.attention_forward(att.out, att.probs, att.qkv, B, T, C, H));
    const bwd = timeMs(() =>
      k.attention_backward(att.dqkv, att.scratch, att.out, att.qkv, att.probs, B, T, C, H)
    );
    console.log(`${TIERS[i]}: attention B${B} T${T} C${C} H${H}`);
    console.log(`  forward  ${rate(2 * causal, fwd)}`);
    console.log(`  backward ${rate(4 * causal, bwd)}`);
  }
  // sampling: few-rows matmuls (weights read once: GB/s), logits, KV-cache attention rows
  const us = (t: { median: number; best: number }) =>
    `${(t.median * 1000).toFixed(1)} us (best ${(t.best * 1000).toFixed(1)})`;
  for (const [i, k] of kernels.entries()) {
    console.log(`${TIERS[i]}: sampling kernels`);
    for (const [K, N] of SAMPLING_SHAPES) {
      for (const m of [1, 2, 3]) {
        const t = timeMs(
          () => k.matmul(pointers.out, pointers.x, pointers.w, pointers.bias, m, K, N),
          50,
        );
        console.log(
          `  matmul ${m}x${K} . ${K}x${N}: ${us(t)}, ${
            (2 * m * K * N / t.median / 1e6).toFixed(1)
          } ` +
            `GFLOP/s, ${(4 * K * N / t.median / 1e6).toFixed(1)} GB/s of weights`,
        );
      }
    }
    const nt = timeMs(() => k.matmul_nt(pointers.out, pointers.x, pointers.w, 1, C, 65), 200);
    console.log(`  matmul_nt 1x${C} . (65x${C})^T: ${us(nt)}`);
    for (const [p0, n] of [[T - 1, 1], [T / 2 - 1, 1], [0, T / 2]]) {
      const t = timeMs(() => k.attention_rows(att.out, att.probs, att.qkv, T, p0, n, C, H), 20);
      console.log(`  attention_rows T${T} C${C} H${H}, rows ${p0}..${p0 + n - 1}: ${us(t)}`);
    }
  }
}
