/**
 * Look inside the model: generation step by step with the top candidate probabilities of each
 * step and the attention of the query that chose it, and the attention maps of a layer over a
 * window of text, from one batched pass (the two views of BareGPT's notebook). `draw.ts` turns
 * them into pictures.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { FloatArray } from "./kernels/dispatch.ts";
import { type GPT, KVCache } from "./model.ts";
import { checkOption, checkSampling, INSPECT_OPTIONS, SAMPLING_OPTIONS } from "./options.ts";
import { Rng } from "./rng.ts";
import { decodeSteps, nextDistribution, promptOrStart, type SamplingOptions } from "./sample.ts";

// ---------------------------------------------------------------------------------------------
// Candidates

/** One candidate for the next character: its token id and probability. */
export interface Candidate {
  /** Its token id. */
  id: number;
  /** Its probability. */
  prob: number;
}

/**
 * The `n` most likely entries of a probability vector, most likely first (ties by id, so the
 * order is deterministic). Entries of probability 0 are left out.
 */
export function topCandidates(probs: ArrayLike<number>, n: number): Candidate[] {
  const out: Candidate[] = [];
  // insertion into a short sorted list: O(V n), no full sort of the vocabulary
  for (let id = 0; id < probs.length; id++) {
    const prob = probs[id];
    if (!(prob > 0)) continue;
    if (out.length === n && prob <= out[n - 1].prob) continue;
    let at = out.length;
    while (at > 0 && out[at - 1].prob < prob) at--;
    out.splice(at, 0, { id, prob });
    if (out.length > n) out.pop();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generation step by step

/** Options of {@link inspectSteps} and {@link inspectText}. */
export interface InspectOptions extends SamplingOptions {
  /** Characters to generate. Default 20. */
  tokens?: number;
  /** Candidates kept per step. Default 5. */
  top?: number;
  /** Layer whose attention is recorded. Default: the last. */
  layer?: number;
  /** Seed of the random draws (default 0); used only when temperature > 0. */
  seed?: number;
}

/** One generated step. */
export interface InspectStep {
  /** Index of the generated character in the whole text (prompt + generated). */
  position: number;
  /** Token id of the character chosen. */
  id: number;
  /** Its probability under the shown distribution. */
  prob: number;
  /** The most likely characters, most likely first. */
  candidates: Candidate[];
  /**
   * The distribution shown: the one the character was drawn from (after temperature, top-k and
   * top-p), or with greedy decoding (temperature 0) the model's plain softmax.
   */
  probs: Float64Array;
  /**
   * What the query that predicted this character (the character before it) attended to in the
   * recorded layer: [H, windowLength], row h over the cache's positions 0..windowLength-1.
   */
  attention: Float32Array;
  /** Index in the whole text of the cache's position 0 when this step was computed. */
  windowStart: number;
}

function checkLayer(model: GPT, layer: number): void {
  checkOption("layer", layer, { min: 0, max: model.config.nLayers - 1, integer: true });
}

/** {@link InspectOptions} checked, with their defaults: what a step-by-step generation runs. */
export interface InspectSettings {
  /** Characters to generate, candidates kept per step, the layer recorded, the draws' seed. */
  count: number;
  top: number;
  layer: number;
  seed: number;
  /** The draws' temperature (default 0: greedy), top-k and top-p. */
  sampling: SamplingOptions;
}

/** Checks the options of {@link inspectSteps} (InputErrors naming them) and fills the defaults. */
export function inspectSettings(model: GPT, options: InspectOptions): InspectSettings {
  const V = model.config.vocabSize, o = INSPECT_OPTIONS;
  const count = checkOption("tokens", options.tokens ?? o.tokens.default!, o.tokens);
  const top = checkOption("top", options.top ?? Math.min(o.top.default!, V), { ...o.top, max: V });
  if (options.seed !== undefined) checkOption("seed", options.seed, SAMPLING_OPTIONS.seed);
  const layer = options.layer ?? model.config.nLayers - 1;
  const sampling: SamplingOptions = {
    temperature: options.temperature ?? 0,
    topK: options.topK,
    topP: options.topP,
  };
  checkSampling(sampling, V);
  checkLayer(model, layer);
  return { count, top, layer, seed: options.seed ?? 0, sampling };
}

/**
 * The step that the decoding loop's draw becomes: the distribution shown (the one drawn from, or
 * when greedy the plain softmax of the logits), the chosen id's probability, the top candidates,
 * and the attention [H, windowLength] of the query that produced the logits (kept, not copied).
 */
export function inspectStep(
  step: { id: number; probs: Float64Array; logits: FloatArray; windowStart: number },
  attention: Float32Array,
  position: number,
  s: InspectSettings,
): InspectStep {
  const { id, windowStart } = step;
  const shown = s.sampling.temperature === 0
    ? nextDistribution(step.logits, {})
    : Float64Array.from(step.probs);
  const candidates = topCandidates(shown, s.top);
  return { position, id, prob: shown[id], candidates, probs: shown, attention, windowStart };
}

/**
 * Generates `tokens` characters after a prompt, one step at a time, yielding for each the
 * character chosen, the top candidates and the attention of the query that predicted it.
 *
 * The choices are exactly those of generation with the same options (same sliding window, same
 * random draws): greedy by default, or sampled with `temperature` and `seed`. An empty prompt
 * starts from a newline, which then counts as the text's first character.
 */
export function* inspectSteps(
  model: GPT,
  prompt: ArrayLike<number>,
  options: InspectOptions & { cache?: KVCache } = {},
): Generator<InspectStep> {
  const T = model.config.blockSize, H = model.config.nHeads;
  const s = inspectSettings(model, options);
  let position = Math.max(prompt.length, 1);
  const steps = decodeSteps(model, prompt, {
    ...s.sampling,
    tokens: s.count,
    rng: new Rng(s.seed),
    cache: options.cache,
  });
  for (const step of steps) {
    const { cache } = step, q = cache.length - 1; // the query that produced these logits
    const attention = new Float32Array(H * cache.length);
    const maps = cache.attention[s.layer];
    for (let h = 0; h < H; h++) {
      const row = (h * T + q) * T;
      attention.set(maps.subarray(row, row + cache.length), h * cache.length);
    }
    yield inspectStep(step, attention, position++, s);
  }
}

// ---------------------------------------------------------------------------------------------
// Attention over a window

/** The attention maps of one layer over a window of text, from one batched forward pass. */
export interface AttentionMap {
  /** The layer shown (0-based). */
  layer: number;
  /** The model's layer count. */
  nLayers: number;
  /** Heads per layer (one map each). */
  nHeads: number;
  /** Index in the whole text of the window's first character. */
  start: number;
  /** Token ids of the window (n of them). */
  tokens: number[];
  /** Characters of the window that belong to the prompt (the first promptLength; 0 if none). */
  promptLength: number;
  /** Attention probabilities [H, n, n]: entry (h, t, j) is what query t gave key j (0 for j > t). */
  probs: Float32Array;
  /** Logits of every row of the pass, [n, V]: row t predicts the character after position t. */
  logits: Float32Array;
}

/** Options of {@link attentionWindow}. */
export interface AttentionOptions {
  /** Layer (default: the last). */
  layer?: number;
  /** Prompt length in the whole text, to tell prompt from generated characters (default 0). */
  promptLength?: number;
  /** A cache to reuse (it is reset); default a new one. */
  cache?: KVCache;
}

/**
 * Feeds the last `blockSize` tokens of `text` into a fresh cache in one batched pass and returns
 * the attention maps of a layer over that window, with every row's logits. Every row comes from
 * the same pass, so the map is what one forward over the window computes.
 */
export function attentionWindow(
  model: GPT,
  text: ArrayLike<number>,
  options: AttentionOptions = {},
): AttentionMap {
  const c = model.config;
  const T = c.blockSize, H = c.nHeads;
  const layer = options.layer ?? c.nLayers - 1;
  checkLayer(model, layer);
  if (text.length === 0) throw new InputError("the text to inspect is empty; give a prompt");
  const start = Math.max(0, text.length - T);
  const tokens = Array.from(text).slice(start);
  const n = tokens.length;
  const cache = options.cache ?? new KVCache(model);
  cache.reset();
  const logits = Float32Array.from(cache.feed(tokens, true)); // [n, V]
  const maps = cache.attention[layer];
  const probs = new Float32Array(H * n * n);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < n; t++) {
      const row = (h * T + t) * T;
      probs.set(maps.subarray(row, row + n), (h * n + t) * n);
    }
  }
  return {
    layer,
    nLayers: c.nLayers,
    nHeads: H,
    start,
    tokens,
    promptLength: Math.max(0, Math.min(n, (options.promptLength ?? 0) - start)),
    probs,
    logits,
  };
}

/** The result of {@link inspectText}. */
export interface InspectResult {
  /** The prompt's ids (an empty prompt becomes the newline). */
  prompt: number[];
  /** The generated ids. */
  generated: number[];
  /** Every generated step. */
  steps: InspectStep[];
  /** The chosen layer's attention over the last blockSize characters of prompt + generated. */
  attention: AttentionMap;
}

/**
 * Runs {@link inspectSteps} to the end, then {@link attentionWindow} over the whole text (prompt
 * and generated, the last blockSize characters of it).
 */
export function inspectText(
  model: GPT,
  prompt: ArrayLike<number>,
  options: InspectOptions & { cache?: KVCache } = {},
): InspectResult {
  const promptIds = promptOrStart(model, prompt);
  const cache = options.cache ?? new KVCache(model);
  const steps = [...inspectSteps(model, promptIds, { ...options, cache })];
  const generated = steps.map((s) => s.id);
  const attention = attentionWindow(model, [...promptIds, ...generated], {
    layer: options.layer,
    promptLength: promptIds.length,
    cache,
  });
  return { prompt: promptIds, generated, steps, attention };
}
