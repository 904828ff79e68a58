/**
 * `deno task bench`: the performance report of the default model on this machine.
 *
 * - training step (16 x 128 tokens, d_model 256, 2 layers, 4 heads): median/min/max ms over 20
 *   steps after 3 warm-up steps, on 1 thread and on all threads;
 * - GFLOP/s of each matrix-product form at M = 2048 on one thread;
 * - sampling characters per second with the KV cache on one thread (1,000 characters from a short
 *   prompt, slides included);
 * - peak resident memory of a default training run (a child `cli.ts train` process).
 *
 * `--json FILE` also writes the figures as JSON; `--tier` forces a kernel tier; `--quick` runs
 * fewer steps (for a smoke test).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { makeCorpus } from "../lib/data.ts";
import { GPT, type ModelConfig } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps } from "../lib/sample.ts";
import type { KernelTier } from "../lib/kernels/mod.ts";
import {
  attentionBackward,
  attentionForward,
  attentionScratchSize,
  defaultArena,
  matmul,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulNT,
  setupKernels,
} from "../lib/kernels/dispatch.ts";
import { Trainer } from "../lib/trainer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    json: { type: "string" },
    tier: { type: "string" },
    quick: { type: "boolean" },
    corpus: { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno run -A bench/report.ts [--quick] [--tier js|simd|relaxed] [--json FILE] [--corpus FILE]",
  );
  Deno.exit(0);
}
const quick = values.quick === true;
const STEPS = quick ? 3 : 20;
const WARMUP = quick ? 1 : 3;
const cores = navigator.hardwareConcurrency ?? 1;

function stats(ms: number[]) {
  const sorted = [...ms].sort((a, b) => a - b);
  const median = sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: ms.length };
}

async function corpusText(): Promise<string> {
  const candidates = [
    values.corpus,
    new URL("../../shared/data/tinyshakespeare.txt", import.meta.url).pathname,
    new URL("../data/tinyshakespeare.txt", import.meta.url).pathname,
  ];
  for (const path of candidates) {
    if (!path) continue;
    try {
      return await Deno.readTextFile(path);
    } catch { /* next */ }
  }
  throw new Error("no corpus: run `deno task data` or pass --corpus FILE");
}

const tier = setupKernels(values.tier as KernelTier | undefined);
const text = await corpusText();
const corpus = makeCorpus(text);
const config: ModelConfig = {
  vocabSize: corpus.tokenizer.size,
  blockSize: 128,
  dModel: 256,
  nLayers: 2,
  nHeads: 4,
};

async function trainSteps(threads: number) {
  setupKernels(tier);
  const model = new GPT(config, { tokenizer: corpus.tokenizer }).init(1);
  // the trainer trains on the text's first 90%, as `cli.ts train` does
  const trainer = await Trainer.create(model, corpus.tokens, { threads, steps: 1000, batch: 16 });
  const times: number[] = [];
  try {
    for (let i = 0; i < WARMUP + STEPS; i++) {
      const t0 = performance.now();
      await trainer.step();
      if (i >= WARMUP) times.push(performance.now() - t0);
    }
  } finally {
    trainer.close();
  }
  return { threads: trainer.threads, ...stats(times) };
}

function timeIt(fn: () => void, minMs = quick ? 50 : 400): number {
  fn();
  let reps = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < minMs) {
    fn();
    reps++;
  }
  return (performance.now() - t0) / reps;
}

function matmulForms() {
  setupKernels(tier);
  const arena = defaultArena();
  const f32 = (n: number) => {
    const a = arena.f32(n);
    for (let i = 0; i < n; i++) a[i] = Math.sin(i) * 0.5;
    return a;
  };
  const M = 2048;
  const rows: { form: string; shape: string; ms: number; gflops: number; target: boolean }[] = [];
  for (
    const [K, N, name] of [[256, 768, "c_attn"], [256, 1024, "c_fc"], [
      1024,
      256,
      "mlp.c_proj",
    ]] as const
  ) {
    const x = f32(M * K),
      w = f32(K * N),
      b = f32(N),
      y = f32(M * N),
      dx = f32(M * K),
      dw = f32(K * N);
    const flops = 2 * M * K * N;
    const add = (form: string, shape: string, fn: () => void, target = true) => {
      const ms = timeIt(fn);
      rows.push({ form, shape, ms, gflops: flops / ms / 1e6, target });
    };
    add(`Y = X·W (${name})`, `[${M},${K}]·[${K},${N}]`, () => matmul(y, x, w, b, M, K, N));
    add(
      `dX = dY·Wᵀ (${name})`,
      `[${M},${N}]·[${N},${K}]`,
      () => matmulBackwardInput(dx, y, w, M, K, N),
    );
    add(
      `dW += Xᵀ·dY (${name})`,
      `[${K},${M}]·[${M},${N}]`,
      () => matmulBackwardWeight(dw, x, y, M, K, N),
    );
  }
  // reported, not targeted: the tied output head and attention
  const V = config.vocabSize, C = 256;
  const x = f32(M * C), wte = f32(V * C), logits = f32(M * V);
  let ms = timeIt(() => matmulNT(logits, x, wte, M, C, V));
  rows.push({
    form: "logits = X·wteᵀ",
    shape: `[${M},${C}]·[${C},${V}]`,
    ms,
    gflops: (2 * M * C * V) / ms / 1e6,
    target: false,
  });
  const B = 16, T = 128, H = 4;
  const qkv = f32(B * T * 3 * C),
    out = f32(B * T * C),
    probs = f32(B * H * T * T),
    dqkv = f32(B * T * 3 * C);
  const scratch = f32(attentionScratchSize(T, C, H));
  // causal: per (b, h), about T²/2 · hs multiply-adds for q·kᵀ and as many for probs·v
  const attnFlops = B * H * (T * (T + 1) / 2) * (C / H) * 2 * 2;
  ms = timeIt(() => attentionForward(out, probs, qkv, B, T, C, H));
  rows.push({
    form: "attention forward (causal)",
    shape: `B ${B}, T ${T}, ${H} heads`,
    ms,
    gflops: attnFlops / ms / 1e6,
    target: false,
  });
  ms = timeIt(() => attentionBackward(dqkv, scratch, out, qkv, probs, B, T, C, H));
  rows.push({
    form: "attention backward (causal)",
    shape: `B ${B}, T ${T}, ${H} heads`,
    ms,
    gflops: (2 * attnFlops) / ms / 1e6,
    target: false,
  });
  return rows;
}

function sampling() {
  setupKernels(tier);
  const model = new GPT(config, { tokenizer: corpus.tokenizer }).init(2);
  const prompt = corpus.tokenizer.encode("ROMEO:");
  const n = quick ? 200 : 1000;
  let best = Infinity;
  for (let rep = 0; rep < (quick ? 1 : 3); rep++) {
    const t0 = performance.now();
    let count = 0;
    for (const _ of decodeSteps(model, prompt, { tokens: n, rng: new Rng(rep) })) count++;
    best = Math.min(best, performance.now() - t0);
    if (count !== n) throw new Error("generation stopped early");
  }
  return { characters: n, ms: best, charsPerSecond: (n / best) * 1000 };
}

async function peakRss() {
  const dir = await Deno.makeTempDir();
  const data = `${dir}/corpus.txt`;
  await Deno.writeTextFile(data, text);
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "train",
      "--data",
      data,
      "--out",
      `${dir}/w.safetensors`,
      "--steps",
      quick ? "3" : "10",
      "--batch",
      "16",
      "--eval-every",
      "0",
      "--kernels",
      tier,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Deno reads /proc only with --allow-all, so `cat` reads the child's peak (VmHWM) as it runs
  let peakKb = 0;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      const out = await new Deno.Command("cat", {
        args: [`/proc/${child.pid}/status`],
        stderr: "null",
      })
        .output();
      const m = new TextDecoder().decode(out.stdout).match(/VmHWM:\s+(\d+) kB/);
      if (m) peakKb = Math.max(peakKb, Number(m[1]));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const { code } = await child.status;
  polling = false;
  await poll;
  await Deno.remove(dir, { recursive: true });
  if (code !== 0) throw new Error("the training run for the memory figure failed");
  if (peakKb === 0) throw new Error("could not read the training run's peak memory from /proc");
  return { peakMb: peakKb / 1024 };
}

console.error(
  `kernel tier ${tier}, ${cores} cores, Deno ${Deno.version.deno}, V8 ${Deno.version.v8}`,
);
const one = await trainSteps(1);
const all = cores > 1 ? await trainSteps(cores) : one;
const forms = matmulForms();
const sample = sampling();
const memory = await peakRss();

const fmt = (x: number, d = 1) => x.toFixed(d);
const lines = [
  `BareGPT benchmark: kernel tier ${tier}, ${cores} cores, Deno ${Deno.version.deno}`,
  "",
  "| what | figure |",
  "| --- | --- |",
  `| training step, 1 thread (median / min / max of ${one.n}) | ${fmt(one.median, 0)} / ${
    fmt(one.min, 0)
  } / ${fmt(one.max, 0)} ms |`,
  `| training step, ${all.threads} threads (median / min / max of ${all.n}) | ${
    fmt(all.median, 0)
  } / ${fmt(all.min, 0)} / ${fmt(all.max, 0)} ms |`,
  ...forms.map((r) =>
    `| ${r.form} ${r.shape}${r.target ? "" : " (reported)"} | ${fmt(r.gflops)} GFLOP/s (${
      fmt(r.ms, 2)
    } ms) |`
  ),
  `| sampling with the KV cache, 1 thread | ${fmt(sample.charsPerSecond, 0)} characters/s |`,
  `| peak resident memory of a default training run | ${fmt(memory.peakMb, 0)} MB |`,
];
console.log(lines.join("\n"));
if (values.json) {
  const report = {
    tier,
    cores,
    deno: Deno.version.deno,
    trainStepMs: { oneThread: one, allThreads: all },
    matmul: forms,
    sampling: sample,
    peakRssMb: memory.peakMb,
  };
  await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
  console.error(`wrote ${values.json}`);
}
