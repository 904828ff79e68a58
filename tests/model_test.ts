// The model on the fast kernels: float32 gradients of every tier against the float64 reference
// (whose gradients the finite-difference checks prove), the same across thread counts, and
// golden outputs per tier for a fixed seed.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { makeCorpus } from "../lib/data.ts";
import { backward, forward, GPT, type GPTConfig } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { generateTokens } from "../lib/sample.ts";
import { kernelTier } from "../lib/tensor.ts";
import { Trainer } from "../lib/train.ts";
import { loadModel, saveModel } from "../lib/weights.ts";
import { smallCorpus } from "./fixtures.ts";
import { forEachTier } from "./tiers.ts";

const tiny: GPTConfig = { vocabSize: 11, blockSize: 8, dModel: 16, nLayers: 2, nHeads: 2 };
const B = 4;

/** Loss and gradients of the tiny model for a fixed batch, in the current tier. */
function gradients(dtype: "float32" | "float64") {
  const rng = new Rng(21);
  const model = new GPT(tiny, { dtype }).init(new Rng(20));
  const acts = model.activations(B);
  for (let i = 0; i < B * tiny.blockSize; i++) {
    acts.inputs[i] = rng.int(tiny.vocabSize);
    acts.targets[i] = rng.int(tiny.vocabSize);
  }
  model.zeroGrad();
  const BT = B * tiny.blockSize;
  const loss = forward(tiny, model.params, acts, B, tiny.blockSize) / BT;
  backward(tiny, model.params, model.grads, acts, B, tiny.blockSize, 1 / BT);
  return { loss, model };
}

forEachTier("float32 gradients of the whole model match the float64 reference", () => {
  const ref = gradients("float64");
  const fast = gradients("float32");
  assert(Math.abs(fast.loss - ref.loss) < 1e-5 * ref.loss);
  for (const [name, g] of ref.model.grads.byName) {
    const f = fast.model.grads.byName.get(name)!;
    let diff = 0, norm = 0;
    for (let i = 0; i < g.length; i++) {
      diff += (f[i] - g[i]) ** 2;
      norm += g[i] ** 2;
      assert(
        Math.abs(f[i] - g[i]) <= 1e-5 + 1e-3 * Math.abs(g[i]),
        `${name}[${i}]: ${f[i]} vs ${g[i]}`,
      );
    }
    assert(Math.sqrt(diff) <= 1e-4 * Math.sqrt(norm) + 1e-7, `${name}: relative error too large`);
  }
});

const corpus = makeCorpus(smallCorpus());
const small: GPTConfig = {
  vocabSize: corpus.tokenizer.size,
  blockSize: 16,
  dModel: 32,
  nLayers: 2,
  nHeads: 4,
};

/** Trains `steps` steps from seed 1 and returns the weights file's bytes. */
async function trainBytes(threads: number, steps = 4, dropout = 0): Promise<Uint8Array> {
  const model = new GPT(small).init(1);
  const trainer = await Trainer.create(model, corpus.train, {
    batch: 6,
    steps,
    threads,
    seed: 2,
    dropout,
    // a fixed recipe, so that the goldens do not move with the defaults
    lr: 2e-3,
    minLr: 2e-4,
    warmup: 100,
    weightDecay: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    decay: "cosine",
  });
  try {
    for (let i = 0; i < steps; i++) await trainer.trainStep();
  } finally {
    trainer.close();
  }
  return saveModel(model, corpus.tokenizer, { steps: String(steps) });
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

forEachTier(
  "training is deterministic for a seed and thread count; threads agree closely",
  async (tier) => {
    const one = await trainBytes(1);
    assertEquals(await trainBytes(1), one);
    if (tier === "js") return; // workers need the WebAssembly kernels' shared memory
    const two = await trainBytes(2);
    assertEquals(await trainBytes(2), two);
    const three = await trainBytes(3); // uneven shares: 2 + 2 + 2 rows of 6
    assertEquals(await trainBytes(3), three);
    // different summation orders, the same training up to float32 rounding
    const a = new Float32Array(one.buffer.slice(one.length - 4 * 1000));
    const b = new Float32Array(two.buffer.slice(two.length - 4 * 1000));
    for (let i = 0; i < a.length; i++) {
      assert(
        Math.abs(a[i] - b[i]) <= 1e-4 + 1e-3 * Math.abs(a[i]),
      );
    }
  },
);

/** Golden results per tier: sha256 of the weights after 30 steps, and a seeded sample. */
const GOLDEN: Record<string, { weights: string; sampled: string }> = {
  js: {
    weights: "e1f1691937d59f7f720357bdd461bc1be9ff7add0fc7b1b2c40c286d2b090e0e",
    sampled: "iTd:gte.nerN\n\nriMv M.UTs.:ytO\n\nwdLvtmnTE",
  },
  simd: {
    weights: "9505d8b2053f583c3b3d2b0784984b81532fc181893cc41be8ad293c6d78cecc",
    sampled: "iTd:gte.nerN\n\nriMv M.UTs.:ytO\n\nwdLvtmnTE",
  },
  relaxed: {
    weights: "94ba45f0eacf8f14351a0b26a38792087cfe865fbdea850a3a4d18ca2f47e2e1",
    sampled: "iTd:gte.nerN\n\nriMv M.UTs.:ytO\n\nwdLvtmnTE",
  },
};

forEachTier("golden outputs for a fixed seed", async (tier) => {
  const bytes = await trainBytes(1, 30);
  const model = new GPT(small).init(1);
  model.flat.set(loadModel(bytes).model.flat);
  const prompt = corpus.tokenizer.encode("ROMEO:");
  const ids = [...generateTokens(model, prompt, 0, { tokens: 40, temperature: 0.8, seed: 3 })];
  const got = { weights: await sha256(bytes), sampled: corpus.tokenizer.decode(ids) };
  const want = GOLDEN[kernelTier()];
  if (want.weights === "") {
    console.log(`golden for ${tier}: ${JSON.stringify(got)}`);
    throw new Error(`no golden recorded for tier ${tier}`);
  }
  assertEquals(got, want);
});
