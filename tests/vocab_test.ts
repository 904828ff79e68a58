// Real text (issue 13, items 4 and 6): growing a vocabulary for fine-tuning, evaluating text with
// unknown characters, the unknown-character error listing them all, and sampling a checkpoint.

import {
  deepStrictEqual as assertEquals,
  notDeepStrictEqual as assertNotEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert";
import {
  createModel,
  createTrainer,
  evaluate,
  extendVocabulary,
  generate,
  InputError,
  loadWeights,
  type Model,
  nextCharDistribution,
  saveWeights,
  Tokenizer,
  WeightsError,
} from "../mod.ts";
import { modelOf } from "../lib/api.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import { batchPass, forward, KVCache } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";

const BASE = "the cat sat on the mat. ".repeat(8);
const SMALL = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 4 };

function isInputError(e: unknown): boolean {
  return e instanceof InputError;
}

/** Logits [n, V] of every position of `prompt` through the KV cache, as a plain array. */
function logitsOf(model: Model, prompt: string): number[][] {
  const m = modelOf(model);
  const ids = m.tokenizer.encode(prompt);
  const flat = new KVCache(m).feed(ids, true);
  const V = m.config.vocabSize;
  return Array.from(
    { length: ids.length },
    (_, i) => Array.from(flat.subarray(i * V, (i + 1) * V)),
  );
}

Deno.test("extendVocabulary: new characters follow the known ones, in code-point order", () => {
  const base = createModel(BASE, { ...SMALL, seed: 3 });
  const before = [...base.tokenizer.vocab];
  const { model, added } = extendVocabulary(base, "Zebra (1999) at the mat: «ok»!", { seed: 5 });
  assertEquals(added, ["!", "(", ")", "1", "9", ":", "Z", "b", "k", "r", "«", "»"]);
  assertEquals(model.tokenizer.vocab, [...before, ...added]);
  assertEquals(model.config, { ...base.config, vocabSize: before.length + added.length });
  // the known ids never change; the grown vocabulary is no longer sorted
  for (const [id, ch] of before.entries()) assertEquals(model.tokenizer.encode(ch)[0], id);
  const sorted = [...model.tokenizer.vocab].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  assertNotEquals(model.tokenizer.vocab, sorted);
  // the old model is left as it was
  assertEquals(base.tokenizer.vocab, before);
  assertEquals(base.config.vocabSize, before.length);
});

Deno.test("extendVocabulary: parameters copied, new wte rows normal(0, 0.02) from the seed", () => {
  const base = createModel(BASE, { ...SMALL, seed: 3 });
  const old = modelOf(base);
  const { model, added } = extendVocabulary(base, BASE + "XYZ", { seed: 11 });
  const m = modelOf(model);
  const C = old.config.dModel, V = old.config.vocabSize;
  for (const [name, t] of old.params.byName) {
    const grown = m.params.byName.get(name)!;
    if (name === "wte.weight") assertEquals(grown.subarray(0, V * C), t);
    else assertEquals(grown, t, name);
  }
  const rng = new Rng(11);
  const expected = Float32Array.from({ length: added.length * C }, () => rng.normal(0, 0.02));
  assertEquals(m.params.wte.subarray(V * C), expected);
  // a different seed, different rows; the same seed, the same model
  const other = modelOf(extendVocabulary(base, BASE + "XYZ", { seed: 12 }).model);
  assertNotEquals(other.params.wte.subarray(V * C), expected);
  assertEquals(
    saveWeights(extendVocabulary(base, BASE + "XYZ", { seed: 11 }).model),
    saveWeights(m),
  );
  // the default seed is 0
  const rng0 = new Rng(0);
  const zero = modelOf(extendVocabulary(base, "X").model).params.wte.subarray(V * C);
  assertEquals(zero, Float32Array.from({ length: C }, () => rng0.normal(0, 0.02)));
});

Deno.test("extendVocabulary: known characters' logits are unchanged, only new columns appear", () => {
  const base = createModel(BASE, { ...SMALL, seed: 4 });
  const { model, added } = extendVocabulary(base, "0123456789 #", { seed: 1 });
  assertEquals(added.length, 11);
  const V = base.config.vocabSize;
  for (const prompt of ["the cat", "t", "sat on the mat."]) {
    const before = logitsOf(base, prompt);
    const after = logitsOf(model, prompt);
    assertEquals(after.map((row) => row.slice(0, V)), before, prompt);
    assert(after.every((row) => row.length === V + added.length));
  }
  // the batched (training) path too: a whole block of known characters
  const batched = (model: Model) => {
    const m = modelOf(model), T = m.config.blockSize, W = m.config.vocabSize;
    const acts = m.activations(1, { backward: false });
    acts.inputs.set(m.tokenizer.encode(BASE.slice(0, T)));
    forward(m, acts, batchPass(m.config, 1), false);
    return Array.from(
      { length: T },
      (_, i) => Array.from(acts.head.logits.subarray(i * W, i * W + V)),
    );
  };
  assertEquals(batched(model), batched(base));
});

Deno.test("extendVocabulary: no new characters gives the same model; facts are kept", () => {
  const base = createModel(BASE, SMALL);
  const same = extendVocabulary(base, "the mat");
  assert(same.model === base);
  assertEquals(same.added, []);
  assertEquals(extendVocabulary(base, "").added, []);
  assertThrows(() => extendVocabulary({} as Model, "x"), isInputError);
  assertThrows(() => extendVocabulary(base, "x", { seed: -1 }), isInputError);
});

Deno.test("extendVocabulary: saving and loading keeps the unsorted order and the facts", async () => {
  const base = await loadWeights(saveWeights(createModel(BASE, SMALL), { steps: 7, note: "base" }));
  const { model, added } = extendVocabulary(base, "ABC abc", { seed: 2 });
  assertEquals(added, ["A", "B", "C", "b"]);
  assertEquals(model.facts, { steps: "7", note: "base" });
  const bytes = saveWeights(model);
  const { metadata } = decodeSafetensors(bytes);
  assertEquals(JSON.parse(metadata.vocab), model.tokenizer.vocab);
  const copy = await loadWeights(bytes);
  assertEquals(copy.tokenizer.vocab, model.tokenizer.vocab);
  assertEquals(copy.facts, { steps: "7", note: "base" });
  assertEquals(logitsOf(copy, "the cab"), logitsOf(model, "the cab"));
  assertEquals(nextCharDistribution(copy, "Ab"), nextCharDistribution(model, "Ab"));
  // a Tokenizer takes any order of distinct characters
  const t = new Tokenizer(["z", "a", "m"]);
  assertEquals([...t.encode("maz")], [2, 1, 0]);
  assertEquals(t.decode([0, 1, 2]), "zam");
});

Deno.test("extendVocabulary: the grown model fine-tunes on the new text", async () => {
  const base = createModel(BASE, { ...SMALL, seed: 1 });
  const text = "the cat (7) sat on the mat; 1 2 3! ".repeat(12);
  assertThrows(() => nextCharDistribution(base, "(7)"), isInputError);
  const { model } = extendVocabulary(base, text);
  using trainer = await createTrainer(model, text, { steps: 3, batch: 4, threads: 1 });
  const { steps, loss } = await trainer.run();
  assertEquals(steps, 3);
  assert(Number.isFinite(loss));
  assertEquals((await evaluate(model, text)).dropped, 0);
});

Deno.test("evaluate: unknown 'drop' scores the known characters and counts the dropped", async () => {
  const model = createModel(BASE, { ...SMALL, seed: 2 });
  const real = "the cat (1) sat on the mat! ".repeat(60);
  const clean = real.replace(/[(1)!]/g, "");
  const dropped = await evaluate(model, real, { unknown: "drop" });
  const reference = await evaluate(model, clean);
  assertEquals(dropped, { ...reference, dropped: 240 });
  assertEquals(reference.dropped, 0);
  // with a split, the split is of the kept text
  assertEquals(
    await evaluate(model, real, { unknown: "drop", split: "val" }),
    { ...(await evaluate(model, clean, { split: "val" })), dropped: 240 },
  );
  // the default (and "error") is an error that lists every unknown character
  for (const options of [{}, { unknown: "error" as const }]) {
    await assertRejects(
      () => evaluate(model, real, options),
      (e: Error) =>
        e instanceof InputError &&
        e.message ===
          `the text has 4 characters outside the model's vocabulary: "(", "1", ")", "!"; use only characters of the training corpus`,
    );
  }
  await assertRejects(
    () => evaluate(model, real, { unknown: "skip" as "drop" }),
    (e: Error) => e instanceof InputError && /use "error" or "drop"/.test(e.message),
  );
  // a trainer's evaluate takes the option too
  using trainer = await createTrainer(model, BASE, { steps: 1, batch: 4, threads: 1 });
  assertEquals(await trainer.evaluate(real, { unknown: "drop" }), dropped);
  assertEquals((await trainer.evaluate()).dropped, 0);
});

Deno.test("the unknown-character error lists all of them, escaped, in order of first appearance", () => {
  const t = Tokenizer.fromText("abc");
  const unknown = Array.from({ length: 25 }, (_, i) => String.fromCodePoint(0x4e00 + i));
  const text = `a\nb"${unknown.join("a")}\t${unknown[3]}z`;
  let message = "";
  try {
    t.encode(text, "the prompt");
  } catch (e) {
    assert(e instanceof InputError);
    message = e.message;
  }
  const names = ["\n", '"', ...unknown, "\t", "z"].map((ch) => JSON.stringify(ch)).join(", ");
  assertEquals(
    message,
    `the prompt has 29 characters outside the model's vocabulary: ${names}; use only characters of the training corpus`,
  );
  assert(!message.includes("\n") && !message.includes("..."));
});

Deno.test("loadWeights reads a training checkpoint's weights, ignoring the optimizer state", async () => {
  const model = createModel(BASE, { ...SMALL, seed: 6 });
  using trainer = await createTrainer(model, BASE, { steps: 4, batch: 4, threads: 1 });
  await trainer.run({ steps: 2 });
  const ckpt = trainer.checkpoint({ note: "mid-run" });
  assert(decodeSafetensors(ckpt).tensors.has("optimizer.m.wte.weight"));
  const loaded = await loadWeights(ckpt);
  assertEquals(loaded.config, model.config);
  assertEquals(loaded.tokenizer.vocab, model.tokenizer.vocab);
  assertEquals(modelOf(loaded).flat, modelOf(model).flat);
  assertEquals(loaded.facts.step, "2");
  assertEquals(loaded.facts.note, "mid-run");
  assertEquals(loaded.facts.corpus_sha256, trainer.corpusSha256);
  assert(!("adam_t" in loaded.facts) && !("rng_state" in loaded.facts));
  // it samples and evaluates like the model it holds
  const sample = (m: Model) => Array.fromAsync(generate(m, { prompt: "the", tokens: 20, seed: 3 }));
  assertEquals(await sample(loaded), await sample(model));
  assertEquals(await evaluate(loaded, BASE), await evaluate(model, BASE));
  // and it saves as a plain weights file without the optimizer tensors
  const names = [...decodeSafetensors(saveWeights(loaded)).tensors.keys()];
  assert(names.length > 0 && names.every((n) => !n.startsWith("optimizer.")));
  // the checkpoint still resumes
  assertEquals(Checkpoint.decode(ckpt).step, 2);
});

Deno.test("loadWeights: optimizer tensors are only accepted in a checkpoint", async () => {
  const model = createModel(BASE, SMALL);
  const { tensors, metadata } = decodeSafetensors(saveWeights(model));
  const entries = [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data }));
  const extra = { name: "optimizer.m.wte.weight", shape: [1], data: new Float32Array(1) };
  // a weights file (no adam_t) with an optimizer tensor is not a model of ours
  await assertRejects(
    () => loadWeights(encodeSafetensors([...entries, extra], metadata)),
    (e: Error) =>
      e instanceof WeightsError && /unexpected tensor "optimizer\.m\.wte/.test(e.message),
  );
  // marked as a checkpoint, it loads
  const loaded = await loadWeights(
    encodeSafetensors([...entries, extra], { ...metadata, adam_t: "1" }),
  );
  assertEquals(modelOf(loaded).flat, modelOf(model).flat);
});
