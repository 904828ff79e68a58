/**
 * Model files: a GPT with its vocabulary and training facts to and from safetensors bytes, with
 * GPT-2 tensor names and shapes and deterministic metadata.
 *
 * @module
 */

import { WeightsError } from "./errors.ts";
import { GPT, type GPTOptions, type ModelConfig, parameterCount, parameterSpecs } from "./model.ts";
import { validateConfig } from "./options.ts";
import { decodeSafetensors, encodeSafetensors, quote, type TensorEntry } from "./safetensors.ts";
import { Tokenizer } from "./tokenizer.ts";

/**
 * The largest header a BareGPT model file may have: 4 MiB. The biggest model the validator
 * allows (256 layers) has about 3,100 tensor entries (9,300 in a checkpoint, about 1 MB) and a
 * vocabulary of at most 65,536 characters (under 1 MB as JSON in JSON), so a longer header is not
 * a BareGPT file; it is refused before its JSON is decoded.
 */
export const MAX_MODEL_HEADER_BYTES = 4 * 2 ** 20;

/** The bytes the kernels address: a 32-bit WebAssembly memory, 4 GiB. */
export const KERNEL_ADDRESS_BYTES = 2 ** 32;

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
  const file = checkModelFile(bytes);
  return buildModel(file, options);
}

/** A model file whose config, vocabulary and tensors are checked, before anything is allocated. */
export interface CheckedModelFile {
  config: ModelConfig;
  tokenizer: Tokenizer;
  facts: TrainingFacts;
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
}

/**
 * Decodes a model file (a header of at most {@linkcode MAX_MODEL_HEADER_BYTES}) and checks its
 * config, vocabulary and tensors without allocating what the config implies. Throws WeightsError.
 */
export function checkModelFile(bytes: Uint8Array): CheckedModelFile {
  const { tensors, metadata } = decodeSafetensors(bytes, {
    maxHeaderBytes: MAX_MODEL_HEADER_BYTES,
  });
  const checkpoint = metadata.adam_t !== undefined;
  return checkModelTensors(tensors, metadata, checkpoint ? "optimizer." : undefined);
}

/** The model of a checked file: allocates its parameters and copies the tensors in. */
export function buildModel(file: CheckedModelFile, options: GPTOptions = {}): GPT {
  const { config, tokenizer, facts, tensors } = file;
  const model = new GPT(config, { grads: false, tokenizer, facts, ...options });
  try {
    readParams(tensors, config, model.flat);
  } catch (e) {
    model.dispose(); // a failed load gives its memory back
    throw e;
  }
  return model;
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
  return buildModel(checkModelTensors(tensors, metadata, otherPrefix), options);
}

/**
 * Checks decoded safetensors as a model file: config, vocab, every tensor, and that what the
 * config implies is within the kernels' 4 GiB, all before anything of the config's size is
 * allocated. Throws WeightsError.
 */
export function checkModelTensors(
  tensors: Map<string, { shape: number[]; data: Float32Array }>,
  metadata: Record<string, string>,
  otherPrefix?: string,
): CheckedModelFile {
  const config = configFromJSON(metadata.config);
  // what the config implies, against the kernels' memory and the file's tensors, first: a
  // 150-byte file may declare 256 layers of width 8192 (200 billion parameters)
  const count = parameterCount(config);
  if (4 * count > KERNEL_ADDRESS_BYTES) {
    let held = 0;
    for (const [name, t] of tensors) {
      if (!(otherPrefix && name.startsWith(otherPrefix))) held += t.data.length;
    }
    throw new WeightsError(
      `weights file's config (${describeConfig(config)}) implies ${
        count.toLocaleString("en-US")
      } parameters (${gib(4 * count)} GiB), more than the 4 GiB the kernels address, and the ` +
        `file holds ${held.toLocaleString("en-US")}; it is not a BareGPT model; ` +
        `re-download or re-train it`,
    );
  }
  const tokenizer = vocabFromJSON(metadata.vocab, config.vocabSize);
  const expected = new Set(parameterSpecs(config).map((s) => s.name));
  for (const name of tensors.keys()) {
    if (!expected.has(name) && !(otherPrefix && name.startsWith(otherPrefix))) {
      throw new WeightsError(
        `weights file has an unexpected tensor ${
          quote(name)
        }; it is not a BareGPT model of this config`,
      );
    }
  }
  const facts: TrainingFacts = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (k === "config" || k === "vocab") continue;
    if (otherPrefix === undefined || !CHECKPOINT_STATE.has(k)) facts[k] = v;
  }
  checkTensors(tensors, config, ""); // before allocating what the config implies
  return { config, tokenizer, facts, tensors };
}

/** A config in the file's key names, for messages: "vocab_size 65, block_size 128, ...". */
export function describeConfig(c: ModelConfig): string {
  return (Object.keys(CONFIG_KEYS) as (keyof ModelConfig)[])
    .map((k) => `${CONFIG_KEYS[k]} ${c[k]}`)
    .join(", ");
}

/** Bytes in GiB for messages: one decimal, at least 0.1. */
export function gib(bytes: number): string {
  return Math.max(0.1, bytes / 2 ** 30).toFixed(1);
}
