/**
 * The GPT: its configuration, parameters (one flat buffer, GPT-2 names), the training forward and
 * backward over a batch, and cached inference for generation.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import {
  type BlockActivations,
  blockBackward,
  blockForward,
  type BlockParams,
  type BlockScratch,
  type Dropout,
  dropoutMask,
  embeddingBackward,
  embeddingForward,
  type HeadActivations,
  headBackward,
  headForward,
  lossForward,
} from "./layers.ts";
import { Rng } from "./rng.ts";
import {
  add,
  type Arena,
  attentionBackwardScratchSize,
  attentionRows,
  defaultArena,
  type FloatArray,
  geluForward,
  layernormForward,
  matmul,
  matmulNT,
  mulInPlace,
} from "./tensor.ts";

/** The shape of a model. */
export interface GPTConfig {
  vocabSize: number;
  blockSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
}

/** BareGPT's default size (the vocabulary comes from the corpus). */
export const DEFAULT_CONFIG: Omit<GPTConfig, "vocabSize"> = {
  blockSize: 128,
  dModel: 256,
  nLayers: 2,
  nHeads: 4,
};

/** Throws InputError when a configuration cannot make a model. */
export function validateConfig(c: GPTConfig): void {
  const ints: [keyof GPTConfig, number, number][] = [
    ["vocabSize", 1, 65536],
    ["blockSize", 1, 65536],
    ["dModel", 1, 65536],
    ["nLayers", 1, 1024],
    ["nHeads", 1, 65536],
  ];
  for (const [key, min, max] of ints) {
    const v = c[key];
    if (!Number.isInteger(v) || v < min || v > max) {
      throw new InputError(
        `model config ${key} is ${v}; it must be an integer from ${min} to ${max}`,
      );
    }
  }
  if (c.dModel % c.nHeads !== 0) {
    throw new InputError(
      `d_model ${c.dModel} is not divisible by ${c.nHeads} heads; choose a head count that divides it`,
    );
  }
}

/** A parameter tensor's GPT-2 name and shape. */
export interface ParamSpec {
  name: string;
  shape: number[];
}

/** The parameter tensors of a model, in storage order, with GPT-2 names and [in, out] weights. */
export function parameterSpecs(c: GPTConfig): ParamSpec[] {
  const C = c.dModel;
  const specs: ParamSpec[] = [
    { name: "wte.weight", shape: [c.vocabSize, C] },
    { name: "wpe.weight", shape: [c.blockSize, C] },
  ];
  for (let l = 0; l < c.nLayers; l++) {
    const h = `h.${l}.`;
    specs.push(
      { name: h + "ln_1.weight", shape: [C] },
      { name: h + "ln_1.bias", shape: [C] },
      { name: h + "attn.c_attn.weight", shape: [C, 3 * C] },
      { name: h + "attn.c_attn.bias", shape: [3 * C] },
      { name: h + "attn.c_proj.weight", shape: [C, C] },
      { name: h + "attn.c_proj.bias", shape: [C] },
      { name: h + "ln_2.weight", shape: [C] },
      { name: h + "ln_2.bias", shape: [C] },
      { name: h + "mlp.c_fc.weight", shape: [C, 4 * C] },
      { name: h + "mlp.c_fc.bias", shape: [4 * C] },
      { name: h + "mlp.c_proj.weight", shape: [4 * C, C] },
      { name: h + "mlp.c_proj.bias", shape: [C] },
    );
  }
  specs.push({ name: "ln_f.weight", shape: [C] }, { name: "ln_f.bias", shape: [C] });
  return specs;
}

/** Number of parameters of a configuration. */
export function parameterCount(c: GPTConfig): number {
  return parameterSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/** Named views of a flat parameter (or gradient) buffer. */
export interface Params {
  wte: FloatArray; // [V, C]
  wpe: FloatArray; // [T, C]
  blocks: BlockParams[];
  lnfWeight: FloatArray; // [C]
  lnfBias: FloatArray; // [C]
  /** Every tensor by GPT-2 name, in storage order. */
  byName: Map<string, FloatArray>;
}

/** Slices a flat buffer into the tensors of {@link parameterSpecs}. */
export function paramViews(c: GPTConfig, flat: FloatArray): Params {
  const byName = new Map<string, FloatArray>();
  let offset = 0;
  for (const { name, shape } of parameterSpecs(c)) {
    const n = shape.reduce((a, b) => a * b, 1);
    byName.set(name, flat.subarray(offset, offset + n));
    offset += n;
  }
  const t = (name: string) => byName.get(name)!;
  const blocks: BlockParams[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const h = `h.${l}.`;
    blocks.push({
      ln1Weight: t(h + "ln_1.weight"),
      ln1Bias: t(h + "ln_1.bias"),
      qkvWeight: t(h + "attn.c_attn.weight"),
      qkvBias: t(h + "attn.c_attn.bias"),
      attnProjWeight: t(h + "attn.c_proj.weight"),
      attnProjBias: t(h + "attn.c_proj.bias"),
      ln2Weight: t(h + "ln_2.weight"),
      ln2Bias: t(h + "ln_2.bias"),
      fcWeight: t(h + "mlp.c_fc.weight"),
      fcBias: t(h + "mlp.c_fc.bias"),
      mlpProjWeight: t(h + "mlp.c_proj.weight"),
      mlpProjBias: t(h + "mlp.c_proj.bias"),
    });
  }
  return {
    wte: t("wte.weight"),
    wpe: t("wpe.weight"),
    blocks,
    lnfWeight: t("ln_f.weight"),
    lnfBias: t("ln_f.bias"),
    byName,
  };
}

/** Allocates a zeroed float array of n elements (float32 in the kernels' memory, or float64). */
export type Allocator = (n: number) => FloatArray;

/** The allocator of a storage type: float32 in the kernels' arena, or float64 on the heap. */
export function allocatorFor(dtype: "float32" | "float64", arena?: Arena): Allocator {
  if (dtype === "float64") return (n) => new Float64Array(n);
  const a = arena ?? defaultArena();
  return (n) => a.f32(n);
}

/**
 * Fills parameters with GPT-2's initialization: normal(0, 0.02) weights, residual projections
 * scaled by 1/sqrt(2 n_layers), zero biases, LayerNorm weights 1.
 */
export function initParams(c: GPTConfig, params: Params, rng: Rng): void {
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

/**
 * Activations and scratch of a training forward/backward for up to B sequences of T tokens. With
 * `dropout`, also the dropout masks (allocated only then).
 */
export class Activations {
  readonly B: number;
  readonly T: number;
  readonly encoded: FloatArray; // [B, T, C]
  readonly encDropMask: FloatArray; // [B, T, C]  dropout of the embedding (empty without)
  /** Whether the last forward used dropout (so the backward goes through its masks). */
  dropped = false;
  readonly blocks: BlockActivations[];
  readonly head: HeadActivations;
  readonly scratch: BlockScratch;
  readonly dResidual: FloatArray; // [B, T, C]
  readonly dLogits: FloatArray; // [B, T, V]
  readonly inputs: Uint16Array; // [B, T]
  readonly targets: Uint16Array; // [B, T]

  constructor(
    c: GPTConfig,
    B: number,
    alloc: Allocator,
    tokens?: (n: number) => Uint16Array,
    dropout = false,
  ) {
    const T = c.blockSize, C = c.dModel, V = c.vocabSize, H = c.nHeads;
    const BT = B * T;
    const masks = dropout ? BT * C : 0;
    this.B = B;
    this.T = T;
    this.encoded = alloc(BT * C);
    this.encDropMask = alloc(masks);
    this.blocks = [];
    for (let l = 0; l < c.nLayers; l++) {
      this.blocks.push({
        ln1: alloc(BT * C),
        ln1Mean: alloc(BT),
        ln1Rstd: alloc(BT),
        qkv: alloc(BT * 3 * C),
        attnProbs: alloc(B * H * T * T),
        attnOut: alloc(BT * C),
        residualAttn: alloc(BT * C),
        ln2: alloc(BT * C),
        ln2Mean: alloc(BT),
        ln2Rstd: alloc(BT),
        fc: alloc(BT * 4 * C),
        fcGelu: alloc(BT * 4 * C),
        residualOut: alloc(BT * C),
        attnDropMask: alloc(masks),
        mlpDropMask: alloc(masks),
      });
    }
    this.head = {
      lnf: alloc(BT * C),
      lnfMean: alloc(BT),
      lnfRstd: alloc(BT),
      logits: alloc(BT * V),
      probs: alloc(BT * V),
      losses: alloc(BT),
    };
    this.scratch = {
      dLn: alloc(BT * C),
      dQkv: alloc(BT * 3 * C),
      dAttnOut: alloc(BT * C),
      dFc: alloc(BT * 4 * C),
      dFcGelu: alloc(BT * 4 * C),
      attnScratch: alloc(attentionBackwardScratchSize(T, C, H)),
      dDropped: alloc(masks),
    };
    this.dResidual = alloc(BT * C);
    this.dLogits = alloc(BT * V);
    const u16 = tokens ?? ((n: number) => new Uint16Array(n));
    this.inputs = u16(BT);
    this.targets = u16(BT);
  }
}

/**
 * Forward pass of B sequences of T tokens (the first B*T entries of acts.inputs). Computes logits
 * into acts.head.logits; with targets, also the cross-entropy, returning the sum of the B*T losses
 * (0 without targets). `drop` applies dropout (training only; acts must hold masks): to the
 * embedding and to the output of every attention and MLP before it joins the residual stream.
 */
export function forward(
  c: GPTConfig,
  p: Params,
  acts: Activations,
  B: number,
  T: number,
  withLoss = true,
  drop: Dropout | null = null,
): number {
  const C = c.dModel, V = c.vocabSize, H = c.nHeads;
  const BT = B * T;
  if (drop !== null && acts.encDropMask.length < BT * C) {
    throw new Error("these activations hold no dropout masks; allocate them with dropout");
  }
  embeddingForward(acts.encoded, acts.inputs, p.wte, p.wpe, B, T, C);
  if (drop !== null) {
    dropoutMask(acts.encDropMask, drop, 2 * c.nLayers, B, T * C);
    mulInPlace(acts.encoded, acts.encDropMask, BT * C);
  }
  acts.dropped = drop !== null;
  let x = acts.encoded;
  for (let l = 0; l < c.nLayers; l++) {
    blockForward(acts.blocks[l], p.blocks[l], x, B, T, C, H, drop, l);
    x = acts.blocks[l].residualOut;
  }
  headForward(acts.head, x, p.lnfWeight, p.lnfBias, p.wte, BT, C, V);
  return withLoss ? lossForward(acts.head, acts.targets, BT, V) : 0;
}

/**
 * Backward pass after {@link forward} with targets: accumulates into the gradients g the
 * gradient of lossScale * (sum of the B*T losses).
 */
export function backward(
  c: GPTConfig,
  p: Params,
  g: Params,
  acts: Activations,
  B: number,
  T: number,
  lossScale: number,
): void {
  const C = c.dModel, V = c.vocabSize, H = c.nHeads;
  const BT = B * T;
  const L = c.nLayers;
  const last = acts.blocks[L - 1].residualOut;
  headBackward(
    acts.dResidual,
    g.wte,
    g.lnfWeight,
    g.lnfBias,
    acts.dLogits,
    acts.scratch.dLn,
    acts.head,
    last,
    acts.targets,
    p.lnfWeight,
    p.wte,
    BT,
    C,
    V,
    lossScale,
  );
  for (let l = L - 1; l >= 0; l--) {
    const x = l === 0 ? acts.encoded : acts.blocks[l - 1].residualOut;
    blockBackward(
      g.blocks[l],
      acts.dResidual,
      acts.scratch,
      acts.blocks[l],
      p.blocks[l],
      x,
      B,
      T,
      C,
      H,
      acts.dropped,
    );
  }
  if (acts.dropped) mulInPlace(acts.dResidual, acts.encDropMask, BT * C);
  embeddingBackward(g.wte, g.wpe, acts.dResidual, acts.inputs, B, T, C);
}

/** Options for {@link GPT}. */
export interface GPTOptions {
  /** Storage type: "float32" (default) for real work, "float64" for gradient checks. */
  dtype?: "float32" | "float64";
  /** Where float32 buffers are allocated (default: a new arena in the kernels' memory). */
  arena?: Arena;
  /** Allocate gradient buffers (default true; inference-only models can skip them). */
  grads?: boolean;
}

/** A GPT model: configuration, parameters and (optionally) their gradients. */
export class GPT {
  readonly config: GPTConfig;
  readonly dtype: "float32" | "float64";
  /** Every parameter, one flat buffer in {@link parameterSpecs} order. */
  readonly flat: FloatArray;
  readonly params: Params;
  /** Gradients, same layout as the parameters (empty views when grads is false). */
  readonly gradFlat: FloatArray;
  readonly grads: Params;
  readonly alloc: Allocator;
  readonly arena: Arena | undefined;

  constructor(config: GPTConfig, options: GPTOptions = {}) {
    validateConfig(config);
    this.config = { ...config };
    this.dtype = options.dtype ?? "float32";
    this.arena = this.dtype === "float32" ? (options.arena ?? defaultArena()) : undefined;
    this.alloc = allocatorFor(this.dtype, this.arena);
    const n = parameterCount(config);
    this.flat = this.alloc(n);
    this.params = paramViews(config, this.flat);
    this.gradFlat = this.alloc(options.grads === false ? 0 : n);
    this.grads = options.grads === false ? this.params : paramViews(config, this.gradFlat);
  }

  /** Number of parameters. */
  get size(): number {
    return this.flat.length;
  }

  /** Initializes the parameters from a seed (GPT-2's scheme). */
  init(seed: number | Rng): this {
    initParams(this.config, this.params, typeof seed === "number" ? new Rng(seed) : seed);
    return this;
  }

  /**
   * Allocates activations for batches of up to B sequences of blockSize tokens (with dropout
   * masks when `dropout` is true).
   */
  activations(B: number, dropout = false): Activations {
    const u16 = this.arena ? (n: number) => this.arena!.u16(n) : undefined;
    return new Activations(this.config, B, this.alloc, u16, dropout);
  }

  /** Zeroes the gradients. */
  zeroGrad(): void {
    this.gradFlat.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Cached inference: one sequence, tokens fed in chunks, keys and values kept per layer so each
// new token costs O(T) attention instead of recomputing the window.

/**
 * A key/value cache for generating one sequence. `feed` appends tokens at the next positions and
 * returns the logits of the last one; the window holds at most blockSize tokens.
 */
export class KVCache {
  readonly model: GPT;
  /** Tokens in the cache. */
  length = 0;
  readonly #qkv: FloatArray[]; // per layer [T, 3C]: q | k | v of every cached position
  readonly #x: FloatArray; // [T, C] residual stream of the rows being fed
  readonly #ln: FloatArray; // [T, C]
  readonly #mean: FloatArray; // [T]
  readonly #rstd: FloatArray; // [T]
  readonly #attnOut: FloatArray; // [T, C]
  readonly #tmp: FloatArray; // [T, C]
  readonly #fc: FloatArray; // [T, 4C]
  readonly #tokens: Uint16Array; // [T]
  /** Logits of every row of the last feed: [n, V]. */
  readonly logits: FloatArray;
  /**
   * Attention probabilities per layer, [H, T, T]: row t holds what position t attended to over
   * positions 0..t (zero beyond), as of the feed that computed row t.
   */
  readonly attention: FloatArray[];

  constructor(model: GPT) {
    const c = model.config;
    const T = c.blockSize, C = c.dModel;
    const alloc = model.alloc;
    this.model = model;
    this.#qkv = Array.from({ length: c.nLayers }, () => alloc(T * 3 * C));
    this.#x = alloc(T * C);
    this.#ln = alloc(T * C);
    this.#mean = alloc(T);
    this.#rstd = alloc(T);
    this.#attnOut = alloc(T * C);
    this.#tmp = alloc(T * C);
    this.#fc = alloc(T * 4 * C);
    this.#tokens = new Uint16Array(T);
    this.logits = alloc(T * c.vocabSize);
    this.attention = Array.from({ length: c.nLayers }, () => alloc(c.nHeads * T * T));
  }

  /** Empties the cache. */
  reset(): void {
    this.length = 0;
  }

  /**
   * Feeds tokens at positions length .. length + n - 1 and returns the logits [n, V] of those
   * positions (a view of {@link logits}). With `allLogits` false (the default) only the last row
   * is computed and returned ([1, V]).
   */
  feed(tokens: ArrayLike<number>, allLogits = false): FloatArray {
    const c = this.model.config;
    const p = this.model.params;
    const T = c.blockSize, C = c.dModel, V = c.vocabSize, H = c.nHeads;
    const n = tokens.length;
    const p0 = this.length;
    if (n === 0) throw new RangeError("feed needs at least one token");
    if (p0 + n > T) throw new RangeError(`the cache holds ${T} tokens; reset or slide it first`);
    for (let i = 0; i < n; i++) this.#tokens[i] = tokens[i];
    const x = this.#x.subarray(0, n * C);
    embeddingForward(x, this.#tokens, p.wte, p.wpe, 1, n, C, p0);
    const ln = this.#ln.subarray(0, n * C);
    const attnOut = this.#attnOut.subarray(0, n * C);
    const tmp = this.#tmp.subarray(0, n * C);
    const fc = this.#fc.subarray(0, n * 4 * C);
    for (let l = 0; l < c.nLayers; l++) {
      const b = p.blocks[l];
      const qkv = this.#qkv[l];
      layernormForward(ln, this.#mean, this.#rstd, x, b.ln1Weight, b.ln1Bias, n, C);
      matmul(qkv.subarray(p0 * 3 * C, (p0 + n) * 3 * C), ln, b.qkvWeight, b.qkvBias, n, C, 3 * C);
      attentionRows(attnOut, this.attention[l], qkv, T, p0, n, C, H);
      matmul(tmp, attnOut, b.attnProjWeight, b.attnProjBias, n, C, C);
      add(x, x, tmp, n * C);
      layernormForward(ln, this.#mean, this.#rstd, x, b.ln2Weight, b.ln2Bias, n, C);
      matmul(fc, ln, b.fcWeight, b.fcBias, n, C, 4 * C);
      geluForward(fc, fc, n * 4 * C);
      matmul(tmp, fc, b.mlpProjWeight, b.mlpProjBias, n, 4 * C, C);
      add(x, x, tmp, n * C);
    }
    this.length = p0 + n;
    const rows = allLogits ? n : 1;
    const first = (n - rows) * C;
    const lnRows = ln.subarray(0, rows * C);
    layernormForward(
      lnRows,
      this.#mean,
      this.#rstd,
      x.subarray(first, first + rows * C),
      p.lnfWeight,
      p.lnfBias,
      rows,
      C,
    );
    const logits = this.logits.subarray(0, rows * V);
    matmulNT(logits, lnRows, p.wte, rows, C, V);
    return logits;
  }
}
