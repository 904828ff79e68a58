/**
 * The character tokenizer: one token per Unicode code point of the corpus, ids in the order of
 * the sorted code points (a vocabulary grown for fine-tuning appends its new characters after
 * the known ones, so any order of distinct characters is accepted).
 *
 * @module
 */

import { InputError } from "./errors.ts";

/** Most distinct characters a vocabulary can hold (ids are stored as Uint16). */
export const MAX_VOCAB = 65536;

/**
 * Maps characters (code points) to token ids and back. A model's tokenizer comes with it
 * (`model.tokenizer`); {@linkcode Tokenizer.fromText} makes one from a corpus.
 *
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * const tok = Tokenizer.fromText("hello");
 * console.log(tok.vocab); // ["e", "h", "l", "o"]
 * const ids = tok.encode("hole"); // Uint16Array [1, 3, 2, 0]
 * console.log(tok.decode(ids)); // "hole"
 * ```
 */
export class Tokenizer {
  /** The characters, index = token id. */
  readonly vocab: readonly string[];
  readonly #ids: Map<string, number>;

  /**
   * A tokenizer over the given characters, in that order (index = token id; sorted or not).
   *
   * @param vocab distinct single characters.
   * @throws {InputError} when the list is empty, too long, or repeats a character.
   */
  constructor(vocab: readonly string[]) {
    if (vocab.length === 0) {
      throw new InputError("the vocabulary is empty; train on a non-empty corpus");
    }
    if (vocab.length > MAX_VOCAB) {
      throw new InputError(
        `the corpus has ${vocab.length} distinct characters, more than the ${MAX_VOCAB} a vocabulary can hold; use a text with fewer distinct characters`,
      );
    }
    this.vocab = vocab;
    this.#ids = new Map(vocab.map((ch, i) => [ch, i]));
    if (this.#ids.size !== vocab.length) {
      throw new InputError("the vocabulary repeats a character; the weights file is corrupt");
    }
  }

  /** The tokenizer of a text: its distinct code points, sorted by code point. */
  static fromText(text: string): Tokenizer {
    const chars = [...new Set(text)];
    chars.sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
    return new Tokenizer(chars);
  }

  /**
   * A stand-in vocabulary of `size` characters (code points from U+10000), for models built
   * without a text, such as the gradient checks'.
   */
  static placeholder(size: number): Tokenizer {
    return new Tokenizer(Array.from({ length: size }, (_, i) => String.fromCodePoint(0x10000 + i)));
  }

  /** Number of distinct tokens. */
  get size(): number {
    return this.vocab.length;
  }

  /** True when `ch` (one code point) is in the vocabulary. */
  has(ch: string): boolean {
    return this.#ids.has(ch);
  }

  /**
   * The ids of `text`, one per code point; throws InputError naming every unknown character, in
   * order of first appearance (and the text as `name`, e.g. "the prompt").
   */
  encode(text: string, name = "the text"): Uint16Array {
    const chars = [...text];
    const unknown = new Set(chars.filter((ch) => !this.#ids.has(ch)));
    if (unknown.size > 0) {
      // every one, in order of first appearance, escaped (JSON) so the message stays one line
      const names = [...unknown].map((ch) => JSON.stringify(ch)).join(", ");
      throw new InputError(
        `${name} has ${unknown.size} character${
          unknown.size > 1 ? "s" : ""
        } outside the model's vocabulary: ${names}; use only characters of the training corpus`,
      );
    }
    return Uint16Array.from(chars, (ch) => this.#ids.get(ch)!);
  }

  /** The text of a sequence of ids. */
  decode(ids: ArrayLike<number>): string {
    let s = "";
    for (let i = 0; i < ids.length; i++) s += this.vocab[ids[i]];
    return s;
  }
}
