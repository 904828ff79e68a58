/**
 * The corpus: decoding and validating its bytes, the train/validation split, random training
 * batches and the validation windows.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { Rng } from "./rng.ts";
import { Tokenizer } from "./tokenizer.ts";

/** A tokenized corpus with its split. */
export interface Corpus {
  tokenizer: Tokenizer;
  /** Every token of the corpus (one per code point). */
  tokens: Uint16Array;
  /** The first 90% of the tokens, for training. */
  train: Uint16Array;
  /** The last 10% (from index floor(0.9 n)), for validation. */
  val: Uint16Array;
}

/**
 * Decodes corpus bytes as UTF-8, rejecting what is not text: invalid UTF-8, NUL bytes, empty
 * files. `name` is how errors refer to the file.
 */
export function decodeText(bytes: Uint8Array, name: string): string {
  if (bytes.length === 0) throw new InputError(`corpus ${name} is empty; give a text file`);
  if (bytes.indexOf(0) >= 0) {
    throw new InputError(`corpus ${name} holds NUL bytes (a binary file?); give a UTF-8 text file`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new InputError(`corpus ${name} is not valid UTF-8; give a UTF-8 text file`);
  }
}

/** Index where the validation split starts: floor(0.9 n). */
export function splitIndex(n: number): number {
  return Math.floor(0.9 * n);
}

/**
 * Tokenizes a text and splits it. The tokenizer defaults to the text's own characters; pass a
 * model's tokenizer to read a corpus with its vocabulary (unknown characters are an error).
 */
export function makeCorpus(text: string, tokenizer: Tokenizer = Tokenizer.fromText(text)): Corpus {
  const tokens = tokenizer.encode(text);
  const split = splitIndex(tokens.length);
  return { tokenizer, tokens, train: tokens.subarray(0, split), val: tokens.subarray(split) };
}

/**
 * Fills inputs[B*T] and targets[B*T] with B random windows of `tokens` (targets are the inputs
 * shifted by one).
 */
export function randomBatch(
  inputs: Uint16Array,
  targets: Uint16Array,
  tokens: Uint16Array,
  B: number,
  T: number,
  rng: Rng,
): void {
  const starts = tokens.length - T; // a window needs T + 1 tokens
  for (let b = 0; b < B; b++) {
    const s = rng.int(starts);
    inputs.set(tokens.subarray(s, s + T), b * T);
    targets.set(tokens.subarray(s + 1, s + T + 1), b * T);
  }
}

/** Number of non-overlapping T-token windows with targets in `tokens`: floor((n - 1) / T). */
export function windowCount(n: number, T: number): number {
  return Math.max(0, Math.floor((n - 1) / T));
}

/**
 * Fills inputs/targets with `count` windows, numbers windows[first .. first+count): window w reads
 * tokens [wT, (w+1)T) and its targets are the next tokens.
 */
export function windowBatch(
  inputs: Uint16Array,
  targets: Uint16Array,
  tokens: Uint16Array,
  windows: readonly number[],
  first: number,
  count: number,
  T: number,
): void {
  for (let b = 0; b < count; b++) {
    const s = windows[first + b] * T;
    inputs.set(tokens.subarray(s, s + T), b * T);
    targets.set(tokens.subarray(s + 1, s + T + 1), b * T);
  }
}
