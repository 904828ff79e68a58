/**
 * The library's generation and inspection: streaming text, the next-character distribution and
 * step-by-step inspection, over KV caches reused per model (`forward.ts` has the views of one
 * forward pass). Thin adapters over `sample.ts` and `inspect.ts` that take and give text.
 *
 * @module
 */

import { modelOf, nonFiniteLogits } from "./api.ts";
import { allFinite } from "./checkpoint.ts";
import { InputError } from "./errors.ts";
import { eventLoopTurns } from "./turns.ts";
import {
  type InspectOptions,
  type InspectResult,
  inspectSettings,
  type InspectStep,
  inspectStep,
  inspectSteps as coreInspectSteps,
  inspectText,
} from "./inspect.ts";
import { type GPT, KVCache } from "./model.ts";
import {
  checkOption,
  checkOptions,
  checkSampling,
  checkSignal,
  checkString,
  SAMPLING_OPTIONS,
  typeError,
} from "./options.ts";
import { Rng } from "./rng.ts";
import {
  decodeSteps,
  type GenerateOptions,
  nextDistribution,
  promptOrStart,
  type SamplingOptions,
} from "./sample.ts";
import type { Model } from "./api.ts";
import { decodeGpu } from "./webgpu/generate.ts";
import { giveGpuCache, takeGpuCache, webGpuChosen } from "./webgpu/backend.ts";

export type { GenerateOptions, SamplingOptions } from "./sample.ts";
export { topCandidates } from "./inspect.ts";
export type {
  AttentionMap,
  Candidate,
  InspectOptions,
  InspectResult,
  InspectStep,
} from "./inspect.ts";

// KV caches, reused per model so that repeated calls do not grow the kernels' memory.
const idleCaches = new WeakMap<GPT, KVCache[]>();

/** An idle KV cache of the model (reset), or a new one; give it back when done. */
export function takeCache(model: GPT): KVCache {
  const cache = idleCaches.get(model)?.pop() ?? new KVCache(model);
  cache.reset();
  return cache;
}

/** Gives back a cache of {@linkcode takeCache}. */
export function giveCache(model: GPT, cache: KVCache): void {
  const list = idleCaches.get(model);
  if (list) list.push(cache);
  else idleCaches.set(model, [cache]);
}

/** The prompt's ids: its last blockSize characters (errors name "the prompt"). */
export function promptIds(model: GPT, prompt: string): Uint16Array {
  const ids = model.tokenizer.encode(prompt, "the prompt");
  return ids.subarray(Math.max(0, ids.length - model.config.blockSize));
}

/**
 * Streams new characters after a prompt, one at a time as they are produced (the prompt itself
 * is not repeated). Each character costs one cached step through the model; when the context
 * window fills up, it keeps its last half and goes on. Yields to the event loop now and then, so
 * a page stays responsive. Options are checked when it is called. After
 * `selectKernels("webgpu")` it runs on a KV cache on the GPU (the same loop and draws; the first
 * character asks for the adapter, and its absence is the stream's InputError).
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
  const m = modelOf(model);
  options = checkOptions(options, "options", "generate");
  checkSampling(options, m.config.vocabSize);
  const count = checkOption("tokens", options.tokens ?? 1000, SAMPLING_OPTIONS.tokens);
  if (options.prompt !== undefined) checkString("prompt", options.prompt);
  checkSignal("signal", options.signal);
  const seed = options.seed ?? crypto.getRandomValues(new Uint32Array(1))[0];
  if (typeof seed !== "number") throw typeError("seed", "an integer", seed);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new InputError(`seed ${seed} is not a whole number; use 0 or more`, {
      options: ["seed"],
    });
  }
  const ids = promptIds(m, options.prompt ?? "");
  return stream(m, ids, count, new Rng(seed), options);
}

async function* stream(m: GPT, ids: Uint16Array, count: number, rng: Rng, o: GenerateOptions) {
  if (count === 0) return;
  if (webGpuChosen()) {
    yield* streamGpu(m, ids, count, rng, o);
    return;
  }
  const vocab = m.tokenizer.vocab;
  const cache = takeCache(m), turn = eventLoopTurns();
  try {
    for (const step of decodeSteps(m, ids, { ...o, tokens: count, rng, cache })) {
      if (o.signal?.aborted) return;
      // NaN or Inf logits (weights that overflow) draw nonsense: an error instead (one pass, V)
      if (!allFinite(step.logits)) throw nonFiniteLogits();
      yield vocab[step.id];
      await turn();
    }
  } finally {
    giveCache(m, cache);
  }
}

/** {@linkcode stream} on the GPU's KV cache (webgpu kernels): the same loop and draws. */
async function* streamGpu(m: GPT, ids: Uint16Array, count: number, rng: Rng, o: GenerateOptions) {
  const vocab = m.tokenizer.vocab;
  const cache = await takeGpuCache(m);
  const onLogits = (logits: Float32Array) => {
    if (!allFinite(logits)) throw nonFiniteLogits();
  };
  try {
    const steps = decodeGpu(cache, promptOrStart(m, ids), { ...o, tokens: count, rng, onLogits });
    for await (const { id } of steps) {
      if (o.signal?.aborted) return;
      yield vocab[id];
    }
  } finally {
    giveGpuCache(m, cache);
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
 * characters), after temperature, top-k and top-p: what {@linkcode generate} draws from. An
 * empty prompt gives the distribution at the start of a text.
 *
 * @param model the model.
 * @param prompt the text so far (characters in the vocabulary).
 * @param options sampling settings and how many entries to return.
 * @returns the characters, most likely first (ties in vocabulary order).
 * @throws {InputError} when the prompt has characters outside the vocabulary or an option is
 * out of range.
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
  const m = modelOf(model), V = m.config.vocabSize;
  checkString("prompt", prompt);
  options = checkOptions(options, "options", "nextCharDistribution");
  checkSampling(options, V);
  const top = checkOption("top", options.top ?? V, { min: 1, max: V, integer: true });
  const ids = promptIds(m, prompt);
  const tok = m.tokenizer;
  const window = promptOrStart(m, ids);
  const cache = takeCache(m);
  let probs: Float64Array;
  try {
    const logits = cache.feed(window);
    if (!allFinite(logits)) throw nonFiniteLogits();
    probs = nextDistribution(logits, options);
  } finally {
    giveCache(m, cache);
  }
  return Array.from(probs, (prob, id) => ({ char: tok.vocab[id], id, prob }))
    .sort((a, b) => b.prob - a.prob || a.id - b.id)
    .slice(0, top);
}

/**
 * Generates step by step after a prompt (greedy unless `temperature` is given), yielding for each
 * step the character chosen, the top candidates and where the query that chose it looked; the
 * choices are exactly those of {@linkcode generate} with the same options. Reuse the model's
 * cache by iterating to the end (or calling `return`).
 *
 * @param model the model.
 * @param prompt the text to continue (characters in the vocabulary).
 * @param options see {@linkcode InspectOptions}.
 * @returns a generator of steps, see {@linkcode InspectStep}.
 * @throws {InputError} when the prompt or an option is out of range.
 *
 * @example
 * ```ts
 * import { createModel, inspectSteps } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * for (const step of inspectSteps(model, "ab", { tokens: 3, top: 2 })) {
 *   console.log(step.position, step.id, step.candidates.length);
 * }
 * ```
 */
export function* inspectSteps(
  model: Model,
  prompt: string,
  options: InspectOptions = {},
): Generator<InspectStep> {
  const m = modelOf(model);
  checkString("prompt", prompt);
  options = checkOptions(options, "options", "inspectSteps");
  const cache = takeCache(m);
  try {
    const ids = m.tokenizer.encode(prompt, "the prompt");
    for (const step of coreInspectSteps(m, ids, { ...options, cache })) {
      if (!allFinite(step.probs)) throw nonFiniteLogits();
      yield step;
    }
  } finally {
    giveCache(m, cache);
  }
}

/**
 * {@linkcode inspectSteps} as an async stream: the same steps (the same draws, candidates,
 * windows and attention), on the CPU exactly those of inspectSteps, and after
 * `selectKernels("webgpu")` computed on a KV cache on the GPU, which reads each step's
 * attention back with its logits (the first step asks for the adapter, and its absence is the
 * stream's InputError). Yields to the event loop now and then, so a page stays responsive.
 * Reuse the model's caches by iterating to the end (or calling `return`).
 *
 * @param model the model.
 * @param prompt the text to continue (characters in the vocabulary).
 * @param options see {@linkcode InspectOptions}.
 * @returns an async generator of steps, see {@linkcode InspectStep}.
 * @throws {InputError} when the prompt or an option is out of range (at the first step).
 *
 * @example
 * ```ts
 * import { createModel, inspectStream } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * for await (const step of inspectStream(model, "ab", { tokens: 3, top: 2 })) {
 *   console.log(step.position, model.tokenizer.vocab[step.id], step.attention.length);
 * }
 * ```
 */
export async function* inspectStream(
  model: Model,
  prompt: string,
  options: InspectOptions = {},
): AsyncGenerator<InspectStep> {
  const m = modelOf(model);
  checkString("prompt", prompt);
  options = checkOptions(options, "options", "inspectStream");
  if (!webGpuChosen()) {
    const turn = eventLoopTurns();
    for (const step of inspectSteps(m, prompt, options)) {
      yield step;
      await turn();
    }
    return;
  }
  // the checks of inspectSteps, in its order, before the GPU is asked for
  const ids = m.tokenizer.encode(prompt, "the prompt");
  const s = inspectSettings(m, options);
  const cache = await takeGpuCache(m);
  try {
    let position = Math.max(ids.length, 1);
    const o = { ...s.sampling, tokens: s.count, rng: new Rng(s.seed), layer: s.layer };
    for await (const step of decodeGpu(cache, promptOrStart(m, ids), o)) {
      const shown = inspectStep(step, step.attention.slice(), position++, s);
      if (!allFinite(shown.probs)) throw nonFiniteLogits();
      yield shown;
    }
  } finally {
    giveGpuCache(m, cache);
  }
}

/**
 * {@linkcode inspectSteps} to the end, then {@linkcode attentionMap} over the whole text (the
 * prompt and what was generated): what the CLI's `inspect` prints and draws.
 *
 * @param model the model.
 * @param prompt the text to continue.
 * @param options see {@linkcode InspectOptions}.
 * @returns the prompt's and the generated ids, every step, and the attention map.
 * @throws {InputError} when the prompt or an option is out of range.
 *
 * @example
 * ```ts
 * import { createModel, inspect } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const r = inspect(model, "ab", { tokens: 4 });
 * console.log(model.tokenizer.decode([...r.prompt, ...r.generated]));
 * ```
 */
export function inspect(model: Model, prompt: string, options: InspectOptions = {}): InspectResult {
  const m = modelOf(model);
  checkString("prompt", prompt);
  options = checkOptions(options, "options", "inspect");
  const cache = takeCache(m);
  try {
    const r = inspectText(m, m.tokenizer.encode(prompt, "the prompt"), { ...options, cache });
    if (r.steps.some((step) => !allFinite(step.probs))) throw nonFiniteLogits();
    return r;
  } finally {
    giveCache(m, cache);
  }
}
