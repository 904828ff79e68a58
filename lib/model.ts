/**
 * The GPT, top to bottom like nanoGPT's model.py: its parameters (one flat buffer, GPT-2 names),
 * its activations (allocated once), the forward and backward of a batch, and the KV cache that
 * generation feeds one character at a time through the same layers.
 *
 * @module
 */

import { Activations, batchPass } from "./activations.ts";
import { type Arena, defaultArena, type FloatArray, type Lease } from "./kernels/dispatch.ts";
import * as layers from "./layers.ts";
import type { BlockParams, Linear, Pass } from "./layers.ts";
import { validateConfig } from "./options.ts";
import { Rng } from "./rng.ts";
import { Tokenizer } from "./tokenizer.ts";

export { Activations, batchPass } from "./activations.ts";

/** The shape of a model (GPT-2's hyperparameters, at character level). */
export interface ModelConfig {
  /** Distinct characters the model reads and writes. */
  vocabSize: number;
  /** Context window: the most characters the model looks back over. */
  blockSize: number;
  /** Width of the residual stream (embedding size). */
  dModel: number;
  /** Transformer blocks. */
  nLayers: number;
  /** Attention heads per block (they split dModel). */
  nHeads: number;
}

// ---------------------------------------------------------------------------------------------
// Parameters

/** The parameter tensors in storage order: GPT-2 names, weights stored [in, out]. */
export function parameterSpecs(c: ModelConfig): { name: string; shape: number[] }[] {
  const C = c.dModel;
  const specs = [{ name: "wte.weight", shape: [c.vocabSize, C] }, {
    name: "wpe.weight",
    shape: [c.blockSize, C],
  }];
  for (let l = 0; l < c.nLayers; l++) {
    const pair = (name: string, weight: number[], bias: number[]) =>
      specs.push({ name: `h.${l}.${name}.weight`, shape: weight }, {
        name: `h.${l}.${name}.bias`,
        shape: bias,
      });
    pair("ln_1", [C], [C]);
    pair("attn.c_attn", [C, 3 * C], [3 * C]);
    pair("attn.c_proj", [C, C], [C]);
    pair("ln_2", [C], [C]);
    pair("mlp.c_fc", [C, 4 * C], [4 * C]);
    pair("mlp.c_proj", [4 * C, C], [C]);
  }
  specs.push({ name: "ln_f.weight", shape: [C] }, { name: "ln_f.bias", shape: [C] });
  return specs;
}

/** Number of parameters of a configuration. */
export function parameterCount(c: ModelConfig): number {
  return parameterSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/** Named views of a flat parameter (or gradient) buffer. */
export interface Params {
  wte: FloatArray; // [V, C]
  wpe: FloatArray; // [T, C]
  blocks: BlockParams[];
  lnf: Linear; // ln_f: [C], [C]
  /** Every tensor by GPT-2 name, in storage order. */
  byName: Map<string, FloatArray>;
}

/** Slices a flat buffer into the tensors of {@link parameterSpecs}. */
export function paramViews(c: ModelConfig, flat: FloatArray): Params {
  const byName = new Map<string, FloatArray>();
  let offset = 0;
  for (const { name, shape } of parameterSpecs(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    byName.set(name, flat.subarray(offset, offset += n));
  }
  const pair = (name: string) => ({
    weight: byName.get(`${name}.weight`)!,
    bias: byName.get(`${name}.bias`)!,
  });
  const blocks = Array.from({ length: c.nLayers }, (_, l) => ({
    ln1: pair(`h.${l}.ln_1`),
    qkv: pair(`h.${l}.attn.c_attn`),
    attnProj: pair(`h.${l}.attn.c_proj`),
    ln2: pair(`h.${l}.ln_2`),
    fc: pair(`h.${l}.mlp.c_fc`),
    mlpProj: pair(`h.${l}.mlp.c_proj`),
  }));
  return {
    wte: byName.get("wte.weight")!,
    wpe: byName.get("wpe.weight")!,
    blocks,
    lnf: pair("ln_f"),
    byName,
  };
}

/**
 * GPT-2's initialization: normal(0, 0.02) weights, residual projections scaled by
 * 1/sqrt(2 n_layers), zero biases, LayerNorm weights 1.
 */
export function initParams(c: ModelConfig, params: Params, rng: Rng): void {
  const residualStd = 0.02 / Math.sqrt(2 * c.nLayers);
  for (const [name, t] of params.byName) {
    if (name.includes("ln_") && name.endsWith(".weight")) t.fill(1);
    else if (name.endsWith(".bias")) t.fill(0);
    else {
      const std = name.endsWith("c_proj.weight") ? residualStd : 0.02;
      for (let i = 0; i < t.length; i++) t[i] = rng.normal(0, std);
    }
  }
}

/** Options of {@link GPT}. */
export interface GPTOptions {
  /** The characters of the vocabulary (default: placeholders, for models that need no text). */
  tokenizer?: Tokenizer;
  /** Training facts, as a weights file stores them (steps, val_loss, ...). Default none. */
  facts?: Record<string, string>;
  /** Storage: "float32" (default) in the kernels' memory, or "float64" for gradient checks. */
  dtype?: "float32" | "float64";
  /** Where float32 buffers are allocated (default: this thread's kernel arena). */
  arena?: Arena;
  /** Allocate gradients now (default true; a model loaded for inference gets them on demand). */
  grads?: boolean;
}

/**
 * What the library shows of a model: its shape, vocabulary, training facts and size. The one
 * implementation is {@link GPT}.
 *
 * @example
 * ```ts
 * import { createModel, type Model } from "@baregpt/baregpt";
 * const model: Model = createModel("hello world", { dModel: 32, nHeads: 2, nLayers: 1 });
 * console.log(model.config.vocabSize, model.parameterCount, model.tokenizer.vocab.join(""));
 * ```
 */
export interface Model {
  /** The model's shape. */
  readonly config: Readonly<ModelConfig>;
  /** Maps the model's characters to token ids and back. */
  readonly tokenizer: Tokenizer;
  /** Training facts from its weights file (steps, val_loss, corpus_sha256, command, ...). */
  readonly facts: Readonly<Record<string, string>>;
  /** Number of parameters. */
  readonly parameterCount: number;
  /** Gives the model's memory back now (also done when it is garbage collected); idempotent. */
  dispose(): void;
  /** Same as `dispose`, for `using`. */
  [Symbol.dispose](): void;
}

/** A GPT: its configuration, vocabulary, parameters and (once it trains) their gradients. */
export class GPT implements Model {
  readonly config: Readonly<ModelConfig>;
  readonly tokenizer: Tokenizer;
  readonly facts: Readonly<Record<string, string>>;
  readonly dtype: "float32" | "float64";
  /** Allocates a zeroed array: float32 in the kernels' arena, or float64 on the heap. */
  readonly alloc: (n: number) => FloatArray;
  readonly arena: Arena | undefined;
  /** The model's share of the arena (parameters, gradients, caches); undefined for float64. */
  readonly lease: Lease | undefined;
  /** True once {@link GPT.dispose} gave its memory back. */
  disposed = false;
  /** Every parameter, one flat buffer in {@link parameterSpecs} order, and its named views. */
  readonly flat: FloatArray;
  readonly params: Params;
  /** Gradients, the same layout (empty until {@link GPT.withGrads} when made without). */
  gradFlat: FloatArray;
  grads: Params;

  constructor(config: ModelConfig, o: GPTOptions = {}) {
    validateConfig(config);
    this.config = Object.freeze({ ...config });
    this.tokenizer = o.tokenizer ?? Tokenizer.placeholder(config.vocabSize);
    if (this.tokenizer.size !== config.vocabSize) {
      throw new RangeError(
        `the tokenizer has ${this.tokenizer.size} characters, the config ${config.vocabSize}`,
      );
    }
    this.facts = Object.freeze({ ...o.facts });
    this.dtype = o.dtype ?? "float32";
    const arena = this.dtype === "float32" ? (o.arena ?? defaultArena()) : undefined;
    const lease = this.lease = arena?.lease(this);
    this.arena = arena;
    this.alloc = lease === undefined ? (n) => new Float64Array(n) : (n) => lease.f32(n);
    try {
      this.flat = this.alloc(parameterCount(config));
      this.params = paramViews(config, this.flat);
      this.gradFlat = this.alloc(0);
      this.grads = this.params;
      if (o.grads !== false) this.withGrads();
    } catch (e) {
      this.dispose(); // out of memory: give back what was taken
      throw e;
    }
  }

  /** Number of parameters. */
  get parameterCount(): number {
    return this.flat.length;
  }

  /** Initializes the parameters from a seed (GPT-2's scheme). */
  init(seed: number | Rng): this {
    initParams(this.config, this.params, typeof seed === "number" ? new Rng(seed) : seed);
    return this;
  }

  /** Allocates the gradient buffers if there are none yet. */
  withGrads(): this {
    if (this.gradFlat.length === 0) {
      this.gradFlat = this.alloc(this.flat.length);
      this.grads = paramViews(this.config, this.gradFlat);
    }
    return this;
  }

  /**
   * Activations for batches of up to B sequences (with dropout masks if asked), from the model's
   * lease or another one (a trainer's, given back when it closes).
   */
  activations(
    B: number,
    o: { dropout?: boolean; backward?: boolean; lease?: Lease } = {},
  ): Activations {
    const lease = o.lease ?? this.lease;
    const f32 = lease ? (n: number) => lease.f32(n) : this.alloc;
    const u16 = lease ? (n: number) => lease.u16(n) : (n: number) => new Uint16Array(n);
    return new Activations(this.config, B, f32, u16, o.dropout ?? false, o.backward ?? true);
  }

  /** Gives the model's memory back to the arena; the model cannot be used after. */
  dispose(): void {
    this.disposed = true;
    this.lease?.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Zeroes the gradients. */
  zeroGrad(): void {
    this.gradFlat.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

/** The embedding and the blocks over acts.inputs: the last block's output [M, C], or of its last
 * `out` rows only (the rows before them then only fill the last block's q, k, v: a cache's fill). */
function trunk(model: Pick<GPT, "params">, acts: Activations, s: Pass, out = s.rows): FloatArray {
  const p = model.params, L = p.blocks.length, skip = s.rows - out;
  layers.embeddingForward(acts.encoded, acts.inputs, p.wte, p.wpe, s);
  if (s.dropout) layers.dropoutForward(acts.encoded, acts.encMask, s.dropout, 2 * L, s);
  let x = acts.encoded;
  for (let l = 0; l < L; l++) {
    const a = acts.blocks[l], last = l === L - 1 && skip > 0;
    if (last) layers.blockQkv(a, p.blocks[l], x, { ...s, rows: skip });
    const q = last ? { ...s, start: s.start + skip, rows: out } : s;
    layers.blockForward(a, p.blocks[l], last ? x.subarray(skip * s.C) : x, q);
    x = a.residualOut;
  }
  return x;
}

/**
 * Forward of B sequences (acts.inputs [B, T]) into acts.head.logits; with `withLoss`, also the
 * cross-entropy against acts.targets, returning the sum of the B·T losses (0 without).
 */
export function forward(model: Pick<GPT, "params">, acts: Activations, s: Pass, withLoss = true) {
  const M = s.B * s.rows;
  layers.headForward(acts.head, trunk(model, acts, s), model.params, M, s);
  return withLoss ? layers.lossForward(acts.head, M, s.V) : 0;
}

/** Backward after {@link forward}: the gradients accumulate lossScale · d(sum of losses). */
export function backward(
  model: Pick<GPT, "params" | "grads">,
  acts: Activations,
  s: Pass,
  lossScale: number,
) {
  const p = model.params, g = model.grads, L = p.blocks.length;
  const d = acts.dResidual, last = acts.blocks[L - 1].residualOut;
  layers.headBackward(d, g, acts.head, last, p, s, lossScale);
  for (let l = L - 1; l >= 0; l--) {
    const x = l === 0 ? acts.encoded : acts.blocks[l - 1].residualOut;
    layers.blockBackward(g.blocks[l], d, acts.scratch, acts.blocks[l], p.blocks[l], x, s);
  }
  if (s.dropout) layers.dropoutBackward(d, acts.encMask, s);
  layers.embeddingBackward(g.wte, g.wpe, d, acts.inputs, s);
}

// ---------------------------------------------------------------------------------------------
// The KV cache: generation feeds new tokens through the same layers; each block keeps the q, k
// and v of every position so far, so a new token costs one row and O(T) attention.

/** The cache of one sequence: `feed` appends tokens and returns the logits of the last. */
export class KVCache {
  readonly model: GPT;
  /** Tokens in the cache. */
  length = 0;
  /** One sequence's activations: each block's qkv [T, 3C] holds the cached keys and values. */
  readonly acts: Activations;
  /**
   * Attention probabilities per layer, [H, T, T]: row t holds what position t attended to over
   * positions 0..t (zero beyond), as of the feed that computed row t (a feed of several tokens
   * computes the last layer's row of its last token only, unless `allLogits`).
   */
  readonly attention: FloatArray[];
  /** The pass of each feed: rows start .. start + rows - 1 of one sequence, over the cache. */
  readonly #pass: Pass;

  constructor(model: GPT) {
    this.model = model;
    this.acts = model.activations(1, { backward: false });
    this.attention = this.acts.blocks.map((b) => b.attnProbs);
    this.#pass = { ...batchPass(model.config, 1), cached: true };
  }

  /** Empties the cache. */
  reset(): void {
    this.length = 0;
  }

  /**
   * Feeds tokens at positions length .. length + n - 1 and returns their logits [n, V] (only the
   * last row, [1, V], unless `allLogits`).
   */
  feed(tokens: ArrayLike<number>, allLogits = false): FloatArray {
    const c = this.model.config, n = tokens.length, C = c.dModel;
    if (n === 0) throw new RangeError("feed needs at least one token");
    if (this.length + n > c.blockSize) {
      throw new RangeError(`the cache holds ${c.blockSize} tokens; reset it first`);
    }
    for (let i = 0; i < n; i++) this.acts.inputs[i] = tokens[i];
    const s = this.#pass;
    s.start = this.length;
    s.rows = n;
    const rows = allLogits ? n : 1;
    const last = trunk(this.model, this.acts, s, rows).subarray(0, rows * C);
    this.length += n;
    layers.headForward(this.acts.head, last, this.model.params, rows, s);
    return this.acts.head.logits.subarray(0, rows * c.vocabSize);
  }
}
