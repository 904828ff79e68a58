// The shipped weights: their schema and metadata, their validation loss on Tiny Shakespeare, and
// that the training command reproduces a file bit for bit. Tests that need the 1 MB corpus look
// in ../shared/data, then data/; without it they skip with a reason, except under CI=true.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { splitIndex } from "../lib/data.ts";
import { parameterSpecs } from "../lib/model.ts";
import { decodeSafetensors } from "../lib/safetensors.ts";
import { setupKernels } from "../lib/kernels/dispatch.ts";
import { evaluate } from "../mod.ts";
import { loadModel } from "../lib/weights.ts";
import { findCorpus } from "./fixtures.ts";

const SHIPPED = new URL("../weights/shakespeare.safetensors", import.meta.url);
const CORPUS_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";
// The validation loss the shipped weights must reach (the goal of the training recipe: issue 17's
// 1.50, with Muon, from the 1.55 of the AdamW recipe before it).
const TARGET = 1.5;

Deno.test("shipped weights: default architecture, GPT-2 names and shapes, training facts", async () => {
  const bytes = await Deno.readFile(SHIPPED);
  const { tensors, metadata } = decodeSafetensors(bytes);
  const model = loadModel(bytes);
  const { tokenizer, facts } = model;
  const c = model.config;
  assertEquals(
    { blockSize: c.blockSize, dModel: c.dModel, nLayers: c.nLayers, nHeads: c.nHeads },
    { blockSize: 128, dModel: 256, nLayers: 2, nHeads: 4 },
  );
  assertEquals(c.vocabSize, 65);
  assertEquals(
    tokenizer.vocab.join(""),
    "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
  );
  assertEquals([...tensors.keys()], parameterSpecs(c).map((s) => s.name));
  assertEquals(model.parameterCount, 1_629_440);
  assertEquals(facts.corpus_sha256, CORPUS_SHA256);
  assert(Number(facts.steps) > 0);
  assert(Number(facts.val_loss) <= TARGET, `val_loss ${facts.val_loss} above ${TARGET}`);
  assertMatch(facts.command, /^train --data \S+ /);
  assertMatch(facts.command, / --optimizer muon /); // the recipe of issue 17
  assert(
    !/--out|--force|shakespeare\.safetensors/.test(facts.command),
    "no output path in the command",
  );
  assert(!("time" in metadata) && !("host" in metadata), "metadata is deterministic");
});

Deno.test("shipped weights: validation loss on Tiny Shakespeare is 1.50 or lower", async () => {
  const path = await findCorpus();
  if (path === null) return;
  setupKernels();
  try {
    const model = loadModel(await Deno.readFile(SHIPPED));
    const facts = model.facts;
    const text = await Deno.readTextFile(path);
    const n = model.tokenizer.encode(text).length;
    const r = await evaluate(model, text, { split: "val" });
    assertEquals(r.windows, Math.floor((n - splitIndex(n) - 1) / 128));
    console.log(
      `validation loss ${r.loss.toFixed(4)} (${r.bpc.toFixed(4)} bpc) over ${r.windows} windows`,
    );
    assert(r.loss <= TARGET, `validation loss ${r.loss} above ${TARGET}`);
    assertEquals(r.loss.toFixed(4), facts.val_loss); // the stored figure is this full sweep
  } finally {
    setupKernels("js");
  }
});

Deno.test("the README's training command reproduces its weights bit for bit (short run)", async () => {
  const path = await findCorpus();
  if (path === null) return;
  const cli = new URL("../cli.ts", import.meta.url).pathname;
  const dir = await Deno.makeTempDir();
  try {
    const run = async (out: string) => {
      const { code, stderr } = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          cli,
          "train",
          "--data",
          path,
          "--out",
          out,
          "--steps",
          "3",
          "--eval-every",
          "0",
          "--threads",
          "2",
        ],
        stdout: "null",
        stderr: "piped",
      }).output();
      assertEquals(code, 0, new TextDecoder().decode(stderr));
      return Deno.readFile(out);
    };
    const a = await run(`${dir}/a.safetensors`);
    const b = await run(`${dir}/b.safetensors`);
    assertEquals(a.length, b.length);
    assert(a.every((x, i) => x === b[i]), "two runs of the same command differ");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
