/**
 * The `train` command that a run is equivalent to: what the CLI stores as the `command` fact of
 * the weights it writes, and what the browser page stores for a run it trains, so that running
 * it (with the same text as `--data`) writes the same tensors.
 *
 * @module
 */

import { DECAYS, OPTIMIZERS, TRAIN_OPTIONS } from "./options.ts";
import type { TrainerOptions } from "./trainer.ts";
import type { KernelChoice } from "./webgpu/backend.ts";

/**
 * A run: the text's name, the base model or the model's shape, and the training options as they
 * were given to `createTrainer` (one left out is written with its default; a warmup longer than
 * the run is written as given, and capped by the trainer).
 */
export interface TrainCommand extends Omit<TrainerOptions, "threads"> {
  /** The corpus, as `--data` names it. */
  data: string;
  /** The base model, as `--init` names it (fine-tuning: the shape comes from it). */
  init?: string;
  /** The model's shape (a new model; ignored with `init`). */
  shape?: { blockSize: number; dModel: number; nLayers: number; nHeads: number };
  /** Threads the run used. */
  threads: number;
  /**
   * The kernels, written as `--kernels` when given (leave it out for the fastest WebAssembly
   * tier): a WebAssembly tier or "webgpu".
   */
  kernels?: KernelChoice;
}

/** The training flags in the CLI's order, each with the option it sets. */
const FLAGS: [flag: string, option: keyof Omit<TrainerOptions, "threads">][] = [
  ["steps", "steps"],
  ["batch", "batch"],
  ["lr", "lr"],
  ["min-lr", "minLr"],
  ["decay", "decay"],
  ["warmup", "warmup"],
  ["cooldown", "cooldown"],
  ["optimizer", "optimizer"],
  ["muon-lr", "muonLr"],
  ["muon-momentum", "muonMomentum"],
  ["muon-steps", "muonSteps"],
  ["weight-decay", "weightDecay"],
  ["beta1", "beta1"],
  ["beta2", "beta2"],
  ["clip", "clip"],
  ["dropout", "dropout"],
  ["seed", "seed"],
];

/**
 * The `train` command line of a run (without `--out`): `train --data ... --steps ...`, each flag
 * followed by its value, in the CLI's order, every training option written out.
 *
 * @example
 * ```ts
 * import { trainCommand } from "@baregpt/baregpt";
 * const command = trainCommand({
 *   data: "notes.txt",
 *   shape: { blockSize: 32, dModel: 64, nLayers: 2, nHeads: 4 },
 *   steps: 500,
 *   threads: 2,
 * });
 * console.log(command.startsWith("train --data notes.txt --block 32")); // true
 * ```
 */
export function trainCommand(run: TrainCommand): string {
  const shape = run.shape;
  const value = (option: (typeof FLAGS)[number][1]) =>
    run[option] ??
      (option === "decay"
        ? DECAYS[0]
        : option === "optimizer"
        ? OPTIMIZERS[0]
        : TRAIN_OPTIONS[option].default);
  // Muon's settings only where Muon runs
  const flags = FLAGS.filter(([flag]) =>
    !flag.startsWith("muon-") || value("optimizer") === "muon"
  );
  return [
    "train",
    `--data ${run.data}`,
    ...(run.init !== undefined ? [`--init ${run.init}`] : shape === undefined ? [] : [
      `--block ${shape.blockSize}`,
      `--d-model ${shape.dModel}`,
      `--layers ${shape.nLayers}`,
      `--heads ${shape.nHeads}`,
    ]),
    ...flags.map(([flag, option]) => `--${flag} ${value(option)}`),
    `--threads ${run.threads}`,
    ...(run.kernels !== undefined ? [`--kernels ${run.kernels}`] : []),
  ].join(" ");
}
