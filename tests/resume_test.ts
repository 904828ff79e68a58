// Checkpoints and resume (DESIGN.md "Checkpoints and resume", issue 6 item 1): a training run
// killed at random moments (SIGKILL, possibly in the middle of writing a checkpoint) and resumed
// ends with weights identical, byte for byte, to a run never interrupted; SIGINT saves a checkpoint
// and exits cleanly; --resume without a checkpoint starts fresh; a checkpoint of another model,
// corpus or recipe is refused.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { detectTier } from "../lib/kernels/mod.ts";
import { Rng } from "../lib/rng.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import {
  assertNoStackTrace,
  assertSameBytes,
  assertUserError,
  exists,
  pooled,
  runCli,
  smallCorpus,
  spawnCli,
  tempDirWithCorpus,
  TINY,
} from "./cli_run.ts";

const STEPS = 300;
/** Thread counts to prove resume on: 2 needs the WebAssembly tier (workers share its memory). */
const THREADS = detectTier() === "js" ? [1] : [1, 2];

function trainArgs(dir: string, out: string, threads: number, extra: string[] = []): string[] {
  return [
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    String(STEPS),
    "--eval-every",
    "50",
    "--threads",
    String(threads),
    "--dropout", // each step's masks come from (seed, step): a resume must draw the same ones
    "0.1",
    ...TINY,
    ...extra,
  ];
}

/** A generator seeded from the clock and printed, so a failing sequence of kills can be replayed. */
function killClock(): () => number {
  const seed = Number(Deno.env.get("BAREGPT_KILL_SEED") ?? (Date.now() >>> 0));
  console.log(`kill timings seed ${seed} (replay with BAREGPT_KILL_SEED=${seed})`);
  const rng = new Rng(seed);
  return () => rng.random();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const threads of THREADS) {
  Deno.test(`resume: SIGKILL at random moments, then --resume, gives the same bytes [${threads} thread(s)]`, async () => {
    await using tmp = await tempDirWithCorpus("baregpt_resume_");
    const dir = tmp.path;
    const random = killClock();
    const ref = `${dir}/ref.safetensors`;
    const out = `${dir}/model.safetensors`;
    const ckpt = `${out}.ckpt`;
    const t0 = performance.now();
    const r0 = await runCli(trainArgs(dir, ref, threads));
    const duration = performance.now() - t0;
    assertEquals(r0.code, 0, r0.stderr);
    const expected = await Deno.readFile(ref);

    const args = trainArgs(dir, out, threads, ["--checkpoint-every", "2", "--resume"]);
    let lastStep = 0;
    let kills = 0;
    let finished = false;
    let log = "";
    for (let round = 0; round < 4 && !finished; round++) {
      const run = spawnCli(args);
      if (round === 0) {
        // first kill: just after a checkpoint appears, most likely while the next is written
        while (!(await exists(ckpt)) && !/saved|error/.test(run.stderr())) await sleep(2);
        await sleep(random() * 20);
      } else {
        await sleep(random() * 0.6 * duration); // anywhere: start-up, resume, training, a write
      }
      try {
        run.child.kill("SIGKILL");
      } catch { /* it had finished */ }
      const r = await run.done();
      log += r.stderr;
      if (r.code === 0) {
        finished = true; // it finished before the kill
        break;
      }
      assertEquals(r.signal, "SIGKILL", r.stderr);
      kills++;
      if (await exists(ckpt)) {
        // atomic writes: whatever the moment of the kill, the checkpoint on disk is whole
        const c = Checkpoint.decode(await Deno.readFile(ckpt));
        assert(c.step >= lastStep && c.step < STEPS, `checkpoint step ${c.step}`);
        lastStep = c.step;
      }
    }
    assert(kills > 0, "no run was killed");
    assert(lastStep > 0, "no checkpoint was written before the kills");
    if (!finished) {
      const last = await runCli(args);
      assertEquals(last.code, 0, last.stderr);
      log += last.stderr;
    }
    assertMatch(log, /resumed from .*\.ckpt at step \d+/);
    assertSameBytes(await Deno.readFile(out), expected, "resumed weights vs uninterrupted");
    assert(!(await exists(ckpt)), "the spent checkpoint is removed after a finished run");
  });
}

Deno.test("resume: SIGINT saves a checkpoint and exits cleanly; resuming gives the same bytes", async () => {
  const threads = THREADS[THREADS.length - 1];
  await using tmp = await tempDirWithCorpus("baregpt_resume_");
  const dir = tmp.path;
  const ref = `${dir}/ref.safetensors`;
  const out = `${dir}/model.safetensors`;
  const r0 = await runCli(trainArgs(dir, ref, threads));
  assertEquals(r0.code, 0, r0.stderr);

  const run = spawnCli(trainArgs(dir, out, threads)); // no --checkpoint-every: SIGINT saves anyway
  await run.waitFor(/step 11\/300/);
  run.child.kill("SIGINT");
  const r = await run.done();
  assertEquals(r.code, 130, r.stderr);
  assertNoStackTrace(r.stderr);
  assert(!/error/i.test(r.stderr), r.stderr);
  assertMatch(
    r.stderr,
    /SIGINT: stopped after step (\d+) of 300; saved .*model\.safetensors\.ckpt; to continue, run the same command with --resume\n$/,
  );
  assert(!(await exists(out)), "no weights file from an interrupted run");
  const step = Number(r.stderr.match(/stopped after step (\d+)/)![1]);
  assertEquals(Checkpoint.decode(await Deno.readFile(`${out}.ckpt`)).step, step);

  const resumed = await runCli(trainArgs(dir, out, threads, ["--resume"]));
  assertEquals(resumed.code, 0, resumed.stderr);
  assertMatch(resumed.stderr, new RegExp(`resumed from .*\\.ckpt at step ${step}\\n`));
  assertSameBytes(await Deno.readFile(out), await Deno.readFile(ref), "resumed weights");
  assert(!(await exists(`${out}.ckpt`)));
});

Deno.test("resume: --resume without a checkpoint says so and starts fresh; a finished run is not redone", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_resume_");
  const dir = tmp.path;
  const args = (out: string, extra: string[] = []) => [
    "train",
    "--data",
    `${dir}/corpus.txt`,
    "--out",
    out,
    "--steps",
    "12",
    "--threads",
    "1",
    ...TINY,
    ...extra,
  ];
  const [fresh, plain] = await Promise.all([
    runCli(args(`${dir}/a.safetensors`, ["--resume"])),
    runCli(args(`${dir}/b.safetensors`)),
  ]);
  assertEquals(fresh.code, 0, fresh.stderr);
  assertEquals(plain.code, 0, plain.stderr);
  assertMatch(fresh.stderr, /no checkpoint at .*a\.safetensors\.ckpt; starting fresh/);
  assertSameBytes(
    await Deno.readFile(`${dir}/a.safetensors`),
    await Deno.readFile(`${dir}/b.safetensors`),
    "fresh --resume vs plain run",
  );
  // the run finished: --resume again has nothing to continue and does not overwrite it
  const before = await Deno.readFile(`${dir}/a.safetensors`);
  assertUserError(
    await runCli(args(`${dir}/a.safetensors`, ["--resume"])),
    /a\.safetensors already exists and there is no checkpoint .* to resume .*; pass --force/,
  );
  assertSameBytes(await Deno.readFile(`${dir}/a.safetensors`), before, "finished weights");
});

Deno.test("resume: a checkpoint of another model, corpus or recipe is a one-line error, kept as is", async () => {
  await using tmp = await tempDirWithCorpus("baregpt_resume_");
  const dir = tmp.path;
  const out = `${dir}/model.safetensors`;
  const ckpt = `${out}.ckpt`;
  const base = (extra: string[] = [], corpus = `${dir}/corpus.txt`) => [
    "train",
    "--data",
    corpus,
    "--out",
    out,
    "--steps",
    "100000",
    "--threads",
    "1",
    "--eval-every",
    "0",
    ...TINY,
    ...extra,
  ];
  // a checkpoint of a run that was killed
  const run = spawnCli(base(["--checkpoint-every", "3"]));
  while (!(await exists(ckpt))) await sleep(5);
  run.child.kill("SIGKILL");
  await run.done();
  const saved = await Deno.readFile(ckpt);
  await Deno.writeTextFile(`${dir}/other.txt`, smallCorpus() + "\n"); // same characters, new text
  await Deno.writeFile(`${dir}/truncated.ckpt`, saved.subarray(0, saved.length - 100));

  const cases: [string[], RegExp, string?][] = [
    [
      base(["--resume", "--d-model", "32"]),
      /checkpoint .*model\.safetensors\.ckpt is of another model \(--d-model 16 there, 32 here\); delete it or train with its settings/,
    ],
    [
      base(["--resume"], `${dir}/other.txt`),
      /checkpoint .*\.ckpt was made on another corpus \(sha256 differs\)/,
    ],
    [
      base(["--resume", "--lr", "0.003"]),
      /checkpoint .*\.ckpt was made with --lr 0\.008\b.*, this run has --lr 0\.003\b.*; resume with the checkpoint's settings or delete it/,
    ],
    [base(), /model\.safetensors\.ckpt holds an interrupted run; pass --resume to continue it/],
  ];
  const results = await pooled(cases.map(([args]) => () => runCli(args)));
  results.forEach((r, i) => assertUserError(r, cases[i][1]));
  assertSameBytes(await Deno.readFile(ckpt), saved, "the checkpoint");
  assert(!(await exists(out)));

  await Deno.copyFile(`${dir}/truncated.ckpt`, ckpt);
  assertUserError(
    await runCli(base(["--resume"])),
    /checkpoint .*model\.safetensors\.ckpt is unusable \(.*truncated.*\); delete it to start over/,
  );
  assertSameBytes(await Deno.readFile(ckpt), await Deno.readFile(`${dir}/truncated.ckpt`), "ckpt");
});
