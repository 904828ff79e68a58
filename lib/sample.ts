/**
 * Sampling: the next-character distribution shaped by temperature, top-k and top-p (nucleus),
 * a seeded draw from it, and the generation loop over a KV cache that slides when it is full.
 *
 * @module
 */

import type { FloatArray } from "./kernels/dispatch.ts";
import { type GPT, KVCache } from "./model.ts";
import type { Rng } from "./rng.ts";

/** How the next character is drawn from the model's distribution. */
export interface SamplingOptions {
  /** Divides the logits: below 1 is more conservative, 0 always picks the most likely. Default 1. */
  temperature?: number;
  /** Keep only the k most likely characters (0: all). Default 0. */
  topK?: number;
  /** Keep the fewest most likely characters whose probabilities reach p (1: all). Default 1. */
  topP?: number;
}

/**
 * The distribution after temperature, top-k and top-p, as float64 probabilities (zero for the
 * characters cut off). Temperature 0 puts all the mass on the most likely character.
 */
export function nextDistribution(
  logits: FloatArray,
  o: SamplingOptions = {},
  out = new Float64Array(logits.length),
): Float64Array {
  const V = logits.length, temperature = o.temperature ?? 1, topK = o.topK ?? 0, topP = o.topP ?? 1;
  let best = 0;
  for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
  out.fill(0);
  if (temperature === 0) {
    out[best] = 1;
    return out;
  }
  let sum = 0;
  for (let i = 0; i < V; i++) sum += out[i] = Math.exp((logits[i] - logits[best]) / temperature);
  for (let i = 0; i < V; i++) out[i] /= sum;
  if ((topK > 0 && topK < V) || topP < 1) {
    // most likely first, ties by id, so the cut is deterministic
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => out[b] - out[a] || a - b);
    let keep = topK > 0 ? Math.min(topK, V) : V, mass = 0;
    for (let r = 0; r < keep && topP < 1; r++) {
      mass += out[order[r]];
      if (mass >= topP) keep = r + 1;
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
  let acc = 0, last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  return last; // rounding left u above the total: the last possible index
}

/** Options of generation (the library's `generate`, the CLI's `sample`). */
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

/** The prompt's ids, or for an empty prompt a newline (token 0 without one): a text's start. */
export function promptOrStart(model: GPT, prompt: ArrayLike<number>): number[] {
  const tok = model.tokenizer;
  return Array.from(prompt.length > 0 ? prompt : [tok.has("\n") ? tok.encode("\n")[0] : 0]);
}

/** One step of {@link decodeSteps}: the token chosen and what it was chosen from. */
export interface DecodeStep {
  /** The token chosen. */
  id: number;
  /** The distribution it was drawn from (a buffer the next step reuses). */
  probs: Float64Array;
  /** The step's logits [V] (a view of the cache's buffer). */
  logits: FloatArray;
  /** The cache as it was when the logits were computed (its last row is the query). */
  cache: KVCache;
  /** Index, in the whole text (prompt first), of the cache's position 0. */
  windowStart: number;
}

/**
 * The generation loop: feeds the prompt's ids (their last blockSize; an empty prompt starts from
 * a newline, or token 0 without one, which then counts as the text's first character), then for
 * each step draws a token, yields it with its distribution, and feeds it. When the window
 * reaches blockSize tokens it keeps the last blockSize/2 and rebuilds the cache in one pass.
 */
export function* decodeSteps(
  model: GPT,
  prompt: ArrayLike<number>,
  o: SamplingOptions & { tokens: number; rng: Rng; cache?: KVCache },
): Generator<DecodeStep> {
  const T = model.config.blockSize, text = promptOrStart(model, prompt);
  let windowStart = Math.max(0, text.length - T);
  let window = text.slice(windowStart);
  const cache = o.cache ?? new KVCache(model);
  cache.reset();
  let logits = cache.feed(window);
  const probs = new Float64Array(model.config.vocabSize);
  for (let i = 0; i < o.tokens; i++) {
    nextDistribution(logits, o, probs);
    const id = drawIndex(probs, o.rng.random());
    yield { id, probs, logits, cache, windowStart };
    if (i === o.tokens - 1) break;
    if (window.length < T) {
      window.push(id);
      logits = cache.feed([id]);
    } else {
      const drop = T - Math.floor(T / 2);
      window = [...window.slice(drop), id];
      windowStart += drop;
      cache.reset();
      logits = cache.feed(window);
    }
  }
}
