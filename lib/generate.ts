/**
 * The library's generation and inspection: streaming text, the next-character distribution,
 * attention maps and step-by-step inspection, over KV caches reused per model. Thin adapters
 * over `sample.ts` and `inspect.ts` that take and give text.
 *
 * @module
 */

import { modelOf, nonFiniteLogits } from "./api.ts";
import { allFinite } from "./checkpoint.ts";
import { InputError } from "./errors.ts";
import {
  type AttentionMap,
  attentionWindow,
  type InspectOptions,
  type InspectResult,
  type InspectStep,
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

function takeCache(model: GPT): KVCache {
  const cache = idleCaches.get(model)?.pop() ?? new KVCache(model);
  cache.reset();
  return cache;
}

function giveCache(model: GPT, cache: KVCache): void {
  const list = idleCaches.get(model);
  if (list) list.push(cache);
  else idleCaches.set(model, [cache]);
}

/** The prompt's ids: its last blockSize characters (errors name "the prompt"). */
function promptIds(model: GPT, prompt: string): Uint16Array {
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
  const cache = takeCache(m);
  let last = performance.now();
  try {
    for (const step of decodeSteps(m, ids, { ...o, tokens: count, rng, cache })) {
      if (o.signal?.aborted) return;
      // NaN or Inf logits (weights that overflow) draw nonsense: an error instead (one pass, V)
      if (!allFinite(step.logits)) throw nonFiniteLogits();
      yield vocab[step.id];
      if (performance.now() - last > 15) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        last = performance.now();
      }
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
    for await (const id of steps) {
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
  /** `weights[layer][head][query][key]`; each row sums to 1 over keys 0..query. */
  weights: number[][][][];
}

/**
 * The attention probabilities of every layer and head over a text (its last blockSize
 * characters), from one pass through the model.
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
  const m = modelOf(model);
  checkString("text", text);
  if (text.length === 0) throw new InputError("the text to look at is empty; give some characters");
  const weights = Array.from({ length: m.config.nLayers }, (_, layer) => {
    const map = attentionMap(m, text, { layer });
    const n = map.tokens.length;
    return Array.from(
      { length: map.nHeads },
      (_, h) =>
        Array.from(
          { length: n },
          (_, q) => Array.from(map.probs.subarray((h * n + q) * n, (h * n + q + 1) * n)),
        ),
    );
  });
  const ids = promptIds(m, text);
  return { chars: Array.from(ids, (id) => m.tokenizer.vocab[id]), weights };
}

/**
 * One layer's attention over the last blockSize characters of a text, from one batched pass,
 * with every row's logits: what the heatmaps of `draw.ts` (`renderAttentionSvg`) draw.
 *
 * @param model the model.
 * @param text a non-empty text in the vocabulary.
 * @param options the layer (default: the last) and how many of the text's first characters are
 * the prompt (drawn grey).
 * @returns the map, see {@linkcode AttentionMap}.
 * @throws {InputError} when the text is empty, has characters outside the vocabulary, or the
 * layer is out of range.
 *
 * @example
 * ```ts
 * import { attentionMap, createModel } from "@baregpt/baregpt";
 * const model = createModel("to be or not", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const map = attentionMap(model, "to be", { layer: 0 });
 * console.log(map.tokens.length, map.probs.length); // 5 50
 * ```
 */
export function attentionMap(
  model: Model,
  text: string,
  options: { layer?: number; promptLength?: number } = {},
): AttentionMap {
  const m = modelOf(model);
  checkString("text", text);
  options = checkOptions(options, "options", "attentionMap");
  const cache = takeCache(m);
  try {
    return attentionWindow(m, m.tokenizer.encode(text), { ...options, cache });
  } finally {
    giveCache(m, cache);
  }
}

/**
 * One activation of a forward pass, as {@linkcode forwardActivations} lists them.
 *
 * @example
 * ```ts
 * import type { NamedActivation } from "@baregpt/baregpt";
 * const a: NamedActivation = { name: "ln_f", what: "the final LayerNorm", shape: [1, 2], values: new Float32Array(2) };
 * console.log(`${a.name} [${a.shape.join(", ")}]`);
 * ```
 */
export interface NamedActivation {
  /** Where it is, in GPT-2's names: `embedding`, `h.0.ln_1`, `h.0.attn.probs`, ..., `logits`. */
  name: string;
  /** What it is, in a few words of math. */
  what: string;
  /** Its shape: [n, C] for n characters of C = dModel values, [H, n, n] for attention. */
  shape: number[];
  /** Its values, row-major (a copy). */
  values: Float32Array;
}

/**
 * Runs one forward pass over a text (its last blockSize characters) and returns every activation
 * it computes, in order, named and shaped: the embedding; per block its LayerNorms, the queries,
 * keys and values, the attention probabilities of every head, the heads' output, the MLP's two
 * layers and the residual stream after each half; the final LayerNorm and the logits.
 *
 * @param model the model.
 * @param text a non-empty text whose characters are in the vocabulary.
 * @returns the activations, input to output.
 * @throws {InputError} when the text is empty or has characters outside the vocabulary.
 *
 * @example
 * ```ts
 * import { createModel, forwardActivations } from "@baregpt/baregpt";
 * const model = createModel("to be or not", { dModel: 16, nHeads: 2, nLayers: 1 });
 * for (const { name, shape } of forwardActivations(model, "to be")) {
 *   console.log(name.padEnd(16), shape.join(" x ")); // embedding 5 x 16 ... logits 5 x 7
 * }
 * ```
 */
export function forwardActivations(model: Model, text: string): NamedActivation[] {
  const m = modelOf(model), { blockSize: T, dModel: C, nHeads: H, vocabSize: V } = m.config;
  checkString("text", text);
  if (text.length === 0) throw new InputError("the text to look at is empty; give some characters");
  const ids = promptIds(m, text), n = ids.length;
  const cache = takeCache(m);
  try {
    const logits = cache.feed(ids, true);
    const list: NamedActivation[] = [];
    const add = (name: string, what: string, shape: number[], values: ArrayLike<number>) =>
      list.push({ name, what, shape, values: Float32Array.from(values) });
    const a = cache.acts;
    add("embedding", "wte[token] + wpe[position]", [n, C], a.encoded.subarray(0, n * C));
    for (const [l, b] of a.blocks.entries()) {
      const h = `h.${l}.`;
      const rows = (x: Float32Array | Float64Array, width: number) => x.subarray(0, n * width);
      add(`${h}ln_1`, "LayerNorm(x)", [n, C], rows(b.ln1.out, C));
      add(`${h}attn.qkv`, "ln_1 · c_attn: queries | keys | values", [n, 3 * C], rows(b.qkv, 3 * C));
      const probs = new Float32Array(H * n * n);
      for (let k = 0; k < H; k++) {
        for (let t = 0; t < n; t++) {
          const row = (k * T + t) * T;
          probs.set(b.attnProbs.subarray(row, row + n), (k * n + t) * n);
        }
      }
      add(`${h}attn.probs`, "softmax(q · kᵀ / √(C/H)), causal, per head", [H, n, n], probs);
      add(`${h}attn.heads`, "probs · v, the heads side by side", [n, C], rows(b.attnOut, C));
      add(`${h}residual`, "x + heads · c_proj", [n, C], rows(b.residualAttn, C));
      add(`${h}ln_2`, "LayerNorm(x)", [n, C], rows(b.ln2.out, C));
      add(`${h}mlp.fc`, "ln_2 · c_fc", [n, 4 * C], rows(b.fc, 4 * C));
      add(`${h}mlp.gelu`, "GELU(fc)", [n, 4 * C], rows(b.fcGelu, 4 * C));
      add(`${h}out`, "x + gelu · mlp.c_proj: the block's output", [n, C], rows(b.residualOut, C));
    }
    add("ln_f", "LayerNorm(x), the final one", [n, C], a.head.lnf.out.subarray(0, n * C));
    add("logits", "ln_f · wteᵀ: a score per character", [n, V], logits);
    return list;
  } finally {
    giveCache(m, cache);
  }
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
