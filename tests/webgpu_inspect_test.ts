/**
 * `inspectStream`, the async form of `inspectSteps`: on the CPU it yields exactly inspectSteps'
 * steps (greedy and sampled, across a slide of the window); after `selectKernels("webgpu")` the
 * shipped weights give the CPU's greedy ids, windows and candidates, with each step's attention
 * (read back from the GPU's KV cache) within 1e-4 of the CPU's, in the last layer and in layer 0.
 *
 * The GPU half needs a WebGPU adapter: without one it is skipped with the reason printed, except
 * under CI=true, where that is a failure.
 */

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import {
  bestKernels,
  createModel,
  type InspectOptions,
  type InspectStep,
  inspectSteps,
  inspectStream,
  loadWeights,
  selectKernels,
} from "../mod.ts";
import { playCorpus } from "./fixtures.ts";
import { missingAdapter } from "./webgpu_fixtures.ts";

const missing = await missingAdapter("inspection");

const WEIGHTS = await Deno.readFile(new URL("../weights/shakespeare.safetensors", import.meta.url));
/** 62 characters: with 80 generated the shipped model's window (128) slides once. */
const PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is";

Deno.test("inspectStream on the CPU yields exactly inspectSteps' steps", async () => {
  selectKernels(bestKernels());
  const text = playCorpus();
  const small = createModel(text, { blockSize: 16, dModel: 16, nLayers: 2, nHeads: 2, seed: 1 });
  const cases: [string, InspectOptions][] = [
    ["greedy, sliding", { tokens: 30, top: 4 }],
    ["sampled, layer 0", { tokens: 30, temperature: 0.9, topK: 5, seed: 7, layer: 0 }],
  ];
  for (const [what, options] of cases) {
    const want = [...inspectSteps(small, "O", options)];
    const got = await Array.fromAsync(inspectStream(small, "O", options));
    assertEquals(got, want, what);
    assert(want.some((s) => s.windowStart > 0), `${what}: the window never slid`);
  }
  const shipped = await loadWeights(WEIGHTS);
  const options = { tokens: 10, top: 5 };
  assertEquals(
    await Array.fromAsync(inspectStream(shipped, PROMPT, options)),
    [...inspectSteps(shipped, PROMPT, options)],
  );
});

/** max |a - b| over two arrays of the same length (Infinity when the lengths differ). */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

Deno.test({
  name: "inspectStream on webgpu: the CPU's greedy ids and windows, attention within 1e-4",
  ignore: missing !== "",
  async fn() {
    const cpu = selectKernels(bestKernels());
    try {
      const model = await loadWeights(WEIGHTS);
      for (const layer of [model.config.nLayers - 1, 0]) {
        const options = { tokens: 80, top: 5, layer };
        selectKernels(cpu);
        const want: InspectStep[] = [...inspectSteps(model, PROMPT, options)];
        selectKernels("webgpu");
        const got = await Array.fromAsync(inspectStream(model, PROMPT, options));
        assertEquals(got.map((s) => s.id), want.map((s) => s.id), `layer ${layer}: ids`);
        assertEquals(
          got.map((s) => [s.position, s.windowStart]),
          want.map((s) => [s.position, s.windowStart]),
        );
        assert(want.some((s) => s.windowStart > 0), "the window never slid");
        let attention = 0, probs = 0;
        for (const [i, s] of got.entries()) {
          assertEquals(s.attention.length, want[i].attention.length, `step ${i}: attention shape`);
          attention = Math.max(attention, maxDiff(s.attention, want[i].attention));
          probs = Math.max(probs, maxDiff(s.probs, want[i].probs));
          assertEquals(s.candidates.length, want[i].candidates.length);
          assertEquals(s.candidates[0].id, want[i].candidates[0].id);
        }
        console.log(
          `  layer ${layer}: ${got.length} ids agree; attention within ${
            attention.toExponential(2)
          }, probabilities within ${probs.toExponential(2)}`,
        );
        assert(attention <= 1e-4, `layer ${layer}: attention differs by ${attention}`);
        assert(probs <= 1e-4, `layer ${layer}: probabilities differ by ${probs}`);
      }
      model.dispose();
    } finally {
      selectKernels(cpu);
    }
  },
});
