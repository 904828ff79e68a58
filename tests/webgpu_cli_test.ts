/**
 * The WebGPU tier end to end through the CLI (`--kernels webgpu`): a machine without an adapter
 * gets one line and exit code 2 (always tested, with Deno's WebGPU pointed at a backend this
 * machine lacks); on the software adapter: a run with dropout interrupted on the GPU resumes on
 * the CPU and the other way round, ending where an uninterrupted run does; the GPU's checkpoint
 * says so; worker threads, which the GPU does not use, are refused in one line; greedy sampling from the shipped weights agrees
 * with the CPU's; eval agrees with the CPU's.
 *
 * The GPU tests need a WebGPU adapter: without one they are skipped with the reason printed,
 * except under CI=true, where that is a failure. Every child process gets its own XDG_RUNTIME_DIR
 * (lavapipe warns without one).
 */

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import {
  assertNoStackTrace,
  assertUserError,
  pooled,
  runCli,
  type RunResult,
  spawnCli,
  tempDir,
  TINY,
} from "./cli_run.ts";
import { playCorpus } from "./fixtures.ts";
import { missingAdapter, RUNTIME } from "./webgpu_fixtures.ts";

const missing = await missingAdapter("CLI");

/** A test that runs only where there is an adapter. */
function gpuTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, ignore: missing !== "", fn });
}

/** The CLI with every permission and this process's runtime folder. */
function cli(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return runCli(args, { env: { ...RUNTIME, ...env } });
}

const WEIGHTS = new URL("../weights/shakespeare.safetensors", import.meta.url).pathname;

/** The `__metadata__` of a safetensors file. */
async function metadataOf(path: string): Promise<Record<string, string>> {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))).__metadata__;
}

Deno.test("--kernels webgpu without an adapter: one line, exit code 2, no hang", async () => {
  await using tmp = await tempDir("webgpu_none_");
  await Deno.writeTextFile(`${tmp.path}/c.txt`, playCorpus());
  // Deno's WebGPU asked for a backend that Linux lacks (Metal) finds no adapter
  const env = { DENO_WEBGPU_BACKEND: "metal" };
  const pattern =
    /^error: (no WebGPU adapter was found|WebGPU is not available here).*; use --kernels relaxed/;
  const started = Date.now();
  const runs = await Promise.all([
    cli([
      "train",
      "--data",
      `${tmp.path}/c.txt`,
      "--out",
      `${tmp.path}/w.safetensors`,
      "--kernels",
      "webgpu",
    ], env),
    cli(["sample", "--kernels", "webgpu", "--tokens", "5"], env),
    cli(["eval", "--data", `${tmp.path}/c.txt`, "--kernels", "webgpu"], env),
  ]);
  for (const r of runs) assertUserError(r, pattern);
  console.log(`  ${runs[0].stderr.trim()} (${Date.now() - started} ms for three commands)`);
  // nothing was written: the folder holds the corpus alone
  assertEquals([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["c.txt"]);
});

/**
 * train's arguments for the tiny model: 40 steps with dropout (the masks come from the seed and
 * the step on either side), a checkpoint every 10, on `kernels`.
 */
function trainArgs(dir: string, out: string, kernels: string): string[] {
  return [
    "train",
    "--data",
    `${dir}/c.txt`,
    "--out",
    `${dir}/${out}`,
    ...TINY,
    "--steps",
    "40",
    "--warmup",
    "5",
    "--eval-every",
    "0",
    "--checkpoint-every",
    "10",
    "--dropout",
    "0.1",
    "--threads",
    "1",
    "--kernels",
    kernels,
  ];
}

/** The run on `first`, stopped by SIGINT after its first checkpoint, resumed on `then`. */
async function interrupted(dir: string, out: string, first: string, then: string) {
  const run = spawnCli(trainArgs(dir, out, first), ["-A"], RUNTIME);
  await run.waitFor(/step 10: saved checkpoint/, 60_000);
  run.child.kill("SIGINT");
  const stopped = await run.done();
  assertEquals(stopped.code, 130, stopped.stderr);
  const ckpt = await metadataOf(`${dir}/${out}.ckpt`);
  const resumed = await cli([...trainArgs(dir, out, then), "--resume"]);
  assertEquals(resumed.code, 0, resumed.stderr);
  assertNoStackTrace(resumed.stderr);
  return { ckpt, stderr: resumed.stderr, facts: await metadataOf(`${dir}/${out}`) };
}

type Interrupted = Awaited<ReturnType<typeof interrupted>>;

gpuTest("a run stopped on the GPU resumes on the CPU, and the other way round", async () => {
  await using tmp = await tempDir("webgpu_resume_");
  const dir = tmp.path;
  await Deno.writeTextFile(`${dir}/c.txt`, playCorpus());
  const [cpu, gpu, toCpu, toGpu] = await pooled<unknown>([
    () => cli(trainArgs(dir, "cpu.safetensors", "relaxed")),
    () => cli(trainArgs(dir, "gpu.safetensors", "webgpu")),
    () => interrupted(dir, "to_cpu.safetensors", "webgpu", "relaxed"),
    () => interrupted(dir, "to_gpu.safetensors", "relaxed", "webgpu"),
  ], 2) as [RunResult, RunResult, Interrupted, Interrupted];
  for (const r of [cpu, gpu]) assertEquals(r.code, 0, r.stderr);
  assertMatch(gpu.stderr, /1 thread, kernels webgpu \(.+\)\n/);
  // the checkpoint says which kernels made it, and resuming on others says what that means
  assertEquals(toCpu.ckpt.kernels, "webgpu");
  assertEquals(toGpu.ckpt.kernels, "relaxed");
  assertMatch(
    toCpu.stderr,
    /made on 1 thread\(s\) with webgpu kernels and this run uses 1 with relaxed/,
  );
  assertMatch(
    toGpu.stderr,
    /made on 1 thread\(s\) with relaxed kernels and this run uses 1 with webgpu/,
  );
  // every run ends at the same validation loss, to float32 rounding over 40 steps
  const losses = {
    cpu: Number((await metadataOf(`${dir}/cpu.safetensors`)).val_loss),
    gpu: Number((await metadataOf(`${dir}/gpu.safetensors`)).val_loss),
    gpuThenCpu: Number(toCpu.facts.val_loss),
    cpuThenGpu: Number(toGpu.facts.val_loss),
  };
  console.log(`  validation losses: ${JSON.stringify(losses)}`);
  for (const [name, loss] of Object.entries(losses)) {
    assert(Math.abs(loss - losses.cpu) <= 2e-3, `${name}: ${loss} vs ${losses.cpu} on the CPU`);
  }
  assertEquals(toCpu.facts.steps, "40");
  // the finished runs removed their checkpoints
  const left = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".ckpt"));
  assertEquals(left, []);
});

gpuTest("worker threads on the GPU are refused in one line", async () => {
  await using tmp = await tempDir("webgpu_refuse_");
  await Deno.writeTextFile(`${tmp.path}/c.txt`, playCorpus());
  const base = ["train", "--data", `${tmp.path}/c.txt`, "--out", `${tmp.path}/w.safetensors`];
  const threads = await cli([...base, ...TINY, "--kernels", "webgpu", "--threads", "2"]);
  assertUserError(
    threads,
    /^error: --threads 2: the webgpu kernels train on one GPU, .*; use --threads 1$/,
  );
  assertEquals([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["c.txt"]);
});

gpuTest("sample and eval on the GPU agree with the CPU on the shipped weights", async () => {
  await using tmp = await tempDir("webgpu_sample_");
  // four windows of 128 characters (the default model's forward is slow on a software adapter)
  await Deno.writeTextFile(`${tmp.path}/play.txt`, playCorpus().slice(0, 4 * 128 + 1));
  // 62 characters of prompt and 100 generated pass blockSize 128: the window slides once
  const prompt = "ROMEO:\nBut soft, what light through yonder window breaks? It is";
  const sample = [
    "sample",
    "--weights",
    WEIGHTS,
    "--prompt",
    prompt,
    "--tokens",
    "100",
    "--temperature",
    "0",
  ];
  const evaluate = [
    "eval",
    "--weights",
    WEIGHTS,
    "--data",
    `${tmp.path}/play.txt`,
    "--split",
    "all",
    "--json",
  ];
  const [cpu, gpu, cpuEval, gpuEval] = await pooled([
    () => cli([...sample, "--kernels", "relaxed"]),
    () => cli([...sample, "--kernels", "webgpu"]),
    () => cli([...evaluate, "--kernels", "relaxed", "--threads", "1"]),
    () => cli([...evaluate, "--kernels", "webgpu"]),
  ], 2);
  for (const r of [cpu, gpu, cpuEval, gpuEval]) {
    assertEquals(r.code, 0, r.stderr);
    assertNoStackTrace(r.stderr);
  }
  assertEquals(gpu.stderr, "");
  const [want, got] = [cpu.stdout.slice(prompt.length), gpu.stdout.slice(prompt.length)];
  assert(gpu.stdout.startsWith(prompt) && [...got.trimEnd()].length >= 90, gpu.stdout);
  let agree = 0;
  while (agree < 100 && got[agree] === want[agree]) agree++;
  console.log(`  greedy: ${agree} of 100 characters agree: ${JSON.stringify(got.slice(0, 50))}...`);
  assert(agree >= 80, `only ${agree} characters agree:\n${want}\n${got}`);
  const [a, b] = [JSON.parse(cpuEval.stdout), JSON.parse(gpuEval.stdout)];
  console.log(`  eval: loss ${a.loss.toFixed(6)} on the CPU, ${b.loss.toFixed(6)} on the GPU`);
  assertEquals(b.tokens, a.tokens);
  assert(Math.abs(a.loss - b.loss) <= 1e-4, `${a.loss} vs ${b.loss}`);
});
