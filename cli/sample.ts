/**
 * `sample`: streams text from a model to stdout.
 *
 * @module
 */

import { generate, SAMPLING_OPTIONS, selectKernels, webgpuAdapter, WeightsError } from "../mod.ts";
import { kernelsFlag, numberFlag, stringFlag, textFlag, type Values } from "./flags.ts";
import { displayPath, loadWeightsFile, SHIPPED_WEIGHTS } from "./files.ts";
import { escapeControls, log, writeStdout } from "./output.ts";

/** `sample [--weights FILE] [--prompt TEXT] [options]`. */
export async function sample(v: Values): Promise<void> {
  const s = SAMPLING_OPTIONS;
  const tokens = numberFlag(v, "tokens", s.tokens) ?? s.tokens.default!;
  const temperature = numberFlag(v, "temperature", s.temperature) ?? s.temperature.default!;
  const topK = numberFlag(v, "top-k", s.topK) ?? s.topK.default!;
  const topP = numberFlag(v, "top-p", s.topP) ?? s.topP.default!; // 0 is refused by generate
  let seed = numberFlag(v, "seed", s.seed);
  const prompt = textFlag(v, "prompt") ?? ""; // "": start from a newline
  // the GPU, asked for now: a machine without one fails before the weights are read
  if (selectKernels(kernelsFlag(v)) === "webgpu") await webgpuAdapter();
  const weightsPath = stringFlag(v, "weights");
  const model = await loadWeightsFile(weightsPath);
  // greedy decoding draws nothing: it needs no seed, and none is drawn or printed
  const greedy = temperature === 0 || topK === 1;
  const drawn = seed === undefined && !greedy;
  if (drawn) seed = crypto.getRandomValues(new Uint32Array(1))[0];
  // checks the options and the prompt when called, before anything is printed
  const chars = generate(model, { prompt, tokens, temperature, topK, topP, seed: seed ?? 0 });
  if (drawn) log(`seed ${seed}`);
  // the vocabulary comes from a file: on a terminal its control characters (but newline and tab)
  // are escaped so that they cannot drive it; a pipe or a file gets the model's text byte for byte
  const show = Deno.stdout.isTerminal() ? (text: string) => escapeControls(text, "\n\t") : null;
  const write = (text: string) => writeStdout(show ? show(text) : text);
  const it = chars[Symbol.asyncIterator]();
  let printed = false;
  try {
    // the first character before the prompt: weights that overflow at once print nothing
    let next = await it.next();
    write(prompt);
    printed = true;
    for (; !next.done; next = await it.next()) write(next.value);
  } catch (e) {
    // the library cannot name the file whose weights overflowed; the CLI can
    if (e instanceof WeightsError && /^the weights of this model /.test(e.message)) {
      if (printed) writeStdout("\n"); // end the partial line before the error on stderr
      const shown = weightsPath ?? displayPath(SHIPPED_WEIGHTS);
      throw new WeightsError(e.message.replace("this model", shown), { cause: e });
    }
    throw e;
  } finally {
    await it.return?.(); // a closed pipe ends the stream early: give its cache back
  }
  writeStdout("\n");
}
