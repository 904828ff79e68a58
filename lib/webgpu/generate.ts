/**
 * Generation on the GPU: a KV cache whose keys and values stay in GPU buffers (each block's qkv
 * [T, 3C], as lib/model.ts's KVCache keeps them), fed a few tokens at a time through the same
 * recorded layers as training, and the loop of lib/sample.ts's decodeSteps over it: the same
 * distribution and draw (temperature 0 is greedy), and the same slide when the window reaches
 * blockSize (keep the last blockSize/2 tokens, rebuild the cache in one batched feed).
 *
 * @example
 * ```ts
 * import { GPT } from "../model.ts";
 * import { Rng } from "../rng.ts";
 * import { requestGpu } from "./device.ts";
 * import { decodeGpu, GpuKVCache } from "./generate.ts";
 * import { GpuKernels } from "./kernels.ts";
 * import { GpuModel } from "./model.ts";
 *
 * const config = { vocabSize: 5, blockSize: 8, dModel: 16, nLayers: 1, nHeads: 2 };
 * const kernels = await GpuKernels.create((await requestGpu()).device);
 * const model = new GpuModel(kernels, config, new GPT(config).init(1).flat as Float32Array);
 * const cache = new GpuKVCache(model);
 * const ids = [];
 * const greedy = { tokens: 20, temperature: 0, rng: new Rng(1) };
 * for await (const { id } of decodeGpu(cache, [0], greedy)) ids.push(id);
 * console.log(ids.join(" "));
 * ```
 *
 * @module
 */

import type { Rng } from "../rng.ts";
import { drawIndex, nextDistribution, type SamplingOptions } from "../sample.ts";
import { type GpuActs, gpuPass, layoutActs, recordHead, recordTrunk } from "./layers.ts";
import { Layout, shifted } from "./memory.ts";
import type { GpuModel } from "./model.ts";

/**
 * One sequence's cache on the GPU: `feed` appends tokens and returns the logits of the last, and
 * on request the attention of the last query in one layer (read back with the logits).
 */
export class GpuKVCache {
  readonly model: GpuModel;
  /** Tokens in the cache. */
  length = 0;
  /** One sequence's activations; each block's qkv [T, 3C] holds the cached keys and values. */
  readonly #acts: GpuActs;
  readonly #buffers: GPUBuffer[];
  /** The logits read back [T, V] (a feed returns a view, reused by the next), and the ids. */
  readonly #staging: GPUBuffer;
  readonly #logits: Float32Array;
  /** The attention rows read back by the last feed that asked for them, [H, length]. */
  readonly #attention: Float32Array;
  #attentionLength = 0;
  readonly #ids: Uint32Array<ArrayBuffer>;
  #feeding = false;

  /** Allocates the cache (a one-line InputError where the device cannot hold it). */
  constructor(model: GpuModel) {
    const c = model.config, T = c.blockSize, V = c.vocabSize, device = model.device;
    this.model = model;
    const layout = new Layout();
    this.#acts = layoutActs(layout, c, 1, "cache", "KV cache ");
    layout.check(device.limits, "the KV cache of this model");
    this.#buffers = layout.allocate(device);
    this.#staging = device.createBuffer({
      label: "logits readback",
      size: (T * V + c.nHeads * T) * 4, // the logits, then a query's attention rows
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#logits = new Float32Array(T * V);
    this.#attention = new Float32Array(c.nHeads * T);
    this.#ids = new Uint32Array(T);
  }

  /** Empties the cache. */
  reset(): void {
    this.length = 0;
  }

  /**
   * The attention of the last query of the last feed given a `layer`, in that layer: [H,
   * length], row h over the cache's positions 0..length-1 (a view that the next such feed
   * overwrites).
   */
  get attention(): Float32Array {
    return this.#attention.subarray(0, this.model.config.nHeads * this.#attentionLength);
  }

  /**
   * Feeds tokens at positions length .. length + n - 1 and settles with their logits [n, V]
   * (only the last row, [1, V], unless `allLogits`): a view that the next feed overwrites. With
   * a `layer`, the attention of the last query in that layer is read back too
   * ({@linkcode GpuKVCache.attention}).
   */
  async feed(tokens: ArrayLike<number>, allLogits = false, layer?: number): Promise<Float32Array> {
    const c = this.model.config, n = tokens.length, C = c.dModel, V = c.vocabSize;
    const T = c.blockSize, H = c.nHeads;
    if (n === 0) throw new RangeError("feed needs at least one token");
    if (this.length + n > c.blockSize) {
      throw new RangeError(`the cache holds ${c.blockSize} tokens; reset it first`);
    }
    if (this.#feeding) throw new RangeError("feed again once the last feed's logits arrived");
    if (layer !== undefined && !(Number.isInteger(layer) && layer >= 0 && layer < c.nLayers)) {
      throw new RangeError(`layer ${layer} is not one of the model's ${c.nLayers}`);
    }
    for (let i = 0; i < n; i++) {
      if (!(tokens[i] >= 0 && tokens[i] < V)) {
        throw new RangeError(`token ${tokens[i]} is not below ${V}`);
      }
      this.#ids[i] = tokens[i];
    }
    const { device, kernels: k, params } = this.model, a = this.#acts;
    device.queue.writeBuffer(a.inputs.buffer, a.inputs.offset * 4, this.#ids, 0, n);
    device.pushErrorScope("validation");
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    const s = { ...gpuPass(c, 1), start: this.length, rows: n };
    const last = recordTrunk(k, pass, params, a, s);
    const rows = allLogits ? n : 1;
    recordHead(k, pass, params, a, shifted(last, (n - rows) * C), rows, s);
    pass.end();
    const bytes = rows * V * 4;
    encoder.copyBufferToBuffer(a.logits.buffer, a.logits.offset * 4, this.#staging, 0, bytes);
    // row (h, q) of the layer's attnProbs [1, H, T, T] starts at (h·T + q)·T; its first L
    // entries are the query's attention over the cache (the rest are 0)
    const L = this.length + n, q = L - 1, probs = layer === undefined ? null : a.blocks[layer];
    for (let h = 0; probs !== null && h < H; h++) {
      const from = (probs.attnProbs.offset + (h * T + q) * T) * 4;
      encoder.copyBufferToBuffer(
        probs.attnProbs.buffer,
        from,
        this.#staging,
        bytes + h * L * 4,
        L * 4,
      );
    }
    const read = bytes + (probs === null ? 0 : H * L * 4);
    k.submit(encoder.finish());
    this.length += n;
    this.#feeding = true;
    try {
      const [error] = await Promise.all([
        device.popErrorScope(),
        this.#staging.mapAsync(GPUMapMode.READ, 0, read),
      ]);
      if (error !== null) throw new Error(`WebGPU rejected the feed: ${error.message}`);
      const mapped = this.#staging.getMappedRange(0, read);
      this.#logits.set(new Float32Array(mapped, 0, rows * V));
      if (probs !== null) {
        this.#attention.set(new Float32Array(mapped, bytes, H * L));
        this.#attentionLength = L;
      }
    } finally {
      if (this.#staging.mapState === "mapped") this.#staging.unmap();
      this.#feeding = false;
    }
    return this.#logits.subarray(0, rows * V);
  }

  /** Frees the cache's buffers. */
  destroy(): void {
    for (const b of this.#buffers) b.destroy();
    this.#staging.destroy();
  }
}

/** One step of {@linkcode decodeGpu}: lib/sample.ts's DecodeStep, with the GPU's attention. */
export interface GpuDecodeStep {
  /** The token chosen. */
  id: number;
  /** The distribution it was drawn from (a buffer the next step reuses). */
  probs: Float64Array;
  /** The step's logits [V] (a view of the cache's buffer). */
  logits: Float32Array;
  /**
   * With `layer`: that layer's attention of the query that produced the logits, [H,
   * windowLength] (a view of the cache's buffer); empty without.
   */
  attention: Float32Array;
  /** Index, in the whole text, of the cache's position 0. */
  windowStart: number;
}

/**
 * lib/sample.ts's decodeSteps over a GPU cache: feeds `text` (the ids so far, not empty: see
 * promptOrStart; its last blockSize), then for each of `o.tokens` steps draws a token from the
 * logits (shown first to `onLogits`), yields it with what it was drawn from (and, with `layer`,
 * that layer's attention of the query) and feeds it. When the window reaches blockSize tokens it
 * keeps the last blockSize/2, adds the new one, and rebuilds the cache in one feed.
 */
export async function* decodeGpu(
  cache: GpuKVCache,
  text: ArrayLike<number>,
  o: SamplingOptions & {
    tokens: number;
    rng: Rng;
    /** Sees each step's logits [V] before the draw (to refuse NaN, say). */
    onLogits?: (logits: Float32Array) => void;
    /** The layer whose attention each step reads back (default: none). */
    layer?: number;
  },
): AsyncGenerator<GpuDecodeStep> {
  const T = cache.model.config.blockSize, layer = o.layer;
  if (text.length === 0) throw new RangeError("decodeGpu needs at least one token to start from");
  let windowStart = Math.max(0, text.length - T);
  let window = Array.from(text).slice(windowStart);
  cache.reset();
  let logits = await cache.feed(window, false, layer);
  const probs = new Float64Array(cache.model.config.vocabSize);
  const none = new Float32Array(0);
  for (let i = 0; i < o.tokens; i++) {
    o.onLogits?.(logits);
    nextDistribution(logits, o, probs);
    const id = drawIndex(probs, o.rng.random());
    yield {
      id,
      probs,
      logits,
      attention: layer === undefined ? none : cache.attention,
      windowStart,
    };
    if (i === o.tokens - 1) break;
    if (window.length < T) {
      window.push(id);
      logits = await cache.feed([id], false, layer);
    } else {
      const drop = T - Math.floor(T / 2);
      window = [...window.slice(drop), id];
      windowStart += drop;
      cache.reset();
      logits = await cache.feed(window, false, layer);
    }
  }
}
