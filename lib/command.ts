/**
 * The `train` command that a run is equivalent to: what the CLI stores as the `command` fact of
 * the weights it writes, and what the browser page stores for a run it trains, so that running
 * it (with the same text as `--data`) writes the same tensors.
 *
 * @module
 */

import type { KernelTier } from "./kernels/mod.ts";

/**
 * A run's settings, as {@linkcode trainCommand} writes them: the text's name, the base model or
 * the model's shape, and every training option (as given: a warmup longer than the run is
 * written as given, and capped by the trainer).
 */
export interface TrainCommand {
  /** The corpus, as `--data` names it. */
  data: string;
  /** The base model, as `--init` names it (fine-tuning: the shape comes from it). */
  init?: string;
  /** The model's shape (a new model; ignored with `init`). */
  shape?: { blockSize: number; dModel: number; nLayers: number; nHeads: number };
  /** `--steps`. */
  steps: number;
  /** `--batch`. */
  batch: number;
  /** `--lr`. */
  lr: number;
  /** `--min-lr`. */
  minLr: number;
  /** `--decay`. */
  decay: "linear" | "cosine";
  /** `--warmup` (as given; the trainer caps it at the steps). */
  warmup: number;
  /** `--weight-decay`. */
  weightDecay: number;
  /** `--beta1`. */
  beta1: number;
  /** `--beta2`. */
  beta2: number;
  /** `--clip`. */
  clip: number;
  /** `--dropout`. */
  dropout: number;
  /** `--seed`. */
  seed: number;
  /** Threads the run used. */
  threads: number;
  /** The kernel tier, written as `--kernels` when given (leave it out for the fastest tier). */
  kernels?: KernelTier;
}

/**
 * The `train` command line of a run (without `--out`): `train --data ... --steps ...`, each flag
 * followed by its value, in the CLI's order.
 *
 * @example
 * ```ts
 * import { trainCommand } from "@baregpt/baregpt";
 * const command = trainCommand({
 *   data: "notes.txt", shape: { blockSize: 32, dModel: 64, nLayers: 2, nHeads: 4 },
 *   steps: 500, batch: 16, lr: 0.004, minLr: 0, decay: "linear", warmup: 50, weightDecay: 0.3,
 *   beta1: 0.8, beta2: 0.95, clip: 1, dropout: 0, seed: 0, threads: 2,
 * });
 * console.log(command.startsWith("train --data notes.txt --block 32")); // true
 * ```
 */
export function trainCommand(run: TrainCommand): string {
  const shape = run.shape;
  return [
    "train",
    `--data ${run.data}`,
    ...(run.init !== undefined ? [`--init ${run.init}`] : shape === undefined ? [] : [
      `--block ${shape.blockSize}`,
      `--d-model ${shape.dModel}`,
      `--layers ${shape.nLayers}`,
      `--heads ${shape.nHeads}`,
    ]),
    `--steps ${run.steps}`,
    `--batch ${run.batch}`,
    `--lr ${run.lr}`,
    `--min-lr ${run.minLr}`,
    `--decay ${run.decay}`,
    `--warmup ${run.warmup}`,
    `--weight-decay ${run.weightDecay}`,
    `--beta1 ${run.beta1}`,
    `--beta2 ${run.beta2}`,
    `--clip ${run.clip}`,
    `--dropout ${run.dropout}`,
    `--seed ${run.seed}`,
    `--threads ${run.threads}`,
    ...(run.kernels !== undefined ? [`--kernels ${run.kernels}`] : []),
  ].join(" ");
}
