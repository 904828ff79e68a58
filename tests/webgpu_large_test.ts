/**
 * nanoGPT's Shakespeare configuration (6 layers, d_model 384, 6 heads, block 256, batch 64,
 * vocab 65: 10.7M parameters) on the WebGPU tier: its memory plan fits the adapter's limits and
 * a batch that cannot fit is refused in one line (through the CLI, with exit code 2 and nothing
 * written); one training step of it at batch 1 runs through the CLI and writes weights of that
 * configuration, which `sample --kernels webgpu` reads.
 *
 * On the software adapter (lavapipe) one step at batch 1 takes seconds, so the step uses AdamW
 * (Muon's Newton-Schulz iterations on the 384 x 1536 matrices take about a minute there) and the
 * corpus is small: its validation split holds two windows of 256 characters.
 *
 * The tests need a WebGPU adapter: without one they are skipped with the reason printed, except
 * under CI=true, where that is a failure.
 */

import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import { InputError } from "../lib/errors.ts";
import { loadWeights } from "../lib/load.ts";
import { type ModelConfig, parameterCount } from "../lib/model.ts";
import { requestGpu } from "../lib/webgpu/device.ts";
import { formatBytes } from "../lib/webgpu/memory.ts";
import { gpuModelBytes, gpuModelLayout, type GpuModelOptions } from "../lib/webgpu/model.ts";
import { assertNoStackTrace, assertUserError, runCli, type RunResult, tempDir } from "./cli_run.ts";
import { playCorpus } from "./fixtures.ts";
import { missingAdapter, RUNTIME } from "./webgpu_fixtures.ts";

const missing = await missingAdapter("large-configuration");

/** A test that runs only where there is an adapter. */
function gpuTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: missing !== "", fn });
}

/** The CLI with every permission and this process's runtime folder. */
function cli(args: string[]): Promise<RunResult> {
  return runCli(args, { env: RUNTIME });
}

/** nanoGPT's Shakespeare model. */
const NANOGPT: ModelConfig = { vocabSize: 65, blockSize: 256, dModel: 384, nLayers: 6, nHeads: 6 };

/** Its options on the command line. */
const NANOGPT_ARGS = ["--layers", "6", "--d-model", "384", "--heads", "6", "--block", "256"];

gpuTest(
  "nanoGPT's configuration: its memory plan fits the adapter, too large a batch does not",
  async () => {
    const gpu = await requestGpu({ timeoutMs: 30_000 });
    try {
      const limits = gpu.device.limits;
      const P = parameterCount(NANOGPT);
      assert(P > 10.7e6 && P < 10.8e6, `${P} parameters`);
      const adamw = { name: "adamw" as const, beta1: 0.9, beta2: 0.95, weightDecay: 0.1 };
      const muon = { ...adamw, name: "muon" as const, momentum: 0.95, steps: 5 };
      const sizes: string[] = [];
      for (const optimizer of [adamw, muon]) {
        const options: GpuModelOptions = { batch: 64, optimizer };
        const plan = gpuModelLayout(NANOGPT, options, limits);
        plan.layout.check(limits, "nanoGPT's model"); // fits: no error
        const bytes = gpuModelBytes(NANOGPT, options, limits);
        assertEquals(bytes, plan.layout.bytes);
        // at least parameters, gradients, two moments and the activations of 64 x 256 tokens
        assert(bytes > 4 * 4 * P + 4 * 64 * 256 * 384 * 6, `${bytes} bytes`);
        sizes.push(`${optimizer.name} ${formatBytes(bytes)}`);
      }
      // generation only: parameters, without gradients, optimizer or activations
      const weightsOnly = gpuModelBytes(NANOGPT, {}, limits);
      assertEquals(weightsOnly, 4 * P);
      console.log(
        `  ${P.toLocaleString("en-US")} parameters; batch 64 x 256 takes ${sizes.join(", ")} ` +
          `(largest buffer ${formatBytes(limits.maxBufferSize)}) on ${gpu.description}`,
      );
      // a batch of 4096 needs hundreds of GiB: one line naming the options that make it smaller
      const huge = gpuModelLayout(NANOGPT, { batch: 4096, optimizer: adamw }, limits);
      assertThrows(
        () => huge.layout.check(limits, "nanoGPT's model"),
        (e: unknown) => e instanceof InputError && !e.message.includes("\n"),
      );
    } finally {
      gpu.device.destroy();
    }
  },
);

gpuTest(
  "nanoGPT's configuration: too large a batch through the CLI is one line, exit 2",
  async () => {
    await using tmp = await tempDir("webgpu_large_refuse_");
    await Deno.writeTextFile(`${tmp.path}/c.txt`, playCorpus());
    const r = await cli([
      "train",
      "--data",
      `${tmp.path}/c.txt`,
      "--out",
      `${tmp.path}/w.safetensors`,
      ...NANOGPT_ARGS,
      "--batch",
      "4096",
      "--threads",
      "1",
      "--kernels",
      "webgpu",
    ]);
    assertUserError(
      r,
      /^error: this model \(10,7\d\d,\d{3} parameters, --batch 4096 x 256\) needs .* GiB on the GPU, .*; use a smaller --batch or model$/,
    );
    console.log(`  ${r.stderr.trim()}`);
    assertEquals([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["c.txt"]);
  },
);

gpuTest(
  "nanoGPT's configuration: one step at batch 1 on the GPU, then 20 characters sampled",
  async () => {
    await using tmp = await tempDir("webgpu_large_train_");
    const out = `${tmp.path}/w.safetensors`;
    // 5,483 characters: 548 for validation, two windows of 256
    await Deno.writeTextFile(`${tmp.path}/c.txt`, playCorpus());
    let started = Date.now();
    const train = await cli([
      "train",
      "--data",
      `${tmp.path}/c.txt`,
      "--out",
      out,
      ...NANOGPT_ARGS,
      "--batch",
      "1",
      "--steps",
      "1",
      "--eval-every",
      "0",
      "--optimizer",
      "adamw",
      "--threads",
      "1",
      "--kernels",
      "webgpu",
    ]);
    assertEquals(train.code, 0, train.stderr);
    assertNoStackTrace(train.stderr);
    const trained = Date.now() - started;
    const model = await loadWeights(out);
    const { vocabSize: _, ...config } = model.config;
    assertEquals(config, { blockSize: 256, dModel: 384, nLayers: 6, nHeads: 6 });
    started = Date.now();
    const sample = await cli([
      "sample",
      "--weights",
      out,
      "--tokens",
      "20",
      "--seed",
      "1",
      "--kernels",
      "webgpu",
    ]);
    assertEquals(sample.code, 0, sample.stderr);
    assertNoStackTrace(sample.stderr);
    assert([...sample.stdout.trimEnd()].length >= 1, sample.stdout);
    console.log(
      `  trained in ${trained} ms, sampled 20 characters in ${Date.now() - started} ms: ` +
        JSON.stringify(sample.stdout),
    );
  },
);
