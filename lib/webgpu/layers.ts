/**
 * The GPT's layers on the GPU: the parameters and activations as {@linkcode GpuArray}s (the
 * layouts of `lib/model.ts`'s paramViews and `lib/activations.ts`), and the forward and backward
 * of `lib/model.ts` and `lib/layers.ts`, call for call, recorded into one compute pass with the
 * {@linkcode GpuKernels}. Nothing runs until the pass is submitted.
 *
 * Shapes: B sequences, T positions (block_size), C = d_model, H heads, V characters. A pass
 * computes rows `start .. start+rows-1` of each sequence (training: all T; a KV cache: its new
 * rows), M = B·rows. Parameter gradients accumulate; `dResidual` carries the residual stream's
 * gradient backward, updated in place. A training pass may have dropout, with the CPU's masks
 * (dropout.ts): at site 2l block l's attention output, 2l + 1 its MLP output, 2L the embedding.
 *
 * @module
 */

import { type ModelConfig, parameterSpecs } from "../model.ts";
import { dropoutScale } from "../rng.ts";
import { maskWords } from "./dropout.ts";
import type { GpuKernels } from "./kernels.ts";
import { attentionScratchSize } from "./kernels.ts";
import { type Layout, type Region, shifted } from "./memory.ts";
import type { GpuArray } from "./pipelines.ts";

type A = GpuArray;
type P = GPUComputePassEncoder;

// ---------------------------------------------------------------------------------------------
// Parameters (and gradients): one region in parameterSpecs order, GPT-2 names

/** A weight [in, out] and its bias [out], or a LayerNorm's weight [C] and bias [C]. */
export interface GpuLinear {
  weight: A;
  bias: A;
}

/** One block's parameters. */
export interface GpuBlockParams {
  ln1: GpuLinear;
  qkv: GpuLinear; // [C, 3C]  attn.c_attn
  attnProj: GpuLinear; // [C, C]  attn.c_proj
  ln2: GpuLinear;
  fc: GpuLinear; // [C, 4C]  mlp.c_fc
  mlpProj: GpuLinear; // [4C, C]  mlp.c_proj
}

/** Named views of a flat parameter (or gradient) region. */
export interface GpuParams {
  /** The whole flat buffer [P]. */
  flat: A;
  wte: A; // [V, C]
  wpe: A; // [T, C]
  blocks: GpuBlockParams[];
  lnf: GpuLinear; // ln_f: [C], [C]
}

/** Lays out the tensors of {@link parameterSpecs} in `region`, in storage order. */
export function layoutParams(region: Region, c: ModelConfig): GpuParams {
  const byName = new Map<string, A>();
  const flat = region.take("all", 0);
  for (const { name, shape } of parameterSpecs(c)) {
    byName.set(name, region.take(name, shape.reduce((a, b) => a * b, 1)));
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
    flat,
    wte: byName.get("wte.weight")!,
    wpe: byName.get("wpe.weight")!,
    blocks,
    lnf: pair("ln_f"),
  };
}

// ---------------------------------------------------------------------------------------------
// Activations: what lib/activations.ts keeps, one region per block

/** A LayerNorm's output [M, C], and the mean [M] and 1/std [M] of its rows. */
export interface GpuNorm {
  out: A;
  mean: A;
  rstd: A;
}

/** What one block's forward keeps for its backward (a KV cache keeps qkv and attnProbs). */
export interface GpuBlockActs {
  ln1: GpuNorm; // [M, C]
  qkv: A; // [B, T, 3C]  q | k | v of every position
  attnProbs: A; // [B, H, T, T]
  attnOut: A; // [M, C]
  residualAttn: A; // [M, C]  x + attn(ln_1(x))
  ln2: GpuNorm; // [M, C]
  fc: A; // [M, 4C]  before GELU
  fcGelu: A; // [M, 4C]
  residualOut: A; // [M, C]  the block's output
}

/** The backward's gradients of activations (empty without a backward). */
export interface GpuScratch {
  dLn: A; // [M, C]
  dQkv: A; // [B, T, 3C]
  dAttnOut: A; // [M, C]
  dFc: A; // [M, 4C]
  dFcGelu: A; // [M, 4C]
  attnScratch: A; // [B, H, T, T]  the score gradients
  dDropped: A; // [M, C]  a gradient through a dropout mask (empty without dropout)
  dResidual: A; // [M, C]
  dLogits: A; // [M, V]
}

/** The activations of a forward (and backward) of up to B sequences. */
export interface GpuActs {
  B: number;
  inputs: A; // [B, T] u32
  targets: A; // [B, T] u32 (empty in a KV cache)
  encoded: A; // [B, T, C]
  blocks: GpuBlockActs[];
  lnf: GpuNorm; // [M, C]
  logits: A; // [M, V]
  probs: A; // [M, V]  (empty in a KV cache)
  losses: A; // [M]  (empty in a KV cache)
  /** Dropout's masks as bits [2L + 1, B, ⌈T·C/32⌉] (empty without dropout). */
  masks: A;
  scratch: GpuScratch;
}

/**
 * Lays out the activations of B sequences: "train" (targets, the loss and the backward's
 * gradients, with `dropout` its masks) or "cache" (one sequence's forward: a KV cache). Region
 * names start with `prefix`.
 */
export function layoutActs(
  layout: Layout,
  c: ModelConfig,
  B: number,
  use: "train" | "cache",
  prefix = "",
  dropout = false,
): GpuActs {
  const T = c.blockSize, C = c.dModel, V = c.vocabSize, H = c.nHeads, M = B * T;
  const train = use === "train";
  const main = layout.region(`${prefix}activations`);
  const norm = (r: Region, name: string): GpuNorm => ({
    out: r.take(`${name}.out`, M * C),
    mean: r.take(`${name}.mean`, M),
    rstd: r.take(`${name}.rstd`, M),
  });
  const inputs = main.take("inputs", M);
  const targets = main.take("targets", train ? M : 0);
  const encoded = main.take("encoded", M * C);
  const blocks = Array.from({ length: c.nLayers }, (_, l) => {
    const r = layout.region(`${prefix}block ${l} activations`);
    return {
      ln1: norm(r, "ln_1"),
      qkv: r.take("qkv", M * 3 * C),
      attnProbs: r.take("attn probs", B * H * T * T),
      attnOut: r.take("attn out", M * C),
      residualAttn: r.take("residual attn", M * C),
      ln2: norm(r, "ln_2"),
      fc: r.take("fc", M * 4 * C),
      fcGelu: r.take("fc gelu", M * 4 * C),
      residualOut: r.take("residual out", M * C),
    };
  });
  const lnf = norm(main, "ln_f");
  const logits = main.take("logits", M * V);
  const probs = main.take("probs", train ? M * V : 0);
  const losses = main.take("losses", train ? M : 0);
  const sites = 2 * c.nLayers + 1, drop = train && dropout;
  const masks = layout.region(`${prefix}dropout masks`).take(
    "masks",
    drop ? sites * B * maskWords(T * C) : 0,
  );
  const back = layout.region(`${prefix}backward`);
  const grad = (name: string, n: number) => back.take(name, train ? n : 0);
  const scratch = {
    dLn: grad("dLn", M * C),
    dQkv: grad("dQkv", M * 3 * C),
    dAttnOut: grad("dAttnOut", M * C),
    dFc: grad("dFc", M * 4 * C),
    dFcGelu: grad("dFcGelu", M * 4 * C),
    attnScratch: grad("attn scratch", attentionScratchSize(B, T, H)),
    dDropped: grad("dDropped", drop ? M * C : 0),
    dResidual: grad("dResidual", M * C),
    dLogits: grad("dLogits", M * V),
  };
  return { B, inputs, targets, encoded, blocks, lnf, logits, probs, losses, masks, scratch };
}

// ---------------------------------------------------------------------------------------------
// Forward

/** What one recorded forward (and its backward) computes. */
export interface GpuPass {
  B: number;
  T: number;
  C: number;
  H: number;
  V: number;
  /** First position computed, and how many (training: 0 and T). */
  start: number;
  rows: number;
  /** A training pass's dropout, or null. */
  dropout: GpuDropout | null;
}

/** Dropout at rate p with the masks of one step: its seed is lib/rng.ts dropoutSeed's. */
export interface GpuDropout {
  p: number;
  seed: number;
  /** Where the masks go: the activations' masks. */
  masks: A;
}

/** The pass over B whole sequences (training and evaluation), with dropout when given. */
export function gpuPass(c: ModelConfig, B: number, dropout: GpuDropout | null = null): GpuPass {
  const T = c.blockSize;
  return { B, T, C: c.dModel, H: c.nHeads, V: c.vocabSize, start: 0, rows: T, dropout };
}

/** The mask of dropout site `site` of a pass with dropout (see the module's comment). */
function siteMask(s: GpuPass, site: number): A {
  return shifted(s.dropout!.masks, site * s.B * maskWords(s.T * s.C));
}

/** x[B, T, C] *= the mask of `site` (in place; out = x · mask when out is given). */
function recordDropout(k: GpuKernels, pass: P, s: GpuPass, site: number, x: A, out = x): void {
  const keep = dropoutScale(s.dropout!.p).keep;
  k.dropout(pass, out, x, siteMask(s, site), s.B, s.T * s.C, keep);
}

/**
 * The embedding and the blocks over a.inputs [B, rows]: returns the last block's output
 * [M, C]. In a KV cache (start > 0) each block's qkv rows start.. are appended to the cache.
 */
export function recordTrunk(k: GpuKernels, pass: P, p: GpuParams, a: GpuActs, s: GpuPass): A {
  const { B, C } = s, L = p.blocks.length, drop = s.dropout;
  if (drop) {
    const threshold = dropoutScale(drop.p).threshold;
    k.dropoutMasks(pass, drop.masks, B, 2 * L + 1, s.T * C, drop.seed, threshold);
  }
  // x[b, t] = wte[token] + wpe[start + t]: the kernel adds wpe row t mod rows, so shift wpe
  const wpe = shifted(p.wpe, s.start * C);
  k.embeddingForward(pass, a.encoded, a.inputs, p.wte, wpe, B, s.rows, C, s.V);
  if (drop) recordDropout(k, pass, s, 2 * L, a.encoded);
  let x = a.encoded;
  for (let l = 0; l < L; l++) {
    blockForward(k, pass, a.blocks[l], p.blocks[l], x, s, 2 * l);
    x = a.blocks[l].residualOut;
  }
  return x;
}

/**
 * One transformer block: x = x + drop(attn(ln_1(x))); x = x + drop(mlp(ln_2(x))), into
 * a.residualOut, the dropout masks (with dropout) those of sites `site` and `site + 1`.
 */
function blockForward(
  k: GpuKernels,
  pass: P,
  a: GpuBlockActs,
  p: GpuBlockParams,
  x: A,
  s: GpuPass,
  site: number,
) {
  const { B, T, C, H } = s, M = B * s.rows;
  k.layernormForward(pass, a.ln1.out, a.ln1.mean, a.ln1.rstd, x, p.ln1.weight, p.ln1.bias, M, C);
  const qkvRows = shifted(a.qkv, s.start * 3 * C);
  k.matmul(pass, qkvRows, a.ln1.out, p.qkv.weight, p.qkv.bias, M, C, 3 * C);
  k.attentionForward(pass, a.attnOut, a.attnProbs, a.qkv, B, T, C, H, s.start, s.rows);
  k.matmul(pass, a.residualAttn, a.attnOut, p.attnProj.weight, p.attnProj.bias, M, C, C);
  if (s.dropout) recordDropout(k, pass, s, site, a.residualAttn);
  k.addInPlace(pass, a.residualAttn, x, M * C);

  const ln2 = a.ln2;
  k.layernormForward(
    pass,
    ln2.out,
    ln2.mean,
    ln2.rstd,
    a.residualAttn,
    p.ln2.weight,
    p.ln2.bias,
    M,
    C,
  );
  k.matmul(pass, a.fc, ln2.out, p.fc.weight, p.fc.bias, M, C, 4 * C);
  k.geluForward(pass, a.fcGelu, a.fc, M * 4 * C);
  k.matmul(pass, a.residualOut, a.fcGelu, p.mlpProj.weight, p.mlpProj.bias, M, 4 * C, C);
  if (s.dropout) recordDropout(k, pass, s, site + 1, a.residualOut);
  k.addInPlace(pass, a.residualOut, a.residualAttn, M * C);
}

/** logits[rows, V] = ln_f(x) · wteᵀ for `rows` rows of x [rows, C] (tied head). */
export function recordHead(
  k: GpuKernels,
  pass: P,
  p: GpuParams,
  a: GpuActs,
  x: A,
  rows: number,
  s: GpuPass,
) {
  const f = a.lnf;
  k.layernormForward(pass, f.out, f.mean, f.rstd, x, p.lnf.weight, p.lnf.bias, rows, s.C);
  k.matmulNT(pass, a.logits, f.out, p.wte, rows, s.C, s.V);
}

/** The cross-entropy of M rows of logits against a.targets: a.probs and a.losses [M]. */
export function recordLoss(k: GpuKernels, pass: P, a: GpuActs, M: number, V: number): void {
  k.softmaxCrossEntropy(pass, a.losses, a.probs, a.logits, a.targets, M, V);
}

// ---------------------------------------------------------------------------------------------
// Backward, over whole sequences, after recordTrunk, recordHead and recordLoss of the same pass

/** dInp[M, K] = dOut · weightᵀ (overwrites); g.weight += inpᵀ · dOut; g.bias += Σ dOut. */
function linearBackward(
  k: GpuKernels,
  pass: P,
  dInp: A,
  g: GpuLinear,
  dOut: A,
  inp: A,
  p: GpuLinear,
  M: number,
  K: number,
  N: number,
) {
  k.matmulBackwardInput(pass, dInp, dOut, p.weight, M, K, N);
  k.matmulBackwardWeight(pass, g.weight, inp, dOut, M, K, N);
  k.biasBackward(pass, g.bias, dOut, M, N);
}

/**
 * The backward of the loss (scaled by lossScale: 1/(B·T) for the mean) through the head, the
 * blocks and the embedding; g accumulates the parameters' gradients (lib/model.ts `backward`).
 */
export function recordBackward(
  k: GpuKernels,
  pass: P,
  p: GpuParams,
  g: GpuParams,
  a: GpuActs,
  s: GpuPass,
  lossScale: number,
): void {
  const { B, T, C, V } = s, M = B * T, d = a.scratch, L = p.blocks.length;
  // head: logits = ln_f(x) · wteᵀ
  k.softmaxCrossEntropyBackward(pass, d.dLogits, a.probs, a.targets, M, V, lossScale);
  k.matmul(pass, d.dLn, d.dLogits, p.wte, null, M, V, C); // dlnf = dlogits · wte
  k.matmulBackwardWeight(pass, g.wte, d.dLogits, a.lnf.out, M, V, C); // dwte += dlogitsᵀ · lnf
  k.fill(pass, d.dResidual, M * C, 0);
  const f = a.lnf, last = a.blocks[L - 1].residualOut;
  k.layernormBackward(
    pass,
    d.dResidual,
    g.lnf.weight,
    g.lnf.bias,
    d.dLn,
    last,
    p.lnf.weight,
    f.mean,
    f.rstd,
    M,
    C,
  );
  for (let l = L - 1; l >= 0; l--) {
    const x = l === 0 ? a.encoded : a.blocks[l - 1].residualOut;
    blockBackward(k, pass, g.blocks[l], d, a.blocks[l], p.blocks[l], x, s, 2 * l);
  }
  if (s.dropout) recordDropout(k, pass, s, 2 * L, d.dResidual);
  k.embeddingBackward(pass, g.wte, g.wpe, d.dResidual, a.inputs, B, T, C, V);
}

/** Backward of blockForward: dResidual goes from the block's output to its input x. */
function blockBackward(
  k: GpuKernels,
  pass: P,
  g: GpuBlockParams,
  d: GpuScratch,
  a: GpuBlockActs,
  p: GpuBlockParams,
  x: A,
  s: GpuPass,
  site: number,
) {
  const { B, T, C, H } = s, M = B * T;
  // the gradient of a branch's output, through its dropout mask when the forward used one
  const throughMask = (at: number) => {
    if (!s.dropout) return d.dResidual;
    recordDropout(k, pass, s, at, d.dResidual, d.dDropped);
    return d.dDropped;
  };
  // MLP: out = residualAttn + drop(gelu(ln_2(residualAttn) · W_fc + b_fc) · W_proj + b_proj)
  const dMlp = throughMask(site + 1);
  linearBackward(k, pass, d.dFcGelu, g.mlpProj, dMlp, a.fcGelu, p.mlpProj, M, 4 * C, C);
  k.geluBackward(pass, d.dFc, a.fc, d.dFcGelu, M * 4 * C);
  linearBackward(k, pass, d.dLn, g.fc, d.dFc, a.ln2.out, p.fc, M, C, 4 * C);
  const ln2 = a.ln2, ln1 = a.ln1;
  k.layernormBackward(
    pass,
    d.dResidual,
    g.ln2.weight,
    g.ln2.bias,
    d.dLn,
    a.residualAttn,
    p.ln2.weight,
    ln2.mean,
    ln2.rstd,
    M,
    C,
  );
  // attention: residualAttn = x + drop(attention(ln_1(x) · W_qkv + b_qkv) · W_proj + b_proj)
  const dAttn = throughMask(site);
  linearBackward(k, pass, d.dAttnOut, g.attnProj, dAttn, a.attnOut, p.attnProj, M, C, C);
  k.attentionBackward(pass, d.dQkv, d.attnScratch, d.dAttnOut, a.qkv, a.attnProbs, B, T, C, H);
  linearBackward(k, pass, d.dLn, g.qkv, d.dQkv, a.ln1.out, p.qkv, M, C, 3 * C);
  k.layernormBackward(
    pass,
    d.dResidual,
    g.ln1.weight,
    g.ln1.bias,
    d.dLn,
    x,
    p.ln1.weight,
    ln1.mean,
    ln1.rstd,
    M,
    C,
  );
}
