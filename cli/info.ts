/**
 * `info`: config, parameter count, vocabulary and training facts of a weights file.
 *
 * @module
 */

import { stringFlag, type Values } from "./flags.ts";
import { displayPath, loadWeightsFile, SHIPPED_WEIGHTS } from "./files.ts";
import { escapeControls, writeStdout } from "./output.ts";

/** `info [--weights FILE]`. */
export async function info(v: Values): Promise<void> {
  const path = stringFlag(v, "weights");
  const model = await loadWeightsFile(path);
  const c = model.config, facts = model.facts;
  // everything from the file is escaped: its facts and vocabulary cannot drive the terminal or
  // forge lines (JSON.stringify escapes C0 but not DEL, C1, U+2028 or U+2029)
  const lines = [
    `weights     ${path ?? displayPath(SHIPPED_WEIGHTS)}`,
    `config      vocab_size ${c.vocabSize}, block_size ${c.blockSize}, d_model ${c.dModel}, n_layers ${c.nLayers}, n_heads ${c.nHeads}`,
    `parameters  ${model.parameterCount.toLocaleString("en-US")}`,
    `vocab       ${JSON.stringify(model.tokenizer.vocab.join(""))}`,
    ...Object.keys(facts).sort().map((k) => `${k.padEnd(11)} ${facts[k]}`),
  ].map((line) => escapeControls(line));
  writeStdout(lines.join("\n") + "\n");
}
