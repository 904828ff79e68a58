/**
 * The training step: the gradient of the mean loss of a batch (forward, then backward), then
 * the update (clip the gradient's norm, AdamW at the schedule's learning rate). The trainer
 * (`trainer.ts`) draws the batches, spreads them over threads and keeps the state.
 *
 * @module
 */

import { type AdamW, clipGradNorm, learningRate, type Schedule } from "./adam.ts";
import type { Pass } from "./layers.ts";
import { type Activations, backward, forward, type GPT } from "./model.ts";

/** What one training step did. */
export interface StepInfo {
  /** Steps taken so far, this one included. */
  step: number;
  /** Mean cross-entropy of this step's batch (nats). */
  loss: number;
  /** Learning rate used. */
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/**
 * Zeroes the gradients, then accumulates those of lossScale · (sum of the losses) of the batch
 * in acts (inputs and targets [B, T]); returns the sum of the losses.
 */
export function gradients(model: GPT, acts: Activations, s: Pass, lossScale: number): number {
  model.zeroGrad();
  const lossSum = forward(model, acts, s);
  backward(model, acts, s, lossScale);
  return lossSum;
}

/** Step `step` (0-based) after the gradients: clip them, then one AdamW update. */
export function update(
  model: GPT,
  optimizer: AdamW,
  schedule: Schedule,
  clip: number,
  step: number,
): { lr: number; gradNorm: number } {
  const gradNorm = clipGradNorm(model.gradFlat, clip);
  const lr = learningRate(schedule, step);
  optimizer.step(model.flat, model.gradFlat, lr);
  return { lr, gradNorm };
}
