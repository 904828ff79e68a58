/**
 * `deno task bench:page`: the browser page's training step beside the CLI's, for the default
 * model (16 x 128 tokens, d_model 256, 2 layers, 4 heads) on Tiny Shakespeare, the same threads
 * (every core) and the same kernel tier (the fastest, relaxed SIMD where both have it).
 *
 * The CLI's side is the trainer the CLI runs (`createTrainer`, as `cli.ts train` makes it), timed
 * here in Deno; the page's side is the panel driven in headless Chromium
 * (tests/browser/train_driver.ts) on the cross-origin isolated server, timed by the page around
 * each `trainer.step()`. Each side takes 12 warm-up steps (the kernels time and choose their
 * matmul variants) and reports the median of the next 20. Needs `deno task data` (data/) and
 * Chromium ($CHROMIUM_PATH, else /usr/bin/chromium).
 *
 * ```sh
 * deno task bench:page [--steps 20] [--threads N]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createModel, createTrainer, selectKernels } from "../mod.ts";
import { corpusPath, stats } from "./common.ts";
import { startServer } from "../scripts/serve.ts";
import type { ScenarioResult, TrainJob } from "../tests/browser/train_driver.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
const WARMUP = 12;

const { values } = parseArgs({
  args: Deno.args,
  options: { steps: { type: "string" }, threads: { type: "string" } },
});
const measured = Number(values.steps ?? 20);
const threads = Number(values.threads ?? navigator.hardwareConcurrency);
const steps = WARMUP + measured;

const median = (xs: number[]) => stats(xs).median;

// the CLI's trainer, in Deno
const text = await Deno.readTextFile(await corpusPath());
const tier = selectKernels();
const model = createModel(text, { seed: 0 });
const cliMs: number[] = [];
{
  using trainer = await createTrainer(model, text, { steps, batch: 16, threads });
  for (let i = 0; i < steps; i++) {
    const t0 = performance.now();
    await trainer.step();
    cliMs.push(performance.now() - t0);
  }
  console.error(`CLI (Deno ${Deno.version.deno}): ${trainer.threads} threads, ${tier} kernels`);
}
model.dispose();

// the page's, in Chromium
await Deno.mkdir(`${ROOT}test-artifacts`, { recursive: true });
const server = startServer({ port: 0 });
let page: ScenarioResult;
try {
  const job: TrainJob = {
    chromium: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    page: `http://127.0.0.1:${server.addr.port}/web/?weights=none&tier=${tier}`,
    scenarios: [{
      kind: "train",
      shakespeare: true,
      fields: {
        "train-size": "default",
        "train-steps": String(steps),
        "train-batch": "16",
        "train-threads": String(threads),
        "train-checkpoint-every": "100000",
        "train-sample-every": "0",
      },
      timeout: 600_000,
    }],
  };
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "-A", `${ROOT}tests/browser/train_driver.ts`, JSON.stringify(job)],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (out.code !== 0) throw new Error(`the driver failed (exit ${out.code})`);
  page = (JSON.parse(new TextDecoder().decode(out.stdout).trim()) as ScenarioResult[])[0];
} finally {
  await server.shutdown();
}
if (page.state !== "done") throw new Error(`the page's run did not finish: ${page.error}`);
console.error(`page: ${page.status}`);

const cli = median(cliMs.slice(WARMUP)), web = median(page.stepMs!.slice(WARMUP));
console.log(
  `training step, default model, batch 16 x 128, ${threads} threads, ${tier} kernels (median of ${measured} after ${WARMUP} warm-up steps):`,
);
console.log(`  CLI (Deno)          ${cli.toFixed(1)} ms`);
console.log(`  page (Chromium)     ${web.toFixed(1)} ms   (${(web / cli).toFixed(2)}x the CLI's)`);
