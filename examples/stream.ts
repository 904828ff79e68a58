/**
 * Streams text from the shipped weights (or from a weights file of your own).
 *
 * ```sh
 * deno run --allow-read examples/stream.ts ["PROMPT"] [CHARACTERS] [WEIGHTS.safetensors]
 * ```
 *
 * @module
 */

import { generate, loadWeights, shippedWeightsUrl } from "../mod.ts";

const [prompt = "ROMEO:", characters = "500", weights] = Deno.args;

const model = await loadWeights(
  weights === undefined ? shippedWeightsUrl : await Deno.readFile(weights),
);
const out = new TextEncoder();
await Deno.stdout.write(out.encode(prompt));
for await (
  const ch of generate(model, { prompt, tokens: Number(characters), temperature: 0.8, seed: 1 })
) {
  await Deno.stdout.write(out.encode(ch));
}
await Deno.stdout.write(out.encode("\n"));
