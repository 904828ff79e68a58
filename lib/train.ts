/**
 * The training step: the gradient of the mean loss of a batch (forward, then backward), then
 * the update (clip the gradient's norm, then AdamW, or Muon and AdamW, at the schedule's learning
 * rate). The trainer (`trainer.ts`) draws the batches, spreads them over threads, keeps the state.
 *
 * @module
 */

import { AdamW, clipGradNorm, learningRate, type Schedule } from "./adam.ts";
import type { Pass } from "./layers.ts";
import { type Activations, backward, forward, type GPT } from "./model.ts";
import type { Muon } from "./muon.ts";
import type { WorkerPool } from "./pool.ts";

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

/** Step `step` (0-based) after the gradients: clip them, update (Muon's at muonLr · lr / peak). */
export async function update(
  model: GPT,
  optimizer: AdamW | Muon,
  schedule: Schedule,
  o: { clip: number; muonLr: number },
  step: number,
  pool: WorkerPool | null = null,
): Promise<{ lr: number; gradNorm: number }> {
  const gradNorm = clipGradNorm(model.gradFlat, o.clip);
  const lr = learningRate(schedule, step);
  if (optimizer instanceof AdamW) optimizer.step(model.flat, model.gradFlat, lr);
  else {
    const hiddenLr = (o.muonLr * lr) / schedule.lr, threads = pool?.orthogonalizer(optimizer);
    await optimizer.step(model.flat, model.gradFlat, lr, hiddenLr, threads);
  }
  return { lr, gradNorm };
}
