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

import type { GPT } from "../model.ts";
import { type GpuContext, requestGpu } from "./device.ts";
import { GpuKVCache } from "./generate.ts";
import { GpuKernels } from "./kernels.ts";
import { GpuModel } from "./model.ts";

/** An open device and its compiled kernels. */
export interface GpuBackend {
  readonly context: GpuContext;
  readonly kernels: GpuKernels;
}

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

/** A GPU copy of the model for evaluation, holding its current weights. */
export async function evaluationCopy(model: GPT): Promise<GpuModel> {
  const { kernels } = await openGpu(), c = copiesOf(model);
  if (c.evaluation === undefined || c.evaluation.kernels !== kernels) {
    c.evaluation = new GpuModel(kernels, model.config, weightsOf(model), { batch: EVAL_BATCH });
  } else c.evaluation.upload(weightsOf(model));
  return c.evaluation;
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
