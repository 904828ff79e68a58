/**
 * A GPT resident on the GPU: its parameters, gradients, the activations of a batch of B
 * sequences, the optimizer's state and the batch's tokens live in GPU buffers, allocated once
 * (after {@linkcode gpuModelLayout}'s plan is checked against the device's limits). A training
 * step is one command submission: zero the gradients, the forward, the loss, the backward (each
 * as lib/model.ts does it, call for call), the clip and the update (`step.ts`). Nothing waits for
 * the GPU in between: the step's losses and gradient norm are copied to one of a ring of
 * MAP_READ staging buffers, and the promise {@linkcode GpuModel.trainStep} returns settles when
 * that buffer maps, while the caller may already record the next step.
 *
 * Parameters, m and v use the flat layout of `lib/model.ts` (parameterSpecs), so a checkpoint
 * written from the GPU ({@linkcode GpuModel.download}) resumes on the CPU, and back
 * ({@linkcode GpuModel.upload}).
 *
 * @example
 * ```ts
 * import { GPT } from "../model.ts";
 * import { requestGpu } from "./device.ts";
 * import { GpuKernels } from "./kernels.ts";
 * import { GpuModel } from "./model.ts";
 *
 * const config = { vocabSize: 5, blockSize: 8, dModel: 16, nLayers: 1, nHeads: 2 };
 * const cpu = new GPT(config).init(1);
 * const kernels = await GpuKernels.create((await requestGpu()).device);
 * const optimizer = { name: "adamw" as const, beta1: 0.9, beta2: 0.95, weightDecay: 0.1 };
 * const model = new GpuModel(kernels, config, cpu.flat as Float32Array, { batch: 2, optimizer });
 * const ids = new Uint16Array(16).map((_, i) => i % 5);
 * const { loss } = await model.trainStep(ids, ids, { lr: 1e-3, clip: 1 });
 * console.log(loss);
 * ```
 *
 * @module
 */

import { type ModelConfig, parameterCount } from "../model.ts";
import { validateConfig } from "../options.ts";
import type { GpuKernels } from "./kernels.ts";
import {
  type GpuActs,
  type GpuParams,
  type GpuPass,
  gpuPass,
  layoutActs,
  layoutParams,
  recordBackward,
  recordHead,
  recordLoss,
  recordTrunk,
} from "./layers.ts";
import { bindableFloats, Layout, type MemoryLimits, StagingRing, stretches } from "./memory.ts";
import type { GpuArray } from "./pipelines.ts";
import { GpuOptimizer, type GpuOptimizerOptions, type GpuStepSettings } from "./step.ts";

export type { GpuOptimizerOptions, GpuStepSettings } from "./step.ts";

/** Options of a {@linkcode GpuModel}. */
export interface GpuModelOptions {
  /** Sequences of a training step or an evaluation batch (0: generation only). Default 0. */
  batch?: number;
  /** The optimizer of {@linkcode GpuModel.trainStep} (default none: no m and v). */
  optimizer?: GpuOptimizerOptions;
  /**
   * Dropout's rate in training steps, 0 .. 0.9 (default 0): the masks of lib/layers.ts
   * dropoutForward, drawn on the GPU from each step's `dropoutSeed`.
   */
  dropout?: number;
}

/** What one training step did. */
export interface GpuStepResult {
  /** Mean cross-entropy of the batch (nats). */
  loss: number;
  /** Global gradient norm before the clip (float32, from the GPU). */
  gradNorm: number;
}

/** The state a checkpoint keeps, in the flat layout of parameterSpecs. */
export interface GpuState {
  params: Float32Array;
  /** AdamW's moments (Muon's momentum in m for the hidden matrices); empty without optimizer. */
  m: Float32Array;
  v: Float32Array;
}

/** The buffers of a GPU model, laid out: what the model allocates and the memory check sees. */
export interface GpuModelPlan {
  layout: Layout;
  params: GpuParams;
  grads: GpuParams | null;
  acts: GpuActs | null;
  optimizer: GpuOptimizer | null;
}

/**
 * The plan of a model of `config` with `options` on a device of `limits` (which set how work over
 * the whole gradient is split into bindings).
 */
export function gpuModelLayout(
  config: ModelConfig,
  options: GpuModelOptions,
  limits: MemoryLimits,
): GpuModelPlan {
  const layout = new Layout(), B = options.batch ?? 0;
  const params = layoutParams(layout.region("parameters", true), config);
  const grads = B > 0 ? layoutParams(layout.region("gradients", true), config) : null;
  const dropout = (options.dropout ?? 0) > 0;
  const acts = B > 0 ? layoutActs(layout, config, B, "train", "", dropout) : null;
  const optimizer = options.optimizer && B > 0
    ? new GpuOptimizer(layout, config, options.optimizer, bindableFloats(limits))
    : null;
  // the readback rings of trainStep: the losses and gradient norm, and the state after a step
  if (B > 0) layout.stage("losses readback", B * config.blockSize + 1, LOSS_SLOTS);
  if (optimizer) layout.stage("state readback", 3 * parameterCount(config), STATE_SLOTS);
  return { layout, params, grads, acts, optimizer };
}

/** Readbacks of losses, and of the state after a step, that may be in flight at once. */
const LOSS_SLOTS = 3, STATE_SLOTS = 2;

/** Bytes of GPU memory a model of `config` with `options` takes (its buffers, all of them). */
export function gpuModelBytes(
  config: ModelConfig,
  options: GpuModelOptions,
  limits: MemoryLimits,
): number {
  return gpuModelLayout(config, options, limits).layout.bytes;
}

/** A GPT whose parameters, training state and activations live on one GPU device. */
export class GpuModel {
  readonly config: Readonly<ModelConfig>;
  readonly kernels: GpuKernels;
  readonly device: GPUDevice;
  /** Sequences per batch (0: generation only). */
  readonly batch: number;
  /** Dropout's rate in training steps (0: none). */
  readonly dropout: number;
  readonly parameterCount: number;
  /** The parameters [P] and their named views. */
  readonly params: GpuParams;
  /** The gradients, the same layout (null when batch is 0). */
  readonly grads: GpuParams | null;
  readonly optimizer: GpuOptimizer | null;
  readonly #acts: GpuActs | null;
  readonly #buffers: GPUBuffer[];
  /** Readbacks of a step's losses [B·T] and gradient norm. */
  readonly #losses: StagingRing;
  /** Readbacks of the state after a step (parameters, m, v: [3P]), when asked. */
  readonly #states: StagingRing;
  /** Elements one binding holds (work over the whole gradient goes in stretches of it). */
  readonly #stretch: number;
  /** The batch's tokens as the GPU reads them (u32). */
  readonly #tokens: Uint32Array<ArrayBuffer>;

  /**
   * Checks the plan against the device's limits (an InputError of one line when it does not
   * fit), allocates every buffer and uploads `params` (flat, parameterSpecs order).
   */
  constructor(
    kernels: GpuKernels,
    config: ModelConfig,
    params: Float32Array,
    options: GpuModelOptions = {},
  ) {
    validateConfig(config);
    const B = options.batch ?? 0, p = options.dropout ?? 0;
    if (!(Number.isInteger(B) && B >= 0)) throw new RangeError(`batch ${B} is not a count`);
    if (!(p >= 0 && p <= 0.9)) throw new RangeError(`dropout ${p} is not in 0 .. 0.9`);
    this.config = Object.freeze({ ...config });
    this.kernels = kernels;
    this.device = kernels.device;
    this.batch = B;
    this.dropout = p;
    const plan = gpuModelLayout(config, options, this.device.limits);
    this.params = plan.params;
    this.parameterCount = parameterCount(config);
    this.#stretch = bindableFloats(this.device.limits);
    const T = config.blockSize;
    const shape = B > 0 ? `, batch ${B} x ${T}` : "";
    plan.layout.check(
      this.device.limits,
      `this model (${this.parameterCount.toLocaleString("en-US")} parameters${shape})`,
    );
    this.#buffers = plan.layout.allocate(this.device);
    this.grads = plan.grads;
    this.optimizer = plan.optimizer;
    this.#acts = plan.acts;
    this.#tokens = new Uint32Array(B * T);
    this.#losses = new StagingRing(this.device, "losses readback", (B * T + 1) * 4, LOSS_SLOTS);
    const P = this.parameterCount;
    this.#states = new StagingRing(this.device, "state readback", 3 * P * 4, STATE_SLOTS);
    this.upload(params);
  }

  /** Updates taken so far (set it when resuming: AdamW's bias corrections depend on it). */
  get stepsTaken(): number {
    return this.optimizer?.t ?? 0;
  }
  set stepsTaken(t: number) {
    this.#needOptimizer().t = t;
  }

  /**
   * One training step on a batch (inputs and targets [B, T]): records and submits at once
   * (the token arrays may be reused as soon as it returns); the promise settles with the loss
   * when the GPU is done. AdamW's lr and Muon's hiddenLr come from the caller's schedule.
   *
   * With `onState`, the parameters and the optimizer's moments after the step are copied out in
   * the same submission, and shown to it (views valid during the call only) before the promise
   * settles, when the loss is finite: the next step may be submitted meanwhile.
   */
  trainStep(
    inputs: Uint16Array,
    targets: Uint16Array,
    settings: GpuStepSettings,
    onState?: (state: GpuState, loss: number) => void,
  ): Promise<GpuStepResult> {
    const optimizer = this.#needOptimizer(), B = this.batch, T = this.config.blockSize;
    const [k, params, grads] = [this.kernels, this.params, this.grads!];
    const state = onState && ((loss: number, copied: Float32Array) => {
      if (!Number.isFinite(loss)) return;
      const P = this.parameterCount;
      const [p, m, v] = [0, 1, 2].map((i) => copied.subarray(i * P, (i + 1) * P));
      onState({ params: p, m, v }, loss);
    });
    // the seed is ignored by a model without dropout (a trainer gives it every step)
    const seed = this.dropout > 0 ? settings.dropoutSeed : undefined;
    if (this.dropout > 0 && seed === undefined) {
      throw new RangeError("this GPU model has dropout: give each step its dropoutSeed");
    }
    const result = this.#run(
      inputs,
      targets,
      B,
      (pass, acts, s) => {
        recordBackward(k, pass, params, grads, acts, s, 1 / (B * T));
        optimizer.record(k, pass, params.flat, grads.flat, settings);
      },
      state,
      seed,
    );
    return result.then(({ lossSum, gradNorm }) => ({ loss: lossSum / (B * T), gradNorm }));
  }

  /**
   * Zeroes the gradients, then accumulates those of lossScale · (sum of the losses) of the
   * batch, without an update (lib/train.ts `gradients`); settles with the sum of the losses.
   * With a `dropoutSeed` (a model with dropout), through that step's dropout masks.
   */
  async forwardBackward(
    inputs: Uint16Array,
    targets: Uint16Array,
    lossScale = 1 / (this.batch * this.config.blockSize),
    dropoutSeed?: number,
  ): Promise<number> {
    if (dropoutSeed !== undefined && this.dropout === 0) {
      throw new RangeError("this GPU model has no dropout: give no dropoutSeed");
    }
    const { lossSum } = await this.#run(
      inputs,
      targets,
      this.batch,
      (pass, acts, s) => {
        recordBackward(this.kernels, pass, this.params, this.grads!, acts, s, lossScale);
      },
      undefined,
      dropoutSeed,
    );
    return lossSum;
  }

  /** The sum of the losses of the first `rows` sequences (<= batch) of inputs/targets [rows, T]. */
  async evaluateLoss(inputs: Uint16Array, targets: Uint16Array, rows: number): Promise<number> {
    return (await this.#run(inputs, targets, rows, null)).lossSum;
  }

  /**
   * Records, in one pass, the forward and the loss of `rows` sequences, and with a `backward`
   * zeroes the gradients first and records it after; submits, and reads back the losses. With a
   * `dropoutSeed` (given only for a backward of the whole batch, by a model with dropout) the
   * forward has this step's dropout.
   */
  #run(
    inputs: Uint16Array,
    targets: Uint16Array,
    rows: number,
    backward: ((pass: GPUComputePassEncoder, acts: GpuActs, s: GpuPass) => void) | null,
    onState?: (loss: number, state: Float32Array) => void,
    dropoutSeed?: number,
  ): Promise<{ lossSum: number; gradNorm: number }> {
    const acts = this.#needActs(), T = this.config.blockSize, M = rows * T, k = this.kernels;
    if (!(Number.isInteger(rows) && rows >= 1 && rows <= this.batch)) {
      throw new RangeError(`rows ${rows} is not 1 .. ${this.batch}`);
    }
    this.#writeTokens(acts.inputs, inputs, M, "inputs");
    this.#writeTokens(acts.targets, targets, M, "targets");
    this.device.pushErrorScope("validation");
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    try {
      const dropout = dropoutSeed === undefined
        ? null
        : { p: this.dropout, seed: dropoutSeed, masks: acts.masks };
      const s = gpuPass(this.config, rows, dropout);
      if (backward) {
        for (const [part, n] of stretches(this.grads!.flat, this.parameterCount, this.#stretch)) {
          k.fill(pass, part, n, 0);
        }
      }
      const x = recordTrunk(k, pass, this.params, acts, s);
      recordHead(k, pass, this.params, acts, x, M, s);
      recordLoss(k, pass, acts, M, s.V);
      backward?.(pass, acts, s);
    } catch (e) {
      pass.end();
      this.device.popErrorScope(); // a recording refused (a RangeError) is never submitted
      throw e;
    }
    pass.end();
    return this.#readBack(encoder, acts.losses, M, onState);
  }

  /**
   * Copies losses [M] and the clip's gradient norm into the next staging buffer (and with
   * `onState` the parameters, m and v into the next state buffer), submits the step, and settles
   * with the losses' sum (in float64, in order, as lib/layers.ts lossForward) once it maps,
   * after showing `onState` the mean loss and the state. A slot still busy (the caller ran a
   * whole ring ahead) gets a new buffer.
   */
  #readBack(
    encoder: GPUCommandEncoder,
    losses: GpuArray,
    M: number,
    onState?: (loss: number, state: Float32Array) => void,
  ) {
    const staging = this.#losses.take();
    encoder.copyBufferToBuffer(losses.buffer, losses.offset * 4, staging, 0, M * 4);
    const norm = this.optimizer?.clipStats;
    if (norm) encoder.copyBufferToBuffer(norm.buffer, norm.offset * 4, staging, M * 4, 4);
    const P = this.parameterCount, o = this.optimizer;
    const state = onState && o ? this.#states.take() : null;
    if (state) {
      [this.params.flat, o!.m, o!.v].forEach((a, i) => {
        encoder.copyBufferToBuffer(a.buffer, a.offset * 4, state, i * P * 4, P * 4);
      });
    }
    this.kernels.submit(encoder.finish());
    const rejected = this.device.popErrorScope();
    const mapped = staging.mapAsync(GPUMapMode.READ, 0, (M + 1) * 4);
    const stateMapped = state?.mapAsync(GPUMapMode.READ);
    return Promise.all([rejected, mapped, stateMapped]).then(([error]) => {
      if (error !== null) throw new Error(`WebGPU rejected the step: ${error.message}`);
      const values = new Float32Array(staging.getMappedRange(0, (M + 1) * 4));
      let lossSum = 0;
      for (let i = 0; i < M; i++) lossSum += values[i];
      const gradNorm = norm ? values[M] : NaN;
      if (state) onState!(lossSum / M, new Float32Array(state.getMappedRange()));
      return { lossSum, gradNorm };
    }).finally(() => {
      this.#losses.release(staging);
      if (state) this.#states.release(state);
    });
  }

  /** Writes the first n token ids of `ids` (each below the vocabulary size) to `to` as u32. */
  #writeTokens(to: GpuArray, ids: Uint16Array, n: number, what: string): void {
    if (ids.length < n) throw new RangeError(`${what} hold ${ids.length} tokens, not ${n}`);
    const V = this.config.vocabSize;
    for (let i = 0; i < n; i++) {
      if (ids[i] >= V) throw new RangeError(`${what}[${i}] = ${ids[i]} is not below ${V}`);
      this.#tokens[i] = ids[i];
    }
    this.device.queue.writeBuffer(to.buffer, to.offset * 4, this.#tokens, 0, n);
  }

  // -------------------------------------------------------------------------------------------
  // State in and out

  /**
   * The parameters and the optimizer's moments, read back after all work submitted so far (m and
   * v empty without an optimizer).
   */
  async download(): Promise<GpuState> {
    const P = this.parameterCount, o = this.optimizer;
    const [params, m = new Float32Array(0), v = new Float32Array(0)] = await this.#read(
      o ? [this.params.flat, o.m, o.v] : [this.params.flat],
      P,
    );
    return { params, m, v };
  }

  /** The gradients [P] of the last {@linkcode forwardBackward} or training step (clipped). */
  async downloadGradients(): Promise<Float32Array> {
    this.#needActs();
    return (await this.#read([this.grads!.flat], this.parameterCount))[0];
  }

  /**
   * Replaces the parameters [P] and, with an optimizer, its moments: m and v as given, or zeros
   * (a fresh state) without them. Set {@linkcode stepsTaken} too when resuming.
   */
  upload(params: Float32Array, m?: Float32Array, v?: Float32Array): void {
    const P = this.parameterCount, queue = this.device.queue, o = this.optimizer;
    for (const [name, a] of [["params", params], ["m", m], ["v", v]] as const) {
      if (a !== undefined && a.length !== P) {
        throw new RangeError(`${name} holds ${a.length} values; this model has ${P} parameters`);
      }
    }
    if (o === null && (m !== undefined || v !== undefined)) {
      throw new RangeError("this GPU model has no optimizer to take m and v");
    }
    const write = (to: GpuArray, from: Float32Array) => {
      // a view of shared memory (a kernel arena's) is copied first: WebGPU writes ArrayBuffers
      const data = from.buffer instanceof ArrayBuffer
        ? from as Float32Array<ArrayBuffer>
        : from.slice();
      queue.writeBuffer(to.buffer, to.offset * 4, data, 0, P);
    };
    write(this.params.flat, params);
    if (o === null) return;
    const encoder = this.device.createCommandEncoder();
    for (const [to, from] of [[o.m, m], [o.v, v]] as const) {
      if (from !== undefined) write(to, from);
      else encoder.clearBuffer(to.buffer, to.offset * 4, P * 4);
    }
    this.kernels.submit(encoder.finish());
  }

  /** Copies of `n` elements of each array, after all work submitted so far. */
  async #read(arrays: GpuArray[], n: number): Promise<Float32Array[]> {
    const staging = this.device.createBuffer({
      label: "download",
      size: Math.max(4, arrays.length * n * 4),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      const encoder = this.device.createCommandEncoder();
      arrays.forEach((a, i) => {
        encoder.copyBufferToBuffer(a.buffer, a.offset * 4, staging, i * n * 4, n * 4);
      });
      this.kernels.submit(encoder.finish());
      await staging.mapAsync(GPUMapMode.READ);
      const all = new Float32Array(staging.getMappedRange());
      return arrays.map((_, i) => all.slice(i * n, (i + 1) * n));
    } finally {
      staging.destroy();
    }
  }

  /** Frees every buffer of the model (the kernels stay); steps still in flight reject. */
  destroy(): void {
    for (const b of this.#buffers) b.destroy();
    this.#losses.destroy();
    this.#states.destroy();
  }

  #needActs(): GpuActs {
    if (this.#acts === null) throw new RangeError("this GPU model has no batch (batch 0)");
    return this.#acts;
  }

  #needOptimizer(): GpuOptimizer {
    if (this.optimizer === null) {
      throw new RangeError("this GPU model has no optimizer (give batch and optimizer)");
    }
    return this.optimizer;
  }
}
