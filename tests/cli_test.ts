// The CLI end to end on a small corpus: train, info, eval, sample; and the errors of DESIGN.md.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { assertUserError, runCli, smallCorpus } from "./fixtures.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

export { assertUserError, runCli, smallCorpus };

const tiny = ["--d-model", "16", "--layers", "1", "--heads", "2", "--block", "16", "--batch", "4"];

Deno.test("CLI: train a few steps, then info, eval and sample", async () => {
  const dir = await Deno.makeTempDir();
  const corpus = `${dir}/corpus.txt`;
  const out = `${dir}/model.safetensors`;
  await Deno.writeTextFile(corpus, smallCorpus());

  const train = await runCli([
    "train",
    "--data",
    corpus,
    "--out",
    out,
    "--steps",
    "6",
    "--eval-every",
    "3",
    ...tiny,
  ]);
  assertEquals(train.code, 0, train.stderr);
  assertEquals(train.stdout, ""); // progress goes to stderr
  assertMatch(train.stderr, /parameters/);
  assertMatch(train.stderr, /step 6\/6 loss \d+\.\d+ [\d,]+ tok\/s/);
  assertMatch(train.stderr, /step 3: validation loss \d+\.\d+/);
  assertMatch(train.stderr, /final validation loss/);

  const info = await runCli(["info", "--weights", out]);
  assertEquals(info.code, 0, info.stderr);
  assertMatch(info.stdout, /block_size 16, d_model 16, n_layers 1, n_heads 2/);
  assertMatch(info.stdout, /steps\s+6/);
  assertMatch(info.stdout, /val_loss\s+\d+\.\d{4}/);
  assertMatch(info.stdout, /corpus_sha256\s+[0-9a-f]{64}/);
  assert(
    !info.stdout.split("\n").slice(1).join("\n").includes(out),
    "no output path in the metadata",
  );

  const ev = await runCli(["eval", "--weights", out, "--data", corpus]);
  assertEquals(ev.code, 0, ev.stderr);
  assertMatch(ev.stdout, /^loss \d+\.\d{4} bpc \d+\.\d{4} tokens \d+\n$/);
  const evJson = await runCli([
    "eval",
    "--weights",
    out,
    "--data",
    corpus,
    "--json",
    "--split",
    "all",
  ]);
  const r = JSON.parse(evJson.stdout);
  assert(r.loss > 0 && Math.abs(r.bpc - r.loss / Math.LN2) < 1e-9 && r.split === "all");
  // the metadata's val_loss is the same full sweep that eval does
  const stored = Number(info.stdout.match(/val_loss\s+(\S+)/)![1]);
  assertEquals(stored.toFixed(4), ev.stdout.split(" ")[1]);

  const seeded = [
    "sample",
    "--weights",
    out,
    "--prompt",
    "ROMEO:",
    "--tokens",
    "40",
    "--seed",
    "3",
  ];
  const s1 = await runCli(seeded);
  assertEquals(s1.code, 0, s1.stderr);
  assert(s1.stdout.startsWith("ROMEO:"));
  assertEquals([...s1.stdout].length, 6 + 40 + 1);
  const s2 = await runCli(seeded);
  assertEquals(s2.stdout, s1.stdout);
  const s3 = await runCli(["sample", "--weights", out, "--tokens", "10"]);
  assertMatch(s3.stderr, /^seed \d+\n$/); // a drawn seed is printed so the run can be repeated

  // an existing --out is refused without --force, and left as it was
  const before = await Deno.readFile(out);
  const again = await runCli(["train", "--data", corpus, "--out", out, "--steps", "2", ...tiny]);
  assertEquals(again.code, 2);
  assertMatch(again.stderr, /^error: .* already exists; pass --force/);
  assertEquals(await Deno.readFile(out), before);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CLI: every command has --help", async () => {
  for (const cmd of ["train", "sample", "eval", "info"]) {
    const r = await runCli([cmd, "--help"]);
    assertEquals(r.code, 0);
    assertMatch(r.stdout, new RegExp(`^usage: cli.ts ${cmd}`));
  }
  const top = await runCli(["--help"]);
  assertMatch(top.stdout, /commands:/);
});

Deno.test("CLI: a missing file and a bad flag are one-line errors with exit code 2", async () => {
  assertUserError(
    await runCli(["sample", "--weights", "/nonexistent/w.safetensors"]),
    /does not exist/,
  );
  assertUserError(
    await runCli(["eval", "--weights", "/nonexistent/w.safetensors", "--data", "x"]),
    /does not exist/,
  );
  assertUserError(
    await runCli(["train", "--data", "/nonexistent/c.txt", "--out", "/tmp/x.safetensors"]),
    /corpus \/nonexistent\/c.txt does not exist/,
  );
  assertUserError(await runCli(["sample", "--bogus"]), /unknown flag --bogus/);
  assertUserError(await runCli(["sample", "--tokens", "-3"]), /--tokens "-3" is out of range/);
  assertUserError(
    await runCli(["sample", "--temperature", "abc"]),
    /--temperature "abc" is not a number/,
  );
  assertUserError(await runCli(["frobnicate"]), /unknown command "frobnicate"/);
  assertUserError(await runCli(["train", "--out", "x"]), /train needs --data/);
});

Deno.test("CLI: the shipped weights load relative to the module, from any working directory", async () => {
  // `deno task compile` embeds weights/ beside cli.ts; this is the code path it relies on
  const weights = new URL("../weights/shakespeare.safetensors", import.meta.url).pathname;
  const cwd = await Deno.makeTempDir();
  const cmd = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      `--allow-read=${weights}`,
      CLI,
      "sample",
      "--tokens",
      "20",
      "--seed",
      "1",
    ],
    cwd,
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await cmd.output();
  assertEquals(code, 0, new TextDecoder().decode(stderr));
  assertEquals([...new TextDecoder().decode(stdout)].length, 21); // 20 characters and a newline
  await Deno.remove(cwd);
});
