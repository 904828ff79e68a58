// A checkpoint that is well-formed but corrupt is refused with a WeightsError that says so (and
// the trainer is left as it was), found by the fuzz test: a negative second moment, step and
// adam_t that are not plain integers, train_settings that are not settings; weights that overflow
// at once are named; a checkpoint too large to read back is not written; names from a file are escaped.

import assert from "node:assert/strict";
import {
  createModel,
  createTrainer,
  loadWeights,
  nextCharDistribution,
  WeightsError,
} from "../mod.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";

const TEXT = "the cat sat on the mat. the dog sat on the log. ".repeat(8);
const SMALL = { blockSize: 16, dModel: 32, nLayers: 1, nHeads: 2, seed: 1 };
const SETTINGS = { steps: 4, batch: 2, seed: 1 };

/** A checkpoint after one step, and a function that rewrites it. */
async function checkpoint() {
  const model = createModel(TEXT, SMALL);
  using trainer = await createTrainer(model, TEXT, SETTINGS);
  await trainer.step();
  const bytes = trainer.checkpoint();
  const { tensors, metadata } = decodeSafetensors(bytes);
  const entries = [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data.slice() }));
  const rewrite = (
    change: (e: typeof entries, m: Record<string, string>) => void,
  ): Uint8Array => {
    const e = entries.map((t) => ({ ...t, data: t.data.slice() }));
    const m = { ...metadata };
    change(e, m);
    return encodeSafetensors(e, m);
  };
  return { model, bytes, rewrite };
}

Deno.test("checkpoint: corrupt values are refused, and the trainer stays as it was", async () => {
  const { model, bytes, rewrite } = await checkpoint();
  using trainer = await createTrainer(model, TEXT, SETTINGS);
  const before = trainer.checkpoint();
  const cases: [string, Uint8Array, RegExp][] = [
    [
      "a negative second moment",
      rewrite((e) => (e.find((t) => t.name === "optimizer.v.ln_f.bias")!.data[0] = -1e-9)),
      /optimizer\.v \(AdamW's second moment\) has negative values.*corrupt/,
    ],
    ...["", " ", "0x10", "1e300", "+1", "-0", "\n1\n", "1.5"].map((step): [
      string,
      Uint8Array,
      RegExp,
    ] => [
      `step ${JSON.stringify(step)}`,
      rewrite((_, m) => (m.step = step)),
      /step is missing or invalid/,
    ]),
    ["adam_t 0b1", rewrite((_, m) => (m.adam_t = "0b1")), /adam_t is missing or invalid/],
    ...["{", "x", "[]", "42", "null"].map((s): [string, Uint8Array, RegExp] => [
      `train_settings ${s}`,
      rewrite((_, m) => (m.train_settings = s)),
      /train_settings is not a JSON object of settings/,
    ]),
  ];
  for (const [what, file, message] of cases) {
    assert.throws(() => trainer.restore(file), (e: Error) => {
      assert.ok(e instanceof WeightsError, `${what}: ${e}`);
      assert.match(e.message, message, what);
      assert.ok(!e.message.includes("\n"), what);
      return true;
    });
    assert.deepEqual(trainer.checkpoint(), before, `${what}: the trainer is as it was`);
  }
  assert.deepEqual(trainer.restore(bytes).step, 1, "the good checkpoint still restores");
  model.dispose();
});

Deno.test("checkpoint: weights that overflow at once are named as the checkpoint's", async () => {
  const { model, rewrite } = await checkpoint();
  const overflow = rewrite((e) => {
    for (const t of e) if (!t.name.startsWith("optimizer.")) t.data.fill(3e38);
  });
  using trainer = await createTrainer(model, TEXT, SETTINGS);
  trainer.restore(overflow);
  await assert.rejects(trainer.step(), {
    name: "BareGPTError",
    message:
      /^the loss became NaN at step 2; the first after the checkpoint, whose weights overflow \(a diverging run or a corrupt file\): delete it/,
  });
  // as weights, the same file is refused when used
  using loaded = await loadWeights(overflow);
  assert.throws(() => nextCharDistribution(loaded, "the"), WeightsError);
  model.dispose();
});

Deno.test("checkpoint: one too large to read back is not written", async () => {
  const model = createModel(TEXT, SMALL);
  using trainer = await createTrainer(model, TEXT, SETTINGS);
  assert.throws(() => trainer.checkpoint({ note: "x".repeat(5 * 2 ** 20) }), {
    name: "InputError",
    message: /^the checkpoint's metadata takes \d+ bytes, more than the 4194304 a file may have/,
  });
  assert.ok(trainer.checkpoint({ note: "x".repeat(2 ** 20) }).length > 2 ** 20);
  model.dispose();
});

Deno.test("weights: a file's unexpected tensor name is escaped in the error", async () => {
  const { rewrite } = await checkpoint();
  for (const name of ["evil\x1b]52;c;aGk=\x07", "two\u2028lines", "c1\u0085"]) {
    const file = rewrite((e) => e.push({ name, shape: [1], data: new Float32Array(1) }));
    await assert.rejects(loadWeights(file), (e: Error) => {
      assert.ok(e instanceof WeightsError);
      assert.match(e.message, /unexpected tensor "/);
      const controls = [...e.message].filter((c) => {
        const code = c.codePointAt(0)!;
        return code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028 || code === 0x2029;
      });
      assert.deepEqual(controls, [], JSON.stringify(e.message));
      return true;
    });
  }
});
