/**
 * Tests of the WebGPU kernels (lib/webgpu) against the plain TypeScript reference of
 * lib/tensor.ts (and the embedding of lib/layers.ts), run in float64 on the same float32 inputs.
 * Every kernel runs at odd sizes (edges of the tiles and of the thread strides) and at the
 * default model's sizes; every array sits a few elements into its buffer, so element offsets are
 * exercised everywhere. Also: one buffer holding every tensor, a chain of kernels in one pass
 * (twice, bit for bit), and the one-line errors.
 *
 * Tolerances, on the largest absolute error over an output, relative to 1 + max|reference|:
 * - 1e-4 for the matrix products and attention (float32 sums of up to 768 products: the rounding
 *   grows like √K · 2⁻²⁴ per unit of magnitude; measured errors are about 100x smaller);
 * - 1e-5 for the row kernels (LayerNorm, softmax, cross-entropy), GELU, embedding, sums, AdamW.
 *
 * Needs a WebGPU adapter: on a machine without one (or without navigator.gpu) the tests are
 * skipped with the reason printed, except under CI=true, where that is a failure (CI installs
 * Mesa's lavapipe). Run alone with `deno test --allow-read --allow-write --allow-env
 * tests/webgpu_test.ts` (it sets XDG_RUNTIME_DIR for lavapipe when it is unset).
 */

import { deepStrictEqual as assertEquals, ok as assert, rejects, throws } from "node:assert";
import * as ref from "../lib/tensor.ts";
import { dropoutForward, embeddingBackward, embeddingForward, type Pass } from "../lib/layers.ts";
import { dropoutScale, dropoutSeed, Rng } from "../lib/rng.ts";
import { type GpuContext, requestGpu } from "../lib/webgpu/device.ts";
import { maskWords } from "../lib/webgpu/dropout.ts";
import { attentionScratchSize, GpuKernels } from "../lib/webgpu/kernels.ts";
import { shifted } from "../lib/webgpu/memory.ts";
import { type GpuArray, gpuArray, Pipelines } from "../lib/webgpu/pipelines.ts";

// ---------------------------------------------------------------------------------------------
// The device, or why there is none

// Vulkan's window-system layer wants a runtime folder, or lavapipe prints "XDG_RUNTIME_DIR is
// invalid" warnings: set before the process asks for its first adapter, it is taken up
if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
let gpu: GpuContext | null = null;
let kernels: GpuKernels | null = null;
let missing = "";
try {
  gpu = await requestGpu({ timeoutMs: 30_000 });
  kernels = await GpuKernels.create(gpu.device);
} catch (e) {
  missing = (e as Error).message;
}
const ci = Deno.env.get("CI") === "true";
if (gpu === null) {
  if (ci) {
    Deno.test("a WebGPU adapter is available (CI installs lavapipe)", () => {
      throw new Error(missing);
    });
  } else console.warn(`skipping the WebGPU tests: ${missing}`);
}

/** A test that runs only where there is a device. */
function gpuTest(name: string, fn: (k: GpuKernels, device: GPUDevice) => Promise<void>): void {
  Deno.test({ name, ignore: kernels === null, fn: () => fn(kernels!, gpu!.device) });
}

// ---------------------------------------------------------------------------------------------
// Buffers, recording, comparisons

/** Elements before each test array in its buffer, so offsets are never 0. */
const PAD = 3;
const USAGE = gpu === null
  ? 0
  : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** A new buffer holding `data` at element PAD (and room for `extra` more elements after). */
function upload(data: Float32Array | Uint32Array, extra = 0): GpuArray {
  const buffer = gpu!.device.createBuffer({
    size: (PAD + data.length + extra + 1) * 4,
    usage: USAGE,
    mappedAtCreation: true,
  });
  const view = data instanceof Uint32Array
    ? new Uint32Array(buffer.getMappedRange())
    : new Float32Array(buffer.getMappedRange());
  view.set(data, PAD);
  buffer.unmap();
  return gpuArray(buffer, PAD);
}

/** n elements of a GpuArray, read back. */
async function download(a: GpuArray, n: number): Promise<Float32Array> {
  const device = gpu!.device;
  const staging = device.createBuffer({
    size: Math.max(4, n * 4),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  if (n > 0) encoder.copyBufferToBuffer(a.buffer, a.offset * 4, staging, 0, n * 4);
  kernels!.submit(encoder.finish());
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange().slice(0, n * 4));
  staging.destroy();
  return out;
}

/** Records `work` into one compute pass and submits it; fails on any validation error. */
async function record(work: (pass: GPUComputePassEncoder) => void): Promise<void> {
  const device = gpu!.device;
  device.pushErrorScope("validation");
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  work(pass);
  pass.end();
  kernels!.submit(encoder.finish());
  const error = await device.popErrorScope();
  if (error !== null) throw new Error(`WebGPU validation: ${error.message}`);
}

/** Seeded uniform floats in [-scale, scale). */
function random(n: number, seed: number, scale = 1): Float32Array<ArrayBuffer> {
  const rng = new Rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rng.random() - 1) * scale;
  return out;
}

/** Seeded token ids below V, as the reference's Uint16 and the GPU's u32. */
function tokens(n: number, V: number, seed: number): [Uint16Array, Uint32Array] {
  const rng = new Rng(seed);
  const ids = new Uint16Array(n);
  for (let i = 0; i < n; i++) ids[i] = rng.int(V);
  return [ids, Uint32Array.from(ids)];
}

const f64 = (a: Float32Array) => Float64Array.from(a);

/** Tolerances (see the file's comment): products and attention, everything else. */
const TOL_PRODUCT = 1e-4;
const TOL = 1e-5;

/**
 * Asserts max |got - want| <= rel · (1 + max|want|) and prints the error. For an elementwise
 * kernel (`each`), every element is held to its own size instead: |got_i - want_i| <= rel ·
 * (1 + |want_i|), and the printed error is the worst ratio to that bound, times rel.
 */
function expectClose(
  label: string,
  got: Float32Array,
  want: ArrayLike<number>,
  rel: number,
  each = false,
): void {
  assertEquals(got.length, want.length, `${label}: length`);
  let err = 0, size = 0;
  for (let i = 0; i < got.length; i++) {
    const e = Math.abs(got[i] - want[i]) / (each ? 1 + Math.abs(want[i]) : 1);
    if (!(e <= err)) err = e; // NaN sticks
    size = Math.max(size, Math.abs(want[i]));
  }
  const tol = each ? rel : rel * (1 + size);
  const what = each ? "max error / (1 + |reference|)" : "max error";
  console.log(`  ${label}: ${what} ${err.toExponential(2)} (tolerance ${tol.toExponential(2)})`);
  assert(err <= tol, `${label}: ${what} ${err} is over ${tol}`);
}

// ---------------------------------------------------------------------------------------------
// The device

gpuTest("requestGpu opens a device and describes its adapter", () => {
  const g = gpu!;
  console.log(
    `  adapter: ${g.description} (vendor ${g.vendor || "-"}, software ${g.software}, ` +
      `subgroups ${g.subgroups})`,
  );
  assert(g.description.length > 0);
  if (/llvmpipe/.test(g.description)) assert(g.software, "lavapipe is a software adapter");
  assert(g.device.limits.maxStorageBufferBindingSize >= 128 << 20);
  return Promise.resolve();
});

// ---------------------------------------------------------------------------------------------
// Matrix products

// up to SKINNY_ROWS rows of output run the thread-per-element kernels (a KV cache's new token)
const PRODUCT_SHAPES: [number, number, number][] = [
  [1, 1, 1],
  [1, 256, 65],
  [3, 256, 768],
  [7, 13, 5],
  [65, 17, 129],
  [64, 256, 768],
];

gpuTest("matmul: out = inp · w + bias, with and without bias", async (k) => {
  for (const [M, K, N] of PRODUCT_SHAPES) {
    const [inp, w, bias] = [random(M * K, 1), random(K * N, 2), random(N, 3)];
    const [a, b, c] = [upload(inp), upload(w), upload(bias)];
    const [out, outNoBias] = [upload(new Float32Array(M * N)), upload(new Float32Array(M * N))];
    await record((pass) => {
      k.matmul(pass, out, a, b, c, M, K, N);
      k.matmul(pass, outNoBias, a, b, null, M, K, N);
    });
    const want = new Float64Array(M * N);
    ref.matmul(want, f64(inp), f64(w), f64(bias), M, K, N);
    expectClose(`matmul ${M}x${K}x${N}`, await download(out, M * N), want, TOL_PRODUCT);
    ref.matmul(want, f64(inp), f64(w), null, M, K, N);
    expectClose(`no bias ${M}x${K}x${N}`, await download(outNoBias, M * N), want, TOL_PRODUCT);
  }
});

gpuTest("matmulNT and matmulBackwardInput: products with a transposed operand", async (k) => {
  for (const [M, K, N] of [...PRODUCT_SHAPES, [64, 256, 65] as [number, number, number]]) {
    const [a, b] = [random(M * K, 4), random(N * K, 5)];
    const out = upload(new Float32Array(M * N));
    // matmulBackwardInput(dInp[M,K], dOut[M,N], w[K,N]) with dOut = a' [M,N], w = b' [K,N]
    const [dOut, w] = [random(M * N, 6), random(K * N, 7)];
    const dInp = upload(new Float32Array(M * K));
    await record((pass) => {
      k.matmulNT(pass, out, upload(a), upload(b), M, K, N);
      k.matmulBackwardInput(pass, dInp, upload(dOut), upload(w), M, K, N);
    });
    const want = new Float64Array(M * N);
    ref.matmulNT(want, f64(a), f64(b), M, K, N);
    expectClose(`matmulNT ${M}x${K}x${N}`, await download(out, M * N), want, TOL_PRODUCT);
    const wantInp = new Float64Array(M * K);
    ref.matmulNT(wantInp, f64(dOut), f64(w), M, N, K);
    const label = `backward input ${M}x${K}x${N}`;
    expectClose(label, await download(dInp, M * K), wantInp, TOL_PRODUCT);
  }
});

gpuTest("matmulBackwardWeight and biasBackward accumulate", async (k) => {
  for (const [M, K, N] of PRODUCT_SHAPES) {
    const [inp, dOut, dW0, dB0] = [
      random(M * K, 8),
      random(M * N, 9),
      random(K * N, 10),
      random(N, 11),
    ];
    const [dW, dB] = [upload(dW0), upload(dB0)];
    await record((pass) => {
      const y = upload(dOut);
      k.matmulBackwardWeight(pass, dW, upload(inp), y, M, K, N);
      k.biasBackward(pass, dB, y, M, N);
    });
    const [wantW, wantB] = [f64(dW0), f64(dB0)];
    ref.matmulBackwardWeight(wantW, f64(inp), f64(dOut), M, K, N);
    ref.biasBackward(wantB, f64(dOut), M, N);
    expectClose(`backward weight ${M}x${K}x${N}`, await download(dW, K * N), wantW, TOL_PRODUCT);
    expectClose(`bias backward ${M}x${N}`, await download(dB, N), wantB, TOL);
  }
});

// ---------------------------------------------------------------------------------------------
// Attention

gpuTest("attention forward and backward over whole sequences", async (k) => {
  for (const [B, T, C, H] of [[1, 1, 4, 1], [2, 7, 12, 3], [2, 128, 256, 4], [1, 130, 8, 2]]) {
    const qkv = random(B * T * 3 * C, 12, 2);
    const dOut = random(B * T * C, 13);
    const [out, probs] = [upload(new Float32Array(B * T * C)), upload(random(B * H * T * T, 14))];
    const dQkv = upload(random(B * T * 3 * C, 15)); // overwritten
    const scratch = upload(new Float32Array(attentionScratchSize(B, T, H)));
    const qkvGpu = upload(qkv);
    await record((pass) => {
      k.attentionForward(pass, out, probs, qkvGpu, B, T, C, H);
      k.attentionBackward(pass, dQkv, scratch, upload(dOut), qkvGpu, probs, B, T, C, H);
    });
    const [wantOut, wantProbs] = [new Float64Array(B * T * C), new Float64Array(B * H * T * T)];
    ref.attentionForward(wantOut, wantProbs, f64(qkv), B, T, C, H);
    const shape = `B${B} T${T} C${C} H${H}`;
    expectClose(`attention out ${shape}`, await download(out, B * T * C), wantOut, TOL_PRODUCT);
    expectClose(`attention probs ${shape}`, await download(probs, B * H * T * T), wantProbs, TOL);
    // the backward from the GPU's probs, as a training step would run it
    const gotProbs = f64(await download(probs, B * H * T * T));
    const wantQkv = new Float64Array(B * T * 3 * C);
    ref.attentionBackward(wantQkv, new Float64Array(T), f64(dOut), f64(qkv), gotProbs, B, T, C, H);
    const label = `attention dQkv ${shape}`;
    expectClose(label, await download(dQkv, B * T * 3 * C), wantQkv, TOL_PRODUCT);
  }
});

gpuTest("attention forward over the new rows of a KV cache (start, rows)", async (k) => {
  for (const [T, C, H, start, rows] of [[8, 12, 3, 0, 5], [8, 12, 3, 5, 1], [130, 16, 2, 64, 66]]) {
    const qkv = random(T * 3 * C, 41, 2);
    const [out, probs] = [upload(new Float32Array(rows * C)), upload(new Float32Array(H * T * T))];
    await record((pass) =>
      k.attentionForward(pass, out, probs, upload(qkv), 1, T, C, H, start, rows)
    );
    const [wantOut, wantProbs] = [new Float64Array(rows * C), new Float64Array(H * T * T)];
    ref.attentionForward(wantOut, wantProbs, f64(qkv), 1, T, C, H, start, rows);
    const shape = `T${T} C${C} H${H} rows ${start}..${start + rows - 1}`;
    expectClose(
      `cached attention out ${shape}`,
      await download(out, rows * C),
      wantOut,
      TOL_PRODUCT,
    );
    const gotProbs = await download(probs, H * T * T);
    for (let h = 0; h < H; h++) {
      const at = (h * T + start) * T, n = rows * T;
      const label = `cached attention probs head ${h} ${shape}`;
      expectClose(label, gotProbs.subarray(at, at + n), wantProbs.subarray(at, at + n), TOL);
    }
  }
  throws(
    () =>
      k.attentionForward(
        null!,
        upload(new Float32Array(1)),
        upload(new Float32Array(1)),
        upload(new Float32Array(1)),
        1,
        4,
        4,
        1,
        3,
        2,
      ),
    /positions 3 .. 4 are not in 0..3/,
  );
});

// ---------------------------------------------------------------------------------------------
// LayerNorm, GELU, softmax and cross-entropy

gpuTest("layernorm forward and backward (all three gradients accumulate)", async (k) => {
  for (const [N, C] of [[1, 1], [7, 13], [64, 256], [3, 300]]) {
    const [x, w, b, dOut] = [random(N * C, 16, 3), random(C, 17), random(C, 18), random(N * C, 19)];
    const [dInp0, dW0, dB0] = [random(N * C, 20), random(C, 21), random(C, 22)];
    const [out, mean, rstd] = [N * C, N, N].map((n) => upload(new Float32Array(n)));
    // dW and dB side by side in one buffer, as a model's gradients are (one binding)
    const dInp = upload(dInp0), both = new Float32Array(2 * C);
    both.set(dW0);
    both.set(dB0, C);
    const dW = upload(both), dB = { buffer: dW.buffer, offset: dW.offset + C };
    await record((pass) => {
      const [xg, wg] = [upload(x), upload(w)];
      k.layernormForward(pass, out, mean, rstd, xg, wg, upload(b), N, C);
      k.layernormBackward(pass, dInp, dW, dB, upload(dOut), xg, wg, mean, rstd, N, C);
    });
    const [wantOut, wantMean, wantRstd] = [
      new Float64Array(N * C),
      new Float64Array(N),
      new Float64Array(N),
    ];
    ref.layernormForward(wantOut, wantMean, wantRstd, f64(x), f64(w), f64(b), N, C);
    const shape = `${N}x${C}`;
    expectClose(`layernorm out ${shape}`, await download(out, N * C), wantOut, TOL);
    expectClose(`layernorm mean ${shape}`, await download(mean, N), wantMean, TOL);
    expectClose(`layernorm rstd ${shape}`, await download(rstd, N), wantRstd, TOL);
    const [wantInp, wantW, wantB] = [f64(dInp0), f64(dW0), f64(dB0)];
    ref.layernormBackward(
      wantInp,
      wantW,
      wantB,
      f64(dOut),
      f64(x),
      f64(w),
      wantMean,
      wantRstd,
      N,
      C,
    );
    expectClose(`layernorm dInp ${shape}`, await download(dInp, N * C), wantInp, TOL);
    expectClose(`layernorm dWeight ${shape}`, await download(dW, C), wantW, TOL);
    expectClose(`layernorm dBias ${shape}`, await download(dB, C), wantB, TOL);
  }
});

gpuTest("gelu forward and backward, large arguments included", async (k) => {
  for (const n of [1, 1000, 65 * 1024 + 3]) {
    const x = random(n, 23, 6);
    x.set([0, -0, 20, -20, 100, -100, 1e4].slice(0, n));
    const dOut = random(n, 24);
    const [out, dInp] = [upload(new Float32Array(n)), upload(new Float32Array(n))];
    await record((pass) => {
      const xg = upload(x);
      k.geluForward(pass, out, xg, n);
      k.geluBackward(pass, dInp, xg, upload(dOut), n);
    });
    const [want, wantD] = [new Float64Array(n), new Float64Array(n)];
    ref.geluForward(want, f64(x), n);
    ref.geluBackward(wantD, f64(x), f64(dOut), n);
    expectClose(`gelu ${n}`, await download(out, n), want, TOL, true);
    expectClose(`gelu backward ${n}`, await download(dInp, n), wantD, TOL, true);
  }
});

gpuTest("softmax cross-entropy and its backward", async (k) => {
  for (const [N, V] of [[1, 1], [5, 7], [64, 65], [3, 1000]]) {
    const logits = random(N * V, 25, 8);
    const [ids, ids32] = tokens(N, V, 26);
    const [losses, probs, dLogits] = [N, N * V, N * V].map((n) => upload(random(n, 27)));
    await record((pass) => {
      const t = upload(ids32);
      k.softmaxCrossEntropy(pass, losses, probs, upload(logits), t, N, V);
      k.softmaxCrossEntropyBackward(pass, dLogits, probs, t, N, V, 1 / N);
    });
    const [wantLoss, wantProbs, wantD] = [
      new Float64Array(N),
      new Float64Array(N * V),
      new Float64Array(N * V),
    ];
    ref.softmaxCrossEntropy(wantLoss, wantProbs, f64(logits), ids, N, V);
    ref.softmaxCrossEntropyBackward(wantD, wantProbs, ids, N, V, 1 / N);
    const shape = `${N}x${V}`;
    expectClose(`cross-entropy losses ${shape}`, await download(losses, N), wantLoss, TOL);
    expectClose(`softmax probs ${shape}`, await download(probs, N * V), wantProbs, TOL);
    expectClose(
      `cross-entropy backward ${shape}`,
      await download(dLogits, N * V),
      wantD,
      TOL,
      true,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// Embedding

gpuTest("embedding forward and backward (both gradients accumulate)", async (k) => {
  for (const [B, T, C, V] of [[1, 1, 1, 1], [2, 5, 7, 11], [16, 128, 256, 65]]) {
    const [ids, ids32] = tokens(B * T, V, 28);
    const [wte, wpe, dOut, dWte0, dWpe0] = [
      random(V * C, 29),
      random(T * C, 30),
      random(B * T * C, 31),
      random(V * C, 32),
      random(T * C, 33),
    ];
    const out = upload(new Float32Array(B * T * C));
    const [dWte, dWpe] = [upload(dWte0), upload(dWpe0)];
    await record((pass) => {
      const t = upload(ids32);
      k.embeddingForward(pass, out, t, upload(wte), upload(wpe), B, T, C, V);
      k.embeddingBackward(pass, dWte, dWpe, upload(dOut), t, B, T, C, V);
    });
    const s: Pass = { B, T, C, H: 1, V, start: 0, rows: T, cached: false, dropout: null };
    const want = new Float64Array(B * T * C);
    embeddingForward(want, ids, f64(wte), f64(wpe), s);
    const [wantWte, wantWpe] = [f64(dWte0), f64(dWpe0)];
    embeddingBackward(wantWte, wantWpe, f64(dOut), ids, s);
    const shape = `B${B} T${T} C${C} V${V}`;
    expectClose(`embedding ${shape}`, await download(out, B * T * C), want, TOL, true);
    expectClose(`embedding dWte ${shape}`, await download(dWte, V * C), wantWte, TOL);
    expectClose(`embedding dWpe ${shape}`, await download(dWpe, T * C), wantWpe, TOL);
  }
});

// ---------------------------------------------------------------------------------------------
// Elementwise helpers, the sum of squares, AdamW

gpuTest("add, addInPlace, scaleInPlace and sumSquares", async (k) => {
  for (const n of [0, 1, 1000, 1_000_003]) {
    const [a, b, c] = [random(n, 34), random(n, 35), random(n, 36)];
    const [sum, acc, scaled, total] = [
      upload(new Float32Array(n)),
      upload(a),
      upload(c),
      upload(new Float32Array(1)),
    ];
    await record((pass) => {
      const bg = upload(b);
      k.add(pass, sum, upload(a), bg, n);
      // out = a is refused: a written binding may not overlap another (addInPlace does it)
      const alias = upload(a);
      if (n > 0) {
        throws(
          () => k.add(pass, alias, alias, bg, n),
          /^RangeError: add: buffer argument 0, which it writes, shares its buffer with argument 1/,
        );
      }
      k.addInPlace(pass, acc, bg, n);
      k.scaleInPlace(pass, scaled, n, -0.37);
      k.sumSquares(pass, total, upload(c), n);
    });
    const want = new Float64Array(n);
    ref.add(want, f64(a), f64(b), n);
    expectClose(`add ${n}`, await download(sum, n), want, TOL, true);
    expectClose(`addInPlace ${n}`, await download(acc, n), want, TOL, true);
    const wantScaled = f64(c);
    ref.scaleInPlace(wantScaled, n, -0.37);
    expectClose(`scaleInPlace ${n}`, await download(scaled, n), wantScaled, TOL, true);
    const wantTotal = [ref.sumSquares(f64(c), n)];
    // a sum of n float32 terms: relative to the total itself
    expectClose(`sumSquares ${n}`, await download(total, 1), wantTotal, TOL);
  }
});

gpuTest("dropout: the CPU's masks bit for bit, applied in place and out of place", async (k) => {
  // [rows, sites, T, C, p, step seed]: rows past 1023 carry b · 64 + site into the seed's high
  // word, and rows of 37 elements end inside a word of bits
  const cases = [
    [3, 5, 4, 8, 0.2, dropoutSeed(0, 7)],
    [1030, 2, 1, 37, 0.5, 0xffff],
    [2, 1, 16, 64, 0.9, dropoutSeed(41, 123456)],
  ];
  for (const [rows, sites, T, C, p, seed] of cases) {
    const rowLen = T * C, words = maskWords(rowLen), n = rows * rowLen;
    const masks = upload(new Uint32Array(sites * rows * words));
    const x = random(n, 51), { threshold, keep } = dropoutScale(p);
    const [out, inPlace] = [upload(new Float32Array(n)), upload(x)];
    const last = shifted(masks, (sites - 1) * rows * words);
    await record((pass) => {
      k.dropoutMasks(pass, masks, rows, sites, rowLen, seed, threshold);
      k.dropout(pass, out, upload(x), last, rows, rowLen, keep);
      k.dropout(pass, inPlace, inPlace, last, rows, rowLen, keep);
    });
    const bits = new Uint32Array((await download(masks, sites * rows * words)).buffer);
    const shape: Pass = {
      B: rows,
      T,
      C,
      H: 1,
      V: 1,
      start: 0,
      rows: T,
      cached: false,
      dropout: null,
    };
    let dropped = 0;
    for (let site = 0; site < sites; site++) {
      const want = Float32Array.from(x), mask = new Float32Array(n);
      dropoutForward(want, mask, { p, seed, firstRow: 0 }, site, shape);
      for (let i = 0; i < n; i++) {
        const j = i % rowLen,
          word = bits[(site * rows + Math.floor(i / rowLen)) * words + (j >> 5)];
        const kept = ((word >>> (j & 31)) & 1) === 1;
        if (kept !== (mask[i] !== 0)) {
          throw new Error(`site ${site}, element ${i}: the GPU's mask differs`);
        }
        if (!kept) dropped++;
      }
      if (site === sites - 1) {
        assertEquals(await download(out, n), want);
        assertEquals(await download(inPlace, n), want);
      }
    }
    const rate = dropped / (sites * n);
    console.log(
      `  ${rows} rows x ${rowLen}, ${sites} sites, p ${p}: masks equal, ${rate.toFixed(3)} dropped`,
    );
    assert(Math.abs(rate - p) < 0.05, `dropped ${rate}, not about ${p}`);
  }
});

gpuTest("adamwUpdate: one step, settings as the optimizer computes them", async (k) => {
  const s: ref.AdamWStep = {
    lr: 3e-4,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0.1,
    bc1: 1 - 0.9 ** 7,
    bc2: 1 - 0.95 ** 7,
  };
  for (const n of [1, 1000, 100_003]) {
    const [param, grad, m, v] = [
      random(n, 37),
      random(n, 38, 0.1),
      random(n, 39, 0.01),
      random(n, 40, 1e-4),
    ];
    v.forEach((x, i) => v[i] = Math.abs(x));
    const [pg, mg, vg] = [upload(param), upload(m), upload(v)];
    await record((pass) => k.adamwUpdate(pass, pg, upload(grad), mg, vg, n, s));
    const [wp, wm, wv] = [f64(param), f64(m), f64(v)];
    ref.adamwUpdate(wp, f64(grad), wm, wv, n, s);
    expectClose(`adamw param ${n}`, await download(pg, n), wp, TOL, true);
    expectClose(`adamw m ${n}`, await download(mg, n), wm, TOL, true);
    expectClose(`adamw v ${n}`, await download(vg, n), wv, TOL, true);
  }
});

gpuTest("the optimizer's kernels: fill, normScale, scaleBy and Muon's three", async (k) => {
  const n = 10_007, side = 37;
  const [x, grad, m, u, gram, poly, ortho] = [
    random(n, 42),
    random(n, 43),
    random(n, 44),
    random(n, 45),
    random(side * side, 46),
    random(side * side, 47),
    random(n, 48),
  ];
  const sums = new Float32Array([2.25, 1.75, 5]); // the norm is 3
  const [filled, scaled, mg, ug, polyg, param] = [x, x, m, u, poly, x].map((a) => upload(a));
  const [clipOver, clipUnder, clipOff, always] = [0, 1, 2, 3].map(() =>
    upload(new Float32Array(2))
  );
  await record((pass) => {
    const sumsg = upload(sums);
    k.fill(pass, filled, n, -1.5);
    k.normScale(pass, clipOver, sumsg, 3, 1, 1e-6, false);
    k.normScale(pass, clipUnder, sumsg, 3, 4, 1e-6, false);
    k.normScale(pass, clipOff, sumsg, 3, 0, 1e-6, false);
    k.normScale(pass, always, sumsg, 2, 1, 1e-7, true); // √4 = 2 over the first two
    k.scaleBy(pass, scaled, { buffer: clipOver.buffer, offset: clipOver.offset + 1 }, n);
    k.muonMomentum(pass, mg, upload(grad), ug, n, 0.95);
    k.newtonSchulzPoly(pass, polyg, upload(gram), side, 3.4445, -4.775, 2.0315);
    k.muonUpdate(pass, param, upload(ortho), n, 0.99, 0.01);
  });
  expectClose("fill", await download(filled, n), new Float64Array(n).fill(-1.5), TOL, true);
  expectClose("clip over", await download(clipOver, 2), [3, 1 / (3 + 1e-6)], TOL, true);
  expectClose("clip under", await download(clipUnder, 2), [3, 1], TOL, true);
  expectClose("clip off", await download(clipOff, 2), [3, 1], TOL, true);
  expectClose("normalise", await download(always, 2), [2, 1 / (2 + 1e-7)], TOL, true);
  const wantScaled = Array.from(x, (v) => v / (3 + 1e-6));
  expectClose("scaleBy", await download(scaled, n), wantScaled, TOL, true);
  const wantM = Array.from(m, (v, i) => 0.95 * v + grad[i]);
  expectClose("muon momentum m", await download(mg, n), wantM, TOL, true);
  const wantU = Array.from(grad, (g, i) => g + 0.95 * wantM[i]);
  expectClose("muon momentum u", await download(ug, n), wantU, TOL, true);
  const wantPoly = Array.from(
    poly,
    (p, i) => -4.775 * gram[i] + 2.0315 * p + (Math.floor(i / side) === i % side ? 3.4445 : 0),
  );
  expectClose("newton-schulz poly", await download(polyg, side * side), wantPoly, TOL, true);
  const wantParam = Array.from(x, (w, i) => 0.99 * w - 0.01 * ortho[i]);
  expectClose("muon update", await download(param, n), wantParam, TOL, true);
});

// ---------------------------------------------------------------------------------------------
// Many kernels, one pass, the parameters in one buffer

gpuTest(
  "a chain in one pass, the parameters in one buffer: layernorm, matmul, gelu, matmul; same bits twice",
  async (k, device) => {
    const [N, C, F] = [33, 40, 72];
    const [x, lw, lb, w1, b1, w2] = [
      random(N * C, 41),
      random(C, 42),
      random(C, 43),
      random(C * F, 44, 0.3),
      random(F, 45),
      random(F * C, 46, 0.3),
    ];
    // the parameters in one buffer at odd offsets (only read, as a model's are), the input and
    // the activations each in its own (written: see pipelines.ts)
    const sizes = { lw: C, lb: C, w1: C * F, b1: F, w2: F * C };
    const at: Record<string, GpuArray> = {};
    const buffer = device.createBuffer({
      size: (Object.values(sizes).reduce((s, n) => s + n + 1, 1)) * 4,
      usage: USAGE,
    });
    let top = 1;
    for (const [name, n] of Object.entries(sizes)) {
      at[name] = gpuArray(buffer, top);
      top += n + 1;
    }
    for (const [name, data] of Object.entries({ lw, lb, w1, b1, w2 })) {
      device.queue.writeBuffer(buffer, at[name].offset * 4, data);
    }
    at.x = upload(x);
    for (const [name, n] of Object.entries({ ln: N * C, mean: N, rstd: N, h: N * F, g: N * F })) {
      at[name] = upload(new Float32Array(n));
    }
    at.y = upload(new Float32Array(N * C));
    const step = () =>
      record((pass) => {
        k.layernormForward(pass, at.ln, at.mean, at.rstd, at.x, at.lw, at.lb, N, C);
        k.matmul(pass, at.h, at.ln, at.w1, at.b1, N, C, F);
        k.geluForward(pass, at.g, at.h, N * F);
        k.matmul(pass, at.y, at.g, at.w2, null, N, F, C);
      });
    await step();
    const first = await download(at.y, N * C);
    await step();
    assertEquals(await download(at.y, N * C), first, "the second run gives the same bits");
    const [ln, mean, rstd, h, g, y] = [N * C, N, N, N * F, N * F, N * C].map((n) =>
      new Float64Array(n)
    );
    ref.layernormForward(ln, mean, rstd, f64(x), f64(lw), f64(lb), N, C);
    ref.matmul(h, ln, f64(w1), f64(b1), N, C, F);
    ref.geluForward(g, h, N * F);
    ref.matmul(y, g, f64(w2), null, N, F, C);
    expectClose("chain output", first, y, TOL_PRODUCT);
    buffer.destroy();
  },
);

gpuTest(
  "a buffer larger than the device binds: arrays past the limit get aligned windows",
  async (k, device) => {
    const limit = device.limits.maxStorageBufferBindingSize;
    const size = limit + (1 << 20);
    if (size > device.limits.maxBufferSize) return console.log("  (the device cannot make one)");
    const [M, K, N] = [9, 10, 11];
    const buffer = device.createBuffer({ size, usage: USAGE });
    // inp near the start and w across the limit, at offsets of no alignment (read only: the
    // output has a buffer of its own, see pipelines.ts)
    const [inp, w, out] = [
      gpuArray(buffer, 5),
      gpuArray(buffer, limit / 4 - 7),
      upload(new Float32Array(M * N)),
    ];
    const [x, y] = [random(M * K, 47), random(K * N, 48)];
    device.queue.writeBuffer(buffer, inp.offset * 4, x);
    device.queue.writeBuffer(buffer, w.offset * 4, y);
    await record((pass) => k.matmul(pass, out, inp, w, null, M, K, N));
    const want = new Float64Array(M * N);
    ref.matmul(want, f64(x), f64(y), null, M, K, N);
    expectClose("matmul in windows", await download(out, M * N), want, TOL_PRODUCT);
    buffer.destroy();
  },
);

gpuTest(
  "the parameter ring wraps round, keeps a held recording's parameters, bounds a submission",
  async (_, device) => {
    const small = await GpuKernels.create(device, { maxDispatches: 5 });
    const x = upload(new Float32Array([1, 2, 3]));
    const scales = (factors: number[]) => {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (const f of factors) small.scaleInPlace(pass, x, 3, f);
      pass.end();
      return encoder.finish();
    };
    device.pushErrorScope("validation");
    small.submit(scales([1.1, 1.2])); // slots 0, 1
    const held = scales([1.3]); // slot 2, submitted after two later recordings
    small.submit(scales([1.4, 1.5])); // slots 3, 4 (and writes slot 2)
    small.submit(scales([1.6])); // slot 0: round the end of the ring, slot 2 untouched
    small.submit(held);
    small.submit(scales([1.7, 1.8, 1.9])); // slots 1, 2, 3
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    throws(
      () => [1, 2, 3, 4, 5, 6].forEach(() => small.scaleInPlace(pass, x, 3, 1)),
      /more than 5 kernel dispatches in one submission/,
    );
    pass.end();
    small.submit(encoder.finish());
    assertEquals(await device.popErrorScope(), null);
    const product = [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9].reduce((p, f) => p * f, 1);
    expectClose(
      "ring of parameters",
      await download(x, 3),
      [product, 2 * product, 3 * product],
      TOL,
      true,
    );
    small.destroy();
  },
);

gpuTest("requestGpu: a destroyed device says so on lost", async () => {
  const other = await requestGpu();
  other.device.destroy();
  const why = await other.lost;
  assert(/was closed \(destroyed\)/.test(why.message), why.message);
});

// ---------------------------------------------------------------------------------------------
// Errors

gpuTest(
  "errors: arrays past their buffer, heads that do not divide C, WGSL that does not compile",
  async (k, device) => {
    const small = upload(new Float32Array(10));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    throws(
      () => k.matmul(pass, small, small, small, null, 4, 4, 4),
      /matmul(_skinny)?: buffer argument 0 needs elements 3 \.\. 18 but its buffer holds 14/,
    );
    throws(
      () => k.attentionForward(pass, small, small, small, 1, 1, 10, 3),
      /3 heads do not divide C = 10/,
    );
    pass.end();
    encoder.finish();
    await rejects(
      Pipelines.compile(device, [{ name: "broken", code: "fn main( {", buffers: 0 }], 1),
      /the WGSL of kernel broken does not compile/,
    );
  },
);
