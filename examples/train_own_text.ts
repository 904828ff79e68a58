/**
 * Trains a small model on your own text file, reports its loss on the last 10% of the text
 * (held out), saves it, and prints a sample. Ctrl-C stops early and still saves.
 *
 * ```sh
 * deno run --allow-read --allow-write examples/train_own_text.ts TEXT.txt [OUT.safetensors] [STEPS]
 * ```
 *
 * @module
 */

import { createModel, createTrainer, generate, saveWeights } from "../mod.ts";

const [input, output = "model.safetensors", steps = "500"] = Deno.args;
if (input === undefined) {
  console.error("usage: train_own_text.ts TEXT.txt [OUT.safetensors] [STEPS]");
  Deno.exit(2);
}

const text = await Deno.readTextFile(input);
const model = createModel(text, { blockSize: 64, dModel: 64, nLayers: 2, nHeads: 4 });
console.log(`${model.parameterCount} parameters, ${model.config.vocabSize} distinct characters`);

const stop = new AbortController();
const onInterrupt = () => stop.abort();
Deno.addSignalListener("SIGINT", onInterrupt);
// the trainer trains on the text's first 90% and holds out the rest
using trainer = await createTrainer(model, text, { steps: Number(steps), batch: 16, lr: 3e-3 });
await trainer.run({
  signal: stop.signal,
  onProgress: ({ step, loss }) => {
    if (step % 50 === 0 || step === trainer.totalSteps) {
      console.log(`step ${step}: loss ${loss.toFixed(4)}`);
    }
  },
});
Deno.removeSignalListener("SIGINT", onInterrupt);

const facts: Record<string, string | number> = { steps: trainer.stepsDone, corpus: input };
if (trainer.valTokens.length > model.config.blockSize) {
  const { loss } = await trainer.evaluate(); // the held-out 10%
  console.log(`held-out loss ${loss.toFixed(4)}`);
  facts.val_loss = loss.toFixed(4);
}
await Deno.writeFile(output, saveWeights(model, facts));
console.log(`saved ${output}`);

const sample = await Array.fromAsync(generate(model, { tokens: 200, temperature: 0.8, seed: 1 }));
console.log(sample.join(""));
