/**
 * The friendly high-level API that `mod.ts` publishes: load and save weights, build a model,
 * train it step by step, evaluate it, stream text from it, and look at its next-character
 * distribution and attention. Options are objects with documented defaults; errors are the
 * project's own classes ({@linkcode InputError} for bad input, {@linkcode WeightsError} for a bad
 * weights file).
 *
 * Web-standard only (typed arrays, WebAssembly, fetch, timers): a plain path is read with
 * `Deno.readFile` when Deno is there, and fetched relative to the page otherwise.
 *
 * The fast WebAssembly kernels are set up on first use (the first model made or loaded); call
 * {@linkcode selectKernels} before that to choose a tier yourself.
 *
 * @module
 */

import { windowBatch } from "./data.ts";
import { InputError, WeightsError } from "./errors.ts";
import { detectTier } from "./kernels/mod.ts";
import { type Activations, forward, GPT, KVCache } from "./model.ts";
import { Rng } from "./rng.ts";
import { generateTokens, nextDistribution, validateSampling } from "./sample.ts";
import { kernelTier, setupKernels } from "./tensor.ts";
import { Tokenizer } from "./tokenizer.ts";
import {
  evalWindows,
  TRAIN_DEFAULTS,
  Trainer as CoreTrainer,
  type TrainOptions as TrainerOptions,
} from "./train.ts";
import { loadModel, saveModel } from "./weights.ts";

export { BareGPTError, InputError, isBareGPTError, WeightsError } from "./errors.ts";
export { Tokenizer } from "./tokenizer.ts";

// ---------------------------------------------------------------------------------------------
// Kernels

/**
 * Which numeric kernels run: `"relaxed"` (WebAssembly relaxed SIMD), `"simd"` (WebAssembly
 * SIMD128) or `"js"` (plain TypeScript, the reference). All give the same results to float32
 * rounding; the WebAssembly tiers are several times faster.
 *
 * @example
 * ```ts
 * import { type KernelTier, selectKernels } from "@baregpt/baregpt";
 * const tier: KernelTier = selectKernels();
 * console.log(`kernels: ${tier}`);
 * ```
 */
export type KernelTier = "relaxed" | "simd" | "js";

/** True once this thread's kernels are chosen (by {@linkcode selectKernels} or on first use). */
let kernelsChosen = false;
/** Models made or loaded through this module (their buffers live in the kernels' memory). */
let modelsMade = 0;

/** Sets up the fastest kernels once, unless they were chosen already. */
function ensureKernels(): void {
  if (kernelsChosen) return;
  kernelsChosen = true;
  if (kernelTier() !== "js") return; // set up already by the caller (the CLI, a page)
  try {
    setupKernels();
  } catch {
    setupKernels("js");
  }
}

/**
 * Chooses the numeric kernels of this thread and returns the tier in use. Optional: the first
 * model made or loaded sets up the fastest tier this runtime supports. Call it before making or
 * loading any model; once the kernels are chosen, calling it without a tier only returns the
 * tier in use.
 *
 * @param tier the tier to use (default: the fastest supported here, or the one chosen already).
 * @returns the tier in use.
 * @throws {InputError} when the tier is not supported by this runtime, or when models exist
 * already and the tier differs from theirs.
 *
 * @example Force the plain TypeScript kernels (for example to compare against the fast ones)
 * ```ts
 * import { createModel, selectKernels } from "@baregpt/baregpt";
 * console.log(selectKernels("js")); // "js"; call it before making or loading any model
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 }); // runs on "js"
 * console.log(selectKernels()); // "js": once models exist, it only confirms the tier
 * ```
 */
export function selectKernels(tier?: KernelTier): KernelTier {
  if (kernelsChosen && (tier === undefined || tier === kernelTier())) return kernelTier();
  const wanted = tier ?? detectTier();
  if (modelsMade > 0) {
    throw new InputError(
      `the ${kernelTier()} kernels are in use by existing models; call selectKernels("${wanted}") before making or loading any model`,
    );
  }
  const chosen = setupKernels(wanted);
  kernelsChosen = true;
  return chosen;
}

// ---------------------------------------------------------------------------------------------
// Models

/**
 * The shape of a model. The vocabulary size comes from its tokenizer; the rest are
 * {@linkcode ModelOptions} (defaults: block 128, width 256, 2 layers, 4 heads).
 *
 * @example
 * ```ts
 * import { createModel, type ModelConfig } from "@baregpt/baregpt";
 * const config: ModelConfig = createModel("abc").config;
 * console.log(config); // { vocabSize: 3, blockSize: 128, dModel: 256, nLayers: 2, nHeads: 4 }
 * ```
 */
export interface ModelConfig {
  /** Distinct characters the model reads and writes. */
  vocabSize: number;
  /** Context window: the most characters the model looks back over. */
  blockSize: number;
  /** Width of the residual stream (embedding size). */
  dModel: number;
  /** Transformer blocks. */
  nLayers: number;
  /** Attention heads per block (they split dModel). */
  nHeads: number;
}

/**
 * A GPT with its tokenizer: what {@linkcode loadWeights} and {@linkcode createModel} return and
 * every other function takes. Its parameters live in the kernels' memory; training updates them
 * in place.
 *
 * @example
 * ```ts
 * import { createModel, type Model } from "@baregpt/baregpt";
 * const model: Model = createModel("hello world", { dModel: 32, nHeads: 2, nLayers: 1 });
 * console.log(model.config.vocabSize, model.parameterCount, model.tokenizer.vocab.join(""));
 * ```
 */
export interface Model {
  /** The model's shape. */
  readonly config: Readonly<ModelConfig>;
  /** Maps the model's characters to token ids and back. */
  readonly tokenizer: Tokenizer;
  /**
   * Training facts read from its weights file (steps, val_loss, corpus_sha256, command, ...);
   * empty for a new model.
   */
  readonly facts: Readonly<Record<string, string>>;
  /** Number of parameters. */
  readonly parameterCount: number;
}

/** The one implementation of {@linkcode Model}: holds the core GPT (internal). */
class ModelHandle implements Model {
  readonly config: Readonly<ModelConfig>;
  readonly tokenizer: Tokenizer;
  readonly facts: Readonly<Record<string, string>>;
  #gpt: GPT;

  constructor(gpt: GPT, tokenizer: Tokenizer, facts: Record<string, string>) {
    this.#gpt = gpt;
    this.config = Object.freeze({ ...gpt.config });
    this.tokenizer = tokenizer;
    this.facts = Object.freeze({ ...facts });
  }

  get parameterCount(): number {
    return this.#gpt.size;
  }

  /**
   * The core model (an accessor, so that printing a model stays short); replaced once by a copy
   * with gradient buffers the first time a loaded model is trained.
   */
  get gpt(): GPT {
    return this.#gpt;
  }

  set gpt(gpt: GPT) {
    this.#gpt = gpt;
  }
}

/** The handle behind a Model; throws InputError for anything else. */
function handleOf(model: Model): ModelHandle {
  if (!(model instanceof ModelHandle)) {
    throw new InputError(
      "expected a model from loadWeights or createModel; other objects cannot be used as models",
    );
  }
  return model;
}

/**
 * Wraps a core GPT and its tokenizer as a {@linkcode Model} (for code inside this repository
 * that builds models with `lib/` directly; not part of the published API).
 */
export function wrapModel(
  gpt: GPT,
  tokenizer: Tokenizer,
  facts: Record<string, string> = {},
): Model {
  if (gpt.config.vocabSize !== tokenizer.size) {
    throw new InputError(
      `the tokenizer has ${tokenizer.size} characters but the model's vocabulary is ${gpt.config.vocabSize}`,
    );
  }
  kernelsChosen = true; // whatever the caller set up, the model lives there
  modelsMade++;
  return new ModelHandle(gpt, tokenizer, facts);
}

/** The core GPT of a {@linkcode Model} (internal; not part of the published API). */
export function coreModel(model: Model): GPT {
  return handleOf(model).gpt;
}

/**
 * Options of {@linkcode createModel}: the model's shape and its initialization seed. The defaults
 * are BareGPT's size (about 1.6M parameters for a 65-character vocabulary).
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
  /** Seed of the random initialization (GPT-2's scheme). Default 0. */
  seed?: number;
}

/**
 * Makes a new, randomly initialized model. Its vocabulary is the distinct characters of `vocab`
 * (pass the whole training text, or just the characters), or a {@linkcode Tokenizer}.
 *
 * @param vocab a text whose distinct characters form the vocabulary, or a tokenizer.
 * @param options shape and seed; see {@linkcode ModelOptions} for the defaults.
 * @returns the model, ready to train with {@linkcode createTrainer}.
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
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed)) {
    throw new InputError(`model seed ${seed} is not an integer; use a whole number`);
  }
  const config: ModelConfig = {
    vocabSize: tokenizer.size,
    blockSize: options.blockSize ?? 128,
    dModel: options.dModel ?? 256,
    nLayers: options.nLayers ?? 2,
    nHeads: options.nHeads ?? 4,
  };
  ensureKernels();
  const gpt = new GPT(config).init(seed); // validates the config
  modelsMade++;
  return new ModelHandle(gpt, tokenizer, {});
}

// ---------------------------------------------------------------------------------------------
// Weights

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
}

/** A URL when `source` is one (a scheme of two or more letters, so `C:\` stays a path). */
function asUrl(source: string | URL): URL | null {
  if (source instanceof URL) return source;
  if (!/^[a-z][a-z0-9+.-]+:/i.test(source)) return null;
  try {
    return new URL(source);
  } catch {
    return null;
  }
}

/** Reads the bytes of a path or URL; throws InputError when they cannot be had. */
async function readSource(source: string | URL, signal?: AbortSignal): Promise<Uint8Array> {
  const url = asUrl(source);
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  if (url === null && deno !== undefined) {
    try {
      return await deno.readFile(source as string, { signal });
    } catch (e) {
      if (e instanceof deno.errors.NotFound) {
        throw new InputError(`weights file ${source} does not exist; check the path`);
      }
      if (e instanceof deno.errors.IsADirectory) {
        throw new InputError(`weights file ${source} is a directory; give a .safetensors file`);
      }
      throw e; // permissions and the like: Deno's own message says what to do
    }
  }
  let response: Response;
  try {
    response = await fetch(url ?? (source as string), { signal });
  } catch (e) {
    if (!(e instanceof TypeError)) throw e; // aborted, or a permission error
    throw new InputError(
      `cannot fetch weights from ${source}: ${e.message.split("\n")[0]}; check the address`,
    );
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new InputError(
      `cannot fetch weights from ${source}: HTTP ${response.status} ${response.statusText}; check the address`,
    );
  }
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Loads a model from a safetensors weights file written by BareGPT (its config and vocabulary are
 * in the file's metadata).
 *
 * @param source the file's bytes; a URL (`file:`, `http:`, `https:`, ... fetched, so it works in
 * browsers too); or a path (read with `Deno.readFile` in Deno, fetched relative to the page
 * elsewhere).
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
  const bytes = named ? await readSource(source, options.signal) : source;
  ensureKernels();
  let loaded;
  try {
    loaded = loadModel(bytes);
  } catch (e) {
    if (named && e instanceof WeightsError) {
      throw new WeightsError(`${String(source)}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  modelsMade++;
  return new ModelHandle(loaded.model, loaded.tokenizer, loaded.facts);
}

/**
 * Encodes a model as safetensors bytes (GPT-2 tensor names; config, vocabulary and facts in the
 * metadata), ready for {@linkcode loadWeights}, the CLI, or Python's `safetensors`. The same model
 * and facts always give the same bytes.
 *
 * @param model the model to save.
 * @param facts training facts to store as metadata (values become strings). Default: the facts
 * the model was loaded with. The keys `config` and `vocab` are reserved.
 * @returns the file's bytes; write them with `Deno.writeFile(path, bytes)` (or offer them as a
 * download in a browser).
 * @throws {InputError} when a fact uses a reserved key.
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
  facts: Readonly<Record<string, string | number | boolean>> = model.facts,
): Uint8Array {
  const h = handleOf(model);
  const strings: Record<string, string> = {};
  for (const [key, value] of Object.entries(facts)) {
    if (key === "config" || key === "vocab") {
      throw new InputError(`the fact "${key}" is reserved for the model itself; rename it`);
    }
    strings[key] = String(value);
  }
  return saveModel(h.gpt, h.tokenizer, strings);
}

// ---------------------------------------------------------------------------------------------
// Scratch buffers, reused per model so that repeated calls do not grow the kernels' memory (it
// is a bump allocator and never frees).

const idleCaches = new WeakMap<GPT, KVCache[]>();
const evalActs = new WeakMap<GPT, Activations>();

function takeCache(gpt: GPT): KVCache {
  const cache = idleCaches.get(gpt)?.pop() ?? new KVCache(gpt);
  cache.reset();
  return cache;
}

function giveCache(gpt: GPT, cache: KVCache): void {
  const list = idleCaches.get(gpt);
  if (list) list.push(cache);
  else idleCaches.set(gpt, [cache]);
}

/** Lets timers, I/O and abort signals run now and then during long loops. */
class Ticker {
  #last = performance.now();

  async tick(): Promise<void> {
    if (performance.now() - this.#last < 15) return;
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.#last = performance.now();
  }
}

/** The token ids of a text as a data argument; throws InputError for unknown characters. */
function tokensOf(model: ModelHandle, data: string | Uint16Array): Uint16Array {
  if (typeof data === "string") return model.tokenizer.encode(data);
  const V = model.config.vocabSize;
  for (let i = 0; i < data.length; i++) {
    if (data[i] >= V) {
      throw new InputError(
        `token id ${
          data[i]
        } at index ${i} is outside the vocabulary of ${V}; encode the text with the model's tokenizer`,
      );
    }
  }
  return data;
}

/** The context window of a prompt: its last blockSize ids, or the start token when empty. */
function promptWindow(model: ModelHandle, prompt: string): number[] {
  const ids = model.tokenizer.encode(prompt);
  if (ids.length > 0) {
    return Array.from(ids.subarray(Math.max(0, ids.length - model.config.blockSize)));
  }
  return [model.tokenizer.has("\n") ? model.tokenizer.encode("\n")[0] : 0];
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/**
 * The result of {@linkcode evaluate}: the mean cross-entropy of the model's predictions.
 *
 * @example
 * ```ts
 * import { createModel, type Evaluation, evaluate } from "@baregpt/baregpt";
 * const text = "abcabcabcabcabcabcabcabcabcabcabcabc";
 * const model = createModel(text, { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 });
 * const e: Evaluation = await evaluate(model, text);
 * console.log(`loss ${e.loss.toFixed(3)} nats, ${e.bpc.toFixed(3)} bits per character`);
 * ```
 */
export interface Evaluation {
  /** Mean cross-entropy per predicted character, in nats. */
  loss: number;
  /** Bits per character: loss / ln 2. */
  bpc: number;
  /** Characters predicted. */
  tokens: number;
  /** Windows of blockSize characters evaluated. */
  windows: number;
}

/**
 * Options of {@linkcode evaluate} and {@linkcode Trainer.evaluate}.
 *
 * @example
 * ```ts
 * import type { EvaluateOptions } from "@baregpt/baregpt";
 * const quick: EvaluateOptions = { maxWindows: 20 };
 * console.log(quick);
 * ```
 */
export interface EvaluateOptions {
  /** Evaluate only this many evenly spaced windows (an estimate). Default: every window. */
  maxWindows?: number;
}

/**
 * The model's loss on a text: the mean cross-entropy over every non-overlapping window of
 * `blockSize` characters (window i reads characters [iT, (i+1)T) and predicts the next one at each
 * position), the same measure as the CLI's `eval`. Yields to the event loop as it goes.
 *
 * @param model the model.
 * @param data a text (its characters must be in the model's vocabulary) or its token ids.
 * @param options see {@linkcode EvaluateOptions}.
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
  const h = handleOf(model);
  const tokens = tokensOf(h, data);
  const gpt = h.gpt;
  const c = gpt.config;
  const T = c.blockSize;
  const windows = evalWindows(tokens.length, T, checkMaxWindows(options.maxWindows));
  let acts = evalActs.get(gpt);
  if (acts === undefined) {
    acts = gpt.activations(8);
    evalActs.set(gpt, acts);
  }
  const ticker = new Ticker();
  let sum = 0;
  for (let first = 0; first < windows.length; first += acts.B) {
    const count = Math.min(acts.B, windows.length - first);
    windowBatch(acts.inputs, acts.targets, tokens, windows, first, count, T);
    sum += forward(c, gpt.params, acts, count, T);
    await ticker.tick();
  }
  const loss = sum / (windows.length * T);
  return { loss, bpc: loss / Math.LN2, tokens: windows.length * T, windows: windows.length };
}

function checkMaxWindows(n: number | undefined): number | undefined {
  if (n !== undefined && (!Number.isInteger(n) || n < 1)) {
    throw new InputError(`maxWindows ${n} is not a positive integer; use 1 or more`);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Training

export type { TrainerOptions };

/**
 * What one training step did, as given to {@linkcode RunOptions.onProgress}.
 *
 * @example
 * ```ts
 * import type { StepInfo } from "@baregpt/baregpt";
 * const show = (s: StepInfo) => `step ${s.step}: loss ${s.loss.toFixed(3)} (lr ${s.lr})`;
 * console.log(show({ step: 1, loss: 4.17, lr: 2e-5, gradNorm: 0.9 }));
 * ```
 */
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
 * Options of {@linkcode Trainer.run}.
 *
 * @example
 * ```ts
 * import type { RunOptions } from "@baregpt/baregpt";
 * const options: RunOptions = {
 *   steps: 100,
 *   onProgress: ({ step, loss }) => {
 *     if (step % 10 === 0) console.log(step, loss);
 *   },
 *   signal: AbortSignal.timeout(60_000),
 * };
 * console.log(typeof options.onProgress);
 * ```
 */
export interface RunOptions {
  /** Steps to take. Default: the rest of the schedule (`steps` of the trainer's options). */
  steps?: number;
  /** Called after every step (awaited when it returns a promise). Default: none. */
  onProgress?: (info: StepInfo) => void | Promise<void>;
  /** Stops the run after the step in progress (no error is thrown). Default: none. */
  signal?: AbortSignal;
}

/**
 * What {@linkcode Trainer.run} did.
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

/**
 * Trains a model in place on a text, step by step or in a run; made by {@linkcode createTrainer}.
 * Holds the optimizer's state. Call {@linkcode Trainer.close} (or use `using`) when done if it
 * started worker threads.
 *
 * @example
 * ```ts
 * import { createModel, createTrainer, type Trainer } from "@baregpt/baregpt";
 * const text = "abcd".repeat(50);
 * const model = createModel(text, { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 });
 * using trainer: Trainer = await createTrainer(model, text, { steps: 20, batch: 4 });
 * await trainer.run();
 * console.log(trainer.stepsDone); // 20
 * ```
 */
export interface Trainer {
  /** The model being trained (its parameters change in place). */
  readonly model: Model;
  /** Steps taken so far. */
  readonly stepsDone: number;
  /** Length of the schedule (the `steps` option). Steps past it use the final learning rate. */
  readonly totalSteps: number;
  /**
   * Takes one optimizer step on a random batch.
   *
   * @returns the batch's mean loss (nats).
   * @throws {BareGPTError} when the loss is not finite (lower the learning rate).
   */
  step(): Promise<number>;
  /**
   * Takes `steps` steps (default: the rest of the schedule), reporting each to `onProgress` and
   * yielding to the event loop between steps; stops early, without an error, when `signal`
   * aborts.
   */
  run(options?: RunOptions): Promise<RunResult>;
  /** The model's loss on a text, as {@linkcode evaluate} (spread over the trainer's threads). */
  evaluate(data: string | Uint16Array, options?: EvaluateOptions): Promise<Evaluation>;
  /** Stops the worker threads, if any. The trainer cannot step afterwards. */
  close(): void;
  /** Same as {@linkcode Trainer.close}, for `using`. */
  [Symbol.dispose](): void;
}

class TrainerImpl implements Trainer {
  readonly model: Model;
  readonly totalSteps: number;
  readonly #handle: ModelHandle;
  readonly #core: CoreTrainer;
  #closed = false;

  constructor(model: ModelHandle, core: CoreTrainer, totalSteps: number) {
    this.model = model;
    this.#handle = model;
    this.#core = core;
    this.totalSteps = totalSteps;
  }

  get stepsDone(): number {
    return this.#core.step;
  }

  async #step(): Promise<StepInfo> {
    if (this.#closed) throw new InputError("this trainer is closed; create a new one");
    const r = await this.#core.trainStep();
    return { step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm };
  }

  async step(): Promise<number> {
    return (await this.#step()).loss;
  }

  async run(options: RunOptions = {}): Promise<RunResult> {
    const steps = options.steps ?? Math.max(0, this.totalSteps - this.stepsDone);
    if (!Number.isInteger(steps) || steps < 0) {
      throw new InputError(`run steps ${steps} is not a whole number of steps; use 0 or more`);
    }
    const { signal, onProgress } = options;
    const ticker = new Ticker();
    let loss = NaN;
    for (let i = 0; i < steps; i++) {
      if (signal?.aborted) return { steps: i, loss, aborted: true };
      const info = await this.#step();
      loss = info.loss;
      await onProgress?.(info);
      await ticker.tick();
    }
    return { steps, loss, aborted: false };
  }

  async evaluate(data: string | Uint16Array, options: EvaluateOptions = {}): Promise<Evaluation> {
    if (this.#closed) throw new InputError("this trainer is closed; use evaluate(model, text)");
    const tokens = tokensOf(this.#handle, data);
    return await this.#core.evaluate(tokens, checkMaxWindows(options.maxWindows));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#core.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Throws InputError unless `value` is a number within [min, max] (an integer if asked). */
function checkNumber(
  name: string,
  value: number | undefined,
  min: number,
  max = Infinity,
  integer = false,
): void {
  if (value === undefined) return;
  const ok = typeof value === "number" && value >= min && value <= max &&
    (integer ? Number.isSafeInteger(value) : Number.isFinite(value));
  if (!ok) {
    throw new InputError(
      `training option ${name} is ${value}; use ${integer ? "an integer" : "a number"} ${
        max === Infinity ? `of at least ${min}` : `from ${min} to ${max}`
      }`,
    );
  }
}

/**
 * Makes a trainer for a model on a text. A loaded model can be trained too (fine-tuning): the
 * text's characters must be in its vocabulary.
 *
 * @param model the model to train (in place).
 * @param data the training text (at least blockSize + 1 characters) or its token ids.
 * @param options see {@linkcode TrainerOptions} for the defaults.
 * @returns a trainer; step it with {@linkcode Trainer.step} or {@linkcode Trainer.run}.
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
  const h = handleOf(model);
  checkNumber("batch", options.batch, 1, 65536, true);
  checkNumber("steps", options.steps, 1, Number.MAX_SAFE_INTEGER, true);
  checkNumber("lr", options.lr, 0);
  checkNumber("minLr", options.minLr, 0);
  checkNumber("warmup", options.warmup, 0, Number.MAX_SAFE_INTEGER, true);
  checkNumber("weightDecay", options.weightDecay, 0);
  checkNumber("beta1", options.beta1, 0, 0.9999);
  checkNumber("beta2", options.beta2, 0, 0.9999);
  checkNumber("clip", options.clip, 0);
  checkNumber("dropout", options.dropout, 0, 0.9);
  if (options.decay !== undefined && options.decay !== "cosine" && options.decay !== "linear") {
    throw new InputError(`training option decay is ${options.decay}; use "linear" or "cosine"`);
  }
  checkNumber("seed", options.seed, 0, Number.MAX_SAFE_INTEGER, true);
  checkNumber("threads", options.threads, 1, 256, true);
  if (options.lr !== undefined && !(options.lr > 0)) {
    throw new InputError("training option lr is 0; use a positive learning rate");
  }
  const tokens = tokensOf(h, data);
  if (h.gpt.gradFlat.length === 0) {
    // loaded for inference: move to a copy with gradient buffers (once per model)
    ensureKernels();
    const trainable = new GPT(h.gpt.config);
    trainable.flat.set(h.gpt.flat);
    h.gpt = trainable;
  }
  const steps = options.steps ?? TRAIN_DEFAULTS.steps;
  const warmup = Math.min(options.warmup ?? TRAIN_DEFAULTS.warmup, steps);
  const core = await CoreTrainer.create(h.gpt, tokens, { ...options, steps, warmup });
  return new TrainerImpl(h, core, steps);
}

// ---------------------------------------------------------------------------------------------
// Generation and inspection

/**
 * How the next character is drawn from the model's distribution.
 *
 * @example
 * ```ts
 * import type { SamplingOptions } from "@baregpt/baregpt";
 * const focused: SamplingOptions = { temperature: 0.8, topK: 10, topP: 0.95 };
 * console.log(focused);
 * ```
 */
export interface SamplingOptions {
  /** Divides the logits: below 1 is more conservative, 0 always picks the most likely. Default 1. */
  temperature?: number;
  /** Keep only the k most likely characters (0: all). Default 0. */
  topK?: number;
  /** Keep the fewest most likely characters whose probabilities reach p (1: all). Default 1. */
  topP?: number;
}

/**
 * Options of {@linkcode generate}.
 *
 * @example
 * ```ts
 * import type { GenerateOptions } from "@baregpt/baregpt";
 * const options: GenerateOptions = { prompt: "ROMEO:", tokens: 200, temperature: 0.8, seed: 42 };
 * console.log(options);
 * ```
 */
export interface GenerateOptions extends SamplingOptions {
  /** Text to continue (its characters must be in the vocabulary). Default "": start afresh. */
  prompt?: string;
  /** Characters to produce. Default 1000. */
  tokens?: number;
  /** Seed of the random draws: the same seed and options give the same text. Default: random. */
  seed?: number;
  /** Ends the stream early (no error is thrown). Default: none. */
  signal?: AbortSignal;
}

/**
 * Streams new characters after a prompt, one at a time as they are produced (the prompt itself
 * is not repeated). Each character costs one cached step through the model; when the context
 * window fills up, it keeps its last half and goes on. Yields to the event loop now and then, so
 * a page stays responsive. Options are checked when it is called.
 *
 * @param model the model.
 * @param options prompt, length, sampling and seed; see {@linkcode GenerateOptions}.
 * @returns an async iterable of single characters.
 * @throws {InputError} when the prompt has characters outside the vocabulary or an option is out
 * of range.
 *
 * @example Stream from the shipped weights (needs `--allow-read`)
 * ```ts
 * import { generate, loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 * const model = await loadWeights(shippedWeightsUrl);
 * const out = new TextEncoder();
 * for await (const ch of generate(model, { prompt: "ROMEO:", tokens: 100, seed: 1 })) {
 *   await Deno.stdout.write(out.encode(ch));
 * }
 * ```
 *
 * @example Collect the text (greedy, so always the same)
 * ```ts
 * import { createModel, generate } from "@baregpt/baregpt";
 * const model = createModel("ab", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const chars = await Array.fromAsync(generate(model, { prompt: "a", tokens: 5, temperature: 0 }));
 * console.log(chars.join("").length); // 5
 * ```
 */
export function generate(model: Model, options: GenerateOptions = {}): AsyncIterable<string> {
  const h = handleOf(model);
  validateSampling(options, h.config.vocabSize);
  const count = options.tokens ?? 1000;
  if (!Number.isSafeInteger(count) || count < 0) {
    throw new InputError(`tokens ${count} is not a whole number of characters; use 0 or more`);
  }
  const seed = options.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  if (!Number.isSafeInteger(seed)) {
    throw new InputError(`seed ${seed} is not an integer; use a whole number`);
  }
  const window = promptWindow(h, options.prompt ?? "");
  return stream(h, window, count, new Rng(seed), { ...options });
}

/** The characters of `decodeSteps` (lib/sample.ts), over a reused KV cache. */
async function* stream(
  h: ModelHandle,
  window: number[],
  count: number,
  rng: Rng,
  options: GenerateOptions,
): AsyncGenerator<string, void, undefined> {
  if (count === 0) return;
  const vocab = h.tokenizer.vocab;
  const ticker = new Ticker();
  const cache = takeCache(h.gpt);
  try {
    const ids = generateTokens(h.gpt, window, 0, { ...options, tokens: count, seed: rng, cache });
    for (const id of ids) {
      if (options.signal?.aborted) return;
      yield vocab[id];
      await ticker.tick();
    }
  } finally {
    giveCache(h.gpt, cache);
  }
}

/**
 * One entry of {@linkcode nextCharDistribution}.
 *
 * @example
 * ```ts
 * import type { CharProbability } from "@baregpt/baregpt";
 * const p: CharProbability = { char: "e", id: 43, prob: 0.31 };
 * console.log(`${JSON.stringify(p.char)} ${(100 * p.prob).toFixed(1)}%`);
 * ```
 */
export interface CharProbability {
  /** The character. */
  char: string;
  /** Its token id. */
  id: number;
  /** Its probability after temperature, top-k and top-p (0 when cut off). */
  prob: number;
}

/**
 * Options of {@linkcode nextCharDistribution}.
 *
 * @example
 * ```ts
 * import type { DistributionOptions } from "@baregpt/baregpt";
 * const top5: DistributionOptions = { top: 5, temperature: 1 };
 * console.log(top5);
 * ```
 */
export interface DistributionOptions extends SamplingOptions {
  /** Return only the `top` most likely characters. Default: every character of the vocabulary. */
  top?: number;
}

/**
 * The model's distribution over the character that follows `prompt` (its last blockSize
 * characters), after temperature, top-k and top-p: what {@linkcode generate} draws from. An empty
 * prompt gives the distribution at the start of a text.
 *
 * @param model the model.
 * @param prompt the text so far (characters in the vocabulary).
 * @param options sampling settings and how many entries to return; see
 * {@linkcode DistributionOptions}.
 * @returns the characters, most likely first (ties in vocabulary order); the probabilities of
 * the full list sum to 1.
 * @throws {InputError} when the prompt has characters outside the vocabulary or an option is out
 * of range.
 *
 * @example
 * ```ts
 * import { createModel, nextCharDistribution } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * for (const { char, prob } of nextCharDistribution(model, "ab", { top: 3 })) {
 *   console.log(JSON.stringify(char), prob.toFixed(3));
 * }
 * ```
 */
export function nextCharDistribution(
  model: Model,
  prompt: string,
  options: DistributionOptions = {},
): CharProbability[] {
  const h = handleOf(model);
  const V = h.config.vocabSize;
  validateSampling(options, V);
  const top = options.top ?? V;
  if (!Number.isSafeInteger(top) || top < 1) {
    throw new InputError(`top ${top} is not a positive integer; use 1 or more`);
  }
  const window = promptWindow(h, prompt);
  const cache = takeCache(h.gpt);
  let probs: Float64Array;
  try {
    probs = nextDistribution(cache.feed(window), options);
  } finally {
    giveCache(h.gpt, cache);
  }
  const vocab = h.tokenizer.vocab;
  return Array.from(probs, (prob, id) => ({ char: vocab[id], id, prob }))
    .sort((a, b) => b.prob - a.prob || a.id - b.id)
    .slice(0, top);
}

/**
 * The attention of every head of every layer over a text, as returned by {@linkcode attention}.
 *
 * @example
 * ```ts
 * import { type Attention, attention, createModel } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const a: Attention = attention(model, "abcab");
 * console.log(a.chars.length, a.weights.length, a.weights[0].length); // 5 1 2
 * ```
 */
export interface Attention {
  /** The characters attended over (the last blockSize of the text): the queries and the keys. */
  chars: string[];
  /**
   * `weights[layer][head][query][key]`: how much the character at position `query` attends to
   * the one at position `key`. Each row sums to 1 over keys 0..query; keys after the query are 0
   * (the causal mask).
   */
  weights: number[][][][];
}

/**
 * The attention probabilities of every layer and head over a text (its last blockSize
 * characters), from one pass through the model: the maps of attention heatmaps.
 *
 * @param model the model.
 * @param text a non-empty text whose characters are in the vocabulary.
 * @returns the characters and the weights, see {@linkcode Attention}.
 * @throws {InputError} when the text is empty or has characters outside the vocabulary.
 *
 * @example Where the last character looks, in layer 0, head 0
 * ```ts
 * import { attention, createModel } from "@baregpt/baregpt";
 * const model = createModel("to be or not", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const { chars, weights } = attention(model, "to be");
 * const row = weights[0][0][chars.length - 1];
 * console.log(chars.map((ch, k) => `${ch}:${row[k].toFixed(2)}`).join(" "));
 * ```
 */
export function attention(model: Model, text: string): Attention {
  const h = handleOf(model);
  if (text.length === 0) throw new InputError("the text to look at is empty; give some characters");
  const ids = promptWindow(h, text);
  const { blockSize: T, nLayers, nHeads } = h.config;
  const n = ids.length;
  const cache = takeCache(h.gpt);
  try {
    cache.feed(ids);
    const weights = Array.from({ length: nLayers }, (_, l) => {
      const maps = cache.attention[l];
      return Array.from({ length: nHeads }, (_, head) =>
        Array.from({ length: n }, (_, q) => {
          const row = (head * T + q) * T;
          return Array.from(maps.subarray(row, row + n));
        }));
    });
    return { chars: Array.from(ids, (id) => h.tokenizer.vocab[id]), weights };
  } finally {
    giveCache(h.gpt, cache);
  }
}
