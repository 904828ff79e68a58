/**
 * Sampling: temperature, top-k and top-p (nucleus) over the next-character distribution, a seeded
 * RNG, and streaming generation over a KV cache that slides when the window is full.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { type GPT, KVCache } from "./model.ts";
import { Rng } from "./rng.ts";
import type { FloatArray } from "./tensor.ts";

/** How the next character is chosen. */
export interface SamplingOptions {
  /** Divides the logits; 0 picks the most likely character (greedy). Default 1. */
  temperature?: number;
  /** Keep only the k most likely characters (0 or absent: all). */
  topK?: number;
  /** Keep the smallest set of most likely characters whose mass reaches p (1 or absent: all). */
  topP?: number;
}

/** Throws InputError when sampling options are out of range. */
export function validateSampling(o: SamplingOptions, vocabSize?: number): void {
  const t = o.temperature ?? 1;
  if (!(t >= 0 && t <= 100)) {
    throw new InputError(`temperature ${t} is out of range; use a number from 0 to 100`);
  }
  const k = o.topK ?? 0;
  if (!Number.isInteger(k) || k < 0 || (vocabSize !== undefined && k > vocabSize)) {
    throw new InputError(
      `top-k ${k} is out of range; use an integer from 0 (off) to the vocabulary size${
        vocabSize === undefined ? "" : ` (${vocabSize})`
      }`,
    );
  }
  const p = o.topP ?? 1;
  if (!(p > 0 && p <= 1)) {
    throw new InputError(`top-p ${p} is out of range; use a number above 0 and at most 1`);
  }
}

/**
 * The next-character distribution after temperature, top-k and top-p, as float64 probabilities
 * (zero for characters cut off). Temperature 0 puts all mass on the most likely character.
 */
export function nextDistribution(
  logits: FloatArray,
  options: SamplingOptions = {},
  out: Float64Array = new Float64Array(logits.length),
): Float64Array {
  const V = logits.length;
  const temperature = options.temperature ?? 1;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  out.fill(0);
  if (temperature === 0) {
    out[best] = 1;
    return out;
  }
  let sum = 0;
  for (let i = 0; i < V; i++) {
    out[i] = Math.exp((logits[i] - logits[best]) / temperature);
    sum += out[i];
  }
  for (let i = 0; i < V; i++) out[i] /= sum;
  const topK = options.topK ?? 0;
  const topP = options.topP ?? 1;
  if ((topK > 0 && topK < V) || topP < 1) {
    // most likely first; ties by id, so the cut is deterministic
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => out[b] - out[a] || a - b);
    let keep = topK > 0 ? Math.min(topK, V) : V;
    if (topP < 1) {
      let mass = 0;
      for (let r = 0; r < keep; r++) {
        mass += out[order[r]];
        if (mass >= topP) {
          keep = r + 1;
          break;
        }
      }
    }
    let kept = 0;
    for (let r = 0; r < V; r++) {
      if (r < keep) kept += out[order[r]];
      else out[order[r]] = 0;
    }
    for (let i = 0; i < V; i++) out[i] /= kept;
  }
  return out;
}

/** Draws an index from a probability vector with a uniform number u in [0, 1). */
export function drawIndex(probs: ArrayLike<number>, u: number): number {
  let acc = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  return last; // rounding left u above the total: the last possible index
}

/** Options of {@link generateTokens} and {@link decodeSteps}. */
export interface GenerateOptions extends SamplingOptions {
  /** Characters to produce. Default 1000. */
  tokens?: number;
  /** RNG seed (default 0) or a generator. */
  seed?: number | Rng;
  /** A cache to reuse (it is reset first); default a new one. */
  cache?: KVCache;
}

/** One step of {@link decodeSteps}: the token chosen and what it was chosen from. */
export interface DecodeStep {
  /** The token chosen. */
  id: number;
  /** The distribution it was drawn from (a buffer reused by the next step). */
  probs: Float64Array;
  /** The logits of the step, [V] (a view of the cache's buffer). */
  logits: FloatArray;
  /** The cache, as it was when the logits were computed (its last row is the query). */
  cache: KVCache;
  /** Index, in the whole text (prompt first), of the cache's position 0. */
  windowStart: number;
}

/**
 * The generation loop: feeds the prompt (its last blockSize tokens; an empty prompt starts from
 * a newline when the vocabulary has one, else from token 0, which then counts as the text's first
 * token), then for each step draws a token, yields it with its distribution, and feeds it. Each
 * new token costs one cached step; when the window reaches blockSize tokens it keeps the last
 * blockSize/2 and rebuilds the cache in one batched pass.
 */
export function* decodeSteps(
  model: GPT,
  prompt: ArrayLike<number>,
  newlineId: number,
  options: GenerateOptions = {},
): Generator<DecodeStep> {
  const T = model.config.blockSize;
  const count = options.tokens ?? 1000;
  const rng = options.seed instanceof Rng ? options.seed : new Rng(options.seed ?? 0);
  const text = Array.from(prompt.length > 0 ? prompt : [Math.max(0, newlineId)]);
  let windowStart = Math.max(0, text.length - T);
  let window = text.slice(windowStart);
  const cache = options.cache ?? new KVCache(model);
  cache.reset();
  let logits = cache.feed(window);
  const probs = new Float64Array(model.config.vocabSize);
  for (let i = 0; i < count; i++) {
    nextDistribution(logits, options, probs);
    const id = drawIndex(probs, rng.random());
    yield { id, probs, logits, cache, windowStart };
    if (i === count - 1) break;
    if (window.length === T) {
      const drop = T - Math.floor(T / 2);
      window = window.slice(drop);
      windowStart += drop;
      window.push(id);
      cache.reset();
      logits = cache.feed(window);
    } else {
      window.push(id);
      logits = cache.feed([id]);
    }
  }
}

/** The token ids of {@link decodeSteps}. */
export function* generateTokens(
  model: GPT,
  prompt: ArrayLike<number>,
  newlineId: number,
  options: GenerateOptions = {},
): Generator<number> {
  for (const step of decodeSteps(model, prompt, newlineId, options)) yield step.id;
}
