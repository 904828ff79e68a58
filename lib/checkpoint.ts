/**
 * Training checkpoints: the whole state of a run (weights, both AdamW moments, the step, the
 * update count and the batch generator's state) as a safetensors file, and the checks that a
 * checkpoint belongs to the run that resumes it.
 *
 * @module
 */

import { BareGPTError, InputError, WeightsError } from "./errors.ts";
import type { FloatArray } from "./kernels/dispatch.ts";
import type { GPT, ModelConfig } from "./model.ts";
import type { Rng } from "./rng.ts";
import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
import {
  MAX_MODEL_HEADER_BYTES,
  modelFromTensors,
  modelMetadata,
  modelTensors,
  readParams,
} from "./weights.ts";

/**
 * An optimizer's state in a checkpoint: AdamW's two moments and its update count. Muon keeps its
 * momentum of the hidden matrices in m (their v stays zero).
 */
export interface OptimizerState {
  m: FloatArray;
  v: FloatArray;
  t: number;
}

/**
 * The value of a setting that a checkpoint's train_settings lacks: it was made before the setting
 * existed, and so with the only behaviour there was then.
 */
const SETTINGS_BEFORE: Record<string, number | string> = { optimizer: "adamw", cooldown: 1 };

/** True when every value of `a` is finite. */
export function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return false;
  }
  return true;
}

/**
 * The checkpoint bytes of a run's state, with `facts` in the metadata. Throws BareGPTError when
 * the state holds NaN or Inf (training diverged), so a good checkpoint is never replaced by a
 * poisoned one.
 */
export function encodeCheckpoint(
  model: GPT,
  optimizer: OptimizerState,
  rng: Rng,
  step: number,
  facts: Record<string, string>,
): Uint8Array {
  if (!allFinite(model.flat) || !allFinite(optimizer.m) || !allFinite(optimizer.v)) {
    throw new BareGPTError(
      `the model or optimizer state holds NaN or Inf at step ${step} (training diverged); lower lr (the last checkpoint is kept)`,
      { options: ["lr"] },
    );
  }
  const tensors = [
    ...modelTensors(model),
    ...modelTensors(model, "optimizer.m.", optimizer.m),
    ...modelTensors(model, "optimizer.v.", optimizer.v),
  ];
  const bytes = encodeSafetensors(tensors, {
    ...modelMetadata(model, facts),
    step: String(step),
    adam_t: String(optimizer.t),
    rng_state: JSON.stringify([...rng.state]),
  });
  const header = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (header > MAX_MODEL_HEADER_BYTES) {
    // it could not be read back: refuse now rather than write a checkpoint that cannot resume
    throw new InputError(
      `the checkpoint's metadata takes ${header} bytes, more than the ${MAX_MODEL_HEADER_BYTES} a file may have; store shorter facts`,
    );
  }
  return bytes;
}

const CONFIG_KEYS = ["blockSize", "dModel", "nLayers", "nHeads", "vocabSize"] as const;

/** A decoded training checkpoint. */
export class Checkpoint {
  constructor(
    readonly config: ModelConfig,
    readonly vocab: readonly string[],
    readonly params: Float32Array,
    readonly m: Float32Array,
    readonly v: Float32Array,
    readonly step: number,
    readonly adamT: number,
    readonly rngState: Uint32Array,
    readonly metadata: Record<string, string>,
  ) {}

  /** Decodes and validates checkpoint bytes; throws WeightsError. */
  static decode(bytes: Uint8Array): Checkpoint {
    // the cap of a model file, which is sized for a checkpoint's entries: it loads as weights too
    const { tensors, metadata } = decodeSafetensors(bytes, {
      maxHeaderBytes: MAX_MODEL_HEADER_BYTES,
    });
    const model = modelFromTensors(tensors, metadata, { dtype: "float64" }, "optimizer.");
    const n = model.parameterCount;
    const m = new Float32Array(n), v = new Float32Array(n);
    readParams(tensors, model.config, m, "optimizer.m.");
    readParams(tensors, model.config, v, "optimizer.v.");
    // AdamW's second moment is a mean of squares: a negative one (a flipped sign bit) would put
    // NaN into the weights at the next step
    if (v.some((x) => x < 0)) {
      throw new WeightsError(
        "checkpoint's optimizer.v (AdamW's second moment) has negative values, which no run makes: it is corrupt; delete the checkpoint and start again",
      );
    }
    const settings = metadata.train_settings;
    if (settings !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(settings);
      } catch { /* reported below */ }
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
        throw new WeightsError(
          "checkpoint's train_settings is not a JSON object of settings: it is corrupt; delete the checkpoint and start again",
        );
      }
    }
    const int = (key: string) => {
      // digits only: Number() would also read "", " ", "0x10" or "1e300"
      const text = metadata[key] ?? "";
      const x = /^(0|[1-9][0-9]{0,15})$/.test(text) ? Number(text) : NaN;
      if (!Number.isSafeInteger(x)) {
        throw new WeightsError(
          `checkpoint's ${key} is missing or invalid; delete the checkpoint and start again`,
        );
      }
      return x;
    };
    let rng: unknown;
    try {
      rng = JSON.parse(metadata.rng_state ?? "");
    } catch { /* reported below */ }
    if (
      !Array.isArray(rng) || rng.length !== 4 ||
      rng.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffffffff)
    ) {
      throw new WeightsError(
        "checkpoint's rng_state is missing or invalid; delete the checkpoint and start again",
      );
    }
    if (rng.every((x) => x === 0)) {
      // xoshiro's one fixed point: every batch would be the first window, forever
      throw new WeightsError(
        "checkpoint's rng_state is all zero, a state no run reaches (the batch generator would be stuck): it is corrupt; delete the checkpoint and start again",
      );
    }
    const params = Float32Array.from(model.flat);
    const state = Uint32Array.from(rng);
    const vocab = model.tokenizer.vocab;
    return new Checkpoint(
      model.config,
      vocab,
      params,
      m,
      v,
      int("step"),
      int("adam_t"),
      state,
      metadata,
    );
  }

  /** Throws InputError when this checkpoint is of another model or corpus. */
  check(model: GPT, corpusSha: string): void {
    const c = model.config;
    const differ = CONFIG_KEYS.filter((k) => c[k] !== this.config[k]);
    const what = differ.map((k) => `${k} ${this.config[k]} there, ${c[k]} here`);
    if (what.length === 0 && JSON.stringify(model.tokenizer.vocab) !== JSON.stringify(this.vocab)) {
      what.push("the vocabularies differ");
    }
    if (what.length > 0) {
      throw new InputError(
        `the checkpoint is of another model (${
          what.join(", ")
        }); delete it or train with its settings`,
        { options: differ },
      );
    }
    if (this.metadata.corpus_sha256 !== corpusSha) {
      throw new InputError(
        "the checkpoint was made on another corpus (sha256 differs); delete it or train on that corpus",
      );
    }
  }

  /**
   * Throws InputError when the checkpoint is past the end of a run of `steps` steps: resuming
   * it would train backwards through the schedule (a corrupt file, or another run's).
   */
  checkStep(steps: number): void {
    if (this.step <= steps) return;
    let stored: unknown;
    try {
      stored = JSON.parse(this.metadata.train_settings ?? "null")?.steps;
    } catch { /* not stored */ }
    const own = Number.isSafeInteger(stored) && (stored as number) >= this.step
      ? `steps ${stored} (its own run's)`
      : `steps ${this.step} or more`;
    throw new InputError(
      `the checkpoint is at step ${this.step}, past the run's steps ${steps}; resume with ${own}, or delete it`,
      { options: ["steps"] },
    );
  }

  /**
   * Throws InputError when the checkpoint was made with other training settings (stored under
   * `train_settings` as JSON of option name to value): resuming them would not continue that run.
   * A checkpoint without stored settings is accepted.
   */
  checkSettings(settings: Record<string, number | string>): void {
    let stored: Record<string, unknown>;
    try {
      stored = JSON.parse(this.metadata.train_settings ?? "null");
    } catch {
      stored = {};
    }
    if (stored === null || typeof stored !== "object") return;
    stored = { ...SETTINGS_BEFORE, ...stored };
    const differ = Object.keys(settings).filter((k) => k in stored && stored[k] !== settings[k]);
    if (differ.length > 0) {
      const there = differ.map((k) => `${k} ${stored[k]}`).join(" ");
      const here = differ.map((k) => `${k} ${settings[k]}`).join(" ");
      throw new InputError(
        `the checkpoint was made with ${there}, this run has ${here}; resume with the checkpoint's settings or delete it`,
        { options: differ },
      );
    }
  }
}
