/**
 * The layers of the GPT, each forward beside its backward: token and position embedding,
 * LayerNorm, linear, dropout, the transformer block (pre-LN attention and MLP with residual
 * connections) and the head (final LayerNorm, output projection tied to the embedding,
 * cross-entropy). The numeric work is the operations of `tensor.ts` (through the kernels'
 * dispatch). Parameter gradients accumulate (+=); the residual stream's gradient flows backward
 * through one buffer, `dResidual`, updated in place.
 *
 * Shapes: B sequences, T positions (block_size), C = d_model, H heads, V characters. A pass
 * computes rows `start .. start+rows-1` of each sequence (training: all T of them), M = B·rows.
 *
 * @module
 */

import {
  add,
  attentionBackward,
  attentionForward,
  biasBackward,
  type FloatArray,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  matmul,
  matmulBackwardInput,
  matmulBackwardWeight,
  matmulNT,
  mul,
  softmaxCrossEntropy,
  softmaxCrossEntropyBackward,
} from "./kernels/dispatch.ts";
import { dropoutScale, Rng } from "./rng.ts";

type F = FloatArray;

/** What one forward (and its backward) computes. */
export interface Pass {
  B: number;
  T: number;
  C: number;
  H: number;
  V: number;
  /** First position computed, and how many (training: 0 and T). */
  start: number;
  rows: number;
  /** A KV-cache pass: rows of one sequence whose earlier positions are cached in qkv. */
  cached: boolean;
  /** Dropout of this pass (training only), or null. */
  dropout: Dropout | null;
}

/** A weight [in, out] and its bias [out] (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj). */
export interface Linear {
  weight: FloatArray;
  bias: FloatArray;
}

/** A LayerNorm's weight [C] and bias [C]. */
export type Norm = Linear;

/** What a LayerNorm's forward keeps: its output [M, C], and the mean [M] and 1/std [M] of rows. */
export interface NormActs {
  out: FloatArray;
  mean: FloatArray;
  rstd: FloatArray;
}

// ---------------------------------------------------------------------------------------------
// Embedding: x[b,t] = wte[token] + wpe[t]

/** out[B, rows, C] = wte[tokens[b, t]] + wpe[start + t]. */
export function embeddingForward(out: F, tokens: Uint16Array, wte: F, wpe: F, s: Pass) {
  const C = s.C;
  for (let r = 0; r < s.B * s.rows; r++) {
    const tok = tokens[r] * C, pos = (s.start + (r % s.rows)) * C;
    for (let i = 0; i < C; i++) out[r * C + i] = wte[tok + i] + wpe[pos + i];
  }
}

/** dWte[token] += dOut[b, t]; dWpe[t] += dOut[b, t]. */
export function embeddingBackward(dWte: F, dWpe: F, dOut: F, tokens: Uint16Array, s: Pass) {
  const C = s.C;
  for (let r = 0; r < s.B * s.T; r++) {
    const tok = tokens[r] * C, pos = (r % s.T) * C;
    for (let i = 0; i < C; i++) {
      dWte[tok + i] += dOut[r * C + i];
      dWpe[pos + i] += dOut[r * C + i];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm and linear layers

/** ln.out[M, C] = layernorm(x) · p.weight + p.bias. */
export function normForward(ln: NormActs, x: F, p: Norm, M: number, C: number): void {
  layernormForward(ln.out, ln.mean, ln.rstd, x, p.weight, p.bias, M, C);
}

/** dX[M, C] += the gradient through the LayerNorm of dOut; g accumulates. */
export function normBackward(
  dX: F,
  g: Norm,
  dOut: F,
  ln: NormActs,
  x: F,
  p: Norm,
  M: number,
  C: number,
) {
  layernormBackward(dX, g.weight, g.bias, dOut, x, p.weight, ln.mean, ln.rstd, M, C);
}

/** out[M, N] = inp[M, K] · p.weight[K, N] + p.bias[N]. */
export function linearForward(out: F, inp: F, p: Linear, M: number, K: number, N: number) {
  matmul(out, inp, p.weight, p.bias, M, K, N);
}

/** dInp[M, K] = dOut · weightᵀ (overwrites); g.weight += inpᵀ · dOut, g.bias += Σ dOut. */
export function linearBackward(
  dInp: F,
  g: Linear,
  dOut: F,
  inp: F,
  p: Linear,
  M: number,
  K: number,
  N: number,
) {
  matmulBackwardInput(dInp, dOut, p.weight, M, K, N);
  matmulBackwardWeight(g.weight, inp, dOut, M, K, N);
  biasBackward(g.bias, dOut, M, N);
}

// ---------------------------------------------------------------------------------------------
// Dropout (training only): y = x · mask, mask = 0 with probability p, else 1 / (1 - p)

/**
 * The dropout of one training step: probability p and the seed of the step's masks. Row b of a
 * shard is row firstRow + b of the whole batch; its mask depends only on (seed, that row, site),
 * so the masks do not depend on how the batch is split over threads.
 */
export interface Dropout {
  p: number;
  seed: number;
  firstRow: number;
}

/** x[B, T, C] *= mask, the mask drawn for this step at `site` (kept for the backward). */
export function dropoutForward(x: F, mask: F, d: Dropout, site: number, s: Pass) {
  const { threshold, keep } = dropoutScale(d.p), row = s.T * s.C;
  for (let b = 0; b < s.B; b++) {
    const rng = new Rng(d.seed * 0x10000 + (d.firstRow + b) * 64 + site);
    for (let i = b * row; i < (b + 1) * row; i++) mask[i] = rng.nextU32() < threshold ? 0 : keep;
  }
  mul(x, x, mask, s.B * row);
}

/** Backward of {@link dropoutForward} in place: dX[B, T, C] *= mask. */
export function dropoutBackward(dX: F, mask: F, s: Pass): void {
  mul(dX, dX, mask, s.B * s.T * s.C);
}

// ---------------------------------------------------------------------------------------------
// Transformer block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))

/** Parameters of one block (views into the model's flat parameter buffer). */
export interface BlockParams {
  ln1: Norm;
  qkv: Linear; // [C, 3C]  attn.c_attn
  attnProj: Linear; // [C, C]  attn.c_proj
  ln2: Norm;
  fc: Linear; // [C, 4C]  mlp.c_fc
  mlpProj: Linear; // [4C, C]  mlp.c_proj
}

/** What one block's forward keeps for its backward (a KV cache keeps qkv and attnProbs). */
export interface BlockActs {
  ln1: NormActs; // [M, C]
  qkv: FloatArray; // [B, T, 3C]  q | k | v of every position
  attnProbs: FloatArray; // [B, H, T, T]
  attnOut: FloatArray; // [M, C]  heads concatenated, before c_proj
  residualAttn: FloatArray; // [M, C]  x + attn(ln_1(x))
  ln2: NormActs; // [M, C]
  fc: FloatArray; // [M, 4C]  before GELU
  fcGelu: FloatArray; // [M, 4C]
  residualOut: FloatArray; // [M, C]  the block's output
  /** Dropout masks of the attention's and the MLP's outputs [B, T, C], and their site numbers. */
  masks: { attn: FloatArray; mlp: FloatArray; site: number } | null;
}

/** Scratch gradients shared by every block's backward. */
export interface BlockScratch {
  dLn: FloatArray; // [M, C]  gradient of a LayerNorm's output
  dQkv: FloatArray; // [B, T, 3C]
  dAttnOut: FloatArray; // [M, C]
  dFc: FloatArray; // [M, 4C]
  dFcGelu: FloatArray; // [M, 4C]
  attnScratch: FloatArray; // [T, T + C/H]
  dDropped: FloatArray; // [M, C]  gradient through a dropout mask (empty without dropout)
}

/** ln_1 and the q, k, v of the pass's rows: blockForward's start (alone, it fills a KV cache). */
export function blockQkv(a: BlockActs, p: BlockParams, x: F, s: Pass): void {
  normForward(a.ln1, x, p.ln1, s.B * s.rows, s.C);
  linearForward(a.qkv.subarray(s.start * 3 * s.C), a.ln1.out, p.qkv, s.B * s.rows, s.C, 3 * s.C);
}

/** One transformer block: a.residualOut[M, C] from x[M, C]. */
export function blockForward(a: BlockActs, p: BlockParams, x: F, s: Pass): void {
  const { C, H } = s, M = s.B * s.rows;
  blockQkv(a, p, x, s);
  attentionForward(a.attnOut, a.attnProbs, a.qkv, s.B, s.T, C, H, s.start, s.rows, s.cached);
  linearForward(a.residualAttn, a.attnOut, p.attnProj, M, C, C);
  if (s.dropout) dropoutForward(a.residualAttn, a.masks!.attn, s.dropout, a.masks!.site, s);
  add(a.residualAttn, a.residualAttn, x, M * C);

  normForward(a.ln2, a.residualAttn, p.ln2, M, C);
  linearForward(a.fc, a.ln2.out, p.fc, M, C, 4 * C);
  geluForward(a.fcGelu, a.fc, M * 4 * C);
  linearForward(a.residualOut, a.fcGelu, p.mlpProj, M, 4 * C, C);
  if (s.dropout) dropoutForward(a.residualOut, a.masks!.mlp, s.dropout, a.masks!.site + 1, s);
  add(a.residualOut, a.residualOut, a.residualAttn, M * C);
}

/**
 * Backward of {@link blockForward} over whole sequences. On entry dResidual[M, C] is the
 * gradient of the block's output; on return, of its input x. Parameter gradients accumulate.
 */
export function blockBackward(
  g: BlockParams,
  dResidual: F,
  d: BlockScratch,
  a: BlockActs,
  p: BlockParams,
  x: F,
  s: Pass,
) {
  const { B, T, C, H } = s, M = B * T;
  // the gradient of a branch's output, through its dropout mask when the forward used one
  const throughMask = (mask: FloatArray | undefined) => {
    if (!s.dropout) return dResidual;
    mul(d.dDropped, dResidual, mask!, M * C);
    return d.dDropped;
  };
  // MLP: out = residualAttn + drop(gelu(ln_2(residualAttn) · W_fc + b_fc) · W_proj + b_proj)
  linearBackward(d.dFcGelu, g.mlpProj, throughMask(a.masks?.mlp), a.fcGelu, p.mlpProj, M, 4 * C, C);
  geluBackward(d.dFc, a.fc, d.dFcGelu, M * 4 * C);
  linearBackward(d.dLn, g.fc, d.dFc, a.ln2.out, p.fc, M, C, 4 * C);
  normBackward(dResidual, g.ln2, d.dLn, a.ln2, a.residualAttn, p.ln2, M, C);
  // attention: residualAttn = x + drop(attention(ln_1(x) · W_qkv + b_qkv) · W_proj + b_proj)
  const dAttn = throughMask(a.masks?.attn);
  linearBackward(d.dAttnOut, g.attnProj, dAttn, a.attnOut, p.attnProj, M, C, C);
  attentionBackward(d.dQkv, d.attnScratch, d.dAttnOut, a.qkv, a.attnProbs, B, T, C, H);
  linearBackward(d.dLn, g.qkv, d.dQkv, a.ln1.out, p.qkv, M, C, 3 * C);
  normBackward(dResidual, g.ln1, d.dLn, a.ln1, x, p.ln1, M, C);
}

// ---------------------------------------------------------------------------------------------
// Head: logits = ln_f(x) · wteᵀ (tied with the token embedding), then the cross-entropy

/** The head's parameters: the token embedding (tied) and ln_f. */
export interface HeadParams {
  wte: F; // [V, C]
  lnf: Norm; // [C], [C]
}

/** What the head's forward keeps for its backward, its targets and its backward's scratch. */
export interface HeadActs {
  lnf: NormActs; // [M, C]
  logits: F; // [M, V]
  probs: F; // [M, V]
  losses: F; // [M]
  targets: Uint16Array; // [M]
  dLogits: F; // [M, V]
  dLn: F; // [M, C]
}

/** logits[M, V] = ln_f(x) · wteᵀ for M rows of x[M, C]. */
export function headForward(a: HeadActs, x: F, p: HeadParams, M: number, s: Pass): void {
  normForward(a.lnf, x, p.lnf, M, s.C);
  matmulNT(a.logits, a.lnf.out, p.wte, M, s.C, s.V);
}

/** The cross-entropy of the logits of M rows: fills probs and losses; returns their sum. */
export function lossForward(a: HeadActs, M: number, V: number): number {
  softmaxCrossEntropy(a.losses, a.probs, a.logits, a.targets, M, V);
  let sum = 0;
  for (let i = 0; i < M; i++) sum += a.losses[i];
  return sum;
}

/**
 * Backward of the loss (scaled by lossScale, 1 / M for a mean) and of the head. Overwrites
 * dResidual[M, C] with the gradient of x; g's wte and ln_f accumulate.
 */
export function headBackward(
  dResidual: F,
  g: HeadParams,
  a: HeadActs,
  x: F,
  p: HeadParams,
  s: Pass,
  lossScale: number,
) {
  const { C, V } = s, M = s.B * s.T;
  softmaxCrossEntropyBackward(a.dLogits, a.probs, a.targets, M, V, lossScale);
  matmul(a.dLn, a.dLogits, p.wte, null, M, V, C); // dlnf = dlogits · wte
  matmulBackwardWeight(g.wte, a.dLogits, a.lnf.out, M, V, C); // dwte += dlogitsᵀ · lnf
  dResidual.fill(0, 0, M * C);
  normBackward(dResidual, g.lnf, a.dLn, a.lnf, x, p.lnf, M, C);
}
