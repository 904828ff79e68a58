/**
 * The buffers of a forward and backward, allocated once: every activation the backward needs,
 * the gradients of the activations, and the scratch of the layers; and the pass over whole
 * sequences that training and evaluation run.
 *
 * @module
 */

import { attentionScratchSize, type FloatArray } from "./kernels/dispatch.ts";
import type { BlockActs, BlockScratch, Dropout, HeadActs, NormActs, Pass } from "./layers.ts";
import type { ModelConfig } from "./model.ts";

/** The activations, gradients and scratch of a forward and backward of up to B sequences. */
export class Activations {
  readonly B: number;
  readonly inputs: Uint16Array; // [B, T]
  readonly targets: Uint16Array; // [B, T]
  readonly encoded: FloatArray; // [B, T, C]  the embedding
  readonly encMask: FloatArray; // [B, T, C]  its dropout mask (empty without dropout)
  readonly blocks: BlockActs[];
  readonly head: HeadActs;
  readonly scratch: BlockScratch; // the backward's (empty buffers without a backward)
  readonly dResidual: FloatArray; // [B, T, C]
  readonly dLogits: FloatArray; // [B, T, V]

  constructor(
    c: ModelConfig,
    B: number,
    f32: (n: number) => FloatArray,
    u16: (n: number) => Uint16Array,
    dropout: boolean,
    backward: boolean,
  ) {
    const T = c.blockSize, C = c.dModel, V = c.vocabSize, H = c.nHeads, M = B * T;
    const norm = (): NormActs => ({ out: f32(M * C), mean: f32(M), rstd: f32(M) });
    const grad = (n: number) => f32(backward ? n : 0);
    this.B = B;
    this.encoded = f32(M * C);
    this.encMask = f32(dropout ? M * C : 0);
    this.blocks = Array.from({ length: c.nLayers }, (_, l) => ({
      ln1: norm(),
      qkv: f32(M * 3 * C),
      attnProbs: f32(B * H * T * T),
      attnOut: f32(M * C),
      residualAttn: f32(M * C),
      ln2: norm(),
      fc: f32(M * 4 * C),
      fcGelu: f32(M * 4 * C),
      residualOut: f32(M * C),
      masks: dropout ? { attn: f32(M * C), mlp: f32(M * C), site: 2 * l } : null,
    }));
    this.head = { lnf: norm(), logits: f32(M * V), probs: f32(M * V), losses: f32(M) };
    this.scratch = {
      dLn: grad(M * C),
      dQkv: grad(M * 3 * C),
      dAttnOut: grad(M * C),
      dFc: grad(M * 4 * C),
      dFcGelu: grad(M * 4 * C),
      attnScratch: grad(attentionScratchSize(T, C, H)),
      dDropped: grad(dropout ? M * C : 0),
    };
    this.dResidual = grad(M * C);
    this.dLogits = grad(M * V);
    this.inputs = u16(M);
    this.targets = u16(M);
  }
}

/** The pass over B whole sequences of a model's blockSize (training and evaluation). */
export function batchPass(c: ModelConfig, B: number, dropout: Dropout | null = null): Pass {
  const T = c.blockSize;
  return {
    B,
    T,
    C: c.dModel,
    H: c.nHeads,
    V: c.vocabSize,
    start: 0,
    rows: T,
    cached: false,
    dropout,
  };
}
