// The public API of mod.ts: loading and saving, models, training, evaluation, generation and
// inspection, and its errors; parity with the core functions the CLI uses.

import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert";
import {
  attention,
  createModel,
  createTrainer,
  evaluate,
  generate,
  InputError,
  loadWeights,
  type Model,
  nextCharDistribution,
  saveWeights,
  selectKernels,
  shippedWeightsUrl,
  Tokenizer,
  WeightsError,
} from "../mod.ts";
import { modelOf } from "../lib/api.ts";
import { splitIndex } from "../lib/data.ts";
import { evaluateTokens } from "../lib/evaluate.ts";
import { defaultArena } from "../lib/kernels/dispatch.ts";
import { batchPass, forward } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import { decodeSteps } from "../lib/sample.ts";
import { decodeSafetensors } from "../lib/safetensors.ts";
import { smallCorpus } from "./fixtures.ts";

const TEXT = "the cat sat on the mat. the dog sat on the log. ".repeat(8);
const SMALL = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 4 };

function small(seed = 0): Model {
  return createModel(TEXT, { ...SMALL, seed });
}

async function collect(it: AsyncIterable<string>): Promise<string> {
  return (await Array.fromAsync(it)).join("");
}

function isInputError(e: unknown): boolean {
  return e instanceof InputError;
}

Deno.test("public API: mod.ts exports exactly the deliberate surface", async () => {
  const mod = await import("../mod.ts");
  assertEquals(Object.keys(mod).sort(), [
    "BareGPTError",
    "DECAYS",
    "INSPECT_OPTIONS",
    "InputError",
    "MODEL_OPTIONS",
    "OPTIMIZERS",
    "Picture",
    "SAMPLING_OPTIONS",
    "TRAIN_OPTIONS",
    "Tokenizer",
    "WeightsError",
    "attention",
    "attentionColor",
    "attentionMap",
    "attentionSvg",
    "barChartSvg",
    "bestKernels",
    "clipAttention",
    "createModel",
    "createTrainer",
    "decodeCorpus",
    "describeAdapter",
    "describeRange",
    "displayChar",
    "evaluate",
    "extendVocabulary",
    "formatCandidateTable",
    "forwardActivations",
    "generate",
    "inspect",
    "inspectSteps",
    "inspectStream",
    "isBareGPTError",
    "layerNorm",
    "layerNormBackward",
    "lineChartSvg",
    "loadWeights",
    "nextCharDistribution",
    "picture",
    "renderAttentionSvg",
    "renderAttentionTerminal",
    "saveWeights",
    "scalePosition",
    "selectKernels",
    "shippedWeightsUrl",
    "textColumnsHtml",
    "topCandidates",
    "trainCommand",
    "trainingMemoryBytes",
    "webgpuAdapter",
  ]);
});

Deno.test("createModel: defaults, options, vocabulary and invalid shapes", () => {
  const m = createModel("abcab");
  assertEquals(m.config, { vocabSize: 3, blockSize: 128, dModel: 256, nLayers: 2, nHeads: 4 });
  assertEquals(m.tokenizer.vocab, ["a", "b", "c"]);
  assertEquals(m.facts, {});
  assert(m.parameterCount > 1_000_000);
  const t = createModel(Tokenizer.fromText("xyz"), SMALL);
  assertEquals(t.config.vocabSize, 3);
  // same seed, same weights
  assertEquals(
    nextCharDistribution(small(3), "the "),
    nextCharDistribution(small(3), "the "),
  );
  assertThrows(() => createModel("abc", { dModel: 30, nHeads: 4 }), isInputError);
  assertThrows(() => createModel("", SMALL), isInputError);
  assertThrows(() => createModel("abc", { seed: 1.5 }), isInputError);
  assertThrows(() => generate({} as Model), isInputError); // not a model of ours
});

Deno.test("saveWeights/loadWeights: bytes, path, file URL, round trip and facts", async () => {
  const model = small(1);
  const bytes = saveWeights(model, { steps: 12, note: "hi", ok: true });
  assertEquals(saveWeights(model, { steps: 12, note: "hi", ok: true }), bytes); // deterministic
  const copy = await loadWeights(bytes);
  assertEquals(copy.config, model.config);
  assertEquals(copy.tokenizer.vocab, model.tokenizer.vocab);
  assertEquals(copy.facts, { steps: "12", note: "hi", ok: "true" });
  assertEquals(nextCharDistribution(copy, "the c"), nextCharDistribution(model, "the c"));
  // default facts: the loaded ones
  assertEquals((await loadWeights(saveWeights(copy))).facts, copy.facts);
  assertThrows(() => saveWeights(model, { vocab: "x" }), isInputError);

  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/m.safetensors`;
    await Deno.writeFile(path, bytes);
    const url = new URL(`file://${path}`);
    for (const source of [path, url, url.href]) {
      const m = await loadWeights(source);
      assertEquals(m.facts.steps, "12");
    }
    await assertRejects(loadWeights(`${dir}/missing.safetensors`), isInputError);
    await assertRejects(loadWeights(new URL(`file://${dir}/missing.safetensors`)), isInputError);
    await assertRejects(loadWeights(dir), isInputError);
    await Deno.writeFile(`${dir}/bad.safetensors`, new TextEncoder().encode("not weights"));
    await assertRejects(loadWeights(`${dir}/bad.safetensors`), (e: unknown) => {
      return e instanceof WeightsError && e.message.includes("bad.safetensors");
    });
    await assertRejects(loadWeights(bytes.subarray(0, 100)), (e) => e instanceof WeightsError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadWeights: over http, and the errors of a bad address", async () => {
  const bytes = saveWeights(small(2), { steps: 3 });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    return path === "/m.safetensors"
      ? new Response(bytes.slice())
      : new Response("no", { status: 404, statusText: "Not Found" });
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    const m = await loadWeights(`${base}/m.safetensors`);
    assertEquals(m.facts.steps, "3");
    await assertRejects(loadWeights(`${base}/other.safetensors`), (e: unknown) => {
      return e instanceof InputError && e.message.includes("HTTP 404");
    });
  } finally {
    await server.shutdown();
  }
});

Deno.test("loadWeights: the shipped weights are beside the module", async () => {
  assert(shippedWeightsUrl.href.endsWith("/weights/shakespeare.safetensors"));
  const model = await loadWeights(shippedWeightsUrl);
  assert(model.tokenizer.has("\n"));
  assertEquals(model.config.vocabSize, model.tokenizer.size);
  assert(model.parameterCount > 0);
});

Deno.test("generate: same stream as the core generator the CLI uses, window slides included", async () => {
  const model = small(4);
  const tok = model.tokenizer;
  const cases = [
    { prompt: "the ", tokens: 60, temperature: 1, seed: 5 }, // 60 > blockSize: slides
    { prompt: "", tokens: 20, temperature: 0.7, topK: 5, seed: 9 },
    { prompt: "the dog sat on the log. the cat", tokens: 10, topP: 0.9, seed: 1 },
    { prompt: "a", tokens: 30, temperature: 0, seed: 0 },
  ];
  for (const o of cases) {
    const steps = decodeSteps(modelOf(model), tok.encode(o.prompt), { ...o, rng: new Rng(o.seed) });
    const want = tok.decode(Array.from(steps, (s) => s.id));
    assertEquals(await collect(generate(model, o)), want);
  }
  assertEquals(await collect(generate(model, { tokens: 0 })), "");
  assertEquals([...await collect(generate(model, { tokens: 7 }))].length, 7);
});

Deno.test("generate: repeatable by seed, checks options at the call, stops on a signal", async () => {
  const model = small(5);
  const a = await collect(generate(model, { prompt: "the", tokens: 40, seed: 3 }));
  assertEquals(await collect(generate(model, { prompt: "the", tokens: 40, seed: 3 })), a);
  assertThrows(() => generate(model, { prompt: "QQ" }), isInputError); // not in the vocabulary
  assertThrows(() => generate(model, { temperature: -1 }), isInputError);
  assertThrows(() => generate(model, { topK: 999 }), isInputError);
  assertThrows(() => generate(model, { topP: 0 }), isInputError);
  assertThrows(() => generate(model, { tokens: -1 }), isInputError);
  assertThrows(() => generate(model, { seed: 0.5 }), isInputError);

  const stop = new AbortController();
  let n = 0;
  for await (const _ of generate(model, { tokens: 1000, signal: stop.signal, seed: 1 })) {
    if (++n === 5) stop.abort();
  }
  assertEquals(n, 5);
});

Deno.test("generate and inspection reuse their buffers: repeated calls do not grow memory", async () => {
  const model = small(6);
  const run = async () => {
    await collect(generate(model, { prompt: "the", tokens: 40, seed: 1 }));
    nextCharDistribution(model, "the ca");
    attention(model, "the cat");
    await evaluate(model, TEXT);
    for await (const _ of generate(model, { tokens: 100 })) break; // left early
  };
  await run();
  const end = defaultArena().end;
  for (let i = 0; i < 20; i++) await run();
  assertEquals(defaultArena().end, end);
});

Deno.test("nextCharDistribution: sorted, sums to 1, top, temperature 0 and greedy agree", async () => {
  const model = small(7);
  const all = nextCharDistribution(model, "the c");
  assertEquals(all.length, model.config.vocabSize);
  assert(Math.abs(all.reduce((s, e) => s + e.prob, 0) - 1) < 1e-9);
  for (let i = 1; i < all.length; i++) assert(all[i].prob <= all[i - 1].prob);
  for (const e of all) assertEquals(model.tokenizer.vocab[e.id], e.char);
  assertEquals(nextCharDistribution(model, "the c", { top: 3 }), all.slice(0, 3));
  const greedy = nextCharDistribution(model, "the c", { temperature: 0 });
  assertEquals(greedy[0].prob, 1);
  assertEquals(greedy[0].char, all[0].char);
  assertEquals(
    await collect(generate(model, { prompt: "the c", tokens: 1, temperature: 0 })),
    all[0].char,
  );
  const k2 = nextCharDistribution(model, "the c", { topK: 2 });
  assertEquals(k2.filter((e) => e.prob > 0).length, 2);
  // a prompt longer than the window reads its last blockSize characters
  assertEquals(nextCharDistribution(model, TEXT), nextCharDistribution(model, TEXT.slice(-16)));
  assertThrows(() => nextCharDistribution(model, "the", { top: 0 }), isInputError);
  assertThrows(() => nextCharDistribution(model, "Z"), isInputError);
});

Deno.test("attention: one causal map per layer and head, rows sum to 1", () => {
  const model = small(8);
  const a = attention(model, "the cat");
  assertEquals(a.chars, [..."the cat"]);
  assertEquals(a.weights.length, 2);
  for (const layer of a.weights) {
    assertEquals(layer.length, 4);
    for (const head of layer) {
      assertEquals(head.length, 7);
      head.forEach((row, q) => {
        assertEquals(row.length, 7);
        assert(Math.abs(row.reduce((s, x) => s + x, 0) - 1) < 1e-5);
        for (let k = q + 1; k < row.length; k++) assertEquals(row[k], 0);
      });
    }
  }
  const long = attention(model, TEXT);
  assertEquals(long.chars.join(""), TEXT.slice(-16));
  assertEquals(long.weights[1][3].length, 16);
  assertThrows(() => attention(model, ""), isInputError);
});

Deno.test("evaluate: the core measure, estimates, and its errors", async () => {
  const model = small(9);
  const tokens = model.tokenizer.encode(TEXT);
  // the core measure in batches of 8 (the library's buffers hold 16): the same up to rounding
  const gpt = modelOf(model); // the model is the core model itself
  const acts = gpt.activations(8, { backward: false });
  const runner = {
    B: acts.B,
    inputs: acts.inputs,
    targets: acts.targets,
    lossSum: (n: number) => forward(gpt, acts, batchPass(gpt.config, n)),
  };
  const want = await evaluateTokens(tokens, model.config.blockSize, runner);
  const got = await evaluate(model, TEXT);
  assertEquals([got.tokens, got.windows], [want.tokens, want.windows]);
  assertEquals(got.windows, Math.floor((TEXT.length - 1) / 16));
  assert(Math.abs(got.loss - want.loss) < 1e-9, `${got.loss} vs ${want.loss}`);
  assert(Math.abs(got.bpc - got.loss / Math.LN2) < 1e-12);
  assertEquals(await evaluate(model, tokens), got);
  assertEquals(await evaluate(model, TEXT, { split: "all" }), got);
  // the validation split: the text's last 10%
  const val = await evaluate(model, TEXT, { split: "val" });
  assertEquals(val, await evaluate(model, tokens.subarray(splitIndex(tokens.length))));
  const est = await evaluate(model, TEXT, { maxWindows: 3 });
  assertEquals(est.windows, 3);
  await assertRejects(evaluate(model, "the cat"), isInputError); // shorter than a window
  await assertRejects(evaluate(model, "QQQ".repeat(20)), isInputError);
  await assertRejects(evaluate(model, TEXT, { maxWindows: 0 }), isInputError);
  await assertRejects(evaluate(model, new Uint16Array(40).fill(999)), isInputError);
});

Deno.test("createTrainer: step, run with progress, abort, determinism, loss falls", async () => {
  const losses = async (seed: number) => {
    const model = small(10);
    using trainer = await createTrainer(model, TEXT, {
      steps: 40,
      batch: 4,
      lr: 1e-2,
      warmup: 5,
      seed,
    });
    assertEquals(trainer.stepsDone, 0);
    assertEquals(trainer.totalSteps, 40);
    assertEquals(trainer.threads, 1);
    assertEquals([trainer.settings.batch, trainer.settings.seed], [4, seed]);
    const first = await trainer.step();
    assertEquals(trainer.stepsDone, 1);
    const seen: number[] = [];
    const r = await trainer.run({ onProgress: (s) => void seen.push(s.step) });
    assertEquals(r, { steps: 39, loss: r.loss, aborted: false });
    assertEquals(seen, Array.from({ length: 39 }, (_, i) => i + 2));
    assertEquals(trainer.stepsDone, 40);
    assertEquals((await trainer.run()).steps, 0); // the schedule is done
    const e = await trainer.evaluate(TEXT);
    assert(Math.abs(e.loss - (await evaluate(model, TEXT)).loss) < 1e-9);
    // by default, the validation split (the last 10% of the training text)
    const v = await trainer.evaluate();
    const want = await evaluate(model, TEXT, { split: "val" });
    assertEquals([v.tokens, v.windows], [want.tokens, want.windows]);
    assert(Math.abs(v.loss - want.loss) < 1e-9);
    const vEst = await trainer.evaluate(TEXT, { split: "val", maxWindows: 1 });
    assertEquals(vEst.windows, 1);
    return [first, r.loss, e.loss];
  };
  const a = await losses(1);
  assertEquals(await losses(1), a);
  assert(a[2] < a[0] - 0.1, `loss ${a[0]} -> ${a[2]}`);

  const model = small(11);
  using trainer = await createTrainer(model, TEXT, { steps: 100, batch: 2 });
  const stop = new AbortController();
  const r = await trainer.run({
    signal: stop.signal,
    onProgress: async ({ step }) => {
      await Promise.resolve();
      if (step === 3) stop.abort();
    },
  });
  assertEquals(r.aborted, true);
  assertEquals(r.steps, 3);
  assertEquals(trainer.stepsDone, 3);
  assertEquals((await trainer.run({ steps: 2 })).steps, 2);
  trainer.close();
  await assertRejects(trainer.step(), isInputError);
  await assertRejects(trainer.evaluate(TEXT), isInputError);
});

Deno.test("createTrainer: options and data are checked", async () => {
  const model = small(12);
  for (
    const bad of [
      { batch: 0 },
      { steps: 1.5 },
      { lr: 0 },
      { lr: -1 },
      { warmup: -1 },
      { clip: NaN },
      { beta1: 1 },
      { beta2: -0.1 },
      { seed: -1 },
      { threads: 0 },
    ]
  ) {
    await assertRejects(createTrainer(model, TEXT, bad), isInputError, JSON.stringify(bad));
  }
  await assertRejects(createTrainer(model, "the cat"), isInputError); // shorter than a window
  await assertRejects(createTrainer(model, "QQQ".repeat(20)), isInputError);
  using trainer = await createTrainer(model, TEXT, { steps: 5 });
  await assertRejects(trainer.run({ steps: -1 }), isInputError);
});

Deno.test("fine-tuning a loaded model trains it in place", async () => {
  const base = small(13);
  const loaded = await loadWeights(saveWeights(base));
  const before = await evaluate(loaded, TEXT);
  using trainer = await createTrainer(loaded, TEXT, { steps: 20, batch: 4, lr: 1e-2, warmup: 2 });
  await trainer.run();
  const after = await evaluate(loaded, TEXT);
  assert(after.loss < before.loss - 0.3, `${before.loss} -> ${after.loss}`);
  const saved = await loadWeights(saveWeights(loaded));
  assertEquals((await evaluate(saved, TEXT)).loss, after.loss);
  assertEquals((await evaluate(base, TEXT)).loss, before.loss); // the original is untouched
});

Deno.test("createTrainer: threads share the batch (worker pool)", async () => {
  const first = async (threads: number) => {
    const model = small(14);
    using trainer = await createTrainer(model, TEXT, { steps: 4, batch: 4, threads, seed: 1 });
    const loss = await trainer.step(); // same weights, same batch: equal up to summation order
    const r = await trainer.run();
    assert(Number.isFinite(r.loss) && r.steps === 3);
    return loss;
  };
  const one = await first(1);
  const two = await first(2);
  assert(Math.abs(one - two) < 1e-5, `${one} vs ${two}`);
});

Deno.test("selectKernels: confirms the tier in use, refuses to switch under existing models", () => {
  small(15);
  const tier = selectKernels();
  assertEquals(selectKernels(tier), tier);
  const other = tier === "js" ? "simd" : "js";
  assertThrows(() => selectKernels(other), isInputError);
});

Deno.test("createTrainer: a checkpoint restores the whole run", async () => {
  const options = { steps: 6, batch: 4, lr: 1e-2, warmup: 2, seed: 2 };
  const straight = small(16);
  {
    using trainer = await createTrainer(straight, TEXT, options);
    await trainer.run();
  }
  const model = small(16);
  let bytes: Uint8Array;
  {
    using trainer = await createTrainer(model, TEXT, options);
    await trainer.run({ steps: 3 });
    bytes = trainer.checkpoint({ note: "half" });
  }
  const resumed = small(0); // other weights: the checkpoint brings them back
  using trainer = await createTrainer(resumed, TEXT, options);
  assertEquals(trainer.restore(bytes).step, 3);
  assertEquals(trainer.stepsDone, 3);
  assertEquals((await trainer.run()).steps, 3);
  assertEquals(saveWeights(resumed, {}), saveWeights(straight, {}));
  // another text or other settings are refused
  using other = await createTrainer(
    small(16),
    TEXT.toUpperCase().toLowerCase() + "the end.",
    options,
  );
  assertThrows(() => other.restore(bytes));
  using longer = await createTrainer(small(16), TEXT, { ...options, steps: 7 });
  assertThrows(() => longer.restore(bytes));
});

Deno.test("loadWeights: a relative path is an InputError saying what to pass", async () => {
  for (const path of ["m.safetensors", "./weights/m.safetensors", "../m.safetensors"]) {
    await assertRejects(loadWeights(path), (e: unknown) => {
      return e instanceof InputError && e.message.includes("relative") &&
        e.message.includes("bytes") && e.message.includes("absolute path");
    });
  }
});

Deno.test("createTrainer: the settings of a CLI training run write the same tensors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const text = smallCorpus();
    const data = `${dir}/corpus.txt`, out = `${dir}/cli.safetensors`;
    await Deno.writeTextFile(data, text);
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    const args = ["run", "-A", cli, "train", "--data", data, "--out", out, "--steps", "3"];
    args.push("--eval-every", "0", "--threads", "2", "--d-model", "32", "--layers", "2");
    args.push("--heads", "2", "--block", "16", "--batch", "8", "--seed", "3");
    const r = await new Deno.Command(Deno.execPath(), {
      args,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    assertEquals(r.code, 0, new TextDecoder().decode(r.stderr));

    const model = createModel(text, { dModel: 32, nLayers: 2, nHeads: 2, blockSize: 16, seed: 3 });
    using trainer = await createTrainer(model, text, { steps: 3, batch: 8, threads: 2, seed: 3 });
    assertEquals((await trainer.run()).steps, 3);
    const mine = decodeSafetensors(saveWeights(model, {})).tensors;
    const theirs = decodeSafetensors(await Deno.readFile(out)).tensors;
    assertEquals([...mine.keys()], [...theirs.keys()]);
    const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    for (const [name, t] of mine) {
      const c = theirs.get(name)!;
      assertEquals(c.shape, t.shape, name);
      assert(
        bytesOf(t.data).every((b, i) => b === bytesOf(c.data)[i]),
        `${name} differs from the CLI's`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate: progress after every batch, and the same figures on two threads", async () => {
  const model = small(21);
  const text = TEXT.repeat(6);
  const seen: [number, number][] = [];
  const one = await evaluate(model, text, {
    onProgress: (done, total) => seen.push([done, total]),
  });
  assert(seen.length >= 2, `${seen.length} reports`);
  assertEquals(seen.at(-1), [one.windows, one.windows]);
  for (let i = 1; i < seen.length; i++) assert(seen[i][0] > seen[i - 1][0]);
  const two = await evaluate(model, text, { threads: 2 });
  assertEquals([two.windows, two.tokens], [one.windows, one.tokens]);
  assert(Math.abs(two.loss - one.loss) < 1e-6, `${one.loss} vs ${two.loss}`);
  await assertRejects(evaluate(model, text, { threads: 0 }), isInputError);
});
