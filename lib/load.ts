/**
 * The library's weights: loading a model from bytes or a URL (fetched, so it works in browsers
 * and from `file:` URLs in Deno), saving one as safetensors bytes, and decoding a corpus.
 *
 * @module
 */

import { ensureKernels, type Model, modelMade, modelOf, reserveFor } from "./api.ts";
import { allFinite } from "./checkpoint.ts";
import { type DecodeCorpusOptions, decodeText } from "./data.ts";

export type { DecodeCorpusOptions } from "./data.ts";
import { BareGPTError, InputError, WeightsError } from "./errors.ts";
import { kernelBytes } from "./activations.ts";
import { type GPT, type ModelConfig, parameterCount } from "./model.ts";
import {
  buildModel,
  checkModelFile,
  describeConfig,
  gib,
  KERNEL_ADDRESS_BYTES,
  MAX_MODEL_HEADER_BYTES,
  saveModel,
} from "./weights.ts";

/**
 * The URL of the weights shipped with BareGPT (trained on Tiny Shakespeare), next to this module:
 * a `file:` URL in a checkout, an `https:` URL when the module is imported from the web.
 *
 * @example
 * ```ts
 * import { shippedWeightsUrl } from "@baregpt/baregpt";
 * console.log(shippedWeightsUrl.href.endsWith("/weights/shakespeare.safetensors")); // true
 * ```
 */
export const shippedWeightsUrl: URL = new URL(
  "../weights/shakespeare.safetensors",
  import.meta.url,
);

/**
 * Options of {@linkcode loadWeights}.
 *
 * @example
 * ```ts
 * import { loadWeights, type LoadOptions, shippedWeightsUrl } from "@baregpt/baregpt";
 * const options: LoadOptions = { signal: AbortSignal.timeout(10_000) }; // give up after 10 s
 * const model = await loadWeights(shippedWeightsUrl, options);
 * console.log(model.parameterCount);
 * ```
 */
export interface LoadOptions {
  /** Cancels a fetch in progress. Default: none. */
  signal?: AbortSignal;
  /** Refuse files larger than this many bytes (default 4 GiB, what the kernels address). */
  maxBytes?: number;
}

/** The URL of a source: a URL, a URL string, or an absolute path (as a `file:` URL). */
function urlOf(source: string | URL): URL {
  if (source instanceof URL) return source;
  if (/^[a-z][a-z0-9+.-]+:/i.test(source) && URL.canParse(source)) return new URL(source);
  const path = source.replace(/\\/g, "/");
  if (path.startsWith("/") || /^[a-z]:\//i.test(path)) {
    const encoded = encodeURI(path.startsWith("/") ? path : `/${path}`).replace(
      /[?#]/g,
      encodeURIComponent,
    );
    return new URL(`file://${encoded}`);
  }
  const base = (globalThis as { location?: { href: string } }).location?.href;
  if (base !== undefined) return new URL(source, base);
  throw new InputError(
    `weights path ${source} is relative, and the library reads only bytes and URLs; pass the file's bytes, its absolute path, or a URL`,
  );
}

/**
 * The InputError for a fetch that the runtime's permissions refused (Deno's `NotCapable`, told
 * apart by its name so that no Deno API is needed), naming the permission that allows it.
 */
function permissionError(url: URL, cause: Error): InputError {
  if (url.protocol === "file:") {
    const path = decodeURIComponent(url.pathname);
    return new InputError(
      `no read permission for ${path}; allow it (--allow-read=${path}) or pass the file's bytes`,
      { cause },
    );
  }
  return new InputError(
    `no network permission for ${url.host}; allow it (--allow-net=${url.host})`,
    { cause },
  );
}

/** The bytes at a URL, via fetch; InputError when they cannot be had. */
async function fetchBytes(source: string | URL, o: LoadOptions): Promise<Uint8Array> {
  const url = urlOf(source);
  const max = o.maxBytes ?? 2 ** 32;
  let response: Response;
  try {
    response = await fetch(url, { signal: o.signal });
  } catch (e) {
    if (e instanceof Error && e.name === "NotCapable") throw permissionError(url, e);
    if (
      url.protocol === "file:" && e instanceof Error &&
      (e.name === "FilesystemLoop" || /levels of symbolic links|os error 40\b/i.test(e.message))
    ) {
      throw new InputError(`weights file ${source} is a symlink loop; give a real file`, {
        cause: e,
      });
    }
    if (!(e instanceof TypeError)) throw e; // aborted
    const why = e.message.split("\n")[0];
    if (url.protocol === "file:" && /not found|No such file/i.test(why)) {
      throw new InputError(`weights file ${source} does not exist; check the path`);
    }
    if (url.protocol === "file:" && /directory/i.test(why)) {
      throw new InputError(`weights file ${source} is a directory; give a .safetensors file`);
    }
    throw new InputError(`cannot fetch weights from ${source}: ${why}; check the address`);
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new InputError(
      `cannot fetch weights from ${source}: HTTP ${response.status} ${response.statusText}; check the address`,
    );
  }
  if (Number(response.headers.get("content-length") ?? 0) > max) {
    await response.body?.cancel();
    throw new InputError(
      `weights file ${source} is larger than ${max / 2 ** 20} MiB; it is not a BareGPT model`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await response.arrayBuffer());
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    if (url.protocol === "file:" && /directory/i.test(e.message)) {
      throw new InputError(`weights file ${source} is a directory; give a .safetensors file`);
    }
    throw new InputError(
      `cannot read weights from ${source}: ${e.message.split("\n")[0]}; check the address`,
    );
  }
  if (bytes.length > max) {
    throw new InputError(
      `weights file ${source} is larger than ${max / 2 ** 20} MiB; it is not a BareGPT model`,
    );
  }
  return bytes;
}

/**
 * Throws WeightsError when running the model (its parameters and the KV cache of one sequence,
 * whose attention maps take heads x block_size^2 floats per layer) needs more than the 4 GiB the
 * kernels address: such a file cannot be sampled, inspected or evaluated, so it is refused at
 * once rather than when the first cache is allocated.
 */
function checkInferenceFits(config: ModelConfig): void {
  const bytes = kernelBytes(config, { grads: false, caches: 1 }) + 65536;
  if (bytes <= KERNEL_ADDRESS_BYTES) return;
  const c = config;
  throw new WeightsError(
    `this model's context of ${c.blockSize} positions needs about ${gib(bytes)} GiB to run ` +
      `(its ${parameterCount(c).toLocaleString("en-US")} parameters and the attention cache of ` +
      `${c.nLayers} layer${c.nLayers === 1 ? "" : "s"} of ${c.nHeads} head${
        c.nHeads === 1 ? "" : "s"
      }), more than the 4 GiB the kernels address (config ${
        describeConfig(c)
      }); use a model with a smaller block_size, n_heads or n_layers`,
  );
}

/**
 * Loads a model from a safetensors weights file written by BareGPT (its config and vocabulary
 * are in the file's metadata). A training checkpoint (`Trainer.checkpoint()`, the CLI's
 * `<out>.ckpt`) loads too: its weights, with the optimizer state left out, and its metadata
 * (step, corpus_sha256, settings) as facts.
 *
 * @param source the file's bytes; a URL (`file:`, `http:`, `https:`, fetched, so it works in
 * browsers too); or an absolute path (read as a `file:` URL).
 * @param options see {@linkcode LoadOptions}.
 * @returns the model with its tokenizer and training facts.
 * @throws {InputError} when the file cannot be read or fetched, or a permission is missing
 * (`--allow-read` for a path or `file:` URL, `--allow-net=<host>` for a web address).
 * @throws {WeightsError} when it is not a valid BareGPT weights file.
 *
 * @example The shipped weights (needs `--allow-read`)
 * ```ts
 * import { loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 * const model = await loadWeights(shippedWeightsUrl);
 * console.log(model.config, model.facts.val_loss);
 * ```
 *
 * @example From bytes
 * ```ts
 * import { createModel, loadWeights, saveWeights } from "@baregpt/baregpt";
 * const bytes = saveWeights(createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 }));
 * const copy = await loadWeights(bytes);
 * console.log(copy.tokenizer.vocab); // ["a", "b", "c"]
 * ```
 */
export async function loadWeights(
  source: string | URL | Uint8Array,
  options: LoadOptions = {},
): Promise<Model> {
  const named = !(source instanceof Uint8Array);
  const bytes = named ? await fetchBytes(source, options) : source;
  ensureKernels();
  let model: GPT;
  try {
    // every size the file declares is checked before anything of that size is allocated: the
    // header's length, the config against the file's tensors, and what running it needs
    const file = checkModelFile(bytes);
    checkInferenceFits(file.config);
    reserveFor(file.config, false);
    model = buildModel(file);
  } catch (e) {
    if (named && e instanceof WeightsError) {
      throw new WeightsError(`${String(source)}: ${e.message}`, { cause: e });
    }
    throw e;
  }
  modelMade();
  return model;
}

/**
 * Encodes a model as safetensors bytes (GPT-2 tensor names; config, vocabulary and facts in the
 * metadata), ready for {@linkcode loadWeights}, the CLI, or Python's `safetensors`. The same
 * model and facts always give the same bytes.
 *
 * @param model the model to save.
 * @param facts training facts to store as metadata (values become strings). Default: the facts
 * the model was loaded with. The keys `config` and `vocab` are reserved.
 * @returns the file's bytes; write them with `Deno.writeFile(path, bytes)` (or offer them as a
 * download in a browser).
 * @throws {InputError} when a fact uses a reserved key, or the facts are longer than the 4 MiB
 * header of a weights file allows.
 * @throws {BareGPTError} when the weights hold NaN or Inf (training diverged).
 *
 * @example
 * ```ts
 * import { createModel, saveWeights } from "@baregpt/baregpt";
 * const model = createModel("abc", { dModel: 16, nHeads: 2, nLayers: 1 });
 * const bytes = saveWeights(model, { steps: 0, note: "untrained" });
 * console.log(bytes.length > 0); // true
 * ```
 */
export function saveWeights(
  model: Model,
  facts: Readonly<Record<string, string | number | boolean>> = modelOf(model).facts,
): Uint8Array {
  const m = modelOf(model);
  const strings: Record<string, string> = {};
  for (const [key, value] of Object.entries(facts)) {
    if (key === "config" || key === "vocab") {
      throw new InputError(`the fact "${key}" is reserved for the model itself; rename it`);
    }
    strings[key] = String(value);
  }
  if (!allFinite(m.flat)) {
    throw new BareGPTError(
      "the weights hold NaN or Inf (training diverged); lower lr and train again",
      {
        options: ["lr"],
      },
    );
  }
  const bytes = saveModel(m, strings);
  // never write a file that loadWeights would refuse: the facts must leave the header small
  const view = new DataView(bytes.buffer, bytes.byteOffset, 8);
  if (view.getUint32(4, true) === 0 && view.getUint32(0, true) <= MAX_MODEL_HEADER_BYTES) {
    return bytes;
  }
  throw new InputError(
    `the facts make a header of more than ${
      MAX_MODEL_HEADER_BYTES / 2 ** 20
    } MiB, the most a BareGPT weights file may have; shorten them`,
  );
}

/**
 * Decodes a text file's bytes as UTF-8, refusing what is not text (invalid UTF-8, NUL bytes, an
 * empty file), as the CLI does for a corpus. Invalid UTF-8 is reported with its byte offset
 * (0-based) and line. A file cut in the middle of its last character (`head -c`) is read without
 * that incomplete character, and `options.onNote` is told so (the CLI prints `note: <message>`).
 *
 * @param bytes the file's bytes.
 * @param name how errors and notes name the file.
 * @param options `onNote`, called with a one-line message when an incomplete final character
 * was dropped; see {@linkcode DecodeCorpusOptions}.
 * @returns the text.
 * @throws {InputError} when the bytes are not a UTF-8 text.
 *
 * @example
 * ```ts
 * import { decodeCorpus } from "@baregpt/baregpt";
 * console.log(decodeCorpus(new TextEncoder().encode("to be"), "my.txt")); // "to be"
 * ```
 *
 * @example A file cut mid-character
 * ```ts
 * import { decodeCorpus } from "@baregpt/baregpt";
 * const cut = new TextEncoder().encode("café").subarray(0, 4); // "caf" and half of "é"
 * const text = decodeCorpus(cut, "cut.txt", { onNote: (note) => console.error(`note: ${note}`) });
 * console.log(text); // "caf"
 * ```
 */
export function decodeCorpus(
  bytes: Uint8Array,
  name: string,
  options: DecodeCorpusOptions = {},
): string {
  return decodeText(bytes, name, options);
}
