/**
 * `deno task bench`: the performance report of the default model on this machine.
 *
 * - the roof: this machine's peak of the WebAssembly multiply-add the matmul tiles use (12
 *   independent chains of `f32x4.relaxed_madd`, or `f32x4.mul` + `f32x4.add` for the simd tier),
 *   one thread;
 * - training step (16 x 128 tokens, d_model 256, 2 layers, 4 heads): median/min/max ms over 20
 *   steps after 12 warm-up steps (in which the matmul variants are timed and chosen), on 1 thread
 *   and on all threads; where the 1-thread step's time goes, kernel by kernel;
 * - GFLOP/s of each matrix-product form at M = 2048 on one thread, as a share of the roof, with
 *   the variant chosen;
 * - sampling characters per second with the KV cache on one thread (1,000 characters from a short
 *   prompt, slides included);
 * - peak resident memory of a default training run (a child `cli.ts train` process).
 *
 * `--json FILE` also writes the figures as JSON; `--tier` forces a kernel tier; `--quick` runs
 * fewer steps (for a smoke test). `--tier webgpu` reports the WebGPU tier instead, on the
 * adapter found (`webgpu_bench.ts`: the adapter, training steps of the default model and of
 * nanoGPT's configuration, the default step on the CPU beside it, matrix-product TFLOP/s); the
 * other CPU rows are left out.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { corpusPath, defaultModel, defaultRun, stats } from "./common.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps } from "../lib/sample.ts";
import { createKernels, createSharedMemory, type KernelTier } from "../lib/kernels/mod.ts";
import {
  attentionBackward,
  attentionForward,
  attentionScratchSize,
  defaultArena,
  type KernelVariants,
  matmul,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulNT,
  profileKernels,
  setupKernels,
  variantChoices,
} from "../lib/kernels/dispatch.ts";
import { Trainer } from "../lib/trainer.ts";
import { webgpuReport } from "./webgpu_bench.ts";

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
    "usage: deno run -A bench/report.ts [--quick] [--tier js|simd|relaxed|webgpu] [--json FILE] [--corpus FILE]",
  );
  Deno.exit(0);
}
const quick = values.quick === true;
const STEPS = quick ? 3 : 20;
const WARMUP = quick ? 1 : 12;
const cores = navigator.hardwareConcurrency ?? 1;

if (values.tier === "webgpu") {
  const run = await defaultRun(await corpusPath(values.corpus));
  const { corpus, config } = run;
  const newModel = () => defaultModel(run, 1);
  try {
    await webgpuReport({ tokens: corpus.tokens, config, newModel, quick, json: values.json });
  } catch (e) {
    // no adapter, or a device that fails: one line, not a stack trace
    console.error(`error: ${(e as Error).message.split("\n")[0]}`);
    Deno.exit(2);
  }
  Deno.exit(0);
}

const tier = setupKernels(values.tier as KernelTier | undefined);
const dataPath = await corpusPath(values.corpus);
const run = await defaultRun(dataPath);
const { corpus, config } = run;

/**
 * This machine's peak of the multiply-add of a tier's matmul tiles, one thread, GFLOP/s: the best
 * of 5 runs of 12 independent f32x4 chains (96 flops a round).
 */
function maddPeak(t: "relaxed" | "simd"): number {
  const k = createKernels(t, createSharedMemory(1 << 16));
  const rounds = quick ? 2e6 : 1e7;
  k.madd_peak(rounds / 10);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    k.madd_peak(rounds);
    best = Math.min(best, performance.now() - t0);
  }
  return (rounds * 96) / best / 1e6;
}

/** Kernels by what they do, for the step's profile. */
const KERNEL_GROUPS: [string, RegExp][] = [
  ["matrix products", /^matmul/],
  ["attention", /^attention/],
  ["LayerNorm", /^layernorm/],
  ["GELU", /^gelu/],
  ["softmax and cross-entropy", /softmax|crossentropy/],
  ["AdamW and gradient clipping", /^adamw|^sum_squares|^scale_inplace/],
  ["bias gradients, residual adds, reduction between threads", /^bias_backward|^add/],
];

/** Steps of the default model; AdamW by default, the optimizer of the comparisons with PyTorch. */
async function trainSteps(
  threads: number,
  withProfile = false,
  optimizer: "adamw" | "muon" = "adamw",
) {
  setupKernels(tier);
  const model = defaultModel(run, 1);
  // the trainer trains on the text's first 90%, as `cli.ts train` does
  const trainer = await Trainer.create(model, corpus.tokens, {
    threads,
    steps: 1000,
    batch: 16,
    optimizer,
  });
  const times: number[] = [];
  let spent = new Map<string, { ms: number; calls: number }>();
  try {
    for (let i = 0; i < WARMUP + STEPS; i++) {
      if (withProfile && i === WARMUP) profileKernels(true);
      const t0 = performance.now();
      await trainer.step();
      if (i >= WARMUP) times.push(performance.now() - t0);
    }
  } finally {
    if (withProfile) spent = profileKernels(false);
    trainer.close();
  }
  const total = times.reduce((a, b) => a + b, 0);
  const groups: { what: string; msPerStep: number; share: number }[] = [];
  const left = new Map(spent);
  for (const [what, pattern] of KERNEL_GROUPS) {
    let ms = 0;
    for (const [name, e] of left) if (pattern.test(name)) (ms += e.ms, left.delete(name));
    groups.push({ what, msPerStep: ms / times.length, share: ms / total });
  }
  const other = [...left.values()].reduce((a, e) => a + e.ms, 0);
  groups.push({ what: "other kernels", msPerStep: other / times.length, share: other / total });
  const inKernels = [...spent.values()].reduce((a, e) => a + e.ms, 0);
  groups.push({
    what: "outside the kernels (JavaScript: batches, dispatch)",
    msPerStep: (total - inKernels) / times.length,
    share: (total - inKernels) / total,
  });
  return {
    threads: trainer.threads,
    ...stats(times),
    profile: withProfile ? groups : undefined,
    variants: variantChoices(),
  };
}

function timeIt(fn: () => void, minMs = quick ? 50 : 400): number {
  for (let i = 0; i < 30; i++) fn(); // compiled code warm, the matmul variants chosen
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
  const lease = defaultArena().lease();
  const f32 = (n: number) => {
    const a = lease.f32(n);
    for (let i = 0; i < n; i++) a[i] = Math.sin(i) * 0.5;
    return a;
  };
  const M = 2048;
  const rows: {
    form: string;
    shape: string;
    ms: number;
    gflops: number;
    share: number;
    target: boolean;
    /** The variant the library chose for this product (the targeted forms). */
    variant?: number;
  }[] = [];
  const row = (
    form: string,
    shape: string,
    ms: number,
    flops: number,
    target: boolean,
    variant?: number,
  ) =>
    rows.push({
      form,
      shape,
      ms,
      gflops: flops / ms / 1e6,
      share: flops / ms / 1e6 / roof,
      target,
      variant,
    });
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
    // each product, and the form and shape (M x K x N of the product) its variant was chosen for
    const add = (form: string, dims: number[], fn: () => void, chooser: keyof KernelVariants) => {
      const [m, k, n] = dims;
      const ms = timeIt(fn);
      row(
        form,
        `[${m},${k}]·[${k},${n}]`,
        ms,
        flops,
        true,
        variantChoices()[chooser][dims.join("x")],
      );
    };
    add(`Y = X·W (${name})`, [M, K, N], () => matmul(y, x, w, b, M, K, N), "matmul");
    add(`dX = dY·Wᵀ (${name})`, [M, N, K], () => matmulBackwardInput(dx, y, w, M, K, N), "nt");
    add(
      `dW += Xᵀ·dY (${name})`,
      [K, M, N],
      () => matmulBackwardWeight(dw, x, y, M, K, N),
      "backwardWeight",
    );
  }
  // reported, not targeted: the tied output head and attention
  const V = config.vocabSize, C = 256;
  const x = f32(M * C), wte = f32(V * C), logits = f32(M * V);
  let ms = timeIt(() => matmulNT(logits, x, wte, M, C, V));
  row("logits = X·wteᵀ", `[${M},${C}]·[${C},${V}]`, ms, 2 * M * C * V, false);
  const B = 16, T = 128, H = 4;
  const qkv = f32(B * T * 3 * C),
    out = f32(B * T * C),
    probs = f32(B * H * T * T),
    dqkv = f32(B * T * 3 * C);
  const scratch = f32(attentionScratchSize(T, C, H));
  // causal: per (b, h), about T²/2 · hs multiply-adds for q·kᵀ and as many for probs·v
  const attnFlops = B * H * (T * (T + 1) / 2) * (C / H) * 2 * 2;
  const shape = `B ${B}, T ${T}, ${H} heads`;
  ms = timeIt(() => attentionForward(out, probs, qkv, B, T, C, H));
  row("attention forward (causal)", shape, ms, attnFlops, false);
  ms = timeIt(() => attentionBackward(dqkv, scratch, out, qkv, probs, B, T, C, H));
  row("attention backward (causal)", shape, ms, 2 * attnFlops, false);
  return { rows, variants: variantChoices() };
}

function sampling() {
  setupKernels(tier);
  const model = defaultModel(run, 2);
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
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      cli,
      "train",
      "--data",
      dataPath,
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
const peaks = {
  relaxed: tier === "relaxed" ? maddPeak("relaxed") : undefined,
  simd: tier === "js" ? undefined : maddPeak("simd"),
};
/** The roof of this tier's matmul tiles (the plain TypeScript tier: the simd one, for scale). */
const roof = (tier === "relaxed" ? peaks.relaxed : peaks.simd) ?? NaN;
const one = await trainSteps(1, true);
const all = cores > 1 ? await trainSteps(cores) : one;
const muon = await trainSteps(cores, false, "muon");
const { rows: forms, variants } = matmulForms();
const sample = sampling();
const memory = await peakRss();

const fmt = (x: number, d = 1) => x.toFixed(d);
const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
const lines = [
  `BareGPT benchmark: kernel tier ${tier}, ${cores} cores, Deno ${Deno.version.deno}`,
  "",
  "| what | figure |",
  "| --- | --- |",
  `| roof: WebAssembly multiply-add peak, 1 thread | ${
    peaks.relaxed ? `relaxed_madd ${fmt(peaks.relaxed)} GFLOP/s, ` : ""
  }${peaks.simd ? `mul + add ${fmt(peaks.simd)} GFLOP/s` : "none (js tier)"} |`,
  `| training step with AdamW, 1 thread (median / min / max of ${one.n}) | ${
    fmt(one.median, 0)
  } / ${fmt(one.min, 0)} / ${fmt(one.max, 0)} ms |`,
  `| training step with AdamW, ${all.threads} threads (median / min / max of ${all.n}) | ${
    fmt(all.median, 0)
  } / ${fmt(all.min, 0)} / ${fmt(all.max, 0)} ms |`,
  `| 2-thread step over 1-thread step (speed-up) | ${fmt(one.median / all.median, 2)}x |`,
  `| training step with Muon (the default), ${muon.threads} threads (median / min / max of ${muon.n}) | ${
    fmt(muon.median, 0)
  } / ${fmt(muon.min, 0)} / ${fmt(muon.max, 0)} ms |`,
  ...forms.map((r) =>
    `| ${r.form} ${r.shape}${r.target ? "" : " (reported)"} | ${fmt(r.gflops)} GFLOP/s, ${
      pct(r.share)
    } of the roof (${fmt(r.ms, 2)} ms${r.variant === undefined ? "" : `, variant ${r.variant}`}) |`
  ),
  `| sampling with the KV cache, 1 thread | ${fmt(sample.charsPerSecond, 0)} characters/s |`,
  `| peak resident memory of a default training run | ${fmt(memory.peakMb, 0)} MB |`,
];
lines.push(
  "",
  `Where the 1-thread training step's ${fmt(one.median, 0)} ms go (mean of ${one.n} steps):`,
  "",
  "| part | ms per step | share |",
  "| --- | ---: | ---: |",
  ...one.profile!.map((g) => `| ${g.what} | ${fmt(g.msPerStep)} | ${pct(g.share)} |`),
);
console.log(lines.join("\n"));
if (values.json) {
  const report = {
    tier,
    cores,
    deno: Deno.version.deno,
    peakGflops: { ...peaks, roof },
    trainStepMs: { oneThread: one, allThreads: all, muonAllThreads: muon },
    matmul: forms,
    variants,
    sampling: sample,
    peakRssMb: memory.peakMb,
  };
  await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
  console.error(`wrote ${values.json}`);
}
