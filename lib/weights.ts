/**
 * Model files: a GPT with its vocabulary and training facts to and from safetensors bytes, with
 * GPT-2 tensor names and shapes and deterministic metadata.
 *
 * @module
 */

import { WeightsError } from "./errors.ts";
import { GPT, type GPTOptions, type ModelConfig, parameterSpecs } from "./model.ts";
import { validateConfig } from "./options.ts";
import { decodeSafetensors, encodeSafetensors, type TensorEntry } from "./safetensors.ts";
import { Tokenizer } from "./tokenizer.ts";

/** Training facts kept in a weights file's metadata (all optional, all strings in the file). */
export type TrainingFacts = Record<string, string>;

/** The config as stored in metadata (GPT-2 / nanoGPT key names). */
export function configToJSON(c: ModelConfig): string {
  return JSON.stringify({
    vocab_size: c.vocabSize,
    block_size: c.blockSize,
    d_model: c.dModel,
    n_layers: c.nLayers,
    n_heads: c.nHeads,
  });
}

/** Parses and validates a stored config; throws WeightsError. */
export function configFromJSON(text: string | undefined): ModelConfig {
  if (text === undefined) {
    throw new WeightsError(
      "weights file has no config in its metadata; it was not written by BareGPT",
    );
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new WeightsError(
      "weights file's config metadata is not valid JSON; re-download or re-train it",
    );
  }
  if (raw === null || typeof raw !== "object") {
    throw new WeightsError(
      "weights file's config metadata is not an object; re-download or re-train it",
    );
  }
  if (Array.isArray(raw)) {
    throw new WeightsError(
      "weights file's config metadata is a list, not an object; re-download or re-train it",
    );
  }
  // the types first, in the file's own key names: a string "16" is not the number 16
  for (const key of Object.values(CONFIG_KEYS)) {
    const value = raw[key];
    if (!(key in raw)) {
      throw new WeightsError(
        `weights file's config has no ${key}; it must be an integer; re-download or re-train it`,
      );
    }
    if (typeof value !== "number" || !Number.isSafeInteger(value)) {
      throw new WeightsError(
        `weights file's config ${key} is ${
          describeValue(value)
        }; it must be an integer; re-download or re-train it`,
      );
    }
  }
  const c = {
    vocabSize: raw.vocab_size,
    blockSize: raw.block_size,
    dModel: raw.d_model,
    nLayers: raw.n_layers,
    nHeads: raw.n_heads,
  } as ModelConfig;
  try {
    validateConfig(c);
  } catch (e) {
    // the library's option names (dModel) reworded as the file's keys (d_model)
    const message = (e as Error).message.replace(
      /\b(vocabSize|blockSize|dModel|nLayers|nHeads)\b/g,
      (name) => CONFIG_KEYS[name as keyof ModelConfig],
    );
    throw new WeightsError(`weights file's config is invalid: ${message}`);
  }
  return c;
}

/** The config's keys in a file (GPT-2 / nanoGPT names) by the library's names. */
const CONFIG_KEYS: Record<keyof ModelConfig, string> = {
  vocabSize: "vocab_size",
  blockSize: "block_size",
  dModel: "d_model",
  nLayers: "n_layers",
  nHeads: "n_heads",
};

/** A JSON value in words, for messages: `the string "16"`, `16.5`, `null`, `an object`. */
function describeValue(value: unknown): string {
  if (typeof value === "string") {
    const shown = value.length > 40 ? `${value.slice(0, 40)}...` : value;
    return `the string ${JSON.stringify(shown)}`;
  }
  if (typeof value === "number") return String(value);
  if (typeof value === "boolean") return `the boolean ${value}`;
  if (value === null) return "null";
  return Array.isArray(value) ? "a list" : "an object";
}

/** The tensors of a parameter buffer with their GPT-2 names, for safetensors (float32 copies). */
export function modelTensors(model: GPT, prefix = "", flat = model.flat): TensorEntry[] {
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const { name, shape } of parameterSpecs(model.config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    entries.push({
      name: prefix + name,
      shape,
      data: Float32Array.from(flat.subarray(offset, offset + n)),
    });
    offset += n;
  }
  return entries;
}

/** The metadata of a model file: config, vocab and the given facts. */
export function modelMetadata(model: GPT, facts: TrainingFacts = {}): Record<string, string> {
  const vocab = JSON.stringify(model.tokenizer.vocab);
  return { ...facts, config: configToJSON(model.config), vocab };
}

/**
 * Encodes a model, its vocabulary and training facts (default: the model's own) as safetensors
 * bytes; the same model and facts always give the same bytes.
 */
export function saveModel(model: GPT, facts: TrainingFacts = model.facts): Uint8Array {
  return encodeSafetensors(modelTensors(model), modelMetadata(model, facts));
}

/** Reads the vocabulary from metadata; throws WeightsError. */
function vocabFromJSON(text: string | undefined, vocabSize: number): Tokenizer {
  if (text === undefined) {
    throw new WeightsError("weights file has no vocab in its metadata; re-download or re-train it");
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new WeightsError(
      "weights file's vocab metadata is not valid JSON; re-download or re-train it",
    );
  }
  if (!Array.isArray(raw) || raw.some((ch) => typeof ch !== "string" || [...ch].length !== 1)) {
    throw new WeightsError(
      "weights file's vocab is not a list of single characters; re-download or re-train it",
    );
  }
  if (raw.length !== vocabSize) {
    throw new WeightsError(
      `weights file's vocab has ${raw.length} characters but its config says ${vocabSize}; re-download or re-train it`,
    );
  }
  try {
    return new Tokenizer(raw);
  } catch (e) {
    throw new WeightsError(`weights file's vocab is invalid: ${(e as Error).message}`);
  }
}

/**
 * Checks that `tensors` holds every parameter of config with its exact shape (names prefixed with
 * `prefix`) and copies them into flat. Throws WeightsError naming the first problem.
 */
export function readParams(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  config: ModelConfig,
  flat: Float32Array | Float64Array,
  prefix = "",
): void {
  checkTensors(tensors, config, prefix);
  let offset = 0;
  for (const { name } of parameterSpecs(config)) {
    const data = tensors.get(prefix + name)!.data;
    flat.set(data, offset);
    offset += data.length;
  }
}

/** Throws WeightsError unless `tensors` holds every parameter of config with its exact shape. */
function checkTensors(
  tensors: Map<string, { shape: number[] }>,
  config: ModelConfig,
  prefix: string,
): void {
  for (const { name, shape } of parameterSpecs(config)) {
    const t = tensors.get(prefix + name);
    if (t === undefined) {
      throw new WeightsError(
        `weights file lacks tensor ${prefix + name}; re-download or re-train it`,
      );
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new WeightsError(
        `tensor ${
          prefix + name
        } has shape [${t.shape}] but the config needs [${shape}]; re-download or re-train it`,
      );
    }
  }
}

/** Metadata only a training checkpoint has: its optimizer's and batch generator's state. */
const CHECKPOINT_STATE = new Set(["adam_t", "rng_state"]);

/**
 * Decodes and validates a model file. Throws WeightsError for anything wrong with it. A training
 * checkpoint (its metadata has `adam_t`) is read as its weights: its `optimizer.*` tensors and
 * optimizer state are ignored, so every command can sample or evaluate a `.ckpt`.
 */
export function loadModel(bytes: Uint8Array, options: GPTOptions = {}): GPT {
  const { tensors, metadata } = decodeSafetensors(bytes);
  const checkpoint = metadata.adam_t !== undefined;
  return modelFromTensors(tensors, metadata, options, checkpoint ? "optimizer." : undefined);
}

/**
 * A model from decoded safetensors: validates config, vocab and every tensor. Tensors whose names
 * start with `otherPrefix` (a checkpoint's optimizer state) are left for the caller.
 */
export function modelFromTensors(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  metadata: Record<string, string>,
  options: GPTOptions = {},
  otherPrefix?: string,
): GPT {
  const config = configFromJSON(metadata.config);
  const tokenizer = vocabFromJSON(metadata.vocab, config.vocabSize);
  const expected = new Set(parameterSpecs(config).map((s) => s.name));
  for (const name of tensors.keys()) {
    if (!expected.has(name) && !(otherPrefix && name.startsWith(otherPrefix))) {
      throw new WeightsError(
        `weights file has an unexpected tensor ${name}; it is not a BareGPT model of this config`,
      );
    }
  }
  const facts: TrainingFacts = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (k === "config" || k === "vocab") continue;
    if (otherPrefix === undefined || !CHECKPOINT_STATE.has(k)) facts[k] = v;
  }
  checkTensors(tensors, config, ""); // before allocating what the config implies
  const model = new GPT(config, { grads: false, tokenizer, facts, ...options });
  readParams(tensors, config, model.flat);
  return model;
}
