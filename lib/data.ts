/**
 * The corpus: decoding and validating its bytes, the train/validation split, random training
 * batches and the validation windows.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { ModelConfig } from "./model.ts";
import type { Rng } from "./rng.ts";
import { Tokenizer } from "./tokenizer.ts";

/** What reading a text for a model needs of it: its vocabulary and block size. */
type TextModel = { tokenizer: Tokenizer; config: Readonly<ModelConfig> };

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

/** What {@link decodeText} may tell its caller besides the text. */
export interface DecodeCorpusOptions {
  /**
   * Called with a one-line note when the bytes were read with a change: an incomplete final
   * character (a file cut mid-character) was dropped. The CLI prints it as `note: <message>`.
   */
  onNote?: (message: string) => void;
}

/**
 * Decodes corpus bytes as UTF-8, rejecting what is not text: invalid UTF-8 (the error says at
 * which byte offset, 0-based, and line), NUL bytes, empty files. An incomplete final character
 * (the last 1 to 3 bytes begin a character the file cuts off, as `head -c` leaves) is dropped,
 * with a note to `onNote`. `name` is how errors refer to the file.
 */
export function decodeText(
  bytes: Uint8Array,
  name: string,
  options: DecodeCorpusOptions = {},
): string {
  if (bytes.length === 0) throw new InputError(`corpus ${name} is empty; give a text file`);
  if (bytes.indexOf(0) >= 0) {
    throw new InputError(`corpus ${name} holds NUL bytes (a binary file?); give a UTF-8 text file`);
  }
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  try {
    return decoder.decode(bytes);
  } catch {
    // find where, below
  }
  const bad = utf8Error(bytes);
  if (bad === null) {
    throw new InputError(`corpus ${name} is not valid UTF-8; give a UTF-8 text file`);
  }
  if (!bad.truncated) {
    let line = 1;
    for (let i = 0; i < bad.offset; i++) if (bytes[i] === 0x0a) line++;
    const hex = bytes[bad.offset].toString(16).padStart(2, "0");
    throw new InputError(
      `corpus ${name} is not valid UTF-8: byte 0x${hex} at byte offset ${bad.offset} (line ${line}) does not begin a valid UTF-8 character; convert the file to UTF-8 (for example iconv -f latin1 -t utf-8), or if you cut it from a larger file, cut at a line end (head -n) rather than a byte count`,
    );
  }
  const cut = bytes.length - bad.offset;
  if (bad.offset === 0) {
    throw new InputError(
      `corpus ${name} holds only an incomplete UTF-8 character (${cut} byte${
        cut > 1 ? "s" : ""
      }); give a UTF-8 text file`,
    );
  }
  options.onNote?.(
    `dropped an incomplete final character (the last ${cut} byte${
      cut > 1 ? "s" : ""
    } of ${name}: the file ends mid-character)`,
  );
  return decoder.decode(bytes.subarray(0, bad.offset));
}

/**
 * The first ill-formed UTF-8 sequence of `bytes` (Unicode's well-formed byte sequences table): the
 * offset where it starts, and whether it is a valid beginning that the end of the bytes cuts off
 * (`truncated`). Null when all of it is well-formed.
 */
export function utf8Error(bytes: Uint8Array): { offset: number; truncated: boolean } | null {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    // the length of the sequence, and the range of its second byte
    let len: number, lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
      len = 3;
      if (b === 0xe0) lo = 0xa0; // no overlong forms
      if (b === 0xed) hi = 0x9f; // no surrogates
    } else if (b >= 0xf0 && b <= 0xf4) {
      len = 4;
      if (b === 0xf0) lo = 0x90; // no overlong forms
      if (b === 0xf4) hi = 0x8f; // nothing above U+10FFFF
    } else return { offset: i, truncated: false };
    for (let k = 1; k < len; k++) {
      if (i + k >= n) return { offset: i, truncated: true };
      const c = bytes[i + k];
      if (c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) {
        return { offset: i, truncated: false };
      }
    }
    i += len;
  }
  return null;
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

/** The token ids of a text, checked against a model's vocabulary. */
export function tokensOf(
  model: TextModel,
  data: string | Uint16Array,
  name = "the text",
): Uint16Array {
  if (typeof data === "string") return model.tokenizer.encode(data, name);
  const V = model.config.vocabSize;
  const bad = data.findIndex((id) => id >= V);
  if (bad >= 0) {
    throw new InputError(
      `token id ${
        data[bad]
      } at index ${bad} is outside the vocabulary of ${V}; encode the text with the model's tokenizer`,
    );
  }
  return data;
}

/**
 * The token ids of a text to evaluate, with the characters outside the vocabulary dropped first
 * when `unknown` is "drop" (how many: `dropped`).
 */
export function evalTokensOf(
  model: TextModel,
  data: string | Uint16Array,
  unknown: "error" | "drop" = "error",
): { tokens: Uint16Array; dropped: number } {
  if (unknown !== "error" && unknown !== "drop") {
    throw new InputError(
      `unknown ${JSON.stringify(unknown)} is not a choice; use "error" or "drop"`,
      {
        options: ["unknown"],
      },
    );
  }
  if (unknown === "error" || typeof data !== "string") {
    return { tokens: tokensOf(model, data), dropped: 0 };
  }
  const chars = [...data], kept = chars.filter((ch) => model.tokenizer.has(ch));
  const dropped = chars.length - kept.length, T = model.config.blockSize;
  if (dropped > 0 && kept.length < T + 1) {
    throw new InputError(
      `the text has ${dropped} characters outside the model's vocabulary and only ${kept.length} in it, fewer than blockSize + 1 = ${
        T + 1
      }; use a text written in the model's characters`,
      { options: ["blockSize"] },
    );
  }
  return { tokens: model.tokenizer.encode(kept.join("")), dropped };
}

/** The sha256 of a text's UTF-8 bytes (for ids, of the text they decode to). */
export async function sha256Hex(
  data: string | Uint16Array,
  model: { tokenizer: Tokenizer },
): Promise<string> {
  const text = typeof data === "string" ? data : model.tokenizer.decode(data);
  const bytes = new TextEncoder().encode(text);
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The token ids of a training text (InputErrors saying what to do when a character is outside the
 * vocabulary, or the training split holds no window of blockSize + 1).
 */
export function trainingTokens(
  model: { config: ModelConfig; tokenizer: Tokenizer },
  data: string | Uint16Array,
): Uint16Array {
  let tokens: Uint16Array;
  try {
    tokens = tokensOf(model, data, "the training text");
  } catch (e) {
    if (!(e instanceof InputError) || !/outside the model's vocabulary/.test(e.message)) throw e;
    throw new InputError(
      `${e.message}, or grow the vocabulary first: extendVocabulary(model, text)`,
    );
  }
  const T = model.config.blockSize, train = splitIndex(tokens.length);
  if (train < T + 1) {
    throw new InputError(
      `the training split (the first 90% of the text) has ${train} characters, fewer than blockSize + 1 = ${
        T + 1
      }; use a longer text or a smaller blockSize`,
      { options: ["blockSize"] },
    );
  }
  return tokens;
}
