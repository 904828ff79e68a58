// Loads the shipped weights `count` times (argument 1, default 1,000) and drops each model without
// disposing it, yielding to the event loop every 10 loads as a real program does; prints the
// resident size and the kernels' memory (MiB) after the first tenth and at the end, as JSON. Run
// by tests/memory_test.ts in a process of its own, so that the resident size is this loop's alone.

import { loadWeights, shippedWeightsUrl } from "../mod.ts";
import { defaultArena, kernelMemory } from "../lib/kernels/dispatch.ts";

const count = Number(Deno.args[0] ?? 1000);
const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
const sample = () => ({
  rss: mib(Deno.memoryUsage().rss),
  kernelMemory: mib(kernelMemory()?.buffer.byteLength ?? 0),
  live: mib(defaultArena().liveBytes),
});
let early = sample();
for (let i = 1; i <= count; i++) {
  const model = await loadWeights(shippedWeightsUrl);
  if (model.parameterCount === 0) throw new Error("no parameters");
  if (i % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  if (i === Math.ceil(count / 10)) early = sample();
}
console.log(JSON.stringify({ count, early, end: sample() }));
