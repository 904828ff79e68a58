// What the notebook tour reads of the model through mod.ts: forwardActivations (every activation
// of one forward pass, named and shaped, the same pass as attentionMap's) and the reference
// LayerNorm as callable functions (its hand-written backward against finite differences).

import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert";
import {
  attentionMap,
  createModel,
  forwardActivations,
  InputError,
  layerNorm,
  layerNormBackward,
  nextCharDistribution,
} from "../mod.ts";
import type { GPT } from "../lib/model.ts";
import { smallCorpus } from "./fixtures.ts";

const TEXT = smallCorpus();
const SHAPE = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 4, seed: 5 };

/** Largest absolute difference of two arrays of the same length. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assertEquals(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

Deno.test("forwardActivations: every activation of the pass, in order, named and shaped", () => {
  const model = createModel(TEXT, SHAPE);
  const text = "ROMEO:\nmy lord";
  const n = [...text].length, C = 32, H = 4, V = model.config.vocabSize;
  const acts = forwardActivations(model, text);
  const block = (l: number) =>
    [
      "ln_1",
      "attn.qkv",
      "attn.probs",
      "attn.heads",
      "residual",
      "ln_2",
      "mlp.fc",
      "mlp.gelu",
      "out",
    ]
      .map((s) => `h.${l}.${s}`);
  assertEquals(acts.map((a) => a.name), ["embedding", ...block(0), ...block(1), "ln_f", "logits"]);
  const shapes = Object.fromEntries(acts.map((a) => [a.name, a.shape]));
  assertEquals(shapes["embedding"], [n, C]);
  assertEquals(shapes["h.1.attn.qkv"], [n, 3 * C]);
  assertEquals(shapes["h.1.attn.probs"], [H, n, n]);
  assertEquals(shapes["h.0.mlp.fc"], [n, 4 * C]);
  assertEquals(shapes["logits"], [n, V]);
  for (const a of acts) {
    assertEquals(a.values.length, a.shape.reduce((x, y) => x * y, 1), a.name);
    assert(a.values.every(Number.isFinite), a.name);
    assert(a.what.length > 0, a.name);
  }
});

Deno.test("forwardActivations: the same pass as attentionMap and nextCharDistribution", () => {
  const model = createModel(TEXT, SHAPE) as GPT;
  const text = "JULIET:\nthe moon"; // 16 characters, the whole window
  const acts = Object.fromEntries(forwardActivations(model, text).map((a) => [a.name, a]));
  const n = [...text].length, C = 32, V = model.config.vocabSize;
  for (const layer of [0, 1]) {
    const map = attentionMap(model, text, { layer });
    assertEquals(acts[`h.${layer}.attn.probs`].values, map.probs);
    assertEquals(acts.logits.values, map.logits);
  }
  // each attention row sums to one over the keys up to its query
  const probs = acts["h.0.attn.probs"].values;
  for (let row = 0; row < 4 * n; row++) {
    const sum = probs.subarray(row * n, (row + 1) * n).reduce((s, p) => s + p, 0);
    assert(Math.abs(sum - 1) < 1e-5, `row ${row}: ${sum}`);
  }
  // the softmax of the last row of logits is the next character's distribution
  const last = acts.logits.values.subarray((n - 1) * V);
  const top = Math.max(...last), exps = Array.from(last, (v) => Math.exp(v - top));
  const total = exps.reduce((s, e) => s + e, 0);
  const byId = nextCharDistribution(model, text).sort((a, b) => a.id - b.id).map((c) => c.prob);
  assert(maxDiff(exps.map((e) => e / total), byId) < 1e-6);
  // the embedding is wte[token] + wpe[position], and ln_1 the LayerNorm of it
  const ids = model.tokenizer.encode(text);
  const p = model.params.byName, wte = p.get("wte.weight")!, wpe = p.get("wpe.weight")!;
  const embedding = Float64Array.from({ length: n * C }, (_, i) => {
    const t = Math.floor(i / C), c = i % C;
    return wte[ids[t] * C + c] + wpe[t * C + c];
  });
  assert(maxDiff(acts.embedding.values, embedding) < 1e-6);
  const w = Float64Array.from(p.get("h.0.ln_1.weight")!),
    b = Float64Array.from(p.get("h.0.ln_1.bias")!);
  assert(maxDiff(acts["h.0.ln_1"].values, layerNorm(embedding, w, b).out) < 1e-4);
  // GELU (tanh approximation) of mlp.fc is mlp.gelu
  const fc = acts["h.1.mlp.fc"].values, gelu = acts["h.1.mlp.gelu"].values;
  const k = Math.sqrt(2 / Math.PI);
  const expected = Array.from(fc, (x) => 0.5 * x * (1 + Math.tanh(k * (x + 0.044715 * x ** 3))));
  assert(maxDiff(gelu, expected) < 1e-5);
});

Deno.test("forwardActivations: the last blockSize characters, copies, clear errors", () => {
  const model = createModel(TEXT, SHAPE);
  const long = "ROMEO:\nmy lord the moon is fair";
  const acts = forwardActivations(model, long);
  assertEquals(acts[0].shape, [16, 32]);
  assertEquals(acts.at(-1)!.values, forwardActivations(model, long.slice(-16)).at(-1)!.values);
  acts[0].values.fill(7); // a copy: the next pass is untouched
  assertEquals(
    forwardActivations(model, long)[0].values,
    forwardActivations(model, long)[0].values,
  );
  assert(!forwardActivations(model, long)[0].values.every((v) => v === 7));
  assertThrows(() => forwardActivations(model, ""), InputError);
  assertThrows(() => forwardActivations(model, "ROMEO: 123"), (e: unknown) => {
    return e instanceof InputError && /"1", "2", "3"/.test(e.message);
  });
});

/** A seeded generator of numbers in [-0.5, 0.5). */
function rng(seed: number): () => number {
  return () => (seed = (seed * 48271) % 2147483647) / 2147483647 - 0.5;
}

Deno.test("layerNorm: rows of mean 0 and variance 1, scaled and shifted", () => {
  const { out, mean, rstd } = layerNorm(
    new Float64Array([1, 2, 3, 10, 10, 16]),
    new Float64Array([1, 1, 1]),
    new Float64Array([0, 0, 0]),
  );
  assertEquals(Array.from(mean), [2, 12]);
  assert(Math.abs(rstd[0] - 1 / Math.sqrt(2 / 3 + 1e-5)) < 1e-12);
  for (const row of [out.subarray(0, 3), out.subarray(3)]) {
    const m = row.reduce((s, v) => s + v, 0) / 3, v = row.reduce((s, x) => s + x * x, 0) / 3;
    assert(Math.abs(m) < 1e-12 && Math.abs(v - 1) < 1e-4, `${row}`);
  }
  const shifted = layerNorm(
    new Float64Array([1, 2, 3]),
    new Float64Array([2, 2, 2]),
    new Float64Array([1, 1, 1]),
  );
  assert(maxDiff(shifted.out, Array.from(out.subarray(0, 3), (v) => 2 * v + 1)) < 1e-12);
});

Deno.test("layerNormBackward agrees with central finite differences on every entry", () => {
  const rand = rng(3), C = 6, rows = 4;
  const x = Float64Array.from({ length: rows * C }, rand);
  const w = Float64Array.from({ length: C }, () => 1 + rand());
  const b = Float64Array.from({ length: C }, rand);
  const g = Float64Array.from(x, rand); // loss = Σ out · g
  const loss = (x: Float64Array, w: Float64Array, b: Float64Array) =>
    layerNorm(x, w, b).out.reduce((s, o, i) => s + o * g[i], 0);
  const { mean, rstd } = layerNorm(x, w, b);
  const grads = layerNormBackward(g, x, w, mean, rstd);
  const h = 1e-6;
  const numeric = (which: 0 | 1 | 2) => {
    const args = [x, w, b];
    return Array.from(args[which], (_, i) => {
      const up = args.map((a) => a.slice()), down = args.map((a) => a.slice());
      up[which][i] += h;
      down[which][i] -= h;
      return (loss(up[0], up[1], up[2]) - loss(down[0], down[1], down[2])) / (2 * h);
    });
  };
  assert(maxDiff(grads.dX, numeric(0)) < 1e-7, "dX");
  assert(maxDiff(grads.dWeight, numeric(1)) < 1e-7, "dWeight");
  assert(maxDiff(grads.dBias, numeric(2)) < 1e-7, "dBias");
  // a wrong gradient would not pass: the check is not vacuous
  assert(maxDiff(grads.dX, new Float64Array(x.length)) > 1e-2);
});

Deno.test("layerNorm and layerNormBackward: sizes that do not fit are an InputError", () => {
  const f = (n: number) => new Float64Array(n);
  assertThrows(() => layerNorm(f(5), f(2), f(2)), InputError);
  assertThrows(() => layerNorm(f(4), f(2), f(3)), InputError);
  assertThrows(() => layerNorm(f(4), f(0), f(0)), InputError);
  const { mean, rstd } = layerNorm(f(4), f(2), f(2));
  assertThrows(() => layerNormBackward(f(6), f(4), f(2), mean, rstd), InputError);
  assertThrows(() => layerNormBackward(f(4), f(4), f(2), f(1), rstd), InputError);
});
