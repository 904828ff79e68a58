/**
 * `deno task bench:torch`: this project's default training step beside the same model in PyTorch
 * on the CPU, interleaved in one run, and their ratio.
 *
 * The PyTorch side is `bench/torch_step.py`, a long-lived child (Debian's python3-torch on the
 * pthread OpenBLAS, with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment only)
 * driven over stdin/stdout. The BareGPT side is the project's own trainer, as `bench/report.ts`
 * times it: the default model (d_model 256, 2 layers, 4 heads, block 128), 16 x 128-token batches,
 * AdamW with the default settings. After warm-up the parties take turns, a few steps each, for
 * several rounds (each round starts with the next party, with a short pause before every turn),
 * so that all see the same machine state. At N > 1 threads PyTorch runs twice: as configured
 * (torch.set_num_threads(N), OpenBLAS N threads) and with OMP_WAIT_POLICY=PASSIVE (its idle
 * OpenMP threads sleep instead of spinning beside OpenBLAS's). Prints a markdown table: each
 * step's median and min, the ratio BareGPT / PyTorch (target: 0.65 or less), the machine, the
 * torch version and the BLAS. Then the same on 1 thread, when more than one is in use and the run
 * is still inside its time budget (`--no-single` skips it).
 *
 * Skipped (exit 0, one line saying why) when PyTorch is not installed, so that CI can run it
 * unconditionally.
 *
 * Options: `--threads N` (default: all cores), `--rounds R` (5), `--steps K` steps per turn (4),
 * `--warmup W` (12: BareGPT times and chooses its matmul variants in its first steps),
 * `--json FILE`, `--corpus FILE`, `--python PATH` (the task allows only /usr/bin/python3 and
 * python3), `--quick` (a smoke test).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { corpusPath, defaultModel, defaultRun, stats } from "./common.ts";
import { setupKernels } from "../lib/kernels/dispatch.ts";
import { Trainer } from "../lib/trainer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    threads: { type: "string" },
    rounds: { type: "string" },
    steps: { type: "string" },
    warmup: { type: "string" },
    json: { type: "string" },
    corpus: { type: "string" },
    python: { type: "string" },
    quick: { type: "boolean" },
    "no-single": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  console.log(
    "usage: deno task bench:torch [--threads N] [--rounds R] [--steps K] [--warmup W] " +
      "[--json FILE] [--corpus FILE] [--python PATH] [--no-single] [--quick]",
  );
  Deno.exit(0);
}

function intOption(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} takes an integer of at least ${min}, not ${JSON.stringify(value)}`);
    Deno.exit(2);
  }
  return n;
}

const quick = values.quick === true;
const cores = navigator.hardwareConcurrency ?? 1;
const threads = intOption("threads", values.threads, cores);
const rounds = intOption("rounds", values.rounds, quick ? 2 : 5);
const perTurn = intOption("steps", values.steps, quick ? 2 : 4);
const warmup = intOption("warmup", values.warmup, quick ? 2 : 12, 0);
/** The 1-thread comparison runs only when the main one finished within this many seconds. */
const SINGLE_BUDGET_S = 40;
/** A comparison stops taking rounds (after at least 2) past this many seconds of them. */
const ROUNDS_BUDGET_S = 45;
const TARGET = 0.65;
/** Pause before each turn, so that neither side's idle threads still spin in the other's. */
const SETTLE_MS = 200;

// --- PyTorch: find an interpreter that imports torch ---------------------------------------------

/** Debian's interpreter first (python3-torch installs for it), then whatever python3 is on PATH. */
async function findPython(): Promise<{ python: string } | { skipped: string }> {
  const candidates = values.python ? [values.python] : ["/usr/bin/python3", "python3"];
  let denied = "";
  for (const cmd of candidates) {
    try {
      const { code } = await new Deno.Command(cmd, {
        args: ["-c", "import torch"],
        stdout: "null",
        stderr: "null",
      }).output();
      if (code === 0) return { python: cmd };
    } catch (err) {
      // not installed (NotFound), or not in --allow-run: next
      if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
        denied ||= cmd;
      }
    }
  }
  return {
    skipped: denied
      ? `skipped: not allowed to run ${denied} (run it with --allow-run=/usr/bin/python3,python3)`
      : "skipped: PyTorch is not installed (apt-get install python3-torch libopenblas0-pthread)",
  };
}

const found = await findPython();
if ("skipped" in found) {
  console.log(found.skipped);
  Deno.exit(0);
}
const python = found.python;

const path = await corpusPath(values.corpus).catch((e) => {
  console.error((e as Error).message);
  Deno.exit(1);
});
const run = await defaultRun(path);
const { corpus, config } = run;
const BATCH = 16;

interface TorchInfo {
  torch: string;
  python: string;
  threads: number;
  blas: string;
  blas_built: string;
  blas_libs: string[];
  blas_note: string;
  cpu: string;
  cores: number;
  omp_wait_policy: string;
  params: number;
  attention: string;
  attention_tried_ms: Record<string, number>;
  sdpa_available: boolean;
}

/** The PyTorch child: `step K` in, one JSON line of K step times out. */
class TorchChild {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  info!: TorchInfo;

  constructor(threads: number, extra: string[] = []) {
    // the parent's environment, less the OpenBLAS core-type and cache-size overrides (this child
    // only: OpenBLAS then detects the CPU itself, as a user's PyTorch would)
    const env = Deno.env.toObject();
    delete env.OPENBLAS_CORETYPE;
    delete env.OPENBLAS_L2_SIZE;
    const script = new URL("./torch_step.py", import.meta.url).pathname;
    this.#child = new Deno.Command(python, {
      args: [
        script,
        "--corpus",
        path,
        "--threads",
        String(threads),
        "--batch",
        String(BATCH),
        "--block",
        String(config.blockSize),
        "--d-model",
        String(config.dModel),
        "--layers",
        String(config.nLayers),
        "--heads",
        String(config.nHeads),
        ...extra,
      ],
      env,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = this.#child.stdout
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(splitLines())
      [Symbol.asyncIterator]();
  }

  async #read(): Promise<Record<string, unknown>> {
    const { value, done } = await this.#lines.next();
    if (done) throw new Error("bench/torch_step.py exited early (its error is above)");
    return JSON.parse(value);
  }

  async start(): Promise<this> {
    this.info = await this.#read() as unknown as TorchInfo;
    return this;
  }

  async steps(k: number): Promise<number[]> {
    await this.#writer.write(new TextEncoder().encode(`step ${k}\n`));
    const reply = await this.#read();
    if (!Array.isArray(reply.ms)) throw new Error(`bench/torch_step.py: ${JSON.stringify(reply)}`);
    return reply.ms as number[];
  }

  async close(): Promise<void> {
    try {
      await this.#writer.write(new TextEncoder().encode("quit\n"));
      await this.#writer.close();
    } catch { /* already gone */ }
    await this.#child.status;
  }
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(chunk, out) {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop()!;
      for (const line of parts) if (line.trim()) out.enqueue(line);
    },
    flush(out) {
      if (rest.trim()) out.enqueue(rest);
    },
  });
}

// --- the comparison -------------------------------------------------------------------------------

type Stats = ReturnType<typeof stats>;

/** The PyTorch configurations timed at N threads. */
const VARIANTS = [
  { name: "PyTorch", args: [] as string[], multiThreadOnly: false },
  // with N threads in each of two pools (OpenMP's and OpenBLAS's) on N cores, libgomp's spinning
  // idle threads slow the matrix products down: the same PyTorch with them sleeping
  { name: "PyTorch, OMP_WAIT_POLICY=PASSIVE", args: ["--omp-passive"], multiThreadOnly: true },
];

interface TorchRun {
  name: string;
  step: Stats;
  /** BareGPT's median step over this one's. */
  ratio: number;
  /** BareGPT's min step over this one's. */
  ratioMin: number;
  info: TorchInfo;
}

interface Comparison {
  threads: number;
  /** Rounds taken (fewer than asked when the time budget ran out). */
  rounds: number;
  baregpt: Stats;
  pytorch: TorchRun[];
}

async function compare(threads: number): Promise<Comparison> {
  setupKernels();
  const model = defaultModel(run, 1);
  // the trainer trains on the text's first 90%, as `cli.ts train` does
  const trainer = await Trainer.create(model, corpus.tokens, {
    threads,
    steps: 1000,
    batch: BATCH,
    optimizer: "adamw", // PyTorch's step is AdamW's
  });
  const variants = VARIANTS.filter((v) => threads > 1 || !v.multiThreadOnly);
  const children = variants.map((v) => new TorchChild(threads, v.args));
  try {
    for (const child of children) {
      await child.start();
      if (child.info.params !== model.parameterCount) {
        throw new Error(
          `the PyTorch model has ${child.info.params} parameters, BareGPT's ${model.parameterCount}`,
        );
      }
    }
    const bareStep = async () => {
      const t0 = performance.now();
      await trainer.step();
      return performance.now() - t0;
    };
    for (let i = 0; i < warmup; i++) await bareStep();
    for (const child of children) if (warmup > 0) await child.steps(warmup);
    const bare: number[] = [];
    const pt: number[][] = children.map(() => []);
    const turns = [
      async () => {
        for (let i = 0; i < perTurn; i++) bare.push(await bareStep());
      },
      ...children.map((child, c) => async () => {
        pt[c].push(...await child.steps(perTurn));
      }),
    ];
    const t0 = performance.now();
    let done = 0;
    for (let r = 0; r < rounds; r++) {
      if (r >= 2 && (performance.now() - t0) / 1000 > ROUNDS_BUDGET_S) break;
      done++;
      // each round starts with the next party, so that none always follows the same one
      for (let t = 0; t < turns.length; t++) {
        // idle BLAS and OpenMP threads spin a while after their last call: let them settle
        await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
        await turns[(r + t) % turns.length]();
      }
    }
    const baregpt = stats(bare);
    return {
      threads: trainer.threads,
      rounds: done,
      baregpt,
      pytorch: children.map((child, c) => {
        const step = stats(pt[c]);
        return {
          name: variants[c].name,
          step,
          ratio: baregpt.median / step.median,
          ratioMin: baregpt.min / step.min,
          info: child.info,
        };
      }),
    };
  } finally {
    trainer.close();
    for (const child of children) await child.close();
  }
}

const began = performance.now();
const results = [await compare(threads)];
const mainSeconds = (performance.now() - began) / 1000;
let singleNote = "";
if (threads > 1 && !values["no-single"] && !quick) {
  if (mainSeconds <= SINGLE_BUDGET_S) results.push(await compare(1));
  else singleNote = `1-thread comparison skipped: the main one took ${mainSeconds.toFixed(0)} s`;
}

// --- report ---------------------------------------------------------------------------------------

const info = results[0].pytorch[0].info;
const fmt = (x: number, d = 0) => x.toFixed(d);
const main = results[0];
const asConfigured = main.pytorch[0];
const fastest = main.pytorch.reduce((a, b) => (b.step.median < a.step.median ? b : a));
const verdict = (r: TorchRun) =>
  `${r.ratio <= TARGET ? "met" : "not met"} (${fmt(r.ratio, 3)}x ${r.name})`;
const lines = [
  `BareGPT vs PyTorch, one training step of the default model (${BATCH} x ${config.blockSize} ` +
  `tokens, d_model ${config.dModel}, ${config.nLayers} layers, ${config.nHeads} heads, ` +
  `${info.params.toLocaleString("en-US")} parameters, AdamW), interleaved: ${rounds} rounds of ` +
  `${perTurn} steps each after ${warmup} warm-up steps`,
  "",
  `machine: ${info.cpu}, ${cores} cores; Deno ${Deno.version.deno}; PyTorch ${info.torch} ` +
  `(Python ${info.python}, ${python}) on ${info.blas}, attention ${info.attention}`,
  ...(info.blas_note ? [`BLAS: ${info.blas_note}`] : []),
  "",
  "| threads | BareGPT median / min | PyTorch | median / min | ratio BareGPT / PyTorch (median, min) |",
  "| --- | --- | --- | --- | --- |",
  ...results.flatMap((r) =>
    r.pytorch.map((p, i) =>
      `| ${i ? "" : r.threads} | ${
        i ? "" : `${fmt(r.baregpt.median)} / ${fmt(r.baregpt.min)} ms`
      } | ${p.name} | ${fmt(p.step.median)} / ${fmt(p.step.min)} ms | ${fmt(p.ratio, 2)}x, ${
        fmt(p.ratioMin, 2)
      }x |`
    )
  ),
  "",
  `target, BareGPT's step at ${TARGET}x PyTorch's or less on ${main.threads} thread${
    main.threads > 1 ? "s" : ""
  }: ` +
  verdict(asConfigured) +
  (fastest !== asConfigured ? `; against the faster PyTorch: ${verdict(fastest)}` : ""),
  ...results.filter((r) => r.rounds < rounds).map((r) =>
    `${r.threads} thread${r.threads > 1 ? "s" : ""}: stopped after ${r.rounds} rounds (time budget)`
  ),
  ...(singleNote ? [singleNote] : []),
];
console.log(lines.join("\n"));

if (values.json) {
  const report = {
    model: { ...config, batch: BATCH, parameters: info.params },
    rounds,
    stepsPerTurn: perTurn,
    warmup,
    cores,
    cpu: info.cpu,
    deno: Deno.version.deno,
    python,
    torch: info,
    target: TARGET,
    results: results.map((r) => ({
      ...r,
      pytorch: r.pytorch.map(({ info, ...p }) => ({ ...p, ompWaitPolicy: info.omp_wait_policy })),
    })),
  };
  await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
  console.error(`wrote ${values.json}`);
}
