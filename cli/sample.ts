/**
 * `sample`: streams text from a model to stdout.
 *
 * @module
 */

import { generate, SAMPLING_OPTIONS, selectKernels } from "../mod.ts";
import { kernelsFlag, numberFlag, stringFlag, textFlag, type Values } from "./flags.ts";
import { loadWeightsFile } from "./files.ts";
import { log, writeStdout } from "./output.ts";

/** `sample [--weights FILE] [--prompt TEXT] [options]`. */
export async function sample(v: Values): Promise<void> {
  const s = SAMPLING_OPTIONS;
  const tokens = numberFlag(v, "tokens", s.tokens) ?? s.tokens.default!;
  const temperature = numberFlag(v, "temperature", s.temperature) ?? s.temperature.default!;
  const topK = numberFlag(v, "top-k", s.topK) ?? s.topK.default!;
  const topP = numberFlag(v, "top-p", s.topP) ?? s.topP.default!; // 0 is refused by generate
  let seed = numberFlag(v, "seed", s.seed);
  const prompt = textFlag(v, "prompt") ?? ""; // "": start from a newline
  selectKernels(kernelsFlag(v));
  const model = await loadWeightsFile(stringFlag(v, "weights"));
  // greedy decoding draws nothing: it needs no seed, and none is drawn or printed
  const greedy = temperature === 0 || topK === 1;
  const drawn = seed === undefined && !greedy;
  if (drawn) seed = crypto.getRandomValues(new Uint32Array(1))[0];
  // checks the options and the prompt when called, before anything is printed
  const chars = generate(model, { prompt, tokens, temperature, topK, topP, seed: seed ?? 0 });
  if (drawn) log(`seed ${seed}`);
  writeStdout(prompt);
  for await (const ch of chars) writeStdout(ch);
  writeStdout("\n");
}
