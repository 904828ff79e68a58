// One validator, strict and typed (issue 14, item 11), and signals (item 10): every library entry
// point answers an argument of the wrong type with an InputError naming it and the type expected
// (never a TypeError); --lr 0, --min-lr above --lr, a checkpoint past --steps or with an all-zero
// generator are refused; every SIGINT/SIGTERM/SIGHUP saves what is worth saving and exits with
// 128 + the signal's number, during training and during the final evaluation; a second signal
// leaves no temporary file, and stale ones are removed by the next run.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import {
  attention,
  attentionMap,
  createModel,
  createTrainer,
  evaluate,
  generate,
  InputError,
  inspect,
  inspectSteps,
  inspectStream,
  nextCharDistribution,
  WeightsError,
} from "../mod.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import { findCorpus } from "./fixtures.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";
import {
  assertNoStackTrace,
  assertSameBytes,
  assertUserError,
  exists,
  runCli,
  smallCorpus,
  spawnCli,
  tempDir,
  tempDirWithCorpus,
  TINY,
} from "./cli_run.ts";

const TEXT = "hello world. ".repeat(40);
const SHAPE = { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 };

/** Runs `f` (awaiting a promise, and the first item of an iterable) and returns what it threw. */
async function thrown(f: () => unknown): Promise<unknown> {
  try {
    const r = f();
    if (r instanceof Promise) await r;
    if (r !== null && typeof r === "object" && Symbol.asyncIterator in r) {
      for await (const _ of r as AsyncIterable<unknown>) break;
    } else if (r !== null && typeof r === "object" && Symbol.iterator in r) {
      for (const _ of r as Iterable<unknown>) break;
    }
  } catch (e) {
    return e;
  }
  return undefined;
}

// deno-lint-ignore no-explicit-any
type Any = any;

Deno.test("validation: library calls with wrong types throw InputError naming the option and the type", async () => {
  const model = createModel(TEXT, SHAPE);
  const cases: [string, () => unknown, RegExp][] = [
    [
      "generate prompt 123",
      () => generate(model, { prompt: 123 as Any }),
      /^prompt must be a string, got the number 123$/,
    ],
    [
      "generate prompt null",
      () => generate(model, { prompt: null as Any }),
      /^prompt must be a string, got null$/,
    ],
    [
      "generate options 5",
      () => generate(model, 5 as Any),
      /^options must be an object, got the number 5$/,
    ],
    [
      "generate options []",
      () => generate(model, [] as Any),
      /^options must be an object, got an array$/,
    ],
    [
      "generate temperature '1'",
      () => generate(model, { temperature: "1" as Any }),
      /^temperature must be a number, got the string "1"$/,
    ],
    [
      "generate tokens true",
      () => generate(model, { tokens: true as Any }),
      /^tokens must be an integer, got the boolean true$/,
    ],
    [
      "generate seed '7'",
      () => generate(model, { seed: "7" as Any }),
      /^seed must be an integer, got the string "7"$/,
    ],
    [
      "generate signal {}",
      () => generate(model, { signal: {} as Any }),
      /^signal must be an AbortSignal, got an object$/,
    ],
    [
      "createModel dModel '32'",
      () => createModel(TEXT, { dModel: "32" as Any }),
      /^dModel must be an integer, got the string "32"$/,
    ],
    [
      "createModel nLayers 1n",
      () => createModel(TEXT, { nLayers: 1n as Any }),
      /^nLayers must be an integer, got the bigint 1$/,
    ],
    [
      "createModel options null",
      () => createModel(TEXT, null as Any),
      /^options must be an object, got null$/,
    ],
    [
      "createModel options 'x'",
      () => createModel(TEXT, "x" as Any),
      /^options must be an object, got the string "x"$/,
    ],
    [
      "createModel vocab 5",
      () => createModel(5 as Any),
      /^vocab must be a string or a Tokenizer, got the number 5$/,
    ],
    [
      "createModel seed '1'",
      () => createModel(TEXT, { seed: "1" as Any }),
      /^seed must be an integer, got the string "1"$/,
    ],
    [
      "createTrainer steps '10'",
      () => createTrainer(model, TEXT, { steps: "10" as Any }),
      /^steps must be an integer, got the string "10"$/,
    ],
    [
      "createTrainer lr null",
      () => createTrainer(model, TEXT, { lr: null as Any }),
      /^lr must be a number, got null$/,
    ],
    [
      "createTrainer decay 5",
      () => createTrainer(model, TEXT, { decay: 5 as Any }),
      /^decay must be "linear" or "cosine" or "1-sqrt", got the number 5$/,
    ],
    [
      "createTrainer optimizer 'sgd'",
      () => createTrainer(model, TEXT, { optimizer: "sgd" as Any }),
      /^optimizer "sgd" is not an optimizer; use muon or adamw$/,
    ],
    [
      "createTrainer optimizer true",
      () => createTrainer(model, TEXT, { optimizer: true as Any }),
      /^optimizer must be "muon" or "adamw", got the boolean true$/,
    ],
    [
      "createTrainer muonLr 0",
      () => createTrainer(model, TEXT, { optimizer: "muon", muonLr: 0 }),
      /^muonLr is 0; use a positive learning rate$/,
    ],
    [
      "createTrainer muonMomentum 1",
      () => createTrainer(model, TEXT, { optimizer: "muon", muonMomentum: 1 }),
      /^muonMomentum 1 is out of range; use a number from 0 to 0.9999$/,
    ],
    [
      "createTrainer muonSteps 2.5",
      () => createTrainer(model, TEXT, { optimizer: "muon", muonSteps: 2.5 }),
      /^muonSteps 2.5 is out of range; use an integer from 1 to 20$/,
    ],
    [
      "createTrainer cooldown 1.5",
      () => createTrainer(model, TEXT, { cooldown: 1.5 }),
      /^cooldown 1.5 is out of range; use a number from 0 to 1$/,
    ],
    [
      "createTrainer options 'x'",
      () => createTrainer(model, TEXT, "x" as Any),
      /^options must be an object, got the string "x"$/,
    ],
    [
      "createTrainer data 5",
      () => createTrainer(model, 5 as Any),
      /^data must be a string or a Uint16Array of token ids, got the number 5$/,
    ],
    [
      "createTrainer data [1,2]",
      () => createTrainer(model, [1, 2] as Any),
      /^data must be a string or a Uint16Array of token ids, got an array$/,
    ],
    [
      "evaluate 42",
      () => evaluate(model, 42 as Any),
      /^data must be a string or a Uint16Array of token ids, got the number 42$/,
    ],
    [
      "evaluate Uint8Array",
      () => evaluate(model, new Uint8Array(4) as Any),
      /^data must be .*, got a Uint8Array$/,
    ],
    [
      "evaluate options 1",
      () => evaluate(model, TEXT, 1 as Any),
      /^options must be an object, got the number 1$/,
    ],
    [
      "evaluate maxWindows '3'",
      () => evaluate(model, TEXT, { maxWindows: "3" as Any }),
      /^maxWindows must be a number, got the string "3"$/,
    ],
    [
      "evaluate split 'train'",
      () => evaluate(model, TEXT, { split: "train" as Any }),
      /^split "train" is not a choice; use "all" or "val"$/,
    ],
    [
      "evaluate onProgress 1",
      () => evaluate(model, TEXT, { onProgress: 1 as Any }),
      /^onProgress must be a function, got the number 1$/,
    ],
    [
      "nextCharDistribution null",
      () => nextCharDistribution(model, null as Any),
      /^prompt must be a string, got null$/,
    ],
    [
      "nextCharDistribution options []",
      () => nextCharDistribution(model, "h", [] as Any),
      /^options must be an object, got an array$/,
    ],
    [
      "nextCharDistribution top '3'",
      () => nextCharDistribution(model, "h", { top: "3" as Any }),
      /^top must be an integer, got the string "3"$/,
    ],
    ["attention 7", () => attention(model, 7 as Any), /^text must be a string, got the number 7$/],
    [
      "attentionMap options 2",
      () => attentionMap(model, "he", 2 as Any),
      /^options must be an object, got the number 2$/,
    ],
    [
      "inspect prompt {}",
      () => inspect(model, {} as Any),
      /^prompt must be a string, got an object$/,
    ],
    [
      "inspectSteps prompt undefined",
      () => inspectSteps(model, undefined as Any),
      /^prompt must be a string, got undefined$/,
    ],
    [
      "inspectStream prompt undefined",
      () => inspectStream(model, undefined as Any),
      /^prompt must be a string, got undefined$/,
    ],
    [
      "inspectStream top '3'",
      () => inspectStream(model, "h", { top: "3" as Any }),
      /^top must be an integer, got the string "3"$/,
    ],
  ];
  const wrong: string[] = [];
  for (const [name, call, pattern] of cases) {
    const e = await thrown(call);
    if (!(e instanceof InputError) || e instanceof TypeError || !pattern.test(e.message)) {
      wrong.push(`${name}: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
  }
  assertEquals(wrong, []);
  // a trainer's own calls too
  using trainer = await createTrainer(model, TEXT, { steps: 4, batch: 2 });
  for (
    const [call, pattern] of [
      [() => trainer.run({ steps: "2" as Any }), /^steps must be a number, got the string "2"$/],
      [() => trainer.run(3 as Any), /^options must be an object, got the number 3$/],
      [() => trainer.run({ onProgress: "f" as Any }), /^onProgress must be a function/],
      [() => trainer.evaluate(5 as Any), /^data must be a string or a Uint16Array/],
      [
        () => trainer.evaluate(undefined, { maxWindows: "1" as Any }),
        /^maxWindows must be a number/,
      ],
    ] as [() => unknown, RegExp][]
  ) {
    const e = await thrown(call);
    assert(e instanceof InputError, String(e));
    assertMatch((e as Error).message, pattern);
  }
  assertEquals(trainer.stepsDone, 0, "a refused call takes no step");
  // valid calls are unchanged
  assertEquals(
    (await Array.fromAsync(generate(model, { prompt: "he", tokens: 3, seed: 1 }))).length,
    3,
  );
});

Deno.test("validation: an option name a call does not take is an InputError, not ignored", async () => {
  const text = "hello world. ".repeat(20);
  const model = createModel(text, { blockSize: 8, dModel: 16, nLayers: 1, nHeads: 2 });
  const unknown = (call: string, name: string) =>
    new RegExp(`^${call} has no option "${name}"; its options are [a-zA-Z0-9, ]+$`);
  const cases: [string, string, () => unknown][] = [
    ["createModel", "dmodel", () => createModel(text, { dmodel: 16 } as object)],
    ["generate", "temprature", () => generate(model, { temprature: 0.5 } as object)],
    [
      "nextCharDistribution",
      "topk",
      () => nextCharDistribution(model, "he", { topk: 3 } as object),
    ],
    ["attentionMap", "layers", () => attentionMap(model, "hello", { layers: 0 } as object)],
    ["inspect", "token", () => inspect(model, "he", { token: 3 } as object)],
    ["inspectSteps", "top_k", () => inspectSteps(model, "he", { top_k: 3 } as object).next()],
  ];
  for (const [call, name, run] of cases) {
    try {
      run();
      assert(false, `${call} accepted ${name}`);
    } catch (e) {
      assert(e instanceof InputError, `${call}: ${e}`);
      assertMatch(e.message, unknown(call, name));
      assertEquals(e.options, [name]);
    }
  }
  for (
    const [call, name, run] of [
      [
        "createTrainer",
        "learningRate",
        () => createTrainer(model, text, { learningRate: 1 } as object),
      ],
      ["evaluate", "windows", () => evaluate(model, text, { windows: 3 } as object)],
      ["inspectStream", "top_k", () => inspectStream(model, "he", { top_k: 3 } as object).next()],
    ] as const
  ) {
    await run().then(
      () => assert(false, `${call} accepted ${name}`),
      (e) => assertMatch(e.message, unknown(call, name)),
    );
  }
  using trainer = await createTrainer(model, text, { steps: 2, batch: 2 });
  await trainer.run({ step: 1 } as object).then(
    () => assert(false, "run accepted step"),
    (e) => assertMatch(e.message, unknown("run", "step")),
  );
  await trainer.evaluate(undefined, { maxWindow: 1 } as object).then(
    () => assert(false, "trainer.evaluate accepted maxWindow"),
    (e) => assertMatch(e.message, unknown("evaluate", "maxWindow")),
  );
  model.dispose();
});

Deno.test("validation: the schedule's options: lr 0 and minLr above lr are refused, minLr = lr and a long warmup are not", async () => {
  const model = createModel(TEXT, SHAPE);
  for (
    const [options, pattern] of [
      [{ lr: 0 }, /^lr is 0; use a positive learning rate$/],
      [{ lr: 0, minLr: 0 }, /^lr is 0/],
      [{ minLr: 0.01 }, /^minLr 0\.01 is above lr 0\.008; /],
      [{ lr: 0.1, minLr: 0.5 }, /^minLr 0\.5 is above lr 0\.1; /],
      [{ lr: 1e-4, minLr: 1.0001e-4 }, /^minLr 0\.00010001 is above lr 0\.0001; /],
    ] as [Record<string, number>, RegExp][]
  ) {
    const e = await thrown(() => createTrainer(model, TEXT, options));
    assert(e instanceof InputError, `${JSON.stringify(options)}: ${e}`);
    assertMatch(e.message, pattern);
  }
  using equal = await createTrainer(model, TEXT, { lr: 0.01, minLr: 0.01, steps: 3 });
  assertEquals(equal.settings.minLr, 0.01);
  using long = await createTrainer(model, TEXT, { steps: 3, warmup: 100 });
  assertEquals(long.settings.warmup, 3, "a warmup longer than the run is capped at its steps");
});

Deno.test("validation: CLI: --lr 0, --min-lr above --lr, a bad --optimizer, --decay or Muon flag are one-line errors; --warmup past --steps prints the true schedule", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_validation_");
  const dir = tmp.path;
  const train = (extra: string[]) =>
    runCli([
      "train",
      "--data",
      `${dir}/corpus.txt`,
      "--out",
      `${dir}/m.safetensors`,
      "--steps",
      "3",
      "--threads",
      "1",
      "--force",
      ...TINY,
      ...extra,
    ]);
  const cases: [string[], RegExp][] = [
    [["--lr", "0"], /^error: --lr is 0; use a positive learning rate$/],
    [["--lr", "0.0"], /^error: --lr is 0/],
    [["--lr", "0e3"], /^error: --lr is 0/],
    [["--min-lr", "0.01"], /^error: --min-lr 0\.01 is above --lr 0\.008; /],
    [["--lr", "0.1", "--min-lr", "0.5"], /^error: --min-lr 0\.5 is above --lr 0\.1; /],
    [["--min-lr", "0.0081"], /^error: --min-lr 0\.0081 is above --lr 0\.008; /],
    [["--optimizer", "sgd"], /^error: --optimizer "sgd" is not an optimizer; use muon or adamw$/],
    [
      ["--decay", "step"],
      /^error: --decay "step" is not a schedule; use linear or cosine or 1-sqrt$/,
    ],
    [
      ["--optimizer", "adamw", "--muon-lr", "0.01"],
      /^error: --muon-lr sets Muon, which this run does not use; add --optimizer muon or drop it$/,
    ],
    [
      ["--optimizer", "muon", "--muon-lr", "0"],
      /^error: --muon-lr is 0; use a positive learning rate$/,
    ],
    [["--cooldown", "2"], /^error: --cooldown "2" is out of range; use a number from 0 to 1$/],
  ];
  for (const [extra, pattern] of cases) assertUserError(await train(extra), pattern);
  const long = await train(["--warmup", "100"]);
  assertEquals(long.code, 0, long.stderr);
  assertMatch(
    long.stderr,
    /warmup 100, capped at the 3 steps\): the peak is reached at the last step/,
  );
  const same = await train(["--min-lr", "0.008"]);
  assertEquals(same.code, 0, same.stderr);
});

/** Checkpoint bytes with its metadata changed by `edit`. */
function withMetadata(bytes: Uint8Array, edit: (m: Record<string, string>) => void): Uint8Array {
  const { tensors, metadata } = decodeSafetensors(bytes);
  const meta = { ...metadata };
  edit(meta);
  return encodeSafetensors(
    [...tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
    meta,
  );
}

Deno.test("validation: a checkpoint past the run's steps, or with an all-zero generator, is refused (library and CLI)", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_validation_ckpt_");
  const dir = tmp.path, text = smallCorpus();
  const shape = { blockSize: 16, dModel: 16, nLayers: 1, nHeads: 2 };
  const model = createModel(text, shape);
  const options = { steps: 20, batch: 4, threads: 1 };
  let bytes: Uint8Array;
  {
    using trainer = await createTrainer(model, text, options);
    await trainer.run({ steps: 10 });
    bytes = trainer.checkpoint();
  }
  const noSettings = withMetadata(bytes, (m) => delete m.train_settings);
  const zeroRng = withMetadata(bytes, (m) => (m.rng_state = "[0,0,0,0]"));
  const lib: [Uint8Array, number, typeof InputError, RegExp][] = [
    [
      bytes,
      5,
      InputError,
      /^the checkpoint is at step 10, past the run's steps 5; resume with steps 20 \(its own run's\), or delete it$/,
    ],
    [bytes, 9, InputError, /^the checkpoint is at step 10, past the run's steps 9; /],
    [
      noSettings,
      5,
      InputError,
      /^the checkpoint is at step 10, past the run's steps 5; resume with steps 10 or more, or delete it$/,
    ],
    [
      zeroRng,
      20,
      WeightsError,
      /^the checkpoint is unusable \(checkpoint's rng_state is all zero.*corrupt\); delete it to start over$/,
    ],
  ];
  for (const [ckpt, steps, kind, pattern] of lib) {
    using trainer = await createTrainer(createModel(text, shape), text, { ...options, steps });
    const e = await thrown(() => trainer.restore(ckpt));
    assert(e instanceof kind, String(e));
    assertMatch((e as Error).message, pattern);
    assertEquals(trainer.stepsDone, 0, "a refused checkpoint changes nothing");
  }
  assert((await thrown(() => Checkpoint.decode(zeroRng))) instanceof WeightsError);
  {
    // the same run resumes it (step 10 of 20), and a checkpoint at the last step is accepted
    using trainer = await createTrainer(createModel(text, shape), text, options);
    assertEquals(trainer.restore(bytes).step, 10);
    using at = await createTrainer(createModel(text, shape), text, { ...options, steps: 10 });
    assertEquals(at.restore(noSettings).step, 10);
  }

  const out = `${dir}/m.safetensors`;
  const resume = (steps: number) =>
    runCli([
      "train",
      "--data",
      `${dir}/corpus.txt`,
      "--out",
      out,
      "--steps",
      String(steps),
      "--threads",
      "1",
      "--resume",
      ...TINY,
    ]);
  const cli: [Uint8Array, number, RegExp][] = [
    [
      bytes,
      5,
      /checkpoint .*m\.safetensors\.ckpt is at step 10, past the run's --steps 5; resume with --steps 20 \(its own run's\), or delete it$/,
    ],
    [
      noSettings,
      3,
      /checkpoint .*\.ckpt is at step 10, past the run's --steps 3; resume with --steps 10 or more, or delete it$/,
    ],
    [
      zeroRng,
      20,
      /checkpoint .*\.ckpt is unusable \(checkpoint's rng_state is all zero.*\); delete it to start over$/,
    ],
  ];
  for (const [ckpt, steps, pattern] of cli) {
    await Deno.writeFile(`${out}.ckpt`, ckpt);
    assertUserError(await resume(steps), pattern);
    assertSameBytes(await Deno.readFile(`${out}.ckpt`), ckpt, "the refused checkpoint is kept");
  }
});

// ---------------------------------------------------------------------------------------------
// Signals

async function tmpFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".tmp")) found.push(e.name);
  return found;
}

const CODES: Record<string, number> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

Deno.test("signals: SIGINT, SIGTERM and SIGHUP during training save a checkpoint, exit 128 + n, and resume to the same bytes", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_signals_");
  const dir = tmp.path;
  const args = (out: string, extra: string[] = []) => [
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    "200",
    "--eval-every",
    "50",
    "--threads",
    "1",
    ...TINY,
    ...extra,
  ];
  const ref = await runCli(args(`${dir}/ref.safetensors`));
  assertEquals(ref.code, 0, ref.stderr);
  const expected = await Deno.readFile(`${dir}/ref.safetensors`);
  await Promise.all(["SIGINT", "SIGTERM", "SIGHUP"].map(async (name) => {
    const out = `${dir}/${name}.safetensors`;
    const run = spawnCli(args(out));
    await run.waitFor(/step 11\/200/);
    run.child.kill(name as Deno.Signal);
    const r = await run.done();
    assertEquals(r.code, CODES[name], r.stderr);
    assertNoStackTrace(r.stderr);
    assertMatch(
      r.stderr,
      new RegExp(
        `${name}: stopped after step (\\d+) of 200; saved .*${name}\\.safetensors\\.ckpt; to continue, run the same command with --resume\\n$`,
      ),
    );
    const step = Number(r.stderr.match(/stopped after step (\d+)/)![1]);
    assertEquals(Checkpoint.decode(await Deno.readFile(`${out}.ckpt`)).step, step);
    assert(!(await exists(out)));
    const resumed = await runCli(args(out, ["--resume"]));
    assertEquals(resumed.code, 0, resumed.stderr);
    assertSameBytes(await Deno.readFile(out), expected, `${name}: resumed weights`);
  }));
  assertEquals(await tmpFiles(dir), []);
});

Deno.test("signals: a signal during the final evaluation saves the last step's checkpoint and exits non-zero; resuming only evaluates and saves", async () => {
  await using tmp = await tempDir("baregpt_signals_final_");
  const dir = tmp.path;
  // a long validation split (223,079 characters), so that the final evaluation takes a while
  const path = await findCorpus(); // ../shared/data, then data/; skips with a reason unless CI
  if (path === null) return;
  const shakespeare = await Deno.readTextFile(path);
  await Deno.writeTextFile(`${dir}/corpus.txt`, shakespeare + shakespeare);
  const args = (out: string, extra: string[] = []) => [
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    "5",
    "--eval-every",
    "0",
    "--threads",
    "1",
    "--d-model",
    "64",
    "--layers",
    "1",
    "--heads",
    "2",
    "--block",
    "64",
    "--batch",
    "4",
    ...extra,
  ];
  const ref = await runCli(args(`${dir}/ref.safetensors`));
  assertEquals(ref.code, 0, ref.stderr);
  const expected = await Deno.readFile(`${dir}/ref.safetensors`);
  for (const name of ["SIGINT", "SIGHUP"]) {
    const out = `${dir}/${name}.safetensors`;
    const run = spawnCli(args(out));
    await run.waitFor(/step 5\/5 /);
    await new Promise((r) => setTimeout(r, 150)); // into the evaluation
    run.child.kill(name as Deno.Signal);
    const r = await run.done();
    assertEquals(r.code, CODES[name], r.stderr);
    assertNoStackTrace(r.stderr);
    assert(!/final validation loss/.test(r.stderr), `the evaluation ended first: ${r.stderr}`);
    assertMatch(
      r.stderr,
      new RegExp(
        `${name}: stopped during the final evaluation after step 5 of 5; saved .*\\.ckpt; to continue, run the same command with --resume\\n$`,
      ),
    );
    assert(!(await exists(out)), "no weights without their val_loss");
    assertEquals(Checkpoint.decode(await Deno.readFile(`${out}.ckpt`)).step, 5);
    const resumed = await runCli(args(out, ["--resume"]));
    assertEquals(resumed.code, 0, resumed.stderr);
    assertMatch(resumed.stderr, /resumed from .*\.ckpt at step 5\n/);
    assertSameBytes(await Deno.readFile(out), expected, `${name}: resumed weights`);
    assert(!(await exists(`${out}.ckpt`)));
  }
  assertEquals(await tmpFiles(dir), []);
});

Deno.test("signals: a double signal stops at once and leaves no temporary file; stale ones are removed by the next run", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_signals_double_");
  const dir = tmp.path;
  const args = (out: string, extra: string[] = []) => [
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    "100000",
    "--eval-every",
    "0",
    "--checkpoint-every",
    "1", // a checkpoint is being written most of the time
    "--threads",
    "1",
    "--d-model",
    "64",
    "--layers",
    "2",
    "--heads",
    "2",
    "--block",
    "16",
    "--batch",
    "1",
    ...extra,
  ];
  for (const [i, gap] of [0, 1, 3, 10, 30].entries()) {
    const name = i % 2 === 0 ? "SIGINT" : "SIGTERM";
    const out = `${dir}/m${i}.safetensors`;
    const run = spawnCli(args(out));
    await run.waitFor(/step 3: saved checkpoint/);
    run.child.kill(name);
    if (gap > 0) await new Promise((r) => setTimeout(r, gap));
    try {
      run.child.kill(name);
    } catch { /* it exited already, after the first */ }
    const r = await run.done();
    assertEquals(r.code, CODES[name], r.stderr);
    assertNoStackTrace(r.stderr);
    assertEquals(await tmpFiles(dir), [], `gap ${gap} ms: ${r.stderr}`);
    // whatever checkpoint is left is whole, and resumes
    assert(await exists(`${out}.ckpt`));
    assert(Checkpoint.decode(await Deno.readFile(`${out}.ckpt`)).step >= 3);
  }

  // temporary files of killed runs are removed by the next run that takes the output's lock
  const out = `${dir}/stale.safetensors`;
  const old = [`${out}.4000001.tmp`, `${out}.ckpt.4000002.tmp`];
  const young = `${out}.ckpt.4000003.tmp`;
  for (const path of [...old, young]) await Deno.writeTextFile(path, "partial");
  const past = new Date(Date.now() - 120_000);
  for (const path of old) await Deno.utime(path, past, past);
  const r = await runCli([
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    "2",
    "--threads",
    "1",
    ...TINY,
  ]);
  assertEquals(r.code, 0, r.stderr);
  for (const path of old) assert(!(await exists(path)), `${path} is removed`);
  // once the run holds the output's lock no other run can be writing beside it: young ones go too
  assert(!(await exists(young)), "a young temporary file of another pid is removed under the lock");
});
