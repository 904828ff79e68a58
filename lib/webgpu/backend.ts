/**
 * The WebGPU tier as this thread's choice: `selectKernels("webgpu")` turns it on, and the first
 * trainer, evaluation or generation that needs the GPU asks for an adapter and compiles the
 * kernels, once (so nothing asks for an adapter unless webgpu was chosen). Models stay on the CPU
 * (their weights are what is loaded and saved); the GPU holds copies: a trainer's own (with its
 * batch and optimizer), and per model one for generation and one for evaluation, refreshed from
 * the CPU weights at every call.
 *
 * @module
 */

import type { KernelTier } from "../kernels/mod.ts";
import { InputError } from "../errors.ts";
import type { LossRunner } from "../evaluate.ts";
import type { GPT } from "../model.ts";
import type { TrainSettings } from "../options.ts";
import { type GpuContext, requestGpu } from "./device.ts";
import { GpuKVCache } from "./generate.ts";
import { GpuKernels } from "./kernels.ts";
import { GpuModel, type GpuOptimizerOptions } from "./model.ts";

/** An open device and its compiled kernels. */
export interface GpuBackend {
  readonly context: GpuContext;
  readonly kernels: GpuKernels;
}

/**
 * A choice of kernels: a WebAssembly tier of the CPU, or "webgpu": training, `evaluate` and
 * `generate` on the GPU through WebGPU (the CPU's fastest tier does the rest).
 *
 * @example
 * ```ts
 * import type { KernelChoice } from "@baregpt/baregpt";
 * const choice: KernelChoice = "webgpu";
 * console.log(choice);
 * ```
 */
export type KernelChoice = KernelTier | "webgpu";

let chosen = false;
let opening: Promise<GpuBackend> | null = null;

/** Turns the WebGPU tier on or off for this thread (the CPU's kernels stay as chosen). */
export function chooseWebGpu(on: boolean): void {
  chosen = on;
}

/** True when this thread trains, evaluates and generates on WebGPU. */
export function webGpuChosen(): boolean {
  return chosen;
}

/**
 * The device and kernels, opened on the first call (an InputError of one line when there is no
 * adapter; a failed attempt is tried again by the next call, and so is a lost device).
 */
export function openGpu(): Promise<GpuBackend> {
  if (opening === null) {
    const attempt: Promise<GpuBackend> = (async () => {
      const context = await requestGpu();
      const kernels = await GpuKernels.create(context.device);
      context.lost.then(() => {
        if (opening === attempt) opening = null;
      });
      return { context, kernels };
    })();
    opening = attempt;
    attempt.catch(() => {
      if (opening === attempt) opening = null;
    });
  }
  return opening;
}

/** Float32 values as the GPU takes them (float64 ones converted). */
export function float32(a: Float32Array | Float64Array): Float32Array {
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

/**
 * What {@linkcode webgpuAdapter} found.
 *
 * @example
 * ```ts
 * import type { WebGpuAdapter } from "@baregpt/baregpt";
 * const a: WebGpuAdapter = {
 *   description: "llvmpipe",
 *   vendor: "mesa",
 *   software: true,
 *   subgroups: false,
 * };
 * console.log(a.software ? "a software adapter" : a.description);
 * ```
 */
export interface WebGpuAdapter {
  /** The adapter's description (or device name). */
  description: string;
  /** Its vendor (empty where not reported). */
  vendor: string;
  /** A fallback (software) adapter, such as Mesa's lavapipe or Chromium's SwiftShader. */
  software: boolean;
  /** The row reductions use subgroup operations (the adapter offers "subgroups"). */
  subgroups: boolean;
}

/**
 * How the CLI and the page name an adapter: its description (or its vendor), then "software
 * adapter" and "subgroups" where they apply.
 *
 * @example
 * ```ts
 * import { describeAdapter } from "@baregpt/baregpt";
 * const a = { description: "llvmpipe", vendor: "mesa", software: true, subgroups: false };
 * console.log(describeAdapter(a)); // llvmpipe, software adapter
 * ```
 */
export function describeAdapter(a: WebGpuAdapter): string {
  const notes = [a.description || a.vendor, a.software && "software adapter"];
  return [...notes, a.subgroups && "subgroups"].filter((x) => x).join(", ");
}

/**
 * Opens the GPU that the "webgpu" kernels use (once; later calls answer at once) and says what
 * it is. Call it after `selectKernels("webgpu")` to fail early, before any work, when there is
 * no adapter.
 *
 * @throws {InputError} when navigator.gpu or an adapter is missing (one line, saying what to use
 * instead); a BareGPTError when the device request fails or does not answer within 10 s.
 *
 * @example
 * ```ts ignore
 * import { selectKernels, webgpuAdapter } from "@baregpt/baregpt";
 * selectKernels("webgpu");
 * const { description, software } = await webgpuAdapter();
 * console.log(description, software ? "(software)" : "");
 * ```
 */
export async function webgpuAdapter(): Promise<WebGpuAdapter> {
  const { context, kernels } = await openGpu();
  return {
    description: context.description,
    vendor: context.vendor,
    software: context.software,
    subgroups: kernels.subgroups,
  };
}

/** A model's flat float32 weights (a float64 model's converted). */
export function weightsOf(model: GPT): Float32Array {
  return float32(model.flat);
}

/** Sequences of an evaluation batch on the GPU (as the CPU's evaluate). */
export const EVAL_BATCH = 16;

/** The GPU copies of one CPU model. */
interface Copies {
  /** For generation (no batch) and its idle KV caches. */
  generation?: GpuModel;
  caches: GpuKVCache[];
  /** For evaluation (a batch of EVAL_BATCH). */
  evaluation?: GpuModel;
}

const copies = new WeakMap<GPT, Copies>();

function copiesOf(model: GPT): Copies {
  let c = copies.get(model);
  if (c === undefined) copies.set(model, c = { caches: [] });
  return c;
}

/**
 * Evaluation (lib/evaluate.ts's runner) on a GPU copy of the model holding its current weights,
 * in batches of {@linkcode EVAL_BATCH} windows.
 */
export async function gpuEvaluation(model: GPT): Promise<LossRunner> {
  const { kernels } = await openGpu(), c = copiesOf(model);
  if (c.evaluation === undefined || c.evaluation.kernels !== kernels) {
    c.evaluation = new GpuModel(kernels, model.config, weightsOf(model), { batch: EVAL_BATCH });
  } else c.evaluation.upload(weightsOf(model));
  const gpu = c.evaluation, T = model.config.blockSize;
  const inputs = new Uint16Array(EVAL_BATCH * T), targets = new Uint16Array(EVAL_BATCH * T);
  return { B: EVAL_BATCH, inputs, targets, lossSum: (n) => gpu.evaluateLoss(inputs, targets, n) };
}

/** A KV cache on a GPU copy of the model holding its current weights; give it back when done. */
export async function takeGpuCache(model: GPT): Promise<GpuKVCache> {
  const { kernels } = await openGpu(), c = copiesOf(model);
  if (c.generation === undefined || c.generation.kernels !== kernels) {
    c.generation = new GpuModel(kernels, model.config, weightsOf(model));
    c.caches = [];
  } else c.generation.upload(weightsOf(model));
  const cache = c.caches.pop() ?? new GpuKVCache(c.generation);
  cache.reset();
  return cache;
}

/** Gives back a cache of {@linkcode takeGpuCache}. */
export function giveGpuCache(model: GPT, cache: GpuKVCache): void {
  const c = copiesOf(model);
  if (cache.model === c.generation) c.caches.push(cache);
  else cache.destroy();
}

/**
 * The trainer's model on the GPU, with its batch, optimizer and dropout, holding the model's
 * weights (one line of InputError for what the GPU does not do, and when there is no adapter).
 */
export async function trainingCopy(model: GPT, o: TrainSettings): Promise<GpuModel> {
  if (o.threads > 1) {
    throw new InputError(
      `threads ${o.threads}: the webgpu kernels train on one GPU, without worker threads; use threads 1`,
      { options: ["threads"] },
    );
  }
  const { kernels } = await openGpu();
  const { beta1, beta2, weightDecay } = o;
  const optimizer: GpuOptimizerOptions = o.optimizer === "muon"
    ? { name: "muon", beta1, beta2, weightDecay, momentum: o.muonMomentum, steps: o.muonSteps }
    : { name: "adamw", beta1, beta2, weightDecay };
  const options = { batch: o.batch, optimizer, dropout: o.dropout };
  return new GpuModel(kernels, model.config, weightsOf(model), options);
}
