/**
 * Options: the ranges and defaults of a model's shape and of a training run's settings, and
 * their one validator. The CLI's flags take their ranges from here; errors name the option
 * (`dModel`), and the CLI rewords them as flags (`--d-model`).
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { ModelConfig } from "./model.ts";

/** The range of a numeric option and its default. */
export interface OptionSpec {
  /** The smallest value allowed. */
  min: number;
  /** The largest value allowed. */
  max: number;
  /** Whether only whole numbers are allowed. */
  integer: boolean;
  /** The default (undefined: decided elsewhere, e.g. threads from the cores). */
  default?: number;
}

const int = (min: number, max: number, value?: number): OptionSpec => ({
  min,
  max,
  integer: true,
  default: value,
});
const real = (min: number, max: number, value: number): OptionSpec => ({
  min,
  max,
  integer: false,
  default: value,
});

/** BareGPT's default size: block 128, width 256, 2 layers of 4 heads (about 1.6M parameters). */
export const MODEL_OPTIONS: Record<
  "vocabSize" | "blockSize" | "dModel" | "nLayers" | "nHeads" | "seed",
  OptionSpec
> = {
  vocabSize: int(1, 65536),
  blockSize: int(1, 8192, 128),
  dModel: int(1, 8192, 256),
  nLayers: int(1, 256, 2),
  nHeads: int(1, 8192, 4),
  /** Seed of the initialization (GPT-2's scheme). */
  seed: int(0, Number.MAX_SAFE_INTEGER, 0),
};

/** The training settings: the defaults are the recipe of the shipped weights. */
export const TRAIN_OPTIONS: Record<
  Exclude<keyof TrainSettings, "decay" | "optimizer">,
  OptionSpec
> = {
  batch: int(1, 4096, 16),
  steps: int(1, 1e9, 2600),
  lr: real(0, 10, 8e-3),
  minLr: real(0, 10, 0),
  warmup: int(0, 1e9, 50),
  cooldown: real(0, 1, 1),
  weightDecay: real(0, 10, 0.3),
  beta1: real(0, 0.9999, 0.8),
  beta2: real(0, 0.9999, 0.95),
  clip: real(0, 1e9, 1),
  muonLr: real(0, 10, 4e-3),
  muonMomentum: real(0, 0.9999, 0.95),
  muonSteps: int(1, 20, 5),
  dropout: real(0, 0.9, 0),
  seed: int(0, Number.MAX_SAFE_INTEGER, 0),
  threads: int(1, 256, 1),
};

/** The learning-rate decays after warmup. */
export const DECAYS: readonly ("linear" | "cosine" | "1-sqrt")[] = ["linear", "cosine", "1-sqrt"];

/**
 * The optimizers, the default first: Muon for the hidden matrices and AdamW for the rest, or AdamW
 * for every tensor.
 */
export const OPTIMIZERS: readonly ("muon" | "adamw")[] = ["muon", "adamw"];

/** How an option's range reads in an error: "an integer from 1 to 4096". */
export function describeRange(s: OptionSpec): string {
  return `${s.integer ? "an integer" : "a number"} from ${s.min} to ${s.max}`;
}

/**
 * A value as an error names it: "the number 123", "the string \"32\"", "null", "an array".
 *
 * @example
 * ```ts
 * import { describeValue } from "./options.ts";
 * console.log(describeValue("32")); // the string "32"
 * ```
 */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (Array.isArray(value)) return "an array";
  switch (typeof value) {
    case "string": {
      const shown = JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
      return `the string ${shown}`;
    }
    case "number":
    case "bigint":
      return `the ${typeof value} ${String(value)}`;
    case "boolean":
      return `the boolean ${value}`;
    case "symbol":
      return "a symbol";
    case "function":
      return "a function";
  }
  const kind = Object.getPrototypeOf(value)?.constructor?.name;
  return typeof kind === "string" && kind !== "" && kind !== "Object" ? `a ${kind}` : "an object";
}

/** The InputError of a value of the wrong type: "prompt must be a string, got the number 123". */
export function typeError(name: string, expected: string, value: unknown): InputError {
  return new InputError(`${name} must be ${expected}, got ${describeValue(value)}`, {
    options: [name],
  });
}

/** The sampling options, shared by every call that samples. */
const SAMPLING_NAMES = ["temperature", "topK", "topP"];

/** The option names of each library call: any other name is an InputError (a typo, not ignored). */
export const OPTION_NAMES = {
  createModel: Object.keys(MODEL_OPTIONS).filter((name) => name !== "vocabSize"),
  createTrainer: [...Object.keys(TRAIN_OPTIONS), "decay", "optimizer"],
  run: ["steps", "onProgress", "signal"],
  evaluate: ["maxWindows", "split", "unknown", "onProgress", "threads"],
  generate: ["prompt", "tokens", "seed", "signal", ...SAMPLING_NAMES],
  nextCharDistribution: ["top", ...SAMPLING_NAMES],
  attentionMap: ["layer", "promptLength"],
  inspect: ["tokens", "top", "layer", "seed", ...SAMPLING_NAMES],
  inspectSteps: ["tokens", "top", "layer", "seed", ...SAMPLING_NAMES],
  inspectStream: ["tokens", "top", "layer", "seed", ...SAMPLING_NAMES],
};

/**
 * The options argument of a library call: undefined is `{}`; anything but a plain object (an
 * array, null, a number) is an InputError naming the argument, and so is a name that `call`
 * does not take ({@link OPTION_NAMES}).
 */
export function checkOptions<T extends object>(
  value: T | undefined,
  name = "options",
  call?: keyof typeof OPTION_NAMES,
): T {
  if (value === undefined) return {} as T;
  const proto = value !== null && typeof value === "object"
    ? Object.getPrototypeOf(value)
    : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw typeError(name, "an object", value);
  }
  if (call !== undefined) {
    const known: readonly string[] = OPTION_NAMES[call];
    const unknown = Object.keys(value).filter((key) => !known.includes(key));
    if (unknown.length > 0) {
      throw new InputError(
        `${call} has no option ${
          unknown.map((key) => JSON.stringify(key)).join(", ")
        }; its options are ${known.join(", ")}`,
        { options: unknown },
      );
    }
  }
  return value;
}

/** A string argument or option; InputError naming it otherwise. */
export function checkString(name: string, value: unknown): string {
  if (typeof value !== "string") throw typeError(name, "a string", value);
  return value;
}

/** A text or its token ids (a Uint16Array); InputError naming it otherwise. */
export function checkText(name: string, value: unknown): string | Uint16Array {
  if (typeof value !== "string" && !(value instanceof Uint16Array)) {
    throw typeError(name, "a string or a Uint16Array of token ids", value);
  }
  return value;
}

/** An optional callback; InputError naming it when it is given and is not a function. */
export function checkFunction(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "function") {
    throw typeError(name, "a function", value);
  }
}

/** An optional number (its range is checked where it is used); InputError naming it otherwise. */
export function checkNumber(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== "number") throw typeError(name, "a number", value);
}

/** An optional AbortSignal; InputError naming it otherwise. */
export function checkSignal(name: string, value: unknown): void {
  if (value !== undefined && !(value instanceof AbortSignal)) {
    throw typeError(name, "an AbortSignal", value);
  }
}

/** An optional choice among `choices`; InputError naming it otherwise. */
export function checkChoice(name: string, value: unknown, choices: readonly string[]): void {
  if (value === undefined || choices.includes(value as string)) return;
  const list = choices.map((c) => JSON.stringify(c)).join(" or ");
  throw typeof value === "string"
    ? new InputError(`${name} ${JSON.stringify(value)} is not a choice; use ${list}`, {
      options: [name],
    })
    : typeError(name, list, value);
}

/** Throws InputError (naming the option) unless `value` is within the spec's range. */
export function checkOption(name: string, value: unknown, s: OptionSpec): number {
  if (typeof value !== "number") {
    throw typeError(name, s.integer ? "an integer" : "a number", value);
  }
  const ok = typeof value === "number" && value >= s.min && value <= s.max &&
    (s.integer ? Number.isSafeInteger(value) : Number.isFinite(value));
  if (!ok) {
    throw new InputError(`${name} ${value} is out of range; use ${describeRange(s)}`, {
      options: [name],
    });
  }
  return value;
}

/** The default model shape for a vocabulary of `vocabSize` characters. */
export function defaultConfig(vocabSize: number): ModelConfig {
  const o = MODEL_OPTIONS;
  return {
    vocabSize,
    blockSize: o.blockSize.default!,
    dModel: o.dModel.default!,
    nLayers: o.nLayers.default!,
    nHeads: o.nHeads.default!,
  };
}

/** Throws InputError when a configuration cannot make a model. */
export function validateConfig(c: ModelConfig): void {
  for (const key of ["vocabSize", "blockSize", "dModel", "nLayers", "nHeads"] as const) {
    checkOption(key, c[key], MODEL_OPTIONS[key]);
  }
  if (c.dModel % c.nHeads !== 0) {
    throw new InputError(
      `dModel ${c.dModel} is not divisible by nHeads ${c.nHeads}; choose nHeads that divides it`,
      { options: ["dModel", "nHeads"] },
    );
  }
}

/** The training settings of a run, every one given (the library's `TrainerOptions`). */
export type TrainSettings = Required<TrainerOptions>;

/**
 * The settings of a run: each option given is checked against its range, each missing one takes
 * its default.
 */
export function trainSettings(
  options: Partial<Record<keyof TrainSettings, unknown>>,
): TrainSettings {
  const o = checkOptions(options);
  const out: Record<string, number> = {};
  for (const [name, spec] of Object.entries(TRAIN_OPTIONS)) {
    const value = o[name as keyof TrainSettings];
    out[name] = value === undefined ? spec.default! : checkOption(name, value, spec);
  }
  if (!(out.lr > 0)) {
    throw new InputError("lr is 0; use a positive learning rate", { options: ["lr"] });
  }
  if (out.minLr > out.lr) {
    throw new InputError(
      `minLr ${out.minLr} is above lr ${out.lr}; the schedule decays from lr down to minLr: give a minLr of at most lr`,
      { options: ["minLr", "lr"] },
    );
  }
  if (out.muonLr === 0) {
    throw new InputError("muonLr is 0; use a positive learning rate", { options: ["muonLr"] });
  }
  const decay = choice("decay", o.decay, DECAYS, "a schedule");
  const optimizer = choice("optimizer", o.optimizer, OPTIMIZERS, "an optimizer");
  // a warmup longer than the run would never reach the peak: it is capped at the steps
  return { ...out, warmup: Math.min(out.warmup, out.steps), decay, optimizer } as TrainSettings;
}

/** A choice among `choices` (undefined: the first), or an InputError naming the option. */
function choice(name: string, value: unknown, choices: readonly string[], what: string): string {
  if (value === undefined) return choices[0];
  if (typeof value !== "string") {
    throw typeError(name, choices.map((c) => JSON.stringify(c)).join(" or "), value);
  }
  if (!choices.includes(value)) {
    throw new InputError(
      `${name} ${JSON.stringify(value)} is not ${what}; use ${choices.join(" or ")}`,
      {
        options: [name],
      },
    );
  }
  return value;
}

/** The ranges of the sampling options (topK: up to the vocabulary). */
export const SAMPLING_OPTIONS: Record<
  "temperature" | "topK" | "topP" | "tokens" | "seed",
  OptionSpec
> = {
  temperature: real(0, 100, 1),
  topK: int(0, 65536, 0),
  topP: real(0, 1, 1),
  tokens: int(0, 1e9, 1000),
  seed: int(0, 2 ** 32 - 1),
};

/** The ranges of step-by-step inspection (top: up to the vocabulary). */
export const INSPECT_OPTIONS: Record<"tokens" | "top", OptionSpec> = {
  tokens: int(0, 10000, 20),
  top: int(1, 65536, 5),
};

/** Throws InputError when sampling options are out of range. */
export function checkSampling(
  o: { temperature?: number; topK?: number; topP?: number },
  vocabSize: number,
): void {
  const s = SAMPLING_OPTIONS;
  checkOptions(o);
  if (o.temperature !== undefined) checkOption("temperature", o.temperature, s.temperature);
  if (o.topK !== undefined) checkOption("topK", o.topK, { ...s.topK, max: vocabSize });
  if (o.topP !== undefined && !(checkOption("topP", o.topP, s.topP) > 0)) {
    throw new InputError(`topP ${o.topP} is out of range; use a number above 0 and at most 1`, {
      options: ["topP"],
    });
  }
}

/** The options of an evaluation, their types checked (the ranges are checked where used). */
export function checkEvaluateOptions(options: EvaluateOptions | undefined): EvaluateOptions {
  const o = checkOptions(options, "options", "evaluate");
  checkNumber("maxWindows", o.maxWindows);
  checkNumber("threads", o.threads);
  checkChoice("split", o.split, ["all", "val"]);
  checkChoice("unknown", o.unknown, ["error", "drop"]);
  checkFunction("onProgress", o.onProgress);
  return o;
}

/**
 * Options of a trainer. Every field has a default: the recipe of the shipped weights (Muon and
 * AdamW, linear warmup, then a linear decay to `minLr` at step `steps`).
 *
 * @example
 * ```ts
 * import type { TrainerOptions } from "@baregpt/baregpt";
 * const quick: TrainerOptions = { steps: 200, batch: 8, lr: 3e-3, warmup: 20, seed: 1 };
 * console.log(quick);
 * ```
 */
export interface TrainerOptions {
  /** Sequences of blockSize characters per step. Default 16. */
  batch?: number;
  /** Length of the learning-rate schedule, and the steps `run` takes. Default 2600. */
  steps?: number;
  /** Peak learning rate (AdamW's tensors, and the schedule's peak). Default 8e-3. */
  lr?: number;
  /** Final learning rate of the decay. Default 0. */
  minLr?: number;
  /** Shape of the decay: "linear" (default), "cosine" or "1-sqrt" (1 - sqrt of the progress). */
  decay?: "cosine" | "linear" | "1-sqrt";
  /** Steps of linear warmup (capped at `steps`). Default 50. */
  warmup?: number;
  /**
   * Fraction of the steps after warmup spent decaying: 1 (the default) decays all the way, 0.3
   * holds the peak for the first 70% (warmup-stable-decay).
   */
  cooldown?: number;
  /**
   * "muon" (the default): Muon for the hidden matrices (each block's four projections), AdamW for
   * the embeddings, biases and LayerNorms. "adamw": AdamW for every tensor.
   */
  optimizer?: "adamw" | "muon";
  /** Muon's peak learning rate of the hidden matrices (the same schedule's shape). Default 4e-3. */
  muonLr?: number;
  /** Muon's momentum. Default 0.95. */
  muonMomentum?: number;
  /** Muon's Newton–Schulz iterations. Default 5. */
  muonSteps?: number;
  /** Decoupled weight decay, on 2-D weights only (AdamW's and Muon's). Default 0.3. */
  weightDecay?: number;
  /** AdamW decay rate of the gradient's running average. Default 0.8. */
  beta1?: number;
  /** AdamW decay rate of the squared gradient's running average. Default 0.95. */
  beta2?: number;
  /** Clip the gradient's global L2 norm to this (0: off). Default 1. */
  clip?: number;
  /** Dropout on the embedding and every attention and MLP output (0: off). Default 0. */
  dropout?: number;
  /** The run's seed: batches and dropout masks are drawn from seed + 1. Default 0. */
  seed?: number;
  /**
   * Threads sharing each batch (workers over shared memory; fast kernels only; 1 on webgpu).
   * Default 1.
   */
  threads?: number;
}

/** Options of evaluation. */
export interface EvaluateOptions {
  /** Evaluate only this many evenly spaced windows (an estimate). Default: every window. */
  maxWindows?: number;
  /** "all" (the default): the whole text given; "val": its last 10% (a trainer without a text evaluates its own validation split). */
  split?: "all" | "val";
  /**
   * What to do with characters of a text outside the model's vocabulary: "error" (the default)
   * throws an InputError listing them; "drop" leaves them out first (scoring the rest) and
   * reports how many in `dropped`. Applies to texts, not token ids.
   */
  unknown?: "error" | "drop";
  /** Called after every batch of windows with how many are done, of how many. Default none. */
  onProgress?: (windowsDone: number, windowsTotal: number) => void;
  /**
   * Threads for the library's `evaluate` (workers over shared memory, fast kernels only; a
   * trainer uses its own). The loss then differs in its last bits from one thread's. Default 1.
   */
  threads?: number;
}

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
 * Options of `Trainer.run`.
 *
 * @example
 * ```ts
 * import type { RunOptions } from "@baregpt/baregpt";
 * const options: RunOptions = { steps: 100, signal: AbortSignal.timeout(60_000) };
 * console.log(options.steps);
 * ```
 */
export interface RunOptions {
  /** Steps to take. Default: the rest of the schedule. */
  steps?: number;
  /** Called after every step (awaited when it returns a promise). Default: none. */
  onProgress?: (info: StepInfo) => void | Promise<void>;
  /** Stops the run after the step in progress (no error is thrown). Default: none. */
  signal?: AbortSignal;
}

/**
 * What `Trainer.run` did.
 *
 * @example
 * ```ts
 * import type { RunResult } from "@baregpt/baregpt";
 * const r: RunResult = { steps: 100, loss: 2.1, aborted: false };
 * console.log(r.aborted ? "stopped early" : `done, loss ${r.loss}`);
 * ```
 */
export interface RunResult {
  /** Steps taken by this run. */
  steps: number;
  /** Loss of the last step taken (NaN when none was). */
  loss: number;
  /** True when the signal stopped the run early. */
  aborted: boolean;
}
