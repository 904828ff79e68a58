// The browser side of tests/browser_gpu_test.ts, bundled for Chromium: on the page's WebGPU
// adapter (SwiftShader in the tests), the gradients of small models through the GPU path, with
// the row reductions on subgroup operations (where the device has them) and on the
// workgroup-memory tree, and through dropout (the masks drawn on the GPU), against the float64
// CPU backward of lib/model.ts with the same masks. The result is put in
// `globalThis.gpuKernels` (see GpuKernelsReport).

import { batchPass } from "../../lib/activations.ts";
import { setupKernels } from "../../lib/kernels/dispatch.ts";
import { backward, forward, GPT, type ModelConfig, parameterCount } from "../../lib/model.ts";
import { dropoutSeed, Rng } from "../../lib/rng.ts";
import { requestGpu } from "../../lib/webgpu/device.ts";
import { GpuKernels } from "../../lib/webgpu/kernels.ts";
import { GpuModel } from "../../lib/webgpu/model.ts";

/** One model's check with one kind of reduction. */
export interface GpuKernelsCase {
  config: string;
  subgroups: boolean;
  /** max |GPU - CPU| / (1 + max |CPU|) over the gradient. */
  worst: number;
  loss: number;
  cpuLoss: number;
}

/** What the page reports. */
export interface GpuKernelsReport {
  adapter: string;
  /** The device has the "subgroups" feature. */
  subgroupsOffered: boolean;
  cases: GpuKernelsCase[];
  error?: string;
}

/** The models, each with its dropout rate. */
const CONFIGS: [ModelConfig, number][] = [
  [{ vocabSize: 5, blockSize: 4, dModel: 8, nLayers: 2, nHeads: 2 }, 0],
  // rows wider than a workgroup (C = 320 > 128 threads, V = 200, T = 160 attention rows)
  [{ vocabSize: 200, blockSize: 160, dModel: 320, nLayers: 1, nHeads: 4 }, 0],
  [{ vocabSize: 7, blockSize: 12, dModel: 24, nLayers: 2, nHeads: 2 }, 0.25],
];

async function run(): Promise<GpuKernelsReport> {
  setupKernels("js"); // the CPU's reference: plain TypeScript, in float64
  const gpu = await requestGpu();
  const report: GpuKernelsReport = {
    adapter: gpu.description,
    subgroupsOffered: gpu.subgroups,
    cases: [],
  };
  for (const subgroups of gpu.subgroups ? [true, false] : [false]) {
    const kernels = await GpuKernels.create(gpu.device, { subgroups });
    for (const [c, p] of CONFIGS) {
      const B = 2, M = B * c.blockSize, rng = new Rng(7);
      const params = Float32Array.from({ length: parameterCount(c) }, () => rng.normal(0, 0.3));
      const ids = () =>
        Uint16Array.from({ length: M }, () => Math.floor(rng.random() * c.vocabSize));
      const [inputs, targets] = [ids(), ids()];
      const model = new GpuModel(kernels, c, params, { batch: B, dropout: p });
      const seed = dropoutSeed(3, 9), dropout = p > 0 ? { p, seed, firstRow: 0 } : null;
      const lossSum = await model.forwardBackward(inputs, targets, 1 / M, p > 0 ? seed : undefined);
      const grads = await model.downloadGradients();
      model.destroy();
      const cpu = new GPT(c, { dtype: "float64" });
      cpu.flat.set(params);
      const acts = cpu.activations(B, { dropout: p > 0 });
      acts.inputs.set(inputs);
      acts.targets.set(targets);
      cpu.zeroGrad();
      const cpuSum = forward(cpu, acts, batchPass(c, B, dropout));
      backward(cpu, acts, batchPass(c, B, dropout), 1 / M);
      let scale = 0, diff = 0;
      for (let i = 0; i < grads.length; i++) {
        scale = Math.max(scale, Math.abs(cpu.gradFlat[i]));
        diff = Math.max(diff, Math.abs(grads[i] - cpu.gradFlat[i]));
      }
      report.cases.push({
        config: `d_model ${c.dModel}, block ${c.blockSize}, vocab ${c.vocabSize}${
          p > 0 ? `, dropout ${p}` : ""
        }`,
        subgroups: kernels.subgroups,
        worst: diff / (1 + scale),
        loss: lossSum / M,
        cpuLoss: cpuSum / M,
      });
    }
    kernels.destroy();
  }
  return report;
}

(globalThis as { gpuKernels?: GpuKernelsReport }).gpuKernels = await run().catch((e) => ({
  adapter: "",
  subgroupsOffered: false,
  cases: [],
  error: String((e as Error).stack ?? e),
}));
