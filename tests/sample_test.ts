// Sampler properties and the KV cache against the full forward pass.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { batchPass, forward, GPT, KVCache, type ModelConfig } from "../lib/model.ts";
import { checkSampling } from "../lib/options.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps, drawIndex, nextDistribution, type SamplingOptions } from "../lib/sample.ts";
import { kernelTier } from "../lib/kernels/dispatch.ts";
import { forEachTier } from "./tiers.ts";

/** The ids decodeSteps draws: `tokens` of them after the prompt, from `seed`. */
function generateIds(
  model: GPT,
  prompt: number[],
  o: SamplingOptions & { tokens: number; seed: number },
): number[] {
  return [...decodeSteps(model, prompt, { ...o, rng: new Rng(o.seed) })].map((s) => s.id);
}

const logits = Float32Array.from([0.5, 2, -1, 1.5, 0.1, 3, -2, 0.7]);

Deno.test("temperature 0 and near 0 pick the argmax", () => {
  assertEquals([...nextDistribution(logits, { temperature: 0 })], [0, 0, 0, 0, 0, 1, 0, 0]);
  const cold = nextDistribution(logits, { temperature: 1e-4 });
  assert(cold[5] > 0.999999);
  const rng = new Rng(1);
  for (let i = 0; i < 100; i++) assertEquals(drawIndex(cold, rng.random()), 5);
});

Deno.test("top-k never samples outside the k most likely", () => {
  const p = nextDistribution(logits, { topK: 3 });
  const allowed = new Set([5, 1, 3]);
  for (let i = 0; i < p.length; i++) if (!allowed.has(i)) assertEquals(p[i], 0);
  assert(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  const rng = new Rng(2);
  for (let i = 0; i < 2000; i++) assert(allowed.has(drawIndex(p, rng.random())));
});

Deno.test("top-p keeps the smallest most-likely set whose mass reaches p", () => {
  const full = nextDistribution(logits, {});
  const order = [...full.keys()].sort((a, b) => full[b] - full[a]);
  for (const topP of [0.3, 0.6, 0.9, 0.99]) {
    const p = nextDistribution(logits, { topP });
    let mass = 0, keep = 0;
    while (mass < topP) mass += full[order[keep++]];
    const kept = order.slice(0, keep);
    for (let i = 0; i < p.length; i++) {
      assertEquals(p[i] > 0, kept.includes(i), `topP ${topP} id ${i}`);
    }
    // the kept mass without the last kept one is below p (it is the smallest such set)
    assert(mass - full[order[keep - 1]] < topP);
    for (const i of kept) assert(Math.abs(p[i] - full[i] / mass) < 1e-12);
  }
});

Deno.test("sampling frequencies follow the distribution", () => {
  const p = nextDistribution(logits, { temperature: 1.3 });
  const counts = new Float64Array(p.length);
  const rng = new Rng(3);
  const n = 50000;
  for (let i = 0; i < n; i++) counts[drawIndex(p, rng.random())]++;
  for (let i = 0; i < p.length; i++) assert(Math.abs(counts[i] / n - p[i]) < 0.01, `id ${i}`);
});

const config: ModelConfig = { vocabSize: 13, blockSize: 16, dModel: 32, nLayers: 2, nHeads: 4 };

forEachTier(
  "KV-cache logits equal full-forward logits at every position, before and after a slide",
  () => {
    const model = new GPT(config).init(5);
    const T = config.blockSize, V = config.vocabSize;
    const rng = new Rng(6);
    const seq = Array.from({ length: T + T / 2 }, () => rng.int(V));
    const acts = model.activations(1, { backward: false });
    // the full forward over the whole block; causal, so rows < window.length ignore the padding
    const fullLogits = (window: number[]) => {
      acts.inputs.fill(0);
      acts.inputs.set(window);
      forward(model, acts, batchPass(config, 1), false);
      return acts.head.logits;
    };
    const tol = kernelTier() === "js" ? 1e-5 : 1e-4;
    const compare = (window: number[], logits: Float32Array | Float64Array, label: string) => {
      const full = fullLogits(window);
      // rows were fed one by one; the last feed's logits are the last row's
      assertEquals(logits.length, V);
      for (let v = 0; v < V; v++) {
        const a = full[(window.length - 1) * V + v], b = logits[v];
        assert(Math.abs(a - b) <= tol * (1 + Math.abs(a)), `${label}: logit ${v}: ${a} vs ${b}`);
      }
    };
    // window 1: positions 0..T-1, one token at a time
    const cache = new KVCache(model);
    for (let t = 0; t < T; t++) {
      compare(seq.slice(0, t + 1), cache.feed([seq[t]]), `position ${t}`);
    }
    // slide: keep the last T/2 tokens, rebuild in one batched pass, then continue one at a time
    let window = seq.slice(T / 2, T);
    cache.reset();
    const rows = Float64Array.from(cache.feed(window, true));
    const full = fullLogits(window);
    assertEquals(rows.length, window.length * V);
    for (let i = 0; i < rows.length; i++) {
      assert(
        Math.abs(rows[i] - full[i]) <= tol * (1 + Math.abs(full[i])),
        `rebuilt row entry ${i}`,
      );
    }
    for (let t = T; t < seq.length; t++) {
      window = [...window, seq[t]];
      compare(window, cache.feed([seq[t]]), `after the slide, position ${window.length - 1}`);
    }
  },
);

forEachTier("same seed gives the same text; a different seed gives another", () => {
  const model = new GPT(config).init(7);
  const run = (seed: number) => generateIds(model, [1, 2, 3], { tokens: 60, seed, topK: 5 });
  const a = run(11);
  assertEquals(run(11), a);
  assert(JSON.stringify(run(12)) !== JSON.stringify(a));
  assertEquals(a.length, 60);
});

forEachTier("generation past the block slides the window; temperature 0 is greedy", () => {
  const model = new GPT(config).init(8);
  const T = config.blockSize;
  const steps = [...decodeSteps(model, [1, 2, 3], { tokens: 2 * T, rng: new Rng(4), topK: 3 })];
  assertEquals(steps.length, 2 * T);
  // every step's window start advances by blockSize/2 at a slide, and the cache never overflows
  for (const s of steps) assert(s.cache.length <= T);
  assert(steps.some((s) => s.windowStart > 0));
  // temperature 0 is greedy: each id is the argmax of its logits
  for (const s of decodeSteps(model, [4], { tokens: 20, rng: new Rng(1), temperature: 0 })) {
    let best = 0;
    for (let v = 1; v < s.logits.length; v++) if (s.logits[v] > s.logits[best]) best = v;
    assertEquals(s.id, best);
  }
});

Deno.test("checkSampling accepts the defaults and rejects out-of-range settings", () => {
  checkSampling({}, 13);
  checkSampling({ temperature: 0.8, topK: 13, topP: 0.9 }, 13);
  for (const bad of [{ temperature: -1 }, { topK: -2 }, { topK: 14 }, { topP: 1.5 }]) {
    let threw = false;
    try {
      checkSampling(bad, 13);
    } catch {
      threw = true;
    }
    assert(threw, JSON.stringify(bad));
  }
});
