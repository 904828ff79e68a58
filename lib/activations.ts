/**
 * The buffers of a forward and backward, allocated once: every activation the backward needs,
 * the gradients of the activations, and the scratch of the layers; and the pass over whole
 * sequences that training and evaluation run.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { Arena, attentionScratchSize, type FloatArray, kernelTier } from "./kernels/dispatch.ts";
import type { BlockActs, BlockScratch, Dropout, HeadActs, NormActs, Pass } from "./layers.ts";
import { type ModelConfig, parameterCount } from "./model.ts";

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
    this.head = {
      lnf: norm(),
      logits: f32(M * V),
      probs: f32(M * V),
      losses: f32(M),
      targets: this.targets,
      dLogits: this.dLogits,
      dLn: this.scratch.dLn,
    };
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

/**
 * Bytes the Activations of B sequences take in a kernel arena (with dropout masks, and with the
 * backward's buffers unless `backward` is false).
 */
export function activationBytes(
  c: ModelConfig,
  B: number,
  dropout = false,
  backward = true,
): number {
  let bytes = 0;
  const f32 = (n: number) => (bytes += Arena.size(n * 4), new Float32Array(0));
  const u16 = (n: number) => (bytes += Arena.size(n * 2), new Uint16Array(0));
  new Activations(c, B, f32, u16, dropout, backward);
  return bytes;
}

/** What a model's buffers take in the kernels' memory, for {@link kernelBytes}. */
export interface MemoryUse {
  /** Gradients (a model that trains). Default false. */
  grads?: boolean;
  /** AdamW's two moments, and the activations of batches of this many sequences. Default 0. */
  batch?: number;
  /** Threads sharing the batch: each extra one has its own gradients. Default 1. */
  threads?: number;
  /** KV caches (generation, inspection). Default 0. */
  caches?: number;
}

/** Bytes of the kernels' memory a model of `c` needs for the given use. */
export function kernelBytes(c: ModelConfig, use: MemoryUse): number {
  const n = parameterCount(c), batch = use.batch ?? 0, threads = use.threads ?? 1;
  // training: gradients, AdamW's m and v, each worker's gradients, Muon's update and each
  // thread's Newton–Schulz scratch (muon.ts: its largest matrix, 4C x C, and two C x C)
  const muon = batch > 0 ? n + threads * 6 * c.dModel ** 2 : 0;
  const floats = muon +
    n * (1 + (use.grads || batch > 0 ? 1 : 0) + (batch > 0 ? 2 + threads - 1 : 0));
  const acts = batch > 0 ? activationBytes(c, batch) : 0;
  return Arena.size(4 * floats) + acts + (use.caches ?? 0) * activationBytes(c, 1, false, false);
}

/** The WebAssembly kernels address at most 4 GiB: refuse a run that cannot fit, up front. */
export function checkKernelMemory(
  model: { config: ModelConfig; parameterCount: number },
  batch: number,
  threads: number,
): void {
  if (kernelTier() === "js") return;
  const c = model.config, bytes = kernelBytes(c, { batch, threads }) + 64 * 2 ** 20;
  if (bytes > 2 ** 32) {
    throw new InputError(
      `this model (${
        model.parameterCount.toLocaleString("en-US")
      } parameters, batch ${batch} x ${c.blockSize}) needs about ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB, more than the 4 GiB the WebAssembly kernels can address; use a smaller dModel, nLayers, blockSize or batch`,
      { options: ["dModel", "nLayers", "blockSize", "batch"] },
    );
  }
}
