/**
 * Prints the model's distribution over the next character after a prompt: the ten most likely
 * characters with their probabilities.
 *
 * ```sh
 * deno run --allow-read examples/next_char.ts ["PROMPT"] [WEIGHTS.safetensors]
 * ```
 *
 * @module
 */

import { loadWeights, nextCharDistribution, shippedWeightsUrl } from "../mod.ts";

const [prompt = "To be, or not to b", weights] = Deno.args;

const model = await loadWeights(
  weights === undefined ? shippedWeightsUrl : await Deno.readFile(weights),
);
console.log(`after ${JSON.stringify(prompt)}:`);
for (const { char, prob } of nextCharDistribution(model, prompt, { top: 10 })) {
  const percent = (100 * prob).toFixed(1).padStart(5);
  console.log(`${JSON.stringify(char).padEnd(6)} ${percent}% ${"█".repeat(Math.round(40 * prob))}`);
}
