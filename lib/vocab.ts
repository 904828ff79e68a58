/**
 * Growing a model's vocabulary for fine-tuning on a text with characters it has never seen.
 *
 * @module
 */

import { ensureKernels, type Model, modelMade, modelOf, reserveFor } from "./api.ts";
import { GPT, parameterSpecs } from "./model.ts";
import { checkOption, MODEL_OPTIONS } from "./options.ts";
import { Rng } from "./rng.ts";
import { Tokenizer } from "./tokenizer.ts";

/**
 * Options of {@linkcode extendVocabulary}.
 *
 * @example
 * ```ts
 * import type { ExtendOptions } from "@baregpt/baregpt";
 * const options: ExtendOptions = { seed: 7 };
 * console.log(options.seed); // 7
 * ```
 */
export interface ExtendOptions {
  /** Seed of the new embedding rows' normal(0, 0.02) initialization. Default 0. */
  seed?: number;
}

/**
 * The result of {@linkcode extendVocabulary}.
 *
 * @example
 * ```ts
 * import { createModel, extendVocabulary, type Extension } from "@baregpt/baregpt";
 * const grown: Extension = extendVocabulary(createModel("ab", { dModel: 16, nHeads: 2 }), "abc");
 * console.log(grown.added); // ["c"]
 * ```
 */
export interface Extension {
  /** The model with the grown vocabulary (the same model when nothing was added). */
  model: Model;
  /** The characters added, in the order of their new ids (code-point order). */
  added: string[];
}

/**
 * The characters of `text` that are not in the tokenizer, each once, in code-point order.
 */
export function newCharacters(tokenizer: Tokenizer, text: string): string[] {
  const added = [...new Set(text)].filter((ch) => !tokenizer.has(ch));
  return added.sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
}

/**
 * Grows a model's vocabulary by the characters of `text` it lacks, for fine-tuning on that text.
 * The known characters keep their ids; the new ones follow them in code-point order (so the
 * vocabulary is no longer sorted; a weights file's `vocab` keeps the order). Every parameter is
 * copied; the new rows of the token embedding `wte` are drawn from normal(0, 0.02), as a new
 * model's are, from `seed`. The facts are kept. The model's predictions among the known
 * characters do not change: only new logits appear.
 *
 * @param model the model to grow (left as it is).
 * @param text the text to fine-tune on (or just its characters).
 * @param options the seed of the new rows; see {@linkcode ExtendOptions}.
 * @returns the grown model and the added characters; without new characters, the same model and
 * `added: []`.
 * @throws {InputError} when the vocabulary would exceed 65,536 characters, or the seed is invalid.
 *
 * @example Fine-tune on a text with new characters
 * ```ts
 * import { createModel, createTrainer, extendVocabulary } from "@baregpt/baregpt";
 * const base = createModel("abc ", { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 });
 * const text = "abc 123 ".repeat(20);
 * const { model, added } = extendVocabulary(base, text);
 * console.log(added, model.tokenizer.vocab); // ["1", "2", "3"] [" ", "a", "b", "c", "1", "2", "3"]
 * using trainer = await createTrainer(model, text, { steps: 5, batch: 4 });
 * await trainer.run();
 * ```
 */
export function extendVocabulary(
  model: Model,
  text: string,
  options: ExtendOptions = {},
): Extension {
  const old = modelOf(model);
  const seed = checkOption("seed", options.seed ?? 0, MODEL_OPTIONS.seed);
  const added = newCharacters(old.tokenizer, text);
  if (added.length === 0) return { model, added };
  const tokenizer = new Tokenizer([...old.tokenizer.vocab, ...added]);
  const config = { ...old.config, vocabSize: tokenizer.size };
  ensureKernels();
  reserveFor(config, false);
  const grown = new GPT(config, {
    tokenizer,
    facts: old.facts,
    dtype: old.dtype,
    arena: old.arena,
    grads: false,
  });
  for (const { name } of parameterSpecs(old.config)) {
    grown.params.byName.get(name)!.set(old.params.byName.get(name)!);
  }
  const wte = grown.params.wte, rng = new Rng(seed);
  for (let i = old.params.wte.length; i < wte.length; i++) wte[i] = rng.normal(0, 0.02);
  modelMade();
  return { model: grown, added };
}
