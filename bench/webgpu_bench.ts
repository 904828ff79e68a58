/**
 * `deno task bench --tier webgpu`: the WebGPU tier's figures on the adapter found.
 *
 * - the adapter: its description, and whether it is a software one (lavapipe, SwiftShader);
 * - training step with AdamW (one submission, waited for; median / min / max after warm-up) of
 *   the default model (batch 16 x 128), then its steps through the trainer as `train` takes them
 *   (`Trainer.run`), and
 *   of nanoGPT's Shakespeare configuration (6 layers, d_model 384, 6 heads, block 256, batch
 *   64 x 256; batch 1 x 256 on a software adapter, where a full step takes minutes, and the row
 *   says so);
 * - the same default step on this machine's CPU path (the fastest WebAssembly tier, on all cores,
 *   as `train --threads N` takes it), and the GPU's speed-up over it (target: 5x on a GPU);
 * - TFLOP/s (2·M·K·N / time) of the matrix products Y[M,N] = X[M,K]·W[K,N] of both models'
 *   layers at M = B·T, timed over many dispatches recorded in one submission and waiting for
 *   `device.queue.onSubmittedWorkDone()` (M = 2048 and few repetitions on a software adapter).
 *
 * The rows are markdown, as the CPU tiers' report.
 *
 * @module
 */

import { Rng } from "../lib/rng.ts";
import { randomBatch } from "../lib/data.ts";
import { GPT, type ModelConfig, parameterCount } from "../lib/model.ts";
import { type GpuContext, requestGpu } from "../lib/webgpu/device.ts";
import { GpuKernels } from "../lib/webgpu/kernels.ts";
import { formatBytes } from "../lib/webgpu/memory.ts";
import { GpuModel, gpuModelBytes, type GpuOptimizerOptions } from "../lib/webgpu/model.ts";
import { gpuArray } from "../lib/webgpu/pipelines.ts";
import { bestKernels, selectKernels } from "../lib/api.ts";
import { Trainer } from "../lib/trainer.ts";
import { stats } from "./common.ts";

/** What the WebGPU report reads: the corpus's tokens and the default model's config. */
export interface WebGpuBenchInput {
  tokens: Uint16Array;
  config: ModelConfig;
  /** A new default model (with its tokenizer), for the trainer's steps on the GPU and the CPU. */
  newModel: () => GPT;
  /** Fewer steps and repetitions (a smoke test). */
  quick: boolean;
  /** Also write the figures here as JSON. */
  json?: string;
}

const ADAMW: GpuOptimizerOptions = { name: "adamw", beta1: 0.9, beta2: 0.95, weightDecay: 0.1 };

/** Step times (ms) of a model of `config` with batch B, after `warmup` steps. */
async function stepTimes(
  kernels: GpuKernels,
  tokens: Uint16Array,
  config: ModelConfig,
  B: number,
  warmup: number,
  steps: number,
) {
  const cpu = new GPT(config).init(1);
  const model = new GpuModel(kernels, config, cpu.flat as Float32Array, {
    batch: B,
    optimizer: ADAMW,
  });
  const T = config.blockSize;
  const inputs = new Uint16Array(B * T), targets = new Uint16Array(B * T), rng = new Rng(0);
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + steps; i++) {
      randomBatch(inputs, targets, tokens, B, T, rng);
      const t0 = performance.now();
      await model.trainStep(inputs, targets, { lr: 1e-3, clip: 1 });
      if (i >= warmup) times.push(performance.now() - t0);
    }
  } finally {
    model.destroy();
  }
  return stats(times);
}

/**
 * ms a step of the trainer on the GPU as `train` takes them (`Trainer.run`: each step submitted
 * before the last one is reported, its state taken into the model when it is), after one warm-up
 * step: the default model, batch 16, AdamW.
 */
async function trainerStepMs(newModel: () => GPT, tokens: Uint16Array, steps: number) {
  selectKernels("webgpu");
  const options = { batch: 16, steps: 1000, optimizer: "adamw" } as const;
  const trainer = await Trainer.create(newModel(), tokens, options);
  try {
    await trainer.run({ steps: 1 });
    const t0 = performance.now();
    await trainer.run({ steps });
    return (performance.now() - t0) / steps;
  } finally {
    trainer.close();
  }
}

/**
 * The default model's AdamW step (batch 16) on the CPU: the fastest WebAssembly tier on all
 * `threads`, after `warmup` steps (in which the matmul variants are timed and chosen). The model
 * is made once the kernels are set up, in their memory, where the worker threads share it.
 */
async function cpuStepTimes(
  newModel: () => GPT,
  tokens: Uint16Array,
  threads: number,
  warmup: number,
  steps: number,
) {
  const tier = selectKernels(bestKernels(), { reset: true }); // webgpu off
  const model = newModel();
  const trainer = await Trainer.create(model, tokens, {
    threads,
    steps: 1000,
    batch: 16,
    optimizer: "adamw",
  });
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + steps; i++) {
      const t0 = performance.now();
      await trainer.step();
      if (i >= warmup) times.push(performance.now() - t0);
    }
  } finally {
    trainer.close();
  }
  return { tier, threads: trainer.threads, ...stats(times) };
}

/**
 * ms of one product Y[M,N] = X[M,K]·W[K,N]: `reps` dispatches in one submission, after one
 * waited-for warm-up dispatch.
 */
async function gemmMs(kernels: GpuKernels, M: number, K: number, N: number, reps: number) {
  const device = kernels.device;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
  const buffer = (floats: number) => device.createBuffer({ size: floats * 4, usage });
  const [x, w, y] = [buffer(M * K), buffer(K * N), buffer(M * N)];
  device.queue.writeBuffer(x, 0, new Float32Array(M * K).map((_, i) => Math.sin(i) * 0.5));
  device.queue.writeBuffer(w, 0, new Float32Array(K * N).map((_, i) => Math.cos(i) * 0.5));
  const run = async (n: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let i = 0; i < n; i++) {
      kernels.matmul(pass, gpuArray(y), gpuArray(x), gpuArray(w), null, M, K, N);
    }
    pass.end();
    kernels.submit(encoder.finish());
    await device.queue.onSubmittedWorkDone();
  };
  try {
    await run(1);
    const t0 = performance.now();
    await run(reps);
    return (performance.now() - t0) / reps;
  } finally {
    for (const b of [x, w, y]) b.destroy();
  }
}

/** Runs the WebGPU report and prints it (the adapter's absence is an error of one line). */
export async function webgpuReport(input: WebGpuBenchInput): Promise<void> {
  const { tokens, config, quick } = input;
  const gpu: GpuContext = await requestGpu({ timeoutMs: 30_000 });
  const soft = gpu.software;
  console.error(
    `WebGPU adapter ${gpu.description}${soft ? " (software)" : ""}, Deno ${Deno.version.deno}`,
  );
  const kernels = await GpuKernels.create(gpu.device);
  const large: ModelConfig = { ...config, blockSize: 256, dModel: 384, nLayers: 6, nHeads: 6 };
  const [warmup, steps] = quick || soft ? [1, 3] : [5, 10];
  const largeBatch = soft ? 1 : 64;
  const small = await stepTimes(kernels, tokens, config, 16, warmup, steps);
  const pipelined = await trainerStepMs(input.newModel, tokens, steps);
  const big = await stepTimes(kernels, tokens, large, largeBatch, 1, soft ? 2 : steps);
  // products of the layers (c_attn, c_fc, mlp.c_proj) at M = B·T
  const reps = quick || soft ? 3 : 50;
  const gemms: { model: string; M: number; K: number; N: number; ms: number; tflops: number }[] =
    [];
  for (
    const [name, c, M] of [["default", config, 16 * 128], [
      "nanoGPT",
      large,
      soft ? 2048 : 64 * 256,
    ]] as const
  ) {
    const C = c.dModel;
    for (const [K, N] of [[C, 3 * C], [C, 4 * C], [4 * C, C]]) {
      const ms = await gemmMs(kernels, M, K, N, reps);
      gemms.push({ model: name, M, K, N, ms, tflops: (2 * M * K * N) / ms / 1e9 });
    }
  }
  kernels.destroy();
  gpu.device.destroy();
  const cores = navigator.hardwareConcurrency ?? 1;
  const cpu = await cpuStepTimes(input.newModel, tokens, cores, quick ? 1 : 5, quick ? 3 : 10);

  const fmt = (x: number, d = 1) => x.toFixed(d);
  const P = (c: ModelConfig) => `${(parameterCount(c) / 1e6).toFixed(1)}M parameters`;
  const row = (s: ReturnType<typeof stats>) =>
    `${fmt(s.median, 0)} / ${fmt(s.min, 0)} / ${fmt(s.max, 0)} ms`;
  const largeBytes = gpuModelBytes(large, { batch: 64, optimizer: ADAMW }, gpu.device.limits);
  const lines = [
    `BareGPT benchmark: kernel tier webgpu, Deno ${Deno.version.deno}`,
    "",
    "| what | figure |",
    "| --- | --- |",
    `| adapter | ${gpu.description} (${soft ? "software: runs on the CPU" : "hardware"}) |`,
    `| training step with AdamW, default model (${
      P(config)
    }), batch 16 x 128 (median / min / max of ${small.n}) | ${row(small)} |`,
    `| the same through the trainer, steps in a row as \`train\` takes them (\`Trainer.run\`: the next submitted before each loss is read, the state taken into the model; mean of ${steps}) | ${
      fmt(pipelined, 0)
    } ms |`,
    `| the same step on this machine's CPU: ${cpu.tier} kernels, ${cpu.threads} threads (median / min / max of ${cpu.n}) | ${
      row(cpu)
    } |`,
    `| the GPU's speed-up over the CPU: steps in a row / waited for (target 5x) | ${
      (cpu.median / pipelined).toPrecision(2)
    }x / ${(cpu.median / small.median).toPrecision(2)}x |`,
    `| training step with AdamW, nanoGPT's 6 x 384 (${P(large)}), batch ${largeBatch} x 256${
      soft ? " (not 64: a full step takes minutes on a software adapter)" : ""
    } (median / min / max of ${big.n}) | ${row(big)} |`,
    `| GPU memory of nanoGPT's model at batch 64 x 256 with AdamW (planned) | ${
      formatBytes(largeBytes)
    } |`,
    ...gemms.map((g) =>
      `| Y = X·W, ${g.model} model, [${g.M},${g.K}]·[${g.K},${g.N}]${
        g.model === "nanoGPT" && soft ? " (M 2048, not 16384: software adapter)" : ""
      } | ${g.tflops.toPrecision(3)} TFLOP/s (${
        fmt(g.ms, 2)
      } ms, mean of ${reps} in one submission) |`
    ),
  ];
  console.log(lines.join("\n"));
  if (input.json) {
    const report = {
      tier: "webgpu",
      deno: Deno.version.deno,
      adapter: { description: gpu.description, vendor: gpu.vendor, software: soft },
      trainStepMs: {
        default: { batch: 16, ...small },
        defaultPipelined: { batch: 16, mean: pipelined, n: steps },
        defaultCpu: { batch: 16, ...cpu },
        nanoGPT: { batch: largeBatch, ...big },
      },
      nanoGPTBytesBatch64: largeBytes,
      matmul: gemms,
    };
    await Deno.writeTextFile(input.json, JSON.stringify(report, null, 2) + "\n");
    console.error(`wrote ${input.json}`);
  }
}
