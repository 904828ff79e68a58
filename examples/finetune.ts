/**
 * Fine-tunes the shipped weights (or others) on a new text and saves the result. Characters the
 * model does not know join its vocabulary first (new embedding rows; known ids do not change).
 *
 * ```sh
 * deno run --allow-read --allow-write examples/finetune.ts TEXT.txt [OUT.safetensors] [STEPS] [BASE.safetensors]
 * ```
 *
 * @module
 */

import {
  createTrainer,
  evaluate,
  extendVocabulary,
  loadWeights,
  saveWeights,
  shippedWeightsUrl,
} from "../mod.ts";

const [input, output = "finetuned.safetensors", steps = "200", base] = Deno.args;
if (input === undefined) {
  console.error("usage: finetune.ts TEXT.txt [OUT.safetensors] [STEPS] [BASE.safetensors]");
  Deno.exit(2);
}

// the library reads URLs and bytes: a path on the command line (maybe relative) is read here
const loaded = await loadWeights(
  base === undefined ? shippedWeightsUrl : await Deno.readFile(base),
);
const text = await Deno.readTextFile(input);
const { model, added } = extendVocabulary(loaded, text);
if (added.length > 0) console.log(`added ${added.length} new characters: ${added.join(" ")}`);

const before = await evaluate(model, text, { maxWindows: 50 });
using trainer = await createTrainer(model, text, {
  steps: Number(steps),
  batch: 8,
  lr: 3e-4, // gentle: keep what the model knows
  warmup: 10,
});
await trainer.run({
  onProgress: ({ step, loss }) => {
    if (step % 20 === 0) console.log(`step ${step}: loss ${loss.toFixed(4)}`);
  },
});
const after = await evaluate(model, text, { maxWindows: 50 });
console.log(`loss on the new text: ${before.loss.toFixed(4)} -> ${after.loss.toFixed(4)}`);

const facts = { base: base ?? "shakespeare", finetuned_on: input, steps: trainer.stepsDone };
await Deno.writeFile(output, saveWeights(model, facts));
console.log(`saved ${output}`);
