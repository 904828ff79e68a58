/**
 * Benchmarks of the WebAssembly kernels (lib/kernels) at the default model's shapes, one thread.
 *
 * - `deno bench bench/kernels_bench.ts`: Deno.bench, time per call of every matmul form (and
 *   attention, layernorm, GELU, softmax) for both tiers.
 * - `deno run bench/kernels_bench.ts [--mhz=N]`: a quick table of GFLOP/s per matmul form and
 *   tier, and the theoretical single-core peak at N MHz (or the clock in /proc/cpuinfo, which
 *   Deno reads only with --allow-all).
 *
 * @module
 */

import { createKernels, createSharedMemory, type KernelExports } from "../lib/kernels/mod.ts";

/** A matmul form at one shape. */
interface MatmulCase {
  name: string;
  M: number;
  K: number;
  N: number;
  run: (k: KernelExports, p: Pointers) => void;
}

/** Byte offsets of the operands of every case (sized for the largest). */
interface Pointers {
  x: number;
  w: number;
  bias: number;
  out: number;
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
    run: (k: KernelExports, p: Pointers) => k.matmul(p.out, p.x, p.w, p.bias, M, K, N),
  },
  {
    name: `matmul_nt ${M}x${K} . (${N}x${K})^T`,
    M,
    K,
    N,
    run: (k: KernelExports, p: Pointers) => k.matmul_nt(p.out, p.x, p.w, M, K, N),
  },
  {
    name: `backward_input ${M}x${N} . (${K}x${N})^T`,
    M,
    K,
    N,
    run: (k: KernelExports, p: Pointers) => k.matmul_backward_input(p.x, p.out, p.w, M, K, N),
  },
  {
    name: `backward_weight (${M}x${K})^T . ${M}x${N}`,
    M,
    K,
    N,
    run: (k: KernelExports, p: Pointers) => k.matmul_backward_weight(p.w, p.x, p.out, M, K, N),
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
};
// attention: B 16, T 128, C 256, H 4
const [B, T, C, H] = [16, 128, 256, 4];
const att = {
  qkv: alloc(B * T * 3 * C),
  out: alloc(B * T * C),
  probs: alloc(B * H * T * T),
  dqkv: alloc(B * T * 3 * C),
  scratch: alloc(T * (T + C / H)),
  mean: alloc(B * T),
  rstd: alloc(B * T),
  targets: alloc(B * T),
};
new Uint16Array(memory.buffer, att.targets, B * T).fill(7);

const TIERS = ["relaxed", "simd"] as const;

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

/** Median time of `fn` over a few runs after warm-up, in milliseconds. */
function timeMs(fn: () => void): number {
  for (let i = 0; i < 3; i++) fn();
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  return times.sort((a, b) => a - b)[4];
}

/**
 * Single-core peak of 128-bit FMA: 2 FMA units x 4 lanes x 2 flops per cycle, at the clock given
 * as `--mhz=N` or read from /proc/cpuinfo (Deno allows that file only with --allow-all).
 */
function peakGflops(): number | undefined {
  let mhz = Number(Deno.args.find((a) => a.startsWith("--mhz="))?.slice(6));
  if (!Number.isFinite(mhz)) {
    try {
      const info = Deno.readTextFileSync("/proc/cpuinfo");
      mhz = Number(/cpu MHz\s*:\s*([\d.]+)/.exec(info)?.[1]);
    } catch {
      return undefined;
    }
  }
  return Number.isFinite(mhz) && mhz > 0 ? (mhz / 1000) * 16 : undefined;
}

if (import.meta.main) {
  const peak = peakGflops();
  console.log(
    `single-thread GFLOP/s, M = ${M}` +
      (peak ? ` (128-bit FMA peak at the nominal clock: ${peak.toFixed(1)})` : ""),
  );
  console.log(`${"form".padEnd(42)} ${TIERS.map((t) => t.padStart(9)).join(" ")}`);
  const kernels = TIERS.map((t) => createKernels(t, memory));
  for (const c of MATMUL_CASES) {
    const cells = kernels.map((k) => {
      const ms = timeMs(() => c.run(k, pointers));
      return ((2 * c.M * c.K * c.N) / ms / 1e6).toFixed(1).padStart(9);
    });
    console.log(`${c.name.padEnd(42)} ${cells.join(" ")}`);
  }
  for (const [i, k] of kernels.entries()) {
    const fwd = timeMs(() => k.attention_forward(att.out, att.probs, att.qkv, B, T, C, H));
    const bwd = timeMs(() =>
      k.attention_backward(att.dqkv, att.scratch, att.out, att.qkv, att.probs, B, T, C, H)
    );
    console.log(
      `${TIERS[i]}: attention B${B} T${T} C${C} H${H}: forward ${fwd.toFixed(2)} ms, ` +
        `backward ${bwd.toFixed(2)} ms`,
    );
  }
}
