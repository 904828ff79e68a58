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
 * for await (const id of decodeGpu(cache, [0], { tokens: 20, temperature: 0, rng: new Rng(1) })) {
 *   ids.push(id);
 * }
 * console.log(ids.join(" "));
 * ```
 *
 * @module
 */

import type { Rng } from "../rng.ts";
import { drawIndex, nextDistribution, type SamplingOptions } from "../sample.ts";
import { type GpuActs, layoutActs, recordHead, recordTrunk } from "./layers.ts";
import { Layout, shifted } from "./memory.ts";
import type { GpuModel } from "./model.ts";

/** One sequence's cache on the GPU: `feed` appends tokens and returns the logits of the last. */
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
      size: T * V * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.#logits = new Float32Array(T * V);
    this.#ids = new Uint32Array(T);
  }

  /** Empties the cache. */
  reset(): void {
    this.length = 0;
  }

  /**
   * Feeds tokens at positions length .. length + n - 1 and settles with their logits [n, V]
   * (only the last row, [1, V], unless `allLogits`): a view that the next feed overwrites.
   */
  async feed(tokens: ArrayLike<number>, allLogits = false): Promise<Float32Array> {
    const c = this.model.config, n = tokens.length, C = c.dModel, V = c.vocabSize;
    if (n === 0) throw new RangeError("feed needs at least one token");
    if (this.length + n > c.blockSize) {
      throw new RangeError(`the cache holds ${c.blockSize} tokens; reset it first`);
    }
    if (this.#feeding) throw new RangeError("feed again once the last feed's logits arrived");
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
    const s = {
      B: 1,
      T: c.blockSize,
      C,
      H: c.nHeads,
      V,
      start: this.length,
      rows: n,
    };
    const last = recordTrunk(k, pass, params, a, s);
    const rows = allLogits ? n : 1;
    recordHead(k, pass, params, a, shifted(last, (n - rows) * C), rows, s);
    pass.end();
    const bytes = rows * V * 4;
    encoder.copyBufferToBuffer(a.logits.buffer, a.logits.offset * 4, this.#staging, 0, bytes);
    k.submit(encoder.finish());
    this.length += n;
    this.#feeding = true;
    try {
      const [error] = await Promise.all([
        device.popErrorScope(),
        this.#staging.mapAsync(GPUMapMode.READ, 0, bytes),
      ]);
      if (error !== null) throw new Error(`WebGPU rejected the feed: ${error.message}`);
      this.#logits.set(new Float32Array(this.#staging.getMappedRange(0, bytes)));
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

/**
 * lib/sample.ts's decodeSteps over a GPU cache: feeds `text` (the ids so far, not empty: see
 * promptOrStart; its last blockSize), then for each of `o.tokens` steps draws a token from the
 * logits (shown first to `onLogits`), yields it and feeds it. When the window reaches blockSize
 * tokens it keeps the last blockSize/2, adds the new one, and rebuilds the cache in one feed.
 */
export async function* decodeGpu(
  cache: GpuKVCache,
  text: ArrayLike<number>,
  o: SamplingOptions & {
    tokens: number;
    rng: Rng;
    /** Sees each step's logits [V] before the draw (to refuse NaN, say). */
    onLogits?: (logits: Float32Array) => void;
  },
): AsyncGenerator<number> {
  const T = cache.model.config.blockSize;
  if (text.length === 0) throw new RangeError("decodeGpu needs at least one token to start from");
  let window = Array.from(text).slice(-T);
  cache.reset();
  let logits = await cache.feed(window);
  const probs = new Float64Array(cache.model.config.vocabSize);
  for (let i = 0; i < o.tokens; i++) {
    o.onLogits?.(logits);
    nextDistribution(logits, o, probs);
    const id = drawIndex(probs, o.rng.random());
    yield id;
    if (i === o.tokens - 1) break;
    if (window.length < T) {
      window.push(id);
      logits = await cache.feed([id]);
    } else {
      window = [...window.slice(T - Math.floor(T / 2)), id];
      cache.reset();
      logits = await cache.feed(window);
    }
  }
}
