/**
 * The layers of the GPT: token and position embedding, the transformer block (pre-LN attention
 * and MLP with residual connections) and the head (final LayerNorm, tied output projection,
 * cross-entropy). Each layer's forward and backward sit side by side; the numeric work is done by
 * the kernels of `tensor.ts`. Gradients of parameters accumulate (+=); the residual stream's
 * gradient flows backward through one buffer, `dResidual`, updated in place.
 *
 * Shapes: B sequences of T tokens, C = d_model channels, H heads, V characters; BT = B * T.
 *
 * @module
 */

import { Rng } from "./rng.ts";
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
  mulInPlace,
  softmaxCrossEntropy,
  softmaxCrossEntropyBackward,
} from "./tensor.ts";

// ---------------------------------------------------------------------------------------------
// Embedding: x[b,t] = wte[token] + wpe[t]

/** out[B,T,C] = wte[tokens[b,t]] + wpe[t]. */
export function embeddingForward(
  out: FloatArray,
  tokens: Uint16Array,
  wte: FloatArray, // [V, C]
  wpe: FloatArray, // [maxT, C]
  B: number,
  T: number,
  C: number,
  firstPosition = 0,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const o = (b * T + t) * C;
      const tok = tokens[b * T + t] * C;
      const pos = (firstPosition + t) * C;
      for (let i = 0; i < C; i++) out[o + i] = wte[tok + i] + wpe[pos + i];
    }
  }
}

/** dWte[token] += dOut[b,t]; dWpe[t] += dOut[b,t]. */
export function embeddingBackward(
  dWte: FloatArray,
  dWpe: FloatArray,
  dOut: FloatArray, // [B, T, C]
  tokens: Uint16Array,
  B: number,
  T: number,
  C: number,
): void {
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const d = (b * T + t) * C;
      const tok = tokens[b * T + t] * C;
      const pos = t * C;
      for (let i = 0; i < C; i++) {
        dWte[tok + i] += dOut[d + i];
        dWpe[pos + i] += dOut[d + i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Linear layer: out = inp · w + bias, with w stored [in, out].

/** Backward of `matmul(out, inp, w, bias, M, K, N)`: dInp is overwritten (skipped when null). */
export function linearBackward(
  dInp: FloatArray | null,
  dW: FloatArray,
  dBias: FloatArray | null,
  dOut: FloatArray, // [M, N]
  inp: FloatArray, // [M, K]
  w: FloatArray, // [K, N]
  M: number,
  K: number,
  N: number,
): void {
  if (dInp !== null) matmulBackwardInput(dInp, dOut, w, M, K, N);
  matmulBackwardWeight(dW, inp, dOut, M, K, N);
  if (dBias !== null) biasBackward(dBias, dOut, M, N);
}

// ---------------------------------------------------------------------------------------------
// Dropout (training only): y = x * mask, mask = 0 with probability p, else 1 / (1 - p).

/**
 * The dropout of one training step: probability p and the seed of the step's masks. Row b of a
 * shard is row firstRow + b of the whole batch, and its mask depends only on (seed, that row,
 * site), so masks do not depend on how the batch is split over threads.
 */
export interface Dropout {
  p: number;
  seed: number;
  firstRow: number;
}

/** Fills mask[B, T, C] with 0 (probability p) or 1 / (1 - p), per row from (seed, row, site). */
export function dropoutMask(
  mask: FloatArray,
  d: Dropout,
  site: number,
  B: number,
  rowSize: number,
): void {
  const threshold = Math.round(d.p * 0x100000000);
  const keep = 1 / (1 - d.p);
  for (let b = 0; b < B; b++) {
    const rng = new Rng(d.seed * 0x10000 + (d.firstRow + b) * 64 + site);
    const o = b * rowSize;
    for (let i = 0; i < rowSize; i++) mask[o + i] = rng.nextU32() < threshold ? 0 : keep;
  }
}

// ---------------------------------------------------------------------------------------------
// Transformer block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))

/** Parameters of one block (views into the model's flat parameter buffer). */
export interface BlockParams {
  ln1Weight: FloatArray; // [C]
  ln1Bias: FloatArray; // [C]
  qkvWeight: FloatArray; // [C, 3C]  attn.c_attn
  qkvBias: FloatArray; // [3C]
  attnProjWeight: FloatArray; // [C, C]  attn.c_proj
  attnProjBias: FloatArray; // [C]
  ln2Weight: FloatArray; // [C]
  ln2Bias: FloatArray; // [C]
  fcWeight: FloatArray; // [C, 4C]  mlp.c_fc
  fcBias: FloatArray; // [4C]
  mlpProjWeight: FloatArray; // [4C, C]  mlp.c_proj
  mlpProjBias: FloatArray; // [C]
}

/** What one block's forward keeps for its backward. */
export interface BlockActivations {
  ln1: FloatArray; // [B, T, C]
  ln1Mean: FloatArray; // [B, T]
  ln1Rstd: FloatArray; // [B, T]
  qkv: FloatArray; // [B, T, 3C]
  attnProbs: FloatArray; // [B, H, T, T]
  attnOut: FloatArray; // [B, T, C]  heads concatenated, before c_proj
  residualAttn: FloatArray; // [B, T, C]  x + attn(ln_1(x))
  ln2: FloatArray; // [B, T, C]
  ln2Mean: FloatArray; // [B, T]
  ln2Rstd: FloatArray; // [B, T]
  fc: FloatArray; // [B, T, 4C]  before GELU
  fcGelu: FloatArray; // [B, T, 4C]
  residualOut: FloatArray; // [B, T, C]  the block's output
  attnDropMask: FloatArray; // [B, T, C]  dropout of the attention's output (empty without)
  mlpDropMask: FloatArray; // [B, T, C]  dropout of the MLP's output (empty without)
}

/** Scratch gradients shared by every block's backward. */
export interface BlockScratch {
  dLn: FloatArray; // [B, T, C]  gradient of a LayerNorm's output
  dQkv: FloatArray; // [B, T, 3C]
  dAttnOut: FloatArray; // [B, T, C]
  dFc: FloatArray; // [B, T, 4C]
  dFcGelu: FloatArray; // [B, T, 4C]
  attnScratch: FloatArray; // [T, T + C/H]  attention backward scratch
  dDropped: FloatArray; // [B, T, C]  gradient through a dropout mask (empty without dropout)
}

/**
 * One transformer block: acts.residualOut[B,T,C] from x[B,T,C]. With `drop`, the outputs of the
 * attention and the MLP pass through dropout before joining the residual stream (masks kept in
 * acts for the backward; `layer` tells this block's masks apart).
 */
export function blockForward(
  acts: BlockActivations,
  p: BlockParams,
  x: FloatArray,
  B: number,
  T: number,
  C: number,
  H: number,
  drop: Dropout | null = null,
  layer = 0,
): void {
  const BT = B * T;
  layernormForward(acts.ln1, acts.ln1Mean, acts.ln1Rstd, x, p.ln1Weight, p.ln1Bias, BT, C);
  matmul(acts.qkv, acts.ln1, p.qkvWeight, p.qkvBias, BT, C, 3 * C);
  attentionForward(acts.attnOut, acts.attnProbs, acts.qkv, B, T, C, H);
  matmul(acts.residualAttn, acts.attnOut, p.attnProjWeight, p.attnProjBias, BT, C, C);
  if (drop !== null) {
    dropoutMask(acts.attnDropMask, drop, 2 * layer, B, T * C);
    mulInPlace(acts.residualAttn, acts.attnDropMask, BT * C);
  }
  add(acts.residualAttn, acts.residualAttn, x, BT * C);

  layernormForward(
    acts.ln2,
    acts.ln2Mean,
    acts.ln2Rstd,
    acts.residualAttn,
    p.ln2Weight,
    p.ln2Bias,
    BT,
    C,
  );
  matmul(acts.fc, acts.ln2, p.fcWeight, p.fcBias, BT, C, 4 * C);
  geluForward(acts.fcGelu, acts.fc, BT * 4 * C);
  matmul(acts.residualOut, acts.fcGelu, p.mlpProjWeight, p.mlpProjBias, BT, 4 * C, C);
  if (drop !== null) {
    dropoutMask(acts.mlpDropMask, drop, 2 * layer + 1, B, T * C);
    mulInPlace(acts.residualOut, acts.mlpDropMask, BT * C);
  }
  add(acts.residualOut, acts.residualOut, acts.residualAttn, BT * C);
}

/**
 * Backward of {@link blockForward}. On entry dResidual[B,T,C] is the gradient of the block's
 * output; on return it is the gradient of its input x. Parameter gradients accumulate into g.
 * `dropout` says whether the forward used dropout (its masks are in acts).
 */
export function blockBackward(
  g: BlockParams,
  dResidual: FloatArray,
  s: BlockScratch,
  acts: BlockActivations,
  p: BlockParams,
  x: FloatArray,
  B: number,
  T: number,
  C: number,
  H: number,
  dropout = false,
): void {
  const BT = B * T;
  // the gradient of a branch's output, through its dropout mask when training used one
  const throughMask = (mask: FloatArray) => {
    if (!dropout) return dResidual;
    mul(s.dDropped, dResidual, mask, BT * C);
    return s.dDropped;
  };
  // MLP: out = residualAttn + drop(gelu(ln_2(residualAttn) · W_fc + b_fc) · W_proj + b_proj)
  linearBackward(
    s.dFcGelu,
    g.mlpProjWeight,
    g.mlpProjBias,
    throughMask(acts.mlpDropMask),
    acts.fcGelu,
    p.mlpProjWeight,
    BT,
    4 * C,
    C,
  );
  geluBackward(s.dFc, acts.fc, s.dFcGelu, BT * 4 * C);
  linearBackward(s.dLn, g.fcWeight, g.fcBias, s.dFc, acts.ln2, p.fcWeight, BT, C, 4 * C);
  layernormBackward(
    dResidual,
    g.ln2Weight,
    g.ln2Bias,
    s.dLn,
    acts.residualAttn,
    p.ln2Weight,
    acts.ln2Mean,
    acts.ln2Rstd,
    BT,
    C,
  );
  // Attention: residualAttn = x + drop(attention(ln_1(x) · W_qkv + b_qkv) · W_proj + b_proj)
  linearBackward(
    s.dAttnOut,
    g.attnProjWeight,
    g.attnProjBias,
    throughMask(acts.attnDropMask),
    acts.attnOut,
    p.attnProjWeight,
    BT,
    C,
    C,
  );
  attentionBackward(s.dQkv, s.attnScratch, s.dAttnOut, acts.qkv, acts.attnProbs, B, T, C, H);
  linearBackward(s.dLn, g.qkvWeight, g.qkvBias, s.dQkv, acts.ln1, p.qkvWeight, BT, C, 3 * C);
  layernormBackward(
    dResidual,
    g.ln1Weight,
    g.ln1Bias,
    s.dLn,
    x,
    p.ln1Weight,
    acts.ln1Mean,
    acts.ln1Rstd,
    BT,
    C,
  );
}

// ---------------------------------------------------------------------------------------------
// Head: logits = ln_f(x) · wte^T (tied with the token embedding), then cross-entropy.

/** What the head's forward keeps for its backward. */
export interface HeadActivations {
  lnf: FloatArray; // [B, T, C]
  lnfMean: FloatArray; // [B, T]
  lnfRstd: FloatArray; // [B, T]
  logits: FloatArray; // [B, T, V]
  probs: FloatArray; // [B, T, V]
  losses: FloatArray; // [B, T]
}

/** logits[BT,V] = ln_f(x) · wte^T. */
export function headForward(
  acts: HeadActivations,
  x: FloatArray, // [BT, C]
  lnfWeight: FloatArray,
  lnfBias: FloatArray,
  wte: FloatArray, // [V, C]
  BT: number,
  C: number,
  V: number,
): void {
  layernormForward(acts.lnf, acts.lnfMean, acts.lnfRstd, x, lnfWeight, lnfBias, BT, C);
  matmulNT(acts.logits, acts.lnf, wte, BT, C, V);
}

/** Cross-entropy of the logits: fills probs and losses; returns the sum of the losses. */
export function lossForward(acts: HeadActivations, targets: Uint16Array, BT: number, V: number) {
  softmaxCrossEntropy(acts.losses, acts.probs, acts.logits, targets, BT, V);
  let sum = 0;
  for (let i = 0; i < BT; i++) sum += acts.losses[i];
  return sum;
}

/**
 * Backward of the loss (scaled by lossScale, e.g. 1 / BT for a mean) and of the head. Overwrites
 * dResidual[BT,C] with the gradient of x; accumulates into dWte, dLnfWeight, dLnfBias.
 */
export function headBackward(
  dResidual: FloatArray,
  dWte: FloatArray,
  dLnfWeight: FloatArray,
  dLnfBias: FloatArray,
  dLogits: FloatArray, // [BT, V] scratch
  dLn: FloatArray, // [BT, C] scratch
  acts: HeadActivations,
  x: FloatArray,
  targets: Uint16Array,
  lnfWeight: FloatArray,
  wte: FloatArray,
  BT: number,
  C: number,
  V: number,
  lossScale: number,
): void {
  softmaxCrossEntropyBackward(dLogits, acts.probs, targets, BT, V, lossScale);
  matmul(dLn, dLogits, wte, null, BT, V, C); // dlnf = dlogits · wte
  matmulBackwardWeight(dWte, dLogits, acts.lnf, BT, V, C); // dwte += dlogits^T · lnf
  dResidual.fill(0, 0, BT * C);
  layernormBackward(
    dResidual,
    dLnfWeight,
    dLnfBias,
    dLn,
    x,
    lnfWeight,
    acts.lnfMean,
    acts.lnfRstd,
    BT,
    C,
  );
}
