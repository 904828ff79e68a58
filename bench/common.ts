/**
 * What the benchmarks share: where Tiny Shakespeare is, the statistics of a series of step times,
 * and the default model they all time (the library's default config: d_model 256, 2 layers,
 * 4 heads, block 128).
 *
 * @module
 */

import { makeCorpus } from "../lib/data.ts";
import { GPT } from "../lib/model.ts";
import { defaultConfig } from "../lib/options.ts";

/**
 * The path of Tiny Shakespeare: `given`, else `../shared/data/` beside the checkout, else
 * `data/` (`deno task data`). Throws an Error that says what to do when there is none.
 */
export async function corpusPath(given?: string): Promise<string> {
  const candidates = [
    given,
    new URL("../../shared/data/tinyshakespeare.txt", import.meta.url).pathname,
    new URL("../data/tinyshakespeare.txt", import.meta.url).pathname,
  ];
  for (const path of candidates) {
    if (!path) continue;
    try {
      if ((await Deno.stat(path)).isFile) return path;
    } catch { /* next */ }
  }
  throw new Error("no corpus: run `deno task data` or pass --corpus FILE");
}

/** Median, min and max of step times (ms), and how many. */
export function stats(ms: number[]): { median: number; min: number; max: number; n: number } {
  const sorted = [...ms].sort((a, b) => a - b);
  const median = sorted.length % 2
    ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  return { median, min: sorted[0], max: sorted[sorted.length - 1], n: ms.length };
}

/** The corpus at `path`, tokenized, and the default model's config for its vocabulary. */
export async function defaultRun(path: string) {
  const corpus = makeCorpus(await Deno.readTextFile(path));
  return { corpus, config: defaultConfig(corpus.tokenizer.size) };
}

/** A new default model for `corpus`, initialized from `seed`. */
export function defaultModel(run: Awaited<ReturnType<typeof defaultRun>>, seed: number): GPT {
  return new GPT(run.config, { tokenizer: run.corpus.tokenizer }).init(seed);
}
