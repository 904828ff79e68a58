/**
 * The WebGPU tier through the library (`selectKernels("webgpu")`): chosen only when asked for
 * (never by the automatic choice) and off again with a WebAssembly tier; a trainer on the GPU
 * takes the CPU trainer's steps (AdamW, Muon, and AdamW with dropout), its checkpoints resume
 * on the CPU and the CPU's on the GPU, with the same losses; evaluate and generate follow the
 * CPU's; a loss that is not finite stops the step with the CPU's error and leaves the state as
 * it was; threads are refused. `run()` submits the next step before it reports one (the order of the
 * submissions and reports is recorded), with the losses and weights of step-by-step training,
 * and a run that stops or fails with a step ahead drops it, losing nothing reported.
 *
 * Needs a WebGPU adapter: without one the tests are skipped with the reason printed, except
 * under CI=true, where that is a failure.
 */

import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert";
import {
  bestKernels,
  createModel,
  createTrainer,
  evaluate,
  generate,
  InputError,
  type Model,
  selectKernels,
  type TrainerOptions,
  webgpuAdapter,
} from "../mod.ts";
import { GpuModel } from "../lib/webgpu/model.ts";
import { playCorpus } from "./fixtures.ts";
import { missingAdapter } from "./webgpu_fixtures.ts";

const missing = await missingAdapter("library");

/** A test that runs only where there is an adapter; the CPU's kernels are chosen afterwards. */
function gpuTest(name: string, fn: (cpu: "relaxed" | "simd" | "js") => Promise<void>): void {
  Deno.test({
    name,
    ignore: missing !== "",
    fn: async () => {
      const cpu = selectKernels(bestKernels()) as "relaxed" | "simd" | "js";
      try {
        await fn(cpu);
      } finally {
        selectKernels(cpu);
      }
    },
  });
}

const TEXT = playCorpus();
const SHAPE = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 2, seed: 3 };
const RECIPE: TrainerOptions = { steps: 12, batch: 4, warmup: 2, lr: 4e-3 };

/** The `__metadata__` of safetensors bytes. */
function metadataOf(bytes: Uint8Array): Record<string, string> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))).__metadata__;
}

/** A model's flat weights. */
function flatOf(m: Model): Float32Array {
  return (m as unknown as { flat: Float32Array }).flat;
}

/** max |a - b| over two models' weights. */
function weightDiff(a: Model, b: Model): number {
  const [x, y] = [a as unknown as { flat: Float32Array }, b as unknown as { flat: Float32Array }];
  let d = 0;
  for (let i = 0; i < x.flat.length; i++) d = Math.max(d, Math.abs(x.flat[i] - y.flat[i]));
  return d;
}

/** Steps on a trainer, their losses. */
async function losses(trainer: { step(): Promise<number> }, n: number): Promise<number[]> {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await trainer.step());
  return out;
}

function close(got: number[], want: number[], what: string): void {
  got.forEach((x, i) => {
    assert(Math.abs(x - want[i]) <= 1e-4, `${what}, step ${i + 1}: ${x} vs ${want[i]}`);
  });
}

gpuTest("webgpu is chosen only when asked for, and off again with a CPU tier", async (cpu) => {
  assert(bestKernels() !== ("webgpu" as string));
  assertEquals(selectKernels(), cpu);
  assertEquals(selectKernels("webgpu"), "webgpu");
  assertEquals(selectKernels(), "webgpu");
  const adapter = await webgpuAdapter();
  console.log(`  adapter: ${adapter.description}${adapter.software ? " (software)" : ""}`);
  assert(typeof adapter.description === "string" && typeof adapter.software === "boolean");
  assertEquals(selectKernels(cpu), cpu);
  assertEquals(selectKernels(), cpu);
});

const RECIPES = [["adamw", 0], ["muon", 0], ["adamw", 0.1]] as const;
for (const [optimizer, dropout] of RECIPES) {
  const name = `${optimizer}${dropout > 0 ? ` and dropout ${dropout}` : ""}`;
  gpuTest(`${name} on the GPU: the CPU's steps, checkpoints both ways`, async (cpu) => {
    const recipe = { ...RECIPE, optimizer, dropout };
    // the CPU's run: 6 steps, a checkpoint, 6 more
    selectKernels(cpu);
    const cpuModel = createModel(TEXT, SHAPE);
    using cpuTrainer = await createTrainer(cpuModel, TEXT, recipe);
    const want = await losses(cpuTrainer, 6);
    const cpuCkpt = cpuTrainer.checkpoint();
    want.push(...await losses(cpuTrainer, 6));
    const cpuEval = await cpuTrainer.evaluate();

    // the same run on the GPU
    selectKernels("webgpu");
    const gpuModel = createModel(TEXT, SHAPE);
    using gpuTrainer = await createTrainer(gpuModel, TEXT, recipe);
    const got = await losses(gpuTrainer, 6);
    const gpuCkpt = gpuTrainer.checkpoint();
    assertEquals(metadataOf(gpuCkpt).kernels, "webgpu");
    assertEquals(metadataOf(cpuCkpt).kernels, cpu);
    got.push(...await losses(gpuTrainer, 6));
    close(got, want, "GPU vs CPU");
    // the model holds the GPU's weights after every step
    const diff = weightDiff(gpuModel, cpuModel);
    const gpuEval = await gpuTrainer.evaluate();
    console.log(
      `  ${name}: losses ${got.map((x) => x.toFixed(4)).join(" ")}; weights within ${
        diff.toExponential(2)
      }; validation ${gpuEval.loss.toFixed(5)} (CPU ${cpuEval.loss.toFixed(5)})`,
    );
    assert(diff <= 1e-3, `weights differ by ${diff}`);
    assert(Math.abs(gpuEval.loss - cpuEval.loss) <= 1e-4);

    // the CPU's checkpoint resumes on the GPU ...
    using fromCpu = await createTrainer(createModel(TEXT, SHAPE), TEXT, recipe);
    assertEquals(fromCpu.restore(cpuCkpt).step, 6);
    close(await losses(fromCpu, 6), want.slice(6), "CPU checkpoint on the GPU");
    // ... and the GPU's on the CPU
    selectKernels(cpu);
    using fromGpu = await createTrainer(createModel(TEXT, SHAPE), TEXT, recipe);
    assertEquals(fromGpu.restore(gpuCkpt).kernels, "webgpu");
    close(await losses(fromGpu, 6), want.slice(6), "GPU checkpoint on the CPU");
  });
}

gpuTest("evaluate and generate on the GPU follow the CPU", async (cpu) => {
  selectKernels(cpu);
  const model = createModel(TEXT, SHAPE);
  {
    using trainer = await createTrainer(model, TEXT, { ...RECIPE, steps: 30, lr: 1e-2 });
    await trainer.run();
  }
  const options = { prompt: "ROMEO:", tokens: 40, temperature: 0 };
  const cpuText = (await Array.fromAsync(generate(model, options))).join("");
  const cpuLoss = (await evaluate(model, TEXT)).loss;
  const sampled = { prompt: "O", tokens: 40, temperature: 1, seed: 5 };
  const cpuSampled = (await Array.fromAsync(generate(model, sampled))).join("");
  selectKernels("webgpu");
  const gpuText = (await Array.fromAsync(generate(model, options))).join("");
  const gpuLoss = (await evaluate(model, TEXT)).loss;
  const gpuSampled = (await Array.fromAsync(generate(model, sampled))).join("");
  console.log(
    `  greedy ${JSON.stringify(gpuText)}; loss ${gpuLoss.toFixed(5)} (CPU ${cpuLoss.toFixed(5)})`,
  );
  assertEquals(gpuText, cpuText);
  assertEquals(gpuSampled, cpuSampled);
  assert(Math.abs(gpuLoss - cpuLoss) <= 1e-4, `${gpuLoss} vs ${cpuLoss}`);
  await rejects(evaluate(model, TEXT, { threads: 2 }), /threads 2: the webgpu kernels/);
});

gpuTest("a loss that is not finite stops the step; threads are refused", async () => {
  selectKernels("webgpu");
  const model = createModel(TEXT, SHAPE);
  const flat = (model as unknown as { flat: Float32Array }).flat;
  flat.fill(3e38, 0, 2000); // wte: the LayerNorms overflow
  const before = Float32Array.from(flat);
  using trainer = await createTrainer(model, TEXT, RECIPE);
  await rejects(
    trainer.step(),
    /^BareGPTError: the loss became (NaN|Infinity) at step 1; lower lr/,
  );
  assertEquals(trainer.stepsDone, 0);
  assertEquals(flat, before);
  await rejects(
    createTrainer(model, TEXT, { ...RECIPE, threads: 2 }),
    (e) =>
      e instanceof InputError && /^threads 2: the webgpu kernels train on one GPU/.test(e.message),
  );
});

gpuTest("run() keeps a step ahead on the GPU, and drops it when stopped", async () => {
  selectKernels("webgpu");
  // step by step: the reference losses and weights
  const stepped = createModel(TEXT, SHAPE);
  using byStep = await createTrainer(stepped, TEXT, RECIPE);
  const want = await losses(byStep, 6);
  const atSix = createModel(TEXT, SHAPE);
  (atSix as unknown as { flat: Float32Array }).flat.set(flatOf(stepped));
  want.push(...await losses(byStep, 6));

  // a run, with its submissions and reports in order
  const events: string[] = [];
  const trainStep = GpuModel.prototype.trainStep;
  let submitted = 0;
  GpuModel.prototype.trainStep = function (...args) {
    events.push(`submit ${++submitted}`);
    return trainStep.apply(this, args);
  };
  const model = createModel(TEXT, SHAPE);
  using trainer = await createTrainer(model, TEXT, RECIPE);
  const got: number[] = [];
  let weightsAtReport = -1;
  let checkpoint: Uint8Array = new Uint8Array(0);
  try {
    await trainer.run({
      onProgress: async ({ step, loss }) => {
        events.push(`report ${step}`);
        got.push(loss);
        if (step === 5) checkpoint = trainer.checkpoint();
        // the model holds the reported step's weights while the next step runs and reads back
        await new Promise((resolve) => setTimeout(resolve, 30));
        if (step === 6) weightsAtReport = weightDiff(model, atSix);
      },
    });
  } finally {
    GpuModel.prototype.trainStep = trainStep;
  }
  const order = ["submit 1"];
  for (let i = 1; i <= 12; i++) order.push(...(i < 12 ? [`submit ${i + 1}`] : []), `report ${i}`);
  assertEquals(events, order);
  assertEquals(got, want);
  assertEquals(weightDiff(model, stepped), 0);
  assertEquals(weightsAtReport, 0);
  // a checkpoint taken with a step ahead resumes with the batches of a run never stopped
  using resumed = await createTrainer(createModel(TEXT, SHAPE), TEXT, RECIPE);
  assertEquals(resumed.restore(checkpoint).step, 5);
  assertEquals(await losses(resumed, 7), want.slice(5));

  // stopped by an error in onProgress at step 5: the step ahead is dropped, and a new run goes on
  // as if it had not been taken (the same batches, the same losses)
  const again = createModel(TEXT, SHAPE);
  using stopped = await createTrainer(again, TEXT, RECIPE);
  const stop = new Error("stop");
  await rejects(
    stopped.run({
      onProgress: async ({ step }) => {
        // after a wait, so that the step ahead has come back before the run stops
        await new Promise((resolve) => setTimeout(resolve, 30));
        if (step === 5) throw stop;
      },
    }),
    (e) => e === stop,
  );
  assertEquals(stopped.stepsDone, 5);
  const rest: number[] = [];
  await stopped.run({ onProgress: ({ loss }) => void rest.push(loss) });
  assertEquals(rest, want.slice(5));
  assertEquals(weightDiff(again, stepped), 0);

  // closed during a run: the run fails in one line, and the step ahead is not left unawaited
  const closing = await createTrainer(createModel(TEXT, SHAPE), TEXT, RECIPE);
  await rejects(
    closing.run({ onProgress: ({ step }) => void (step === 2 && closing.close()) }),
    /^InputError: this trainer is closed/,
  );

  // aborted at step 3: the step ahead is taken and reported, then the run returns
  using aborted = await createTrainer(createModel(TEXT, SHAPE), TEXT, RECIPE);
  const controller = new AbortController();
  const r = await aborted.run({
    signal: controller.signal,
    onProgress: ({ step }) => {
      if (step === 3) controller.abort();
    },
  });
  assertEquals([r.steps, r.aborted, aborted.stepsDone, r.loss], [4, true, 4, want[3]]);

  // a loss that is not finite in a run: the step ahead is dropped too, the state is as before
  const broken = createModel(TEXT, SHAPE);
  const flat = (broken as unknown as { flat: Float32Array }).flat;
  flat.fill(3e38, 0, 2000);
  const before = Float32Array.from(flat);
  using failing = await createTrainer(broken, TEXT, RECIPE);
  await rejects(failing.run(), /^BareGPTError: the loss became (NaN|Infinity) at step 1; lower lr/);
  assertEquals(failing.stepsDone, 0);
  assertEquals(flat, before);
});
