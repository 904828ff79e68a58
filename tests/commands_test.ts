// The commands' small traps and nits of issue 13 (items 6, 9 and 11): a checkpoint is read as
// weights, eval defaults to the shipped weights, greedy sampling draws no seed, non-numbers are called so, an empty prompt is a prompt,
// inspect draws a seed as sample does, --out folders are created, and the help is aligned and says
// what `--kernels js` is for.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { COMMANDS, HELP_WIDTH, helpText } from "../cli/flags.ts";
import { createModel, createTrainer } from "../mod.ts";
import { assertUserError, pooled, REPO, runCli, smallCorpus, tempDir } from "./cli_run.ts";

const SHIPPED = `${REPO}/weights/shakespeare.safetensors`;

Deno.test("checkpoint: sample, info, eval and inspect read the weights of a .ckpt", async () => {
  await using tmp = await tempDir("baregpt_cmd_");
  const text = smallCorpus();
  const corpus = `${tmp.path}/corpus.txt`;
  await Deno.writeTextFile(corpus, text);
  const model = createModel(text, { blockSize: 16, dModel: 16, nLayers: 1, nHeads: 2 });
  const ckpt = `${tmp.path}/run.ckpt`;
  {
    using trainer = await createTrainer(model, text, { steps: 4, batch: 4, threads: 1 });
    await trainer.step();
    await trainer.step();
    await Deno.writeFile(ckpt, trainer.checkpoint({})); // weights and optimizer.m.* / optimizer.v.*
  }
  const w = ["--weights", ckpt];
  const [sample, info, ev, insp] = await pooled([
    () => runCli(["sample", ...w, "--prompt", "ROMEO:", "--tokens", "10", "--seed", "1"]),
    () => runCli(["info", ...w]),
    () => runCli(["eval", ...w, "--data", corpus, "--split", "all"]),
    () => runCli(["inspect", ...w, "--prompt", "ROMEO:", "--tokens", "3"]),
  ]);
  for (const r of [sample, info, ev, insp]) assertEquals(r.code, 0, r.stderr);
  assertEquals([...sample.stdout].length, 6 + 10 + 1);
  assertMatch(info.stdout, /block_size 16, d_model 16, n_layers 1, n_heads 2/);
  assertMatch(info.stdout, /^step\s+2$/m);
  assertMatch(ev.stdout, /^loss \d+\.\d{4} bpc/);
  assertMatch(insp.stdout, /^ROMEO:/m);
});

Deno.test("eval: --weights defaults to the shipped weights, as the other commands", async () => {
  await using tmp = await tempDir("baregpt_cmd_");
  const corpus = `${tmp.path}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus()); // its characters are all in Tiny Shakespeare
  const [implicit, explicit] = await pooled([
    () => runCli(["eval", "--data", corpus]),
    () => runCli(["eval", "--weights", SHIPPED, "--data", corpus]),
  ]);
  assertEquals(implicit.code, 0, implicit.stderr);
  assertMatch(implicit.stdout, /^loss \d+\.\d{4} bpc \d+\.\d{4} tokens \d+\n$/);
  assertEquals(implicit.stdout, explicit.stdout);
  assertUserError(await runCli(["eval"]), /eval needs --data/);
});

Deno.test("sample: greedy decoding (--temperature 0) draws and prints no seed", async () => {
  const args = ["sample", "--prompt", "ROMEO:", "--tokens", "30", "--temperature", "0"];
  const [a, b, sampled] = await pooled([
    () => runCli(args),
    () => runCli(args),
    () => runCli(["sample", "--tokens", "5"]),
  ]);
  assertEquals(a.code, 0, a.stderr);
  assertEquals(a.stderr, "");
  assertEquals(a.stdout, b.stdout);
  assertEquals([...a.stdout].length, 6 + 30 + 1);
  assertMatch(sampled.stderr, /^seed \d+\n$/); // sampling still draws one and prints it
});

Deno.test("flags: a value that is not a number is called so; a number out of range is out of range", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["sample", "--tokens", "abc"],
      /^error: --tokens "abc" is not a number; use an integer from 0 to \d+$/,
    ],
    [["sample", "--temperature", "warm"], /^error: --temperature "warm" is not a number; use a/],
    [["sample", "--seed="], /--seed "" is not a number/],
    [["inspect", "--prompt", "a", "--top", "five"], /--top "five" is not a number/],
    [["sample", "--tokens", "1e10"], /^error: --tokens "1e10" is out of range; use an integer/],
    [["sample", "--tokens", "2.5"], /--tokens "2.5" is not an integer; use an integer from 0 to/],
    [["sample", "--tokens", "-3"], /--tokens "-3" is out of range/],
  ];
  const results = await pooled(cases.map(([args]) => () => runCli(args)));
  results.forEach((r, i) => assertUserError(r, cases[i][1]));
});

Deno.test('prompt: --prompt "" starts from a newline, in sample and in inspect', async () => {
  const [s, i, none] = await pooled([
    () => runCli(["sample", "--prompt", "", "--tokens", "20", "--seed", "1"]),
    () => runCli(["inspect", "--prompt", "", "--tokens", "5"]),
    () => runCli(["inspect"]),
  ]);
  assertEquals(s.code, 0, s.stderr);
  assertEquals([...s.stdout].length, 20 + 1);
  // the same text as with no --prompt at all (the default also starts from a newline)
  const dflt = await runCli(["sample", "--tokens", "20", "--seed", "1"]);
  assertEquals(s.stdout, dflt.stdout);
  assertEquals(i.code, 0, i.stderr);
  assertMatch(i.stdout, /\n/);
  assertUserError(none, /inspect needs --prompt TEXT \(--prompt "" starts from a newline\)/);
});

Deno.test("inspect: --temperature without --seed draws a seed and prints it, so the run repeats", async () => {
  const args = ["inspect", "--prompt", "ROMEO:", "--tokens", "15", "--temperature", "1.5"];
  const drawn = await runCli(args);
  assertEquals(drawn.code, 0, drawn.stderr);
  const seed = drawn.stderr.match(/temperature 1\.5, seed (\d+) \(drawn\)/)?.[1];
  assert(seed !== undefined, drawn.stderr);
  const again = await runCli([...args, "--seed", seed]);
  assertEquals(again.code, 0, again.stderr);
  assertEquals(again.stdout, drawn.stdout);
  assert(!/\(drawn\)/.test(again.stderr));
});

Deno.test("inspect: --out into a missing folder creates it", async () => {
  await using tmp = await tempDir("baregpt_cmd_");
  const svg = `${tmp.path}/out/deeper/attention.svg`;
  const r = await runCli(["inspect", "--prompt", "ROMEO:", "--tokens", "3", "--out", svg]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stderr, new RegExp(`^created folder ${tmp.path}/out/deeper$`, "m"));
  assertMatch(await Deno.readTextFile(svg), /^<svg/);
  assertEquals([...Deno.readDirSync(`${tmp.path}/out/deeper`)].map((e) => e.name), [
    "attention.svg",
  ]);
});

Deno.test("help: every command's options align in one column, long lines wrap to it", () => {
  for (const name of Object.keys(COMMANDS)) {
    const lines = helpText(name).split("\n");
    const rows = lines.slice(lines.indexOf("options:") + 1);
    assert(rows.length > 3, name);
    const columns = new Set<number>();
    for (const row of rows) {
      assert(row.length <= HELP_WIDTH, `${name}: longer than ${HELP_WIDTH}: ${row}`);
      const m = row.match(/^( {2}--[\w-]+(?: \S+)? {2,})\S/) ?? row.match(/^( {3,})\S/);
      assert(m, `${name}: neither an option nor its continuation: ${JSON.stringify(row)}`);
      columns.add(m[1].length);
    }
    assertEquals([...columns], [columns.values().next().value], `${name}: ${[...columns]}`);
    // every flag is listed, once
    const listed = rows.flatMap((r) => r.match(/^ {2}--([\w-]+)/)?.[1] ?? []);
    assertEquals(
      listed.sort(),
      [...Object.keys(COMMANDS[name].flags), "help", "debug", "kernels"].sort(),
    );
  }
  const train = helpText("train");
  assertMatch(train, /^ {2}--checkpoint-every N +write <out>\.ckpt/m);
});

Deno.test("help: --kernels says what js is for, in every command's help", async () => {
  const results = await pooled(Object.keys(COMMANDS).map((c) => () => runCli([c, "--help"])));
  for (const r of results) {
    assertEquals(r.code, 0, r.stderr);
    const text = r.stdout.replace(/\n +/g, " "); // join the wrapped lines
    assertMatch(
      text,
      /--kernels TIER +kernel tier: relaxed, simd, js or webgpu .*js: the plain TypeScript reference in lib\/tensor\.ts — run it after editing that file/,
    );
  }
});

Deno.test("eval --threads 2 without read access to lib/: one line naming the folder to allow", async () => {
  const permissions = ["--allow-read=weights,README.md"];
  const r = await runCli(["eval", "--data", "README.md", "--split", "all", "--threads", "2"], {
    permissions,
    cwd: REPO,
  });
  assertUserError(
    r,
    /no read permission for .*lib \(eval on 2 threads starts workers from it\); run again with --allow-read=.*lib, or pass --threads 1/,
  );
  const one = await runCli(["eval", "--data", "README.md", "--split", "all"], {
    permissions,
    cwd: REPO,
  });
  assertEquals(one.code, 0, one.stderr);
  if (navigator.hardwareConcurrency > 1) {
    assertMatch(one.stderr, /note: evaluating on one thread; allow reading .*lib/);
  }
});

Deno.test("a file outside the tasks' folders: the advice says how a task can reach it", async () => {
  const r = await runCli(["train", "--data", "README.md", "--out", "weights/never.safetensors"], {
    permissions: ["--allow-read=data,weights,lib,out", "--allow-write=weights,out"],
    cwd: REPO,
  });
  assertUserError(
    r,
    /no read permission for README\.md; run again with --allow-read=README\.md \(the deno tasks read only data\/, weights\/ and out\/ and write only weights\/ and out\/: put the file there, or run cli\.ts with deno run and these flags\)/,
  );
});
