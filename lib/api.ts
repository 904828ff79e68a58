/**
 * The library's models, weights, kernels, training and evaluation: thin adapters over the core
 * (`model.ts`, `weights.ts`, `trainer.ts`, `evaluate.ts`) that `mod.ts` publishes. Web-standard
 * only: the library reads bytes and URLs (with `fetch`, which also reads `file:` URLs in Deno);
 * reading a path is the caller's job.
 *
 * @module
 */

import { decodeText } from "./data.ts";
import { BareGPTError, InputError, WeightsError } from "./errors.ts";
import { evaluateTokens, type Evaluation } from "./evaluate.ts";
import { Arena } from "./kernels/arena.ts";
import { defaultArena, kernelMemory, kernelTier, setupKernels } from "./kernels/dispatch.ts";
import { detectTier, type KernelTier } from "./kernels/mod.ts";
import { Activations, batchPass, forward, GPT, type ModelConfig, parameterCount } from "./model.ts";
import { checkOption, defaultConfig, MODEL_OPTIONS } from "./options.ts";
import { Tokenizer } from "./tokenizer.ts";
import { type EvaluateOptions, tokensOf, Trainer, type TrainerOptions } from "./trainer.ts";
import { loadModel, saveModel } from "./weights.ts";
import { allFinite } from "./checkpoint.ts";
import { splitIndex } from "./data.ts";

export type { KernelTier } from "./kernels/mod.ts";

/**
 * A GPT with its vocabulary and training facts: what {@linkcode loadWeights} and
 * {@linkcode createModel} return and every other function takes. Its parameters (`flat`, and
 * by GPT-2 name in `params.byName`) live in the kernels' memory; training updates them in place.
 *
 * @example
 * ```ts
 * import { createModel, type Model } from "@baregpt/baregpt";
 * const model: Model = createModel("hello world", { dModel: 32, nHeads: 2, nLayers: 1 });
 * console.log(model.config.vocabSize, model.parameterCount, model.tokenizer.vocab.join(""));
 * ```
 */
export type Model = GPT;

/** The model behind an argument; InputError for anything else. */
export function modelOf(model: unknown): GPT {
  if (!(model instanceof GPT)) {
    throw new InputError(
      "expected a model from loadWeights or createModel; other objects cannot be used as models",
    );
  }
  return model;
}

// ---------------------------------------------------------------------------------------------
// Kernels

/** True once this thread's kernels are chosen (by selectKernels or on first use). */
let kernelsChosen = false;
/** Models made or loaded through this module since the kernels were chosen. */
let modelsMade = 0;

/** Sets up the fastest kernels once, unless they were chosen already. */
function ensureKernels(): void {
  if (kernelsChosen) return;
  kernelsChosen = true;
  if (kernelTier() !== "js") return; // set up already (a test, a worker)
  setupKernels(detectTier() === "js" ? "js" : undefined);
}

/**
 * Options of {@linkcode selectKernels}.
 *
 * @example
 * ```ts
 * import { type KernelOptions, selectKernels } from "@baregpt/baregpt";
 * const options: KernelOptions = { shared: typeof SharedArrayBuffer !== "undefined" };
 * console.log(selectKernels(undefined, options));
 * ```
 */
export interface KernelOptions {
  /**
   * Use a shared WebAssembly memory (default true where SharedArrayBuffer exists): it grows as
   * needed and worker threads can train in it. A page without cross-origin isolation has no
   * shared memory: it gets a plain one, sized for each model as it is made or loaded.
   */
  shared?: boolean;
  /** Choose again although models exist (they keep working, on the plain TypeScript kernels). */
  reset?: boolean;
}

/**
 * Chooses the numeric kernels of this thread and returns the tier in use. Optional: the first
 * model made or loaded sets up the fastest tier this runtime supports.
 *
 * @param tier the tier (default: the fastest supported here, or the one chosen already).
 * @param options shared or plain memory, and whether to choose again under existing models.
 * @returns the tier in use.
 * @throws {InputError} when the tier is not supported here, or models exist and the tier
 * differs from theirs (unless `reset`).
 *
 * @example Force the plain TypeScript kernels (for example after editing lib/math.ts)
 * ```ts
 * import { createModel, selectKernels } from "@baregpt/baregpt";
 * console.log(selectKernels("js")); // "js"; call it before making or loading any model
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 }); // runs on "js"
 * console.log(selectKernels()); // "js": once models exist, it only confirms the tier
 * ```
 */
export function selectKernels(tier?: KernelTier, options: KernelOptions = {}): KernelTier {
  const shared = options.shared ?? typeof SharedArrayBuffer !== "undefined";
  const sharedNow = kernelMemory()?.buffer instanceof SharedArrayBuffer;
  const same = (tier === undefined || tier === kernelTier()) &&
    (kernelTier() === "js" || shared === sharedNow);
  if (kernelsChosen && same && !options.reset) return kernelTier();
  const wanted = tier ?? detectTier({ requireShared: shared });
  if (modelsMade > 0 && !options.reset) {
    throw new InputError(
      `the ${kernelTier()} kernels are in use by existing models; call selectKernels("${wanted}") before making or loading any model`,
    );
  }
  const chosen = setupKernels(wanted, shared);
  kernelsChosen = true;
  modelsMade = 0;
  return chosen;
}

/**
 * The fastest kernel tier this runtime supports, with a shared memory (default) or a plain one.
 *
 * @example
 * ```ts
 * import { bestKernels } from "@baregpt/baregpt";
 * console.log(bestKernels()); // "relaxed" in Deno
 * ```
 */
export function bestKernels(options: { shared?: boolean } = {}): KernelTier {
  return detectTier({ requireShared: options.shared ?? true });
}

/**
 * Makes room for a model of `config` and its inference buffers before it is allocated: a
 * plain (not shared) kernel memory cannot grow under live arrays.
 */
function reserveFor(config: ModelConfig, grads: boolean): void {
  const memory = kernelMemory();
  if (memory === null || memory.buffer instanceof SharedArrayBuffer) return;
  let bytes = 0;
  const f32 = (n: number) => (bytes += Arena.size(4 * n), new Float32Array(0));
  const u16 = (n: number) => (bytes += Arena.size(2 * n), new Uint16Array(0));
  for (let i = 0; i < CACHES_PER_MODEL; i++) new Activations(config, 1, f32, u16, false, false);
  bytes += Arena.size(4 * parameterCount(config)) * (grads ? 2 : 1) + 65536;
  defaultArena().ensure(bytes);
}

/** KV caches a model may use at once (a stream, its attention view, a distribution). */
const CACHES_PER_MODEL = 3;

// ---------------------------------------------------------------------------------------------
// Models and weights

/**
 * Options of {@linkcode createModel}: the model's shape and its initialization seed. The
 * defaults are BareGPT's size (about 1.6M parameters for a 65-character vocabulary).
 *
 * @example A small model that trains in seconds
 * ```ts
 * import { createModel, type ModelOptions } from "@baregpt/baregpt";
 * const small: ModelOptions = { blockSize: 32, dModel: 64, nLayers: 2, nHeads: 4, seed: 1 };
 * console.log(createModel("abcdefgh", small).parameterCount);
 * ```
 */
export interface ModelOptions {
  /** Context window in characters. Default 128. */
  blockSize?: number;
  /** Width of the residual stream. Default 256. */
  dModel?: number;
  /** Transformer blocks. Default 2. */
  nLayers?: number;
  /** Attention heads per block; must divide `dModel`. Default 4. */
  nHeads?: number;
  /** Seed of the random initialization (GPT-2's scheme), the same as the trainer's. Default 0. */
  seed?: number;
}

/**
 * Makes a new, randomly initialized model. Its vocabulary is the distinct characters of `vocab`
 * (pass the whole training text, or just the characters), or a {@linkcode Tokenizer}.
 *
 * @param vocab a text whose distinct characters form the vocabulary, or a tokenizer.
 * @param options shape and seed; see {@linkcode ModelOptions} for the defaults.
 * @returns the model, ready to train with `createTrainer`.
 * @throws {InputError} when the shape is invalid (for example `nHeads` does not divide
 * `dModel`) or the vocabulary is empty.
 *
 * @example
 * ```ts
 * import { createModel } from "@baregpt/baregpt";
 * const text = "to be or not to be, that is the question";
 * const model = createModel(text, { blockSize: 16, dModel: 32, nLayers: 1, nHeads: 2, seed: 7 });
 * console.log(model.config.vocabSize); // 14 distinct characters
 * ```
 */
export function createModel(vocab: string | Tokenizer, options: ModelOptions = {}): Model {
  const tokenizer = vocab instanceof Tokenizer ? vocab : Tokenizer.fromText(vocab);
  const seed = checkOption("seed", options.seed ?? 0, MODEL_OPTIONS.seed);
  const config = { ...defaultConfig(tokenizer.size) };
  for (const key of ["blockSize", "dModel", "nLayers", "nHeads"] as const) {
    if (options[key] !== undefined) config[key] = options[key];
  }
  ensureKernels();
  reserveFor(config, true);
  const model = new GPT(config, { tokenizer }).init(seed); // validates the config
  modelsMade++;
  return model;
}

/**
 * The URL of the weights shipped with BareGPT (trained on Tiny Shakespeare), next to this module:
 * a `file:` URL in a checkout, an `https:` URL when the module is imported from the web.
 *
 * @example
 * ```ts
 * import { shippedWeightsUrl } from "@baregpt/baregpt";
 * console.log(shippedWeightsUrl.href.endsWith("/weights/shakespeare.safetensors")); // true
 * ```
 */
export const shippedWeightsUrl: URL = new URL(
  "../weights/shakespeare.safetensors",
  import.meta.url,
);

/**
 * Options of {@linkcode loadWeights}.
 *
 * @example
 * ```ts
 * import { loadWeights, type LoadOptions, shippedWeightsUrl } from "@baregpt/baregpt";
 * const options: LoadOptions = { signal: AbortSignal.timeout(10_000) }; // give up after 10 s
 * const model = await loadWeights(shippedWeightsUrl, options);
 * console.log(model.parameterCount);
 * ```
 */
export interface LoadOptions {
  /** Cancels a fetch in progress. Default: none. */
  signal?: AbortSignal;
  /** Refuse files larger than this many bytes (default 4 GiB, what the kernels address). */
  maxBytes?: number;
}

/** The URL of a source: a URL, a URL string, or an absolute path (as a `file:` URL). */
function urlOf(source: string | URL): URL {
  if (source instanceof URL) return source;
  if (/^[a-z][a-z0-9+.-]+:/i.test(source) && URL.canParse(source)) return new URL(source);
  const path = source.replace(/\\/g, "/");
  if (path.startsWith("/") || /^[a-z]:\//i.test(path)) {
    const encoded = encodeURI(path.startsWith("/") ? path : `/${path}`).replace(
      /[?#]/g,
      encodeURIComponent,
    );
    return new URL(`file://${encoded}`);
  }
  const base = (globalThis as { location?: { href: string } }).location?.href;
  if (base !== undefined) return new URL(source, base);
  throw new InputError(
    `weights path ${source} is relative; pass a URL such as new URL("${source}", import.meta.url), an absolute path, or the file's bytes`,
  );
}

/** The bytes at a URL, via fetch; InputError when they cannot be had. */
async function fetchBytes(source: string | URL, o: LoadOptions): Promise<Uint8Array> {
  const url = urlOf(source);
  const max = o.maxBytes ?? 2 ** 32;
  let response: Response;
  try {
    response = await fetch(url, { signal: o.signal });
  } catch (e) {
    if (!(e instanceof TypeError)) throw e; // aborted, or a permission error
    const why = e.message.split("\n")[0];
    if (url.protocol === "file:" && /not found|No such file/i.test(why)) {
      throw new InputError(`weights file ${source} does not exist; check the path`);
    }
    if (url.protocol === "file:" && /directory/i.test(why)) {
      throw new InputError(`weights file ${source} is a directory; give a .safetensors file`);
    }
    throw new InputError(`cannot fetch weights from ${source}: ${why}; check the address`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new InputError(
      `cannot fetch weights from ${source}: HTTP ${response.status} ${response.statusText}; check the address`,
    );
  }
  if (Number(response.headers.get("content-length") ?? 0) > max) {
    await response.body?.cancel();
    throw new InputError(
      `weights file ${source} is larger than ${max / 2 ** 20} MiB; it is not a BareGPT model`,
    );
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (bytes.length > max) {
    throw new InputError(
      `weights file ${source} is larger than ${max / 2 ** 20} MiB; it is not a BareGPT model`,
    );
  }
  return bytes;
}

/** The config a weights file declares (to size a plain memory), or null when it cannot be read. */
function peekConfig(bytes: Uint8Array): ModelConfig | null {
  try {
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + Math.min(n, 1e8))));
    const c = JSON.parse(header.__metadata__.config);
    const config = {
      vocabSize: c.vocab_size,
      blockSize: c.block_size,
      dModel: c.d_model,
      nLayers: c.n_layers,
      nHeads: c.n_heads,
    };
    return Object.values(config).every((x) => Number.isInteger(x) && x > 0 && x <= 65536)
      ? config
      : null;
  } catch {
    return null;
  }
}

/**
 * Loads a model from a safetensors weights file written by BareGPT (its config and vocabulary
 * are in the file's metadata).
 *
 * @param source the file's bytes; a URL (`file:`, `http:`, `https:`, fetched, so it works in
 * browsers too); or an absolute path (read as a `file:` URL).
 * @param options see {@linkcode LoadOptions}.
 * @returns the model with its tokenizer and training facts.
 * @throws {InputError} when the file cannot be read or fetched.
 * @throws {WeightsError} when it is not a valid BareGPT weights file.
 *
 * @example The shipped weights (needs `--allow-read`)
 * ```ts
 * import { loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 * const model = await loadWeights(shippedWeightsUrl);
 * console.log(model.config, model.facts.val_loss);
 * ```
 *
 * @example From bytes
 * ```ts
 * import { createModel, loadWeights, saveWeights } from "@baregpt/baregpt";
 * const bytes = saveWeights(createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 }));
 * const copy = await loadWeights(bytes);
 * console.log(copy.tokenizer.vocab); // ["a", "b", "c"]
 * ```
 */
export async function loadWeights(
  source: string | URL | Uint8Array,
  options: LoadOptions = {},
): Promise<Model> {
  const named = !(source instanceof Uint8Array);
  const bytes = named ? await fetchBytes(source, options) : source;
  ensureKernels();
  const config = peekConfig(bytes);
  if (config !== null) reserveFor(config, false);
  let model: GPT;
  try {
    model = loadModel(bytes);
  } catch (e) {
    if (named && e instanceof WeightsError) {
      throw new WeightsError(`${String(source)}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  modelsMade++;
  return model;
}

/**
 * Encodes a model as safetensors bytes (GPT-2 tensor names; config, vocabulary and facts in the
 * metadata), ready for {@linkcode loadWeights}, the CLI, or Python's `safetensors`. The same
 * model and facts always give the same bytes.
 *
 * @param model the model to save.
 * @param facts training facts to store as metadata (values become strings). Default: the facts
 * the model was loaded with. The keys `config` and `vocab` are reserved.
 * @returns the file's bytes; write them with `Deno.writeFile(path, bytes)` (or offer them as a
 * download in a browser).
 * @throws {InputError} when a fact uses a reserved key.
 * @throws {BareGPTError} when the weights hold NaN or Inf (training diverged).
 *
 * @example
 * ```ts
 * import { createModel, saveWeights } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const bytes = saveWeights(model, { steps: 0, note: "untrained" });
 * console.log(bytes.length > 0); // true
 * ```
 */
export function saveWeights(
  model: Model,
  facts: Readonly<Record<string, string | number | boolean>> = modelOf(model).facts,
): Uint8Array {
  const m = modelOf(model);
  const strings: Record<string, string> = {};
  for (const [key, value] of Object.entries(facts)) {
    if (key === "config" || key === "vocab") {
      throw new InputError(`the fact "${key}" is reserved for the model itself; rename it`);
    }
    strings[key] = String(value);
  }
  if (!allFinite(m.flat)) {
    throw new BareGPTError(
      "the weights hold NaN or Inf (training diverged); lower lr and train again",
      {
        options: ["lr"],
      },
    );
  }
  return saveModel(m, strings);
}

/**
 * Decodes a text file's bytes as UTF-8, refusing what is not text (invalid UTF-8, NUL bytes, an
 * empty file), as the CLI does for a corpus.
 *
 * @param bytes the file's bytes.
 * @param name how errors name the file.
 * @returns the text.
 * @throws {InputError} when the bytes are not a UTF-8 text.
 *
 * @example
 * ```ts
 * import { decodeCorpus } from "@baregpt/baregpt";
 * console.log(decodeCorpus(new TextEncoder().encode("to be"), "my.txt")); // "to be"
 * ```
 */
export function decodeCorpus(bytes: Uint8Array, name: string): string {
  return decodeText(bytes, name);
}

// ---------------------------------------------------------------------------------------------
// Training and evaluation

export type { Evaluation } from "./evaluate.ts";
export type {
  EvaluateOptions,
  RunOptions,
  RunResult,
  StepInfo,
  Trainer,
  TrainerOptions,
} from "./trainer.ts";

/**
 * Makes a trainer for a model on a text: it trains on the text's first 90% and validates on the
 * rest, exactly as `train --data` does, drawing its batches from `seed + 1` (a model made with
 * the same `seed` then trains exactly as the CLI's `train --seed`). A loaded model can be trained
 * too (fine-tuning): the text's characters must be in its vocabulary.
 *
 * @param model the model to train (in place).
 * @param data the text or its token ids (its first 90% at least blockSize + 1 characters).
 * @param options see {@linkcode TrainerOptions} for the defaults.
 * @returns a trainer; step it with `step` or `run`.
 * @throws {InputError} for an option out of range, a text too short, or characters outside the
 * model's vocabulary.
 *
 * @example Train a tiny model and watch the loss fall
 * ```ts
 * import { createModel, createTrainer } from "@baregpt/baregpt";
 * const text = "hello world. ".repeat(40);
 * const model = createModel(text, { blockSize: 16, dModel: 32, nHeads: 2, nLayers: 1 });
 * using trainer = await createTrainer(model, text, { steps: 30, batch: 4, lr: 1e-2, warmup: 5 });
 * const first = await trainer.step();
 * const { loss } = await trainer.run(); // the 29 steps left
 * console.log(first.toFixed(2), "->", loss.toFixed(2));
 * ```
 */
export async function createTrainer(
  model: Model,
  data: string | Uint16Array,
  options: TrainerOptions = {},
): Promise<Trainer> {
  const m = modelOf(model);
  if (m.dtype === "float32" && m.arena !== undefined && m.arena.memory !== kernelMemory()) {
    throw new InputError(
      "this model lives in kernels chosen before the last selectKernels; make or load it again",
    );
  }
  return await Trainer.create(m, data, options);
}

/** Evaluation buffers per model (the kernels' memory is a bump allocator and never frees). */
const evalActs = new WeakMap<GPT, Activations>();

/**
 * The model's loss on a text: the mean cross-entropy over every non-overlapping window of
 * `blockSize` characters (window i reads characters [iT, (i+1)T) and predicts the next one at
 * each position), the same measure as the CLI's `eval`. Yields to the event loop as it goes.
 *
 * @param model the model.
 * @param data a text (its characters must be in the model's vocabulary) or its token ids.
 * @param options an estimate on fewer windows, or only the validation split (the last 10%).
 * @returns loss, bits per character and how much was evaluated.
 * @throws {InputError} when the text has characters outside the vocabulary or is shorter than
 * blockSize + 1 characters.
 *
 * @example
 * ```ts
 * import { createModel, evaluate } from "@baregpt/baregpt";
 * const text = "the cat sat on the mat. ".repeat(10);
 * const model = createModel(text, { blockSize: 16, dModel: 32, nHeads: 2, nLayers: 1 });
 * const { loss } = await evaluate(model, text);
 * console.log(loss.toFixed(2)); // near ln(11) = 2.40 for an untrained model of 11 characters
 * ```
 */
export async function evaluate(
  model: Model,
  data: string | Uint16Array,
  options: EvaluateOptions = {},
): Promise<Evaluation> {
  const m = modelOf(model);
  let tokens = tokensOf(m, data);
  if (options.split === "val") tokens = tokens.subarray(splitIndex(tokens.length));
  let acts = evalActs.get(m);
  if (acts === undefined) {
    acts = m.activations(16, { backward: false });
    evalActs.set(m, acts);
  }
  const a = acts;
  const runner = {
    B: a.B,
    inputs: a.inputs,
    targets: a.targets,
    lossSum: (n: number) => forward(m, a, batchPass(m.config, n)),
  };
  return await evaluateTokens(tokens, m.config.blockSize, runner, options.maxWindows);
}
