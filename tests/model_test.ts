// The model on the fast kernels: float32 gradients of every tier against the float64 reference
// (whose gradients the finite-difference checks prove), the same across thread counts, and
// golden outputs per tier for a fixed seed.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { makeCorpus } from "../lib/data.ts";
import { backward, batchPass, forward, GPT, type ModelConfig } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps } from "../lib/sample.ts";
import { kernelTier } from "../lib/kernels/dispatch.ts";
import { Trainer } from "../lib/trainer.ts";
import { loadModel, saveModel } from "../lib/weights.ts";
import { smallCorpus } from "./fixtures.ts";
import { forEachTier } from "./tiers.ts";

const tiny: ModelConfig = { vocabSize: 11, blockSize: 8, dModel: 16, nLayers: 2, nHeads: 2 };
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
  const pass = batchPass(tiny, B);
  const loss = forward(model, acts, pass) / BT;
  backward(model, acts, pass, 1 / BT);
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

const text = smallCorpus();
const corpus = makeCorpus(text);
const small: ModelConfig = {
  vocabSize: corpus.tokenizer.size,
  blockSize: 16,
  dModel: 32,
  nLayers: 2,
  nHeads: 4,
};

/** Trains `steps` steps from seed 1 and returns the weights file's bytes. */
async function trainBytes(
  threads: number,
  steps = 4,
  dropout = 0,
  optimizer: "adamw" | "muon" = "adamw",
): Promise<Uint8Array> {
  const model = new GPT(small, { tokenizer: corpus.tokenizer }).init(1);
  const trainer = await Trainer.create(model, text, {
    batch: 6,
    steps,
    threads,
    seed: 2,
    dropout,
    // a fixed recipe, so that the goldens do not move with the defaults (AdamW's are those of
    // the time before Muon: --optimizer adamw trains exactly as it did)
    optimizer,
    cooldown: 1,
    muonLr: 4e-3,
    muonMomentum: 0.95,
    muonSteps: 5,
    lr: 2e-3,
    minLr: 2e-4,
    warmup: 100,
    weightDecay: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    decay: "cosine",
  });
  try {
    for (let i = 0; i < steps; i++) await trainer.step();
  } finally {
    trainer.close();
  }
  return saveModel(model, { steps: String(steps) });
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

/**
 * Golden results per optimizer and tier: sha256 of the weights after 30 steps, and a seeded
 * sample. AdamW's were recorded before Muon existed.
 */
const GOLDEN: Record<string, Record<string, { weights: string; sampled: string }>> = {
  adamw: {
    js: {
      weights: "1841b3b492e05bbb13a1e4408707db15b0bd787bfb006c11814001b5fc055291",
      sampled: "iffEUrg.nisR\n\nonSv R:RRr..wvU\n\nweNstoogN",
    },
    simd: {
      weights: "7ef5954ad4564cee2c4d0806b724fe925270a10381cfd6676476e4857c8104d4",
      sampled: "iffEUrg.nisR\n\nonSv R:RRr..wvU\n\nweNstoogN",
    },
    relaxed: {
      weights: "36fcd36129905858b0dfc3e7be67c77979bbdbff099329281169a20293274410",
      sampled: "iffEUrg.nisR\n\nonSv R:RRr..wvU\n\nweNstoogN",
    },
  },
  muon: {
    js: {
      weights: "fc61129b6fe985e0d411ea7b3e42686e3417c786a6289ab82b2d191ec9a7e02a",
      sampled: "fRT:dth.misS\n\nonSv N.RRr..wvT\n\nweMttnogM",
    },
    simd: {
      weights: "80c255cdce292b758b6e52cb2ff006dbaacabc508a53a47ee59f10553d1678c2",
      sampled: "fRT:dth.misS\n\nonSv N.RRr..wvT\n\nweMttnogM",
    },
    relaxed: {
      weights: "bce1405c24df1c1a59ab78f8bc3057cfa165af2087e56dc6ed2d901661f326cd",
      sampled: "fRT:dth.misS\n\nonSv N.RRr..wvT\n\nweMttnogM",
    },
  },
};

for (const optimizer of ["adamw", "muon"] as const) {
  forEachTier(`golden outputs for a fixed seed, ${optimizer}`, async (tier) => {
    const bytes = await trainBytes(1, 30, 0, optimizer);
    const model = loadModel(bytes);
    assertEquals(model.config, small);
    assertEquals(model.tokenizer.decode(model.tokenizer.encode(text)), text);
    assertEquals(model.facts.steps, "30");
    const prompt = model.tokenizer.encode("ROMEO:");
    const ids = [...decodeSteps(model, prompt, { tokens: 40, temperature: 0.8, rng: new Rng(3) })]
      .map((s) => s.id);
    const got = { weights: await sha256(bytes), sampled: model.tokenizer.decode(ids) };
    const want = GOLDEN[optimizer][kernelTier()];
    if (want.weights === "") {
      console.log(`golden for ${optimizer} ${tier}: ${JSON.stringify(got)}`);
      throw new Error(`no golden recorded for ${optimizer} on tier ${tier}`);
    }
    assertEquals(got, want);
  });
}
