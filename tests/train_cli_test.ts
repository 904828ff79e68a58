// `train` and the no-argument `start` as a new user meets them (issue 13, items 5, 6 and 11):
// an interrupted first run continues with the same command, a missing --out folder is made, the
// banner states the schedule that runs, val_loss is always stored, checkpoints are announced,
// --init reports its base model, and more threads than cores is a warning.

import { decodeSafetensors } from "../lib/safetensors.ts";
import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { createModel, createTrainer, saveWeights } from "../mod.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import { assertNoStackTrace, exists, REPO, runCli, smallCorpus, tempDir, TINY } from "./cli_run.ts";

async function withCorpus() {
  const tmp = await tempDir("baregpt_train_cli_");
  await Deno.writeTextFile(`${tmp.path}/corpus.txt`, smallCorpus());
  return tmp;
}

/** `train` on the small corpus with the tiny model. */
function train(dir: string, out: string, extra: string[] = []): string[] {
  return ["train", "--data", `${dir}/corpus.txt`, "--out", out, ...TINY, ...extra];
}

/** The facts `info` prints, as a map. */
async function facts(weights: string): Promise<Map<string, string>> {
  const r = await runCli(["info", "--weights", weights]);
  assertEquals(r.code, 0, r.stderr);
  return new Map(
    r.stdout.trimEnd().split("\n").map((l) => {
      const m = l.match(/^(\S+)\s+(.*)$/)!;
      return [m[1], m[2]] as [string, string];
    }),
  );
}

Deno.test("train --out in a missing folder: the folder (and its parents) is made, and said", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const out = `${d}/out/nested/my.safetensors`;
  const r = await runCli(train(d, out, ["--steps", "2", "--threads", "1"]));
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stderr, /created folder .*out\/nested\n/);
  assert(await exists(out), "the weights are written into the new folder");

  // a run refused for its input leaves no new folder behind
  const bad = await runCli([
    "train",
    "--data",
    `${d}/missing.txt`,
    "--out",
    `${d}/other/deeper/my.safetensors`,
    ...TINY,
  ]);
  assertEquals(bad.code, 2, bad.stderr);
  assertNoStackTrace(bad.stderr);
  assertMatch(bad.stderr, /error: corpus .*missing\.txt does not exist/);
  assert(!(await exists(`${d}/other`)), "no folder left by a refused run");
});

Deno.test("train --warmup longer than --steps: capped at the steps, and the banner says so", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const out = `${d}/w.safetensors`;
  const settings = { steps: 10, warmup: 50, lr: 0.004, batch: 4, seed: 0 };
  const r = await runCli(
    train(d, out, ["--steps", "10", "--warmup", "50", "--lr", "0.004", "--threads", "1"]),
  );
  assertEquals(r.code, 0, r.stderr);
  assertMatch(
    r.stderr,
    /lr warming up to 0\.004 over the whole run \(warmup 50, capped at the 10 steps\): the peak is reached at the last step, no decay/,
  );
  assert(!/lr 0\.004 -> /.test(r.stderr), `no decay is claimed: ${r.stderr}`);

  // the library caps it too: the last step runs at the peak, as the banner says
  const text = smallCorpus();
  const model = createModel(text, { dModel: 16, nLayers: 1, nHeads: 2, blockSize: 16, seed: 0 });
  using trainer = await createTrainer(model, text, { ...settings, threads: 1 });
  assertEquals(trainer.settings.warmup, 10);
  let last = NaN;
  await trainer.run({ onProgress: ({ lr }) => void (last = lr) });
  assertEquals(last, 0.004);
  // the CLI and the library train alike
  const cli = decodeSafetensors(await Deno.readFile(out)).tensors;
  const lib = decodeSafetensors(saveWeights(model)).tensors;
  for (const [name, t] of cli) {
    assertEquals(Array.from(t.data), Array.from(lib.get(name)!.data), name);
  }

  // a warmup shorter than the run keeps the usual wording
  const usual = await runCli(train(d, `${d}/u.safetensors`, ["--steps", "10", "--warmup", "3"]));
  assertEquals(usual.code, 0, usual.stderr);
  assertMatch(usual.stderr, /lr 0\.008 -> \S+ \(warmup 3, linear decay\)/);
});

Deno.test("train --eval-every 0: no periodic evaluation, but the final val_loss is stored", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const out = `${d}/e.safetensors`;
  const r = await runCli(train(d, out, ["--steps", "6", "--eval-every", "0", "--threads", "1"]));
  assertEquals(r.code, 0, r.stderr);
  assert(!/step \d+: validation loss/.test(r.stderr), `no periodic evaluation: ${r.stderr}`);
  const final = r.stderr.match(/final validation loss (\d+\.\d{4})/);
  assert(final, r.stderr);
  assertEquals((await facts(out)).get("val_loss"), final[1]);
  // the same full sweep as `eval`
  const ev = await runCli(["eval", "--weights", out, "--data", `${d}/corpus.txt`]);
  assertEquals(ev.code, 0, ev.stderr);
  assertEquals(ev.stdout.match(/^loss (\S+)/)?.[1], final[1]);

  // a validation split shorter than one window: trained, and stderr says why val_loss is missing
  await Deno.writeTextFile(`${d}/short.txt`, smallCorpus().slice(0, 120));
  const shortOut = `${d}/s.safetensors`;
  const s = await runCli([
    "train",
    "--data",
    `${d}/short.txt`,
    "--out",
    shortOut,
    "--steps",
    "2",
    "--eval-every",
    "0",
    "--threads",
    "1",
    ...TINY,
  ]);
  assertEquals(s.code, 0, s.stderr);
  assertMatch(
    s.stderr,
    /no val_loss stored: the validation split .* has 12 characters, fewer than block_size \+ 1 = 17/,
  );
  assert(!(await facts(shortOut)).has("val_loss"));
});

Deno.test("train --checkpoint-every: each checkpoint written is a note on stderr", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const out = `${d}/c.safetensors`;
  const r = await runCli(
    train(d, out, ["--steps", "10", "--checkpoint-every", "4", "--threads", "1"]),
  );
  assertEquals(r.code, 0, r.stderr);
  const notes = [...r.stderr.matchAll(/^step (\d+): saved checkpoint .*c\.safetensors\.ckpt$/gm)];
  assertEquals(notes.map((n) => n[1]), ["4", "8"]);
  assert(!(await exists(`${out}.ckpt`)), "the spent checkpoint is removed");
});

Deno.test("train --init: the base model, its facts and its starting loss on the new text", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const base = `${d}/base.safetensors`;
  const b = await runCli(train(d, base, ["--steps", "5", "--threads", "1"]));
  assertEquals(b.code, 0, b.stderr);
  const baseFacts = await facts(base);

  const text = smallCorpus().split("\n").reverse().join("\n"); // the same characters, a new text
  await Deno.writeTextFile(`${d}/new.txt`, text);
  const r = await runCli([
    "train",
    "--data",
    `${d}/new.txt`,
    "--out",
    `${d}/ft.safetensors`,
    "--init",
    base,
    "--steps",
    "3",
    "--threads",
    "1",
  ]);
  assertEquals(r.code, 0, r.stderr);
  assertMatch(
    r.stderr,
    new RegExp(
      `base model: .*base\\.safetensors \\(steps ${baseFacts.get("steps")}, val_loss ${
        baseFacts.get("val_loss")!.replace(".", "\\.")
      }`,
    ),
  );
  const start = r.stderr.match(/base model: validation loss (\d+\.\d{4}) on .*new\.txt before/);
  assert(start, r.stderr);
  // printed before training, and the same figure `eval` gives for the base model
  assert(r.stderr.indexOf(start[0]) < r.stderr.indexOf("step 1/3"), r.stderr);
  const ev = await runCli(["eval", "--weights", base, "--data", `${d}/new.txt`]);
  assertEquals(ev.code, 0, ev.stderr);
  assertEquals(ev.stdout.match(/^loss (\S+)/)?.[1], start[1]);
});

Deno.test("train --threads above the cores: a warning saying how many threads run", async () => {
  await using tmp = await withCorpus();
  const d = tmp.path;
  const cores = navigator.hardwareConcurrency;
  const asked = Math.min(256, cores + 2);
  const r = await runCli(train(d, `${d}/t.safetensors`, ["--steps", "2", "--threads", `${asked}`]));
  assertEquals(r.code, 0, r.stderr);
  const w = r.stderr.match(
    new RegExp(
      `warning: --threads ${asked} is more than the ${cores} cores of this machine; using (\\d+) threads?`,
    ),
  );
  assert(w, r.stderr);
  const used = r.stderr.match(/, (\d+) threads?, kernels/)![1];
  assertEquals(w[1], used);
  assert(Number(used) <= 4, "capped by --batch 4 as before");

  const fine = await runCli(train(d, `${d}/f.safetensors`, ["--steps", "2", "--threads", "1"]));
  assertEquals(fine.code, 0, fine.stderr);
  assert(!/warning/.test(fine.stderr), fine.stderr);
});

/** Copies a folder recursively. */
async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else if (e.isFile) await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** `cli.ts` with no arguments in `cwd`, with the start task's permissions, in the background. */
function spawnStart(cwd: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      "--allow-read=weights,data,lib",
      "--allow-write=weights",
      "cli.ts",
    ],
    cwd,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const reading = (async () => {
    for await (const chunk of child.stderr) text += decoder.decode(chunk, { stream: true });
  })();
  let ended = false;
  child.status.then(() => (ended = true));
  return {
    child,
    async waitFor(pattern: RegExp, timeoutMs = 120_000): Promise<void> {
      const t0 = Date.now();
      while (!pattern.test(text)) {
        if (ended) throw new Error(`process ended before ${pattern}: ${text}`);
        if (Date.now() - t0 > timeoutMs) {
          throw new Error(`timed out waiting for ${pattern}: ${text}`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async done() {
      const status = await child.status;
      await reading;
      return { code: status.code, stderr: text };
    },
  };
}

Deno.test("start: Ctrl-C during the first training says to run it again, and running it again resumes", async () => {
  // A fresh clone without weights: the real no-argument path, in a copy of the repo's layout.
  await using tmp = await tempDir("baregpt_start_");
  const root = tmp.path;
  for (const f of ["cli.ts", "mod.ts", "deno.json"]) {
    await Deno.copyFile(`${REPO}/${f}`, `${root}/${f}`);
  }
  for (const dir of ["cli", "lib"]) await copyTree(`${REPO}/${dir}`, `${root}/${dir}`);
  await Deno.mkdir(`${root}/data`);
  await Deno.mkdir(`${root}/weights`);
  await Deno.writeTextFile(`${root}/data/tinyshakespeare.txt`, smallCorpus());
  const weights = `${root}/weights/shakespeare.safetensors`;
  const ckpt = `${weights}.ckpt`;

  const first = spawnStart(root);
  await first.waitFor(/^step 1\/\d+ /m);
  first.child.kill("SIGINT");
  const r1 = await first.done();
  assertNoStackTrace(r1.stderr);
  assertEquals(r1.code, 130, r1.stderr);
  assertMatch(r1.stderr, /no weights at weights\/shakespeare\.safetensors: training them first/);
  const stop = r1.stderr.match(
    /SIGINT: stopped after step (\d+) of \d+; saved .*weights\/shakespeare\.safetensors\.ckpt; to continue, run `deno task start` again/,
  );
  assert(stop, r1.stderr);
  assert(!/--resume/.test(r1.stderr), `start takes no flags: ${r1.stderr}`);
  assert(!(await exists(weights)), "no weights from an interrupted run");
  const step = Number(stop[1]);
  assertEquals(Checkpoint.decode(await Deno.readFile(ckpt)).step, step);

  // the same command again picks the run up (stopped early once more: the default model is slow)
  const second = spawnStart(root);
  await second.waitFor(new RegExp(`resumed from .*\\.ckpt at step ${step}\\n`));
  second.child.kill("SIGINT");
  const r2 = await second.done();
  assertNoStackTrace(r2.stderr);
  assertEquals(r2.code, 130, r2.stderr);
  assertMatch(
    r2.stderr,
    /no weights at weights\/shakespeare\.safetensors: resuming the interrupted training from weights\/shakespeare\.safetensors\.ckpt/,
  );
  assert(!/error/.test(r2.stderr), r2.stderr);
  const again = r2.stderr.match(/SIGINT: stopped after step (\d+) of/);
  assert(again, r2.stderr);
  assert(Number(again[1]) > step, "the resumed run went on from the checkpoint");
  assertEquals(Checkpoint.decode(await Deno.readFile(ckpt)).step, Number(again[1]));
});

Deno.test("fine-tuning on a text with new characters grows the vocabulary; eval drops what it lacks", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const base = `${dir}/base.safetensors`, tuned = `${dir}/tuned.safetensors`;
    const corpus = `${dir}/base.txt`, notes = `${dir}/notes.txt`;
    await Deno.writeTextFile(corpus, smallCorpus());
    const trained = await runCli([
      "train",
      "--data",
      corpus,
      "--out",
      base,
      "--steps",
      "2",
      ...TINY,
    ]);
    assertEquals(trained.code, 0, trained.stderr);
    // digits, brackets and an accent: none of them is in the small corpus
    await Deno.writeTextFile(notes, smallCorpus().replaceAll("moon", "m00n [é]"));
    const r = await runCli([
      "train",
      "--init",
      base,
      "--data",
      notes,
      "--out",
      tuned,
      "--steps",
      "2",
      "--batch",
      "4",
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(
      r.stderr,
      /note: added 4 new characters to the vocabulary \(new embedding rows\): "0" "\[" "\]" "é"/,
    );
    const before = JSON.parse(decodeSafetensors(await Deno.readFile(base)).metadata.vocab);
    const after = JSON.parse(decodeSafetensors(await Deno.readFile(tuned)).metadata.vocab);
    assertEquals(after, [...before, "0", "[", "]", "é"]); // known ids unchanged, new ones appended
    const e = await runCli(["eval", "--weights", base, "--data", notes, "--split", "all"]);
    assertEquals(e.code, 0, e.stderr);
    assertMatch(
      e.stderr,
      /note: dropped \d+ characters of .*notes\.txt that are outside the model's vocabulary/,
    );
    assertMatch(e.stdout, /^loss \d+\.\d{4} bpc \d+\.\d{4} tokens \d+\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
