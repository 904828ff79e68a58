/**
 * `sample`: streams text from a model to stdout.
 *
 * @module
 */

import { generate, InputError, SAMPLING_OPTIONS, selectKernels } from "../mod.ts";
import { kernelsFlag, numberFlag, stringFlag, type Values } from "./flags.ts";
import { loadWeightsFile } from "./files.ts";
import { log, writeStdout } from "./output.ts";

/** `sample [--weights FILE] [--prompt TEXT] [options]`. */
export async function sample(v: Values): Promise<void> {
  const s = SAMPLING_OPTIONS;
  const tokens = numberFlag(v, "tokens", s.tokens) ?? 1000;
  const temperature = numberFlag(v, "temperature", s.temperature) ?? 1;
  const topK = numberFlag(v, "top-k", s.topK) ?? 0;
  const topP = numberFlag(v, "top-p", s.topP) ?? 1;
  if (topP === 0) {
    throw new InputError(`--top-p 0 is out of range; use a number above 0 and at most 1`);
  }
  let seed = numberFlag(v, "seed", s.seed);
  const prompt = stringFlag(v, "prompt") ?? "";
  selectKernels(kernelsFlag(v));
  const model = await loadWeightsFile(stringFlag(v, "weights"));
  const drawn = seed === undefined;
  seed ??= crypto.getRandomValues(new Uint32Array(1))[0];
  // checks the options and the prompt when called, before anything is printed
  const chars = generate(model, { prompt, tokens, temperature, topK, topP, seed });
  if (drawn) log(`seed ${seed}`);
  writeStdout(prompt);
  for await (const ch of chars) writeStdout(ch);
  writeStdout("\n");
}
