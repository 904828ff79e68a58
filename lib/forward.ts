/**
 * The library's views of one forward pass over a text: the attention of every layer and head,
 * one layer's attention map with every row's logits (what the heatmaps draw), and every named
 * activation. Synchronous, on the CPU's kernels (after `selectKernels("webgpu")` too), over the
 * KV caches that `generate.ts` keeps per model.
 *
 * @module
 */

import { modelOf } from "./api.ts";
import type { Model } from "./api.ts";
import { InputError } from "./errors.ts";
import { type AttentionMap, attentionWindow } from "./inspect.ts";
import { checkOptions, checkString } from "./options.ts";
import { giveCache, promptIds, takeCache } from "./generate.ts";

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
