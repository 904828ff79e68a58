/**
 * `deno task bench:nanogpt`: nanoGPT's Shakespeare run on the WebGPU tier, for a time budget.
 *
 * The model and the recipe are nanoGPT's `config/train_shakespeare_char.py`: 6 layers of width
 * 384, 6 heads, block 256 (10.7M parameters); batch 64 x 256, AdamW at lr 1e-3 with 100 steps of
 * warmup and a cosine decay to 1e-4 over 5,000 steps, betas (0.9, 0.99), weight decay 0.1,
 * clip 1, dropout 0.2. It trains through the library (`selectKernels("webgpu")`, `createTrainer`,
 * `run`) on the schedule of 5,000 steps and stops when the budget is spent, with the validation
 * loss (the last 10% of the text, every window of 256) measured every `--eval-every` steps and at
 * the end. It prints each evaluation, then:
 *
 * - tokens per second of training (steps after the first `WARMUP_STEPS`, which compile and warm
 *   up, evaluation excluded);
 * - the validation loss reached, and the time it was reached at when it is 1.47 or less;
 * - the projected time to nanoGPT's 1.47: its 5,000 steps of 64 x 256 tokens (81.9M, the run
 *   its README reports at 1.4697, in about 3 minutes on an A100) at the measured speed, with the
 *   evaluations of nanoGPT's schedule (every 250 steps) at the measured evaluation time.
 *
 * Options: `--seconds S` (180), `--batch B` (64; smaller for a smoke test on a software
 * adapter), `--eval-every N` (250), `--max-windows W` (all: fewer for a smoke test), `--json
 * FILE`, `--corpus FILE`. Exits 2 with one line when there is no adapter.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  createModel,
  createTrainer,
  describeAdapter,
  selectKernels,
  webgpuAdapter,
} from "../mod.ts";
import { corpusPath } from "./common.ts";

/** nanoGPT's Shakespeare model and recipe (config/train_shakespeare_char.py). */
const NANOGPT = { blockSize: 256, dModel: 384, nLayers: 6, nHeads: 6, seed: 0 };
const RECIPE = {
  optimizer: "adamw",
  steps: 5000,
  warmup: 100,
  lr: 1e-3,
  minLr: 1e-4,
  decay: "cosine",
  beta1: 0.9,
  beta2: 0.99,
  weightDecay: 0.1,
  clip: 1,
  dropout: 0.2,
} as const;
/** nanoGPT's validation loss on this run, and how often it evaluates. */
const NANOGPT_LOSS = 1.47, NANOGPT_EVAL_EVERY = 250;
/** Steps left out of the speed: the first compile the kernels and warm the device up. */
const WARMUP_STEPS = 3;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "180" },
    batch: { type: "string", default: "64" },
    "eval-every": { type: "string", default: String(NANOGPT_EVAL_EVERY) },
    "max-windows": { type: "string" },
    json: { type: "string" },
    corpus: { type: "string" },
  },
});
const seconds = Number(values.seconds), batch = Number(values.batch);
const evalEvery = Number(values["eval-every"]);
const maxWindows = values["max-windows"] === undefined ? undefined : Number(values["max-windows"]);
for (
  const [name, x] of [["seconds", seconds], ["batch", batch], ["eval-every", evalEvery]] as const
) {
  if (!(Number.isInteger(x) && x > 0)) {
    console.error(`error: --${name} ${values[name]} is not a positive integer`);
    Deno.exit(2);
  }
}

try {
  await main();
} catch (e) {
  // no adapter, a device that fails, or a plan larger than the adapter: one line
  console.error(`error: ${(e as Error).message.split("\n")[0]}`);
  Deno.exit(2);
}

async function main() {
  selectKernels("webgpu");
  const adapter = await webgpuAdapter();
  const text = await Deno.readTextFile(await corpusPath(values.corpus));
  const model = createModel(text, NANOGPT);
  using trainer = await createTrainer(model, text, { ...RECIPE, batch });
  const tokensPerStep = batch * NANOGPT.blockSize;
  console.log(
    `nanoGPT's Shakespeare run on ${describeAdapter(adapter)}: ` +
      `${model.parameterCount.toLocaleString("en-US")} parameters, batch ${batch} x 256, ` +
      `dropout 0.2, for ${seconds} s`,
  );

  const started = performance.now(), deadline = started + seconds * 1000;
  const stepEnds: number[] = [],
    evals: { step: number; at: number; loss: number; ms: number }[] = [];
  let trainLoss = NaN, evaluating = 0; // ms spent evaluating: the steps' clock leaves it out
  while (performance.now() < deadline && trainer.stepsDone < RECIPE.steps) {
    const steps = evalEvery - (trainer.stepsDone % evalEvery);
    const signal = AbortSignal.timeout(Math.max(1, deadline - performance.now()));
    await trainer.run({
      steps,
      signal,
      onProgress: (info) => {
        stepEnds.push(performance.now() - evaluating);
        trainLoss = info.loss;
      },
    });
    const t0 = performance.now();
    const { loss } = await trainer.evaluate(undefined, { maxWindows });
    const ms = performance.now() - t0, at = (t0 - started) / 1000;
    evaluating += ms;
    evals.push({ step: trainer.stepsDone, at, loss, ms });
    console.log(
      `step ${trainer.stepsDone}: train loss ${trainLoss.toFixed(4)}, validation ${
        loss.toFixed(4)
      } at ${at.toFixed(1)} s (evaluation ${(ms / 1000).toFixed(1)} s)`,
    );
  }

  const timed = stepEnds.slice(WARMUP_STEPS);
  const msPerStep = timed.length > 1
    ? (timed[timed.length - 1] - timed[0]) / (timed.length - 1)
    : NaN;
  const tokensPerSecond = (tokensPerStep * 1000) / msPerStep;
  const evalMs = evals.reduce((a, e) => a + e.ms, 0) / Math.max(1, evals.length);
  const projectedS = (RECIPE.steps * msPerStep + (RECIPE.steps / NANOGPT_EVAL_EVERY) * evalMs) /
    1000;
  const reached = evals.find((e) => e.loss <= NANOGPT_LOSS);
  const last = evals[evals.length - 1];
  const lines = [
    "",
    "| what | figure |",
    "| --- | --- |",
    `| adapter | ${describeAdapter(adapter)} |`,
    `| steps in ${seconds} s (batch ${batch} x 256) | ${trainer.stepsDone} |`,
    `| training speed (steps after the first ${WARMUP_STEPS}, evaluation excluded) | ${
      Number.isFinite(msPerStep)
        ? `${Math.round(tokensPerSecond).toLocaleString("en-US")} tokens/s (${
          msPerStep.toFixed(1)
        } ms a step)`
        : "too few steps to time"
    } |`,
    `| validation loss reached | ${last?.loss.toFixed(4) ?? "none"} at step ${last?.step ?? 0}${
      reached ? `; ${NANOGPT_LOSS} first at step ${reached.step}, ${reached.at.toFixed(0)} s` : ""
    } |`,
    `| projected time to ${NANOGPT_LOSS}: nanoGPT's ${RECIPE.steps} steps of 64 x 256 at this speed, evaluations every ${NANOGPT_EVAL_EVERY} steps | ${
      batch === 64 ? `${(projectedS / 60).toFixed(1)} min` : "(batch is not 64: not projected)"
    } |`,
    "| nanoGPT on one A100 (its README) | about 3 min, 1.4697 |",
  ];
  console.log(lines.join("\n"));
  if (values.json) {
    const report = {
      adapter,
      batch,
      seconds,
      steps: trainer.stepsDone,
      msPerStep,
      tokensPerSecond,
      evaluations: evals,
      projectedSeconds: batch === 64 ? projectedS : null,
    };
    await Deno.writeTextFile(values.json, JSON.stringify(report, null, 2) + "\n");
  }
}
