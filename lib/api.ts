/**
 * The library's models, weights, kernels, training and evaluation: thin adapters over the core
 * (`model.ts`, `weights.ts`, `trainer.ts`, `evaluate.ts`) that `mod.ts` publishes. Web-standard
 * only: the library reads bytes and URLs (with `fetch`, which also reads `file:` URLs in Deno);
 * reading a path is the caller's job.
 *
 * @module
 */

import { InputError, WeightsError } from "./errors.ts";
import { evaluateTokens, type Evaluation } from "./evaluate.ts";
import { kernelBytes } from "./activations.ts";
import { isShared } from "./kernels/arena.ts";
import { defaultArena, kernelMemory, kernelTier, setupKernels } from "./kernels/dispatch.ts";
import { detectTier, type KernelTier } from "./kernels/mod.ts";
import {
  type Activations,
  batchPass,
  forward,
  GPT,
  type Model,
  type ModelConfig,
  parameterCount,
} from "./model.ts";
import {
  checkEvaluateOptions,
  checkOption,
  checkOptions,
  checkText,
  defaultConfig,
  MODEL_OPTIONS,
  TRAIN_OPTIONS,
  typeError,
  validateConfig,
} from "./options.ts";
import { WorkerPool } from "./pool.ts";
import { Tokenizer } from "./tokenizer.ts";
import { type EvaluateOptions, Trainer, type TrainerOptions } from "./trainer.ts";
import { evalTokensOf, splitIndex } from "./data.ts";
import { chooseWebGpu, gpuEvaluation, type KernelChoice, webGpuChosen } from "./webgpu/backend.ts";

export type { KernelTier } from "./kernels/mod.ts";

export type { KernelChoice, WebGpuAdapter } from "./webgpu/backend.ts";
export { describeAdapter, webgpuAdapter } from "./webgpu/backend.ts";

export type { Model } from "./model.ts";

/** The model behind an argument; InputError for anything else. */
export function modelOf(model: unknown): GPT {
  if (!(model instanceof GPT)) {
    throw new InputError(
      "expected a model from loadWeights or createModel; other objects cannot be used as models",
    );
  }
  if (model.disposed) {
    throw new InputError("this model was disposed; load or make it again");
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
export function ensureKernels(): void {
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
  /**
   * Bytes of a plain memory, made now (default: sized for the first model made or loaded and
   * its KV caches). Give more to evaluate, train or hold a second model in a plain memory.
   */
  memoryBytes?: number;
}

/**
 * Chooses the numeric kernels of this thread and returns the tier in use. Optional: the first
 * model made or loaded sets up the fastest tier this runtime supports (a WebAssembly one: the
 * automatic choice is never "webgpu").
 *
 * "webgpu" trains (`createTrainer`), evaluates (`evaluate`) and generates (`generate`) on the GPU
 * through `navigator.gpu`, over the fastest WebAssembly tier for the rest (loading, saving,
 * `inspect`, `attention` and the other synchronous calls). Nothing asks for a GPU adapter until
 * the first of those calls (or {@linkcode webgpuAdapter}), which throws a one-line InputError
 * when there is none. Choosing a WebAssembly tier afterwards turns webgpu off again.
 *
 * @param tier the tier (default: the fastest supported here, or the one chosen already).
 * @param options shared or plain memory, and whether to choose again under existing models.
 * @returns the tier in use.
 * @throws {InputError} when the tier is not supported here, or models exist and the tier
 * differs from theirs (unless `reset`).
 *
 * @example Force the plain TypeScript kernels (for example after editing lib/tensor.ts)
 * ```ts
 * import { createModel, selectKernels } from "@baregpt/baregpt";
 * console.log(selectKernels("js")); // "js"; call it before making or loading any model
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 }); // runs on "js"
 * console.log(selectKernels()); // "js": once models exist, it only confirms the tier
 * ```
 */
export function selectKernels(tier: KernelTier, options?: KernelOptions): KernelTier;
/**
 * Chooses the WebGPU tier (see the first signature): training, `evaluate` and `generate` on the
 * GPU, the fastest WebAssembly tier for the rest; returns "webgpu".
 *
 * @example
 * ```ts ignore
 * import { selectKernels } from "@baregpt/baregpt";
 * console.log(selectKernels("webgpu")); // "webgpu"; the adapter is asked for on first use
 * ```
 */
export function selectKernels(tier: "webgpu", options?: KernelOptions): "webgpu";
/**
 * Chooses a tier or confirms the one in use (see the first signature); "webgpu" when it is on.
 *
 * @example
 * ```ts
 * import { selectKernels } from "@baregpt/baregpt";
 * console.log(selectKernels()); // "relaxed" in Deno, unless "webgpu" was chosen
 * ```
 */
export function selectKernels(tier?: KernelChoice, options?: KernelOptions): KernelChoice;
export function selectKernels(tier?: KernelChoice, options: KernelOptions = {}): KernelChoice {
  if (tier === "webgpu") {
    selectCpuKernels(undefined, options);
    chooseWebGpu(true);
    return "webgpu";
  }
  const chosen = selectCpuKernels(tier, options);
  if (tier !== undefined) chooseWebGpu(false);
  return webGpuChosen() ? "webgpu" : chosen;
}

/** {@linkcode selectKernels} for the CPU's kernels: a WebAssembly tier or the plain "js". */
function selectCpuKernels(tier: KernelTier | undefined, options: KernelOptions): KernelTier {
  const shared = options.shared ?? typeof SharedArrayBuffer !== "undefined";
  const memoryNow = kernelMemory();
  const sharedNow = memoryNow !== null && isShared(memoryNow);
  const same = (tier === undefined || tier === kernelTier()) &&
    (kernelTier() === "js" || shared === sharedNow) && options.memoryBytes === undefined;
  if (kernelsChosen && same && !options.reset) return kernelTier();
  const wanted = tier ?? detectTier({ requireShared: shared });
  if (modelsMade > 0 && !options.reset) {
    throw new InputError(
      `the ${kernelTier()} kernels are in use by existing models; call selectKernels("${wanted}") before making or loading any model`,
    );
  }
  const bytes = options.memoryBytes ?? 1 << 20;
  if (!(Number.isSafeInteger(bytes) && bytes > 0 && bytes <= 2 ** 32)) {
    throw new InputError(`memoryBytes ${bytes} is out of range; use an integer from 1 to 2^32`, {
      options: ["memoryBytes"],
    });
  }
  const chosen = setupKernels(wanted, shared, bytes);
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
 * Makes room for a model of `config` and its KV caches before it is allocated: a plain (not
 * shared) kernel memory cannot grow under live arrays, so it is sized for its first model.
 */
export function reserveFor(config: ModelConfig, grads: boolean): void {
  const memory = kernelMemory();
  if (memory === null || isShared(memory)) return;
  const bytes = kernelBytes(config, { grads, caches: CACHES_PER_MODEL }) + 65536;
  const arena = defaultArena();
  if (arena.end + bytes <= memory.buffer.byteLength) return;
  if (arena.end > 65536 || bytes > 2 ** 32) {
    throw new InputError(
      `the kernels' plain memory (${
        memory.buffer.byteLength >> 20
      } MiB) has no room for this model (about ${
        Math.ceil(bytes / 2 ** 20)
      } MiB); choose the kernels again with selectKernels(tier, { shared: false, memoryBytes, reset: true }), or use a cross-origin isolated page`,
    );
  }
  arena.ensure(bytes);
}

/**
 * Bytes of the kernels' memory a run needs to train a model of `config` on batches of `batch`
 * sequences over `threads` threads, with room for its KV caches (sampling and inspecting it as it
 * trains) and the kernels' scratch. A plain memory (a page without cross-origin isolation) cannot
 * grow under a model: give this to `selectKernels(tier, { shared: false, memoryBytes, reset: true })`
 * before making or loading the model.
 *
 * @example
 * ```ts
 * import { trainingMemoryBytes } from "@baregpt/baregpt";
 * const config = { vocabSize: 65, blockSize: 128, dModel: 256, nLayers: 2, nHeads: 4 };
 * console.log(trainingMemoryBytes(config, { batch: 16 }) > 2 ** 20); // true
 * ```
 */
export function trainingMemoryBytes(
  config: ModelConfig,
  options: { batch: number; threads?: number },
): number {
  const use = { grads: true, caches: CACHES_PER_MODEL, ...options };
  return Math.min(2 ** 32, kernelBytes(config, use) + 64 * 2 ** 20);
}

/** Counts a model made or loaded (a later selectKernels then refuses to switch under it). */
export function modelMade(): void {
  modelsMade++;
}

/** KV caches a model may use at once (a stream, its attention view, a distribution). */
const CACHES_PER_MODEL = 3;

// ---------------------------------------------------------------------------------------------
// Models and weights

/**
 * Options of {@linkcode createModel}: the model's shape and its initialization seed. The
 * defaults are BareGPT's size (`MODEL_OPTIONS`: blockSize 128, dModel 256, nLayers 2, nHeads 4,
 * about 1.6M parameters for a 65-character vocabulary).
 *
 * @example A small model that trains in seconds
 * ```ts
 * import { createModel, type ModelOptions } from "@baregpt/baregpt";
 * const small: ModelOptions = { blockSize: 32, dModel: 64, nLayers: 2, nHeads: 4, seed: 1 };
 * console.log(createModel("abcdefgh", small).parameterCount);
 * ```
 */
export interface ModelOptions extends Partial<Omit<ModelConfig, "vocabSize">> {
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
  if (typeof vocab !== "string" && !(vocab instanceof Tokenizer)) {
    throw typeError("vocab", "a string or a Tokenizer", vocab);
  }
  options = checkOptions(options, "options", "createModel");
  const tokenizer = vocab instanceof Tokenizer ? vocab : Tokenizer.fromText(vocab);
  const seed = checkOption("seed", options.seed ?? 0, MODEL_OPTIONS.seed);
  const config = { ...defaultConfig(tokenizer.size) };
  for (const key of ["blockSize", "dModel", "nLayers", "nHeads"] as const) {
    if (options[key] !== undefined) config[key] = options[key];
  }
  validateConfig(config);
  ensureKernels();
  const bytes = kernelBytes(config, { grads: true }) + 64 * 2 ** 20;
  if (kernelTier() !== "js" && bytes > 2 ** 32) {
    throw new InputError(
      `this model (${parameterCount(config).toLocaleString("en-US")} parameters) needs about ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB for its weights and gradients, more than the 4 GiB the WebAssembly kernels can address; use a smaller dModel, nLayers or blockSize`,
      { options: ["dModel", "nLayers", "blockSize"] },
    );
  }
  reserveFor(config, true);
  const model = new GPT(config, { tokenizer }).init(seed);
  modelsMade++;
  return model;
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
 * the same `seed` then trains exactly as the CLI's `train --seed` on as many threads). A loaded
 * model can be trained
 * too (fine-tuning): the text's characters must be in its vocabulary.
 *
 * @param model the model to train (in place).
 * @param data the text or its token ids (its first 90% at least blockSize + 1 characters).
 * @param options see {@linkcode TrainerOptions} for the defaults.
 * @returns a trainer; step it with `step` or `run`.
 * @throws {InputError} for an option out of range, a text too short, characters outside the
 * model's vocabulary (grow it first with `extendVocabulary`), or `threads` above 1 when the worker
 * module `lib/worker.ts` may not be read (Deno also prints its own line about the refused worker;
 * check the read permission first, as the CLI does, to avoid it).
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
  checkText("data", data);
  checkOptions(options, "options", "createTrainer");
  if (m.dtype === "float32" && m.arena !== undefined && m.arena.memory !== kernelMemory()) {
    throw new InputError(
      "this model lives in kernels chosen before the last selectKernels; make or load it again",
    );
  }
  return await Trainer.create(m, data, options);
}

/**
 * The error for weights whose logits (or loss) are NaN or Inf: finite values that overflow, from a
 * corrupt or hostile file or a diverged run. The CLI names the file in place of "this model".
 */
export function nonFiniteLogits(): WeightsError {
  return new WeightsError(
    "the weights of this model produce non-finite logits (NaN or Inf): the file is corrupt or diverged; re-download or re-train it",
  );
}

/** A batch's loss sum, or the WeightsError of {@linkcode nonFiniteLogits} when it is not finite. */
function finiteLoss(sum: number): number {
  if (!Number.isFinite(sum)) throw nonFiniteLogits();
  return sum;
}

/** Evaluation buffers per model, made once (in the model's lease, given back with it). */
const evalActs = new WeakMap<GPT, Activations>();

/**
 * The model's loss on a text: the mean cross-entropy over every non-overlapping window of
 * `blockSize` characters (window i reads characters [iT, (i+1)T) and predicts the next one at
 * each position), the same measure as the CLI's `eval`. Yields to the event loop as it goes.
 *
 * @param model the model.
 * @param data a text (its characters must be in the model's vocabulary, unless
 * `unknown: "drop"`) or its token ids.
 * @param options an estimate on fewer windows, only the validation split (the last 10%), or
 * `unknown: "drop"` to leave out the characters outside the vocabulary first (real text).
 * @returns loss, bits per character, how much was evaluated and how many characters were dropped.
 * @throws {InputError} when the text has characters outside the vocabulary (and `unknown` is not
 * "drop"; the message lists them all) or is shorter than blockSize + 1 characters.
 * @throws {WeightsError} when the model's loss is NaN or Inf (weights that overflow).
 *
 * @example
 * ```ts
 * import { createModel, evaluate } from "@baregpt/baregpt";
 * const text = "the cat sat on the mat. ".repeat(10);
 * const model = createModel(text, { blockSize: 16, dModel: 32, nHeads: 2, nLayers: 1 });
 * const { loss } = await evaluate(model, text);
 * console.log(loss.toFixed(2)); // near ln(11) = 2.40 for an untrained model of 11 characters
 * ```
 *
 * @example Real text with characters the model lacks
 * ```ts
 * import { createModel, evaluate } from "@baregpt/baregpt";
 * const model = createModel("the cat sat on a mat. ", { blockSize: 8, dModel: 16, nHeads: 2 });
 * const r = await evaluate(model, "the cat (1) sat on the mat! ".repeat(4), { unknown: "drop" });
 * console.log(r.dropped); // 16: "(", "1", ")" and "!", four times
 * ```
 */
export async function evaluate(
  model: Model,
  data: string | Uint16Array,
  options: EvaluateOptions = {},
): Promise<Evaluation> {
  const m = modelOf(model);
  checkText("data", data);
  options = checkEvaluateOptions(options);
  const given = evalTokensOf(m, data, options.unknown);
  let tokens = given.tokens;
  if (options.split === "val") tokens = tokens.subarray(splitIndex(tokens.length));
  const T = m.config.blockSize, { maxWindows, onProgress } = options;
  const threads = checkOption("threads", options.threads ?? 1, TRAIN_OPTIONS.threads);
  if (webGpuChosen()) {
    if (threads > 1) {
      throw new InputError(
        `threads ${threads}: the webgpu kernels evaluate on one GPU, without worker threads; use threads 1`,
        { options: ["threads"] },
      );
    }
    const gpu = await gpuEvaluation(m);
    const lossSum = async (n: number) => finiteLoss(await gpu.lossSum(n));
    const r = await evaluateTokens(tokens, T, { ...gpu, lossSum }, maxWindows, onProgress);
    return { ...r, dropped: given.dropped };
  }
  const memory = kernelMemory();
  if (threads > 1 && kernelTier() !== "js" && memory !== null && isShared(memory)) {
    // batches of 16 windows spread over the threads, as a trainer's evaluation does
    const pool = await WorkerPool.start(m, 16, threads);
    try {
      const inputs = new Uint16Array(16 * T), targets = new Uint16Array(16 * T);
      const lossSum = async (n: number) => finiteLoss(await pool.forwardLoss(inputs, targets, n));
      const r = await evaluateTokens(
        tokens,
        T,
        { B: 16, inputs, targets, lossSum },
        maxWindows,
        onProgress,
      );
      return { ...r, dropped: given.dropped };
    } finally {
      pool.close();
    }
  }
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
    lossSum: (n: number) => finiteLoss(forward(m, a, batchPass(m.config, n))),
  };
  const r = await evaluateTokens(tokens, T, runner, maxWindows, onProgress);
  return { ...r, dropped: given.dropped };
}
