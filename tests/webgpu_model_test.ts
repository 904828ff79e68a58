/**
 * Tests of the GPU-resident GPT (lib/webgpu/model.ts, step.ts, generate.ts) against the CPU
 * model on the plain TypeScript ("js") kernels: gradients by central differences and against
 * the float64 backward, five training steps with AdamW and with Muon, evaluation, greedy
 * generation from the shipped weights, the state's round trip, and the memory check.
 *
 * Needs a WebGPU adapter: without one the tests are skipped with the reason printed, except
 * under CI=true, where that is a failure. Run alone with `deno test --allow-read --allow-write
 * --allow-env tests/webgpu_model_test.ts` (it sets XDG_RUNTIME_DIR for lavapipe when unset).
 */

import { deepStrictEqual as assertEquals, ok as assert, rejects, throws } from "node:assert";
import { AdamW, learningRate, type Schedule } from "../lib/adam.ts";
import { randomBatch } from "../lib/data.ts";
import { InputError } from "../lib/errors.ts";
import { setupKernels } from "../lib/kernels/dispatch.ts";
import {
  backward,
  batchPass,
  forward,
  GPT,
  type ModelConfig,
  parameterCount,
  parameterSpecs,
} from "../lib/model.ts";
import { Muon } from "../lib/muon.ts";
import { dropoutSeed, Rng } from "../lib/rng.ts";
import { promptOrStart } from "../lib/sample.ts";
import { Tokenizer } from "../lib/tokenizer.ts";
import { gradients, update } from "../lib/train.ts";
import { loadModel } from "../lib/weights.ts";
import { generate } from "../mod.ts";
import { requestGpu } from "../lib/webgpu/device.ts";
import { decodeGpu, GpuKVCache } from "../lib/webgpu/generate.ts";
import { GpuKernels } from "../lib/webgpu/kernels.ts";
import { GpuModel, gpuModelLayout, type GpuOptimizerOptions } from "../lib/webgpu/model.ts";

setupKernels("js");

// ---------------------------------------------------------------------------------------------
// The device, or why there is none

// Vulkan's window-system layer wants a runtime folder, or lavapipe prints "XDG_RUNTIME_DIR is
// invalid" warnings: set before the process asks for its first adapter, it is taken up
if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());
const kernels: GpuKernels | string = await requestGpu({ timeoutMs: 30_000 })
  .then((gpu) => GpuKernels.create(gpu.device))
  .catch((e) => (e as Error).message);
if (typeof kernels === "string") {
  if (Deno.env.get("CI") === "true") {
    Deno.test("a WebGPU adapter is available (CI installs lavapipe)", () => {
      throw new Error(kernels);
    });
  } else console.warn(`skipping the WebGPU model tests: ${kernels}`);
}

/** A test that runs only where there is a device. */
function gpuTest(name: string, fn: (k: GpuKernels) => Promise<void>): void {
  Deno.test({ name, ignore: typeof kernels === "string", fn: () => fn(kernels as GpuKernels) });
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** The tensors of a configuration: GPT-2 name, offset in the flat buffer, length. */
function tensors(c: ModelConfig): [string, number, number][] {
  let at = 0;
  return parameterSpecs(c).map(({ name, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    at += n;
    return [name, at - n, n];
  });
}

/** The largest over tensors of max |got - want| / max |want| (tensor by tensor), and where. */
function worstTensor(c: ModelConfig, got: ArrayLike<number>, want: ArrayLike<number>) {
  let worst = 0, where = "";
  for (const [name, at, n] of tensors(c)) {
    let diff = 0, size = 0;
    for (let i = at; i < at + n; i++) {
      diff = Math.max(diff, Math.abs(got[i] - want[i]));
      size = Math.max(size, Math.abs(want[i]));
    }
    const rel = diff / (size || 1);
    if (!(rel <= worst)) [worst, where] = [rel, name]; // NaN sticks
  }
  return { worst, where };
}

/** Seeded token ids below V. */
function randomIds(n: number, V: number, rng: Rng): Uint16Array {
  return Uint16Array.from({ length: n }, () => rng.int(V));
}

// ---------------------------------------------------------------------------------------------
// Gradients

const TINY: ModelConfig = { vocabSize: 5, blockSize: 4, dModel: 8, nLayers: 2, nHeads: 2 };

gpuTest("gradients: central differences on the GPU, and the float64 CPU backward", async (k) => {
  const c = TINY, B = 2, M = B * c.blockSize;
  // weights of size 0.5 rather than 0.02, so that the gradients stand above float32 noise
  const rng = new Rng(11);
  const cpu = new GPT(c, { dtype: "float64" });
  const params = Float32Array.from({ length: parameterCount(c) }, () => rng.normal(0, 0.5));
  cpu.flat.set(params);
  const model = new GpuModel(k, c, params, { batch: B });
  const [inputs, targets] = [randomIds(M, c.vocabSize, rng), randomIds(M, c.vocabSize, rng)];
  const mean = (sum: number) => sum / M;
  await model.forwardBackward(inputs, targets);
  const grads = await model.downloadGradients();

  // the same gradients in float64 on the CPU, from the same float32 parameters
  const acts = cpu.activations(B);
  acts.inputs.set(inputs);
  acts.targets.set(targets);
  cpu.zeroGrad();
  forward(cpu, acts, batchPass(c, B));
  backward(cpu, acts, batchPass(c, B), 1 / M);
  const exact = worstTensor(c, grads, cpu.gradFlat);
  console.log(`  GPU vs float64 CPU gradients: ${exact.worst.toExponential(2)} (${exact.where})`);
  assert(exact.worst <= 1e-4, `gradients of ${exact.where} differ by ${exact.worst}`);

  // Central differences of the mean loss, in float32 (WGSL has no float64), at three entries of
  // every tensor. The loss (~1.6) carries float32 rounding of ~1e-7 per forward, which the
  // difference divides by 2h: h = 1e-2 makes that ~5e-6, while the truncation error (h²/6 times
  // the third derivative) stays near 1e-3 of the gradient (measured: 5e-3 at worst, 8e-6
  // absolute). Tolerance: 2% of the larger of the two values, plus 2e-5 for the rounding of
  // gradients near zero.
  const h = 1e-2;
  let worstRel = 0, worstAbs = 0;
  for (const [name, at, n] of tensors(c)) {
    for (let s = 0; s < 3; s++) {
      const i = at + Math.floor(((s + rng.random()) * n) / 3), saved = params[i];
      params[i] = saved + h;
      model.upload(params);
      const up = mean(await model.evaluateLoss(inputs, targets, B));
      params[i] = saved - h;
      model.upload(params);
      const down = mean(await model.evaluateLoss(inputs, targets, B));
      params[i] = saved;
      const numeric = (up - down) / (2 * h), analytic = grads[i];
      const error = Math.abs(numeric - analytic);
      const size = Math.max(Math.abs(numeric), Math.abs(analytic));
      worstAbs = Math.max(worstAbs, error);
      if (size > 1e-3) worstRel = Math.max(worstRel, error / size);
      assert(
        error <= 2e-2 * size + 2e-5,
        `${name}[${i - at}]: central difference ${numeric}, backward ${analytic}`,
      );
    }
  }
  console.log(
    `  central differences (h ${h}): worst relative error ${worstRel.toExponential(2)} ` +
      `(gradients over 1e-3), worst absolute ${worstAbs.toExponential(2)}`,
  );
  model.destroy();
});

gpuTest(
  "gradients through dropout 0.3: the float64 CPU backward with the same masks",
  async (k) => {
    const c = TINY, B = 3, M = B * c.blockSize, p = 0.3, seed = dropoutSeed(5, 17);
    const rng = new Rng(12);
    const cpu = new GPT(c, { dtype: "float64" });
    const params = Float32Array.from({ length: parameterCount(c) }, () => rng.normal(0, 0.5));
    cpu.flat.set(params);
    const model = new GpuModel(k, c, params, { batch: B, dropout: p });
    const [inputs, targets] = [randomIds(M, c.vocabSize, rng), randomIds(M, c.vocabSize, rng)];
    const gpuLoss = await model.forwardBackward(inputs, targets, 1 / M, seed);
    const grads = await model.downloadGradients();
    const acts = cpu.activations(B, { dropout: true });
    acts.inputs.set(inputs);
    acts.targets.set(targets);
    cpu.zeroGrad();
    const pass = batchPass(c, B, { p, seed, firstRow: 0 });
    const cpuLoss = forward(cpu, acts, pass);
    backward(cpu, acts, pass, 1 / M);
    const exact = worstTensor(c, grads, cpu.gradFlat);
    console.log(
      `  losses ${gpuLoss / M} (GPU), ${cpuLoss / M} (CPU); gradients ${
        exact.worst.toExponential(2)
      } (${exact.where})`,
    );
    assert(Math.abs(gpuLoss - cpuLoss) <= 1e-5 * cpuLoss, `loss ${gpuLoss} vs ${cpuLoss}`);
    assert(exact.worst <= 1e-4, `gradients of ${exact.where} differ by ${exact.worst}`);
    // without the seed (an evaluation's forward) there is no dropout: another loss
    const plainActs = cpu.activations(B);
    plainActs.inputs.set(inputs);
    plainActs.targets.set(targets);
    const plain = forward(cpu, plainActs, batchPass(c, B));
    assert(Math.abs((await model.evaluateLoss(inputs, targets, B)) - plain) <= 1e-5 * plain);
    assert(Math.abs(plain - cpuLoss) > 1e-3 * plain, "dropout changed nothing");
    model.destroy();
    // a training step with dropout needs its seed; a rate past 0.9 is refused
    const optimizer = { name: "adamw" as const, ...ADAMW };
    const trained = new GpuModel(k, c, params, { batch: B, dropout: p, optimizer });
    throws(
      () => trained.trainStep(inputs, targets, { lr: 1e-3, clip: 1 }),
      /^RangeError: this GPU model has dropout: give each step its dropoutSeed$/,
    );
    trained.destroy();
    throws(() => new GpuModel(k, c, params, { batch: B, dropout: 0.95 }), /dropout 0.95 is not in/);
    // and a seed for a model without dropout is a mistake, not a silent no-op
    const plainGpu = new GpuModel(k, c, params, { batch: B });
    await rejects(
      plainGpu.forwardBackward(inputs, targets, 1 / M, seed),
      /^RangeError: this GPU model has no dropout: give no dropoutSeed$/,
    );
    plainGpu.destroy();
  },
);

// ---------------------------------------------------------------------------------------------
// Training: five steps on the GPU and on the CPU, from the same weights and batches

const TEXT = `First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?
`;
const SMALL: Omit<ModelConfig, "vocabSize"> = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 2 };
const ADAMW = { beta1: 0.8, beta2: 0.95, weightDecay: 0.3 };
const MUON = { ...ADAMW, momentum: 0.95, steps: 5 };

/**
 * Five steps of the trainer's recipe (warmup 2, linear decay, clip 1) on the CPU (js kernels)
 * and on the GPU, the five GPU steps submitted back to back before any loss is awaited (more
 * than the readback ring holds). Returns both models' final state and the losses.
 */
async function fiveSteps(k: GpuKernels, optimizer: GpuOptimizerOptions, dropout = 0) {
  const tokenizer = Tokenizer.fromText(TEXT), ids = tokenizer.encode(TEXT);
  const c = { ...SMALL, vocabSize: tokenizer.size }, B = 4, T = c.blockSize, steps = 5;
  const cpu = new GPT(c, { tokenizer }).init(7);
  const gpu = new GpuModel(k, c, Float32Array.from(cpu.flat), { batch: B, optimizer, dropout });
  const alloc = (n: number) => new Float32Array(n);
  const cpuOptimizer = optimizer.name === "adamw"
    ? new AdamW(c, alloc, optimizer)
    : new Muon(c, alloc, optimizer);
  const schedule: Schedule = { lr: 4e-3, minLr: 0, warmup: 2, steps, decay: "linear", cooldown: 1 };
  const acts = cpu.activations(B, { dropout: dropout > 0 }), rng = new Rng(8);
  const pass = batchPass(c, B, dropout > 0 ? { p: dropout, seed: 0, firstRow: 0 } : null);
  const cpuLosses: number[] = [], gpuSteps = [];
  for (let step = 0; step < steps; step++) {
    randomBatch(acts.inputs, acts.targets, ids, B, T, rng);
    const seed = dropoutSeed(0, step);
    if (pass.dropout) pass.dropout.seed = seed;
    gpuSteps.push(gpu.trainStep(acts.inputs, acts.targets, {
      lr: learningRate(schedule, step),
      clip: 1,
      dropoutSeed: seed,
    }));
    cpuLosses.push(gradients(cpu, acts, pass, 1 / (B * T)) / (B * T));
    await update(cpu, cpuOptimizer, schedule, { clip: 1, muonLr: schedule.lr }, step);
  }
  const results = await Promise.all(gpuSteps);
  return { c, cpu, cpuOptimizer, gpu, cpuLosses, results, acts };
}

const RECIPES = [
  [{ name: "adamw", ...ADAMW }, 0],
  [{ name: "muon", ...MUON }, 0],
  [{ name: "adamw", ...ADAMW }, 0.2],
] as const;
for (const [optimizer, dropout] of RECIPES) {
  const recipe = `${optimizer.name}${dropout > 0 ? ` and dropout ${dropout}` : ""}`;
  gpuTest(`five training steps with ${recipe}: the GPU agrees with the CPU`, async (k) => {
    const run = await fiveSteps(k, optimizer, dropout);
    const { c, cpu, cpuOptimizer, gpu, cpuLosses, results } = run;
    results.forEach(({ loss }, i) => {
      assert(Math.abs(loss - cpuLosses[i]) <= 1e-4, `step ${i + 1}: ${loss} vs ${cpuLosses[i]}`);
    });
    assert(results.every((r) => r.gradNorm > 0 && Number.isFinite(r.gradNorm)));
    const state = await gpu.download();
    assertEquals(gpu.stepsTaken, 5);
    // every tensor within 1e-2 of its largest magnitude (AdamW turns the float32 noise of
    // gradients that are zero in exact arithmetic, such as the key bias's, into steps of ~lr/10)
    const params = worstTensor(c, state.params, cpu.flat);
    const m = worstTensor(c, state.m, cpuOptimizer.m);
    console.log(
      `  ${recipe}: losses ${results.map((r) => r.loss.toFixed(4)).join(" ")}; ` +
        `parameters ${params.worst.toExponential(2)} (${params.where}), ` +
        `m ${m.worst.toExponential(2)} (${m.where})`,
    );
    assert(params.worst <= 1e-2, `parameters of ${params.where} differ by ${params.worst}`);
    assert(m.worst <= 1e-2, `m of ${m.where} differs by ${m.worst}`);
    gpu.destroy();
    cpu.dispose();
  });
}

gpuTest(
  "evaluateLoss: the loss sum of the first rows of a batch, as the CPU's forward",
  async (k) => {
    const { c, cpu, gpu, acts } = await fiveSteps(k, { name: "adamw", ...ADAMW });
    gpu.upload(cpu.flat as Float32Array);
    for (const rows of [1, 3]) {
      const want = forward(cpu, acts, batchPass(c, rows));
      const got = await gpu.evaluateLoss(acts.inputs, acts.targets, rows);
      assert(Math.abs(got - want) <= 1e-5 * want, `${rows} rows: ${got} vs ${want}`);
    }
    gpu.destroy();
  },
);

// ---------------------------------------------------------------------------------------------
// Generation from the shipped weights

const WEIGHTS = new URL("../weights/shakespeare.safetensors", import.meta.url);

gpuTest("greedy generation on the GPU's KV cache follows the CPU's", async (k) => {
  const cpu = loadModel(await Deno.readFile(WEIGHTS));
  // 62 characters of prompt and 100 generated pass blockSize 128: the window slides once
  const prompt = "ROMEO:\nBut soft, what light through yonder window breaks? It is";
  const options = { prompt, tokens: 100, temperature: 0 };
  const want = (await Array.fromAsync(generate(cpu, options))).join("");
  const model = new GpuModel(k, cpu.config, cpu.flat as Float32Array);
  const cache = new GpuKVCache(model);
  const start = promptOrStart(cpu, cpu.tokenizer.encode(prompt));
  const ids: number[] = [];
  for await (const { id } of decodeGpu(cache, start, { ...options, rng: new Rng(1) })) ids.push(id);
  const got = cpu.tokenizer.decode(ids);
  let agree = 0;
  while (agree < want.length && got[agree] === want[agree]) agree++;
  console.log(`  ${agree} of 100 characters agree: ${JSON.stringify(got.slice(0, 60))}...`);
  assert(agree >= 80, `only ${agree} characters agree:\n${want}\n${got}`);
  // a feed of several tokens gives the same last logits as feeding them one by one
  cache.reset();
  const together = Float32Array.from(await cache.feed(start.slice(0, 5)));
  cache.reset();
  for (const id of start.slice(0, 4)) await cache.feed([id]);
  const alone = await cache.feed([start[4]]);
  const diff = Math.max(...together.map((x, i) => Math.abs(x - alone[i])));
  assert(diff <= 1e-4, `batched and single feeds differ by ${diff}`);
  await rejects(cache.feed([]), RangeError);
  cache.destroy();
  model.destroy();
  cpu.dispose();
});

// ---------------------------------------------------------------------------------------------
// State in and out, and the memory check

gpuTest("download → CPU → upload of params, m and v is bit-exact", async (k) => {
  const c = { ...SMALL, vocabSize: 7 }, P = parameterCount(c), rng = new Rng(3);
  const random = () => {
    const a = Float32Array.from({ length: P }, () => rng.normal(0, 1));
    a.set([-0, 1e-40, -3.4e38, Infinity]); // signed zero, a subnormal, extremes
    return a;
  };
  const [params, m, v] = [random(), random(), random()];
  const first = new GpuModel(k, c, params, { batch: 1, optimizer: { name: "muon", ...MUON } });
  first.upload(params, m, v);
  const state = await first.download();
  const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
  assertEquals(bits(state.params), bits(params));
  assertEquals(bits(state.m), bits(m));
  assertEquals(bits(state.v), bits(v));
  // into another model, and back again
  const second = new GpuModel(k, c, state.params, {
    batch: 2,
    optimizer: { name: "adamw", ...ADAMW },
  });
  second.upload(state.params, state.m, state.v);
  const again = await second.download();
  assertEquals(bits(again.params), bits(params));
  assertEquals(bits(again.m), bits(m));
  assertEquals(bits(again.v), bits(v));
  // without m and v the optimizer starts afresh
  second.upload(params);
  const fresh = await second.download();
  assert(fresh.m.every((x) => x === 0) && fresh.v.every((x) => x === 0));
  throws(
    () => second.upload(params.subarray(1)),
    /params holds \d+ values; this model has \d+ parameters/,
  );
  first.destroy();
  second.destroy();
});

gpuTest("the memory check refuses, in one line, a model the device cannot hold", (k) => {
  const big: ModelConfig = { vocabSize: 65, blockSize: 1024, dModel: 256, nLayers: 2, nHeads: 4 };
  const params = new Float32Array(parameterCount(big));
  const optimizer = { name: "adamw", ...ADAMW } as const;
  const e = (() => {
    try {
      new GpuModel(k, big, params, { batch: 512, optimizer });
    } catch (e) {
      return e as Error;
    }
  })();
  assert(e instanceof InputError, `an InputError, not ${e}`);
  console.log(`  ${e.message}`);
  assert(
    /^this model \(.* parameters, batch 512 x 1024\) needs [\d.]+ GiB on the GPU, /.test(e.message),
  );
  assert(/more than the adapter's .*; use a smaller batch or model$/.test(e.message));
  assert(!e.message.includes("\n"));
  // against given limits: a buffer that fits, a tensor that does not fit one binding
  const limits = {
    maxBufferSize: 2 ** 40,
    maxStorageBufferBindingSize: 2 ** 27,
    minStorageBufferOffsetAlignment: 256,
  };
  const plan = gpuModelLayout(big, { batch: 64, optimizer }, limits);
  throws(
    () => plan.layout.check(limits, "this model"),
    /^InputError: this model needs [\d.]+ GiB on the GPU, with 1.0 GiB in one tensor \(attn probs of block 0 activations\), more than the adapter's 128 MiB per binding/,
  );
  gpuModelLayout(big, { batch: 1, optimizer }, limits).layout.check(limits, "this model");
  return Promise.resolve();
});
