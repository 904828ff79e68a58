/**
 * `eval`: the loss and bits per character of a model on a text.
 *
 * @module
 */

import { decodeCorpus, evaluate, InputError, selectKernels } from "../mod.ts";
import { kernelsFlag, requireFlag, stringFlag, type Values } from "./flags.ts";
import { loadWeightsFile, readInput } from "./files.ts";
import { writeStdout } from "./output.ts";

/** `eval --weights FILE --data FILE [--split val|all] [--json]`. */
export async function evalCommand(v: Values): Promise<void> {
  const weightsPath = requireFlag(v, "weights", "eval");
  const dataPath = requireFlag(v, "data", "eval");
  const split = stringFlag(v, "split") ?? "val";
  if (split !== "val" && split !== "all") {
    throw new InputError(`--split ${JSON.stringify(split)} is not a split; use val or all`);
  }
  selectKernels(kernelsFlag(v));
  const model = await loadWeightsFile(weightsPath);
  const text = decodeCorpus(await readInput(dataPath, "corpus"), dataPath);
  let r;
  try {
    r = await evaluate(model, text, { split });
  } catch (e) {
    if (e instanceof InputError) {
      throw new InputError(`${dataPath}: ${e.message}`, { options: [...e.options] });
    }
    throw e;
  }
  if (v.json) {
    writeStdout(
      JSON.stringify({ loss: r.loss, bpc: r.bpc, tokens: r.tokens, windows: r.windows, split }) +
        "\n",
    );
  } else {
    writeStdout(`loss ${r.loss.toFixed(4)} bpc ${r.bpc.toFixed(4)} tokens ${r.tokens}\n`);
  }
}
