// Least privilege (DESIGN.md "Permissions", issue 6 item 5): `sample` and `train` run with exactly
// the permissions they need (no env, net, run, ffi or sys), and one flag less fails with a one-line
// error naming the --allow flag that grants it, never a stack trace. The deno.json tasks carry only
// those permissions, and the train and sample tasks work as written.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { detectTier } from "../lib/kernels/mod.ts";
import {
  assertNoStackTrace,
  assertUserError,
  pooled,
  REPO,
  runCli,
  smallCorpus,
  tempDir,
  TINY,
} from "./cli_run.ts";

const LIB = `${REPO}/lib`;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * The one-line advice for a folder written atomically (issue 13 item 2): it names the folder, never
 * a temporary file, and both flags, since Deno's rename needs read as well as write permission.
 */
function folderAdvice(missing: string, dir: string, what: string): RegExp {
  return new RegExp(
    `^error: no ${missing} permission for ${escape(dir)}, ${
      escape(what)
    } \\(an atomic write needs read and write there\\); run again with --allow-read=${
      escape(dir)
    } --allow-write=${escape(dir)}$`,
  );
}

async function setup() {
  const tmp = await tempDir("baregpt_perm_");
  const root = tmp.path;
  const dataDir = `${root}/data`, outDir = `${root}/out`;
  await Deno.mkdir(dataDir);
  await Deno.mkdir(outDir);
  const corpus = `${dataDir}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  return { tmp, root, dataDir, outDir, corpus };
}

Deno.test("permissions: sample needs only --allow-read of its weights file", async () => {
  const { tmp, outDir, corpus } = await setup();
  await using _cleanup = tmp;
  const weights = `${outDir}/w.safetensors`;
  const t = await runCli(["train", "--data", corpus, "--out", weights, "--steps", "2", ...TINY]);
  assertEquals(t.code, 0, t.stderr);
  const args = ["sample", "--weights", weights, "--tokens", "30", "--seed", "1"];

  const exact = await runCli(args, { permissions: [`--allow-read=${weights}`] });
  assertEquals(exact.code, 0, exact.stderr);
  assertEquals([...exact.stdout].length, 31);
  assertEquals(exact.stderr, "");

  const none = await runCli(args, { permissions: [] });
  assertUserError(
    none,
    new RegExp(
      `^error: no read permission for ${escape(weights)}; run again with --allow-read=${
        escape(weights)
      }$`,
    ),
  );
});

Deno.test("permissions: train needs read of the corpus, read and write of the output folder", async () => {
  const { tmp, outDir, corpus } = await setup();
  await using _cleanup = tmp;
  // with workers (more than one thread), they load lib/ as the main program did
  const threads = detectTier() === "js" ? 1 : 2;
  const out = `${outDir}/model.safetensors`;
  const args = [
    "train",
    "--data",
    corpus,
    "--out",
    out,
    "--steps",
    "3",
    "--threads",
    String(threads),
  ];
  const read = [corpus, outDir, ...(threads > 1 ? [LIB] : [])];
  const exact = [`--allow-read=${read.join(",")}`, `--allow-write=${outDir}`];

  const ok = await runCli([...args, ...TINY], { permissions: exact });
  assertEquals(ok.code, 0, ok.stderr);
  assertMatch(ok.stderr, new RegExp(`${threads} thread`));
  assert((await Deno.stat(out)).size > 0);

  const lessOne = (drop: string, flag: string) => {
    const readLeft = read.filter((p) => p !== drop);
    return [
      ...(readLeft.length ? [`--allow-read=${readLeft.join(",")}`] : []),
      ...(flag === "write" ? [] : [`--allow-write=${outDir}`]),
    ];
  };
  const cases: [string[], RegExp][] = [
    [
      lessOne(corpus, "read"),
      new RegExp(
        `no read permission for ${escape(corpus)}; run again with --allow-read=${escape(corpus)}$`,
      ),
    ],
    [
      lessOne(outDir, "read"),
      folderAdvice("read", outDir, "the folder of --out"),
    ],
    [lessOne("", "write"), folderAdvice("write", outDir, "the folder of --out")],
  ];
  if (threads > 1) {
    cases.push([
      lessOne(LIB, "read"),
      new RegExp(
        `no read permission for ${
          escape(LIB)
        } \\(training on 2 threads starts workers from it\\); run again with --allow-read=${
          escape(LIB)
        }, or pass --threads 1$`,
      ),
    ]);
  }
  const results = await pooled(
    cases.map(([perms]) => () => runCli([...args, "--force", ...TINY], { permissions: perms })),
  );
  results.forEach((r, i) => assertUserError(r, cases[i][1]));
});

/** The permission flags of a `deno run ... cli.ts` task line. */
function taskPermissions(task: string): string[] {
  const words = task.split(/\s+/);
  assertEquals(words.slice(0, 2), ["deno", "run"], task);
  return words.slice(2, words.indexOf("cli.ts"));
}

Deno.test("permissions: the deno.json tasks of the CLI carry only what they need", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const allowed: Record<string, { read: string[]; write: string[] }> = {
    start: { read: ["weights", "data", "lib"], write: ["weights"] },
    train: { read: ["data", "weights", "lib", "out"], write: ["weights", "out"] },
    sample: { read: ["weights", "out"], write: [] },
    eval: { read: ["weights", "data", "out", "lib"], write: [] }, // lib: its worker threads
    info: { read: ["weights", "out"], write: [] },
    inspect: { read: ["weights", "out"], write: ["out"] },
  };
  for (const [name, limits] of Object.entries(allowed)) {
    const task: string | undefined = config.tasks[name];
    if (task === undefined) continue;
    for (const flag of taskPermissions(task)) {
      const m = flag.match(/^--allow-(read|write)=(.+)$/);
      assert(m, `task ${name}: ${flag} is not a scoped read or write permission`);
      for (const path of m[2].split(",")) {
        assert(
          limits[m[1] as "read" | "write"].includes(path),
          `task ${name}: --allow-${m[1]}=${path} is more than it needs`,
        );
      }
    }
  }
});

Deno.test("permissions: the train and sample tasks work with their own permissions", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  // the tasks' permissions are relative to the repository: use files in its data/ and weights/
  const id = `.permissions_test_${Deno.pid}`;
  const corpus = `data/${id}.txt`;
  const out = `weights/${id}.safetensors`;
  await Deno.mkdir(`${REPO}/data`, { recursive: true }); // a fresh clone has no data/ yet
  await Deno.writeTextFile(`${REPO}/${corpus}`, smallCorpus());
  try {
    const train = await runCli(
      ["train", "--data", corpus, "--out", out, "--steps", "3", ...TINY], // default threads
      { permissions: taskPermissions(config.tasks.train), cwd: REPO },
    );
    assertNoStackTrace(train.stderr);
    assertEquals(train.code, 0, train.stderr);
    const sample = await runCli(
      ["sample", "--weights", out, "--tokens", "20", "--seed", "1"],
      { permissions: taskPermissions(config.tasks.sample), cwd: REPO },
    );
    assertEquals(sample.code, 0, sample.stderr);
    assertEquals([...sample.stdout].length, 21);
  } finally {
    for (const p of [corpus, out, `${out}.ckpt`]) await Deno.remove(`${REPO}/${p}`).catch(() => {});
  }
});

Deno.test("permissions: inspect --out names the folder to grant, read and write, never a temporary file", async () => {
  const { tmp, outDir } = await setup();
  await using _cleanup = tmp;
  const weights = `${REPO}/weights/shakespeare.safetensors`;
  const svg = `${outDir}/attention.svg`;
  const args = ["inspect", "--prompt", "ROMEO:", "--tokens", "4", "--layer", "0", "--out", svg];
  const cases: [string[], string][] = [
    [[`--allow-read=${weights}`, `--allow-write=${outDir}`], "read"], // the README's old command
    [[`--allow-read=${weights},${outDir}`], "write"],
    [[`--allow-read=${weights}`], "read or write"],
  ];
  const results = await pooled(cases.map(([perms]) => () => runCli(args, { permissions: perms })));
  results.forEach((r, i) => {
    assertUserError(r, folderAdvice(cases[i][1], outDir, "the folder of --out"));
    assert(!/\.tmp\b/.test(r.stderr), r.stderr);
  });
  assertEquals([...Deno.readDirSync(outDir)], []); // refused before any work: nothing written

  const ok = await runCli(args, {
    permissions: [`--allow-read=${weights},${outDir}`, `--allow-write=${outDir}`],
  });
  assertEquals(ok.code, 0, ok.stderr);
  assertMatch(await Deno.readTextFile(svg), /^<svg/);
  assertEquals([...Deno.readDirSync(outDir)].map((e) => e.name), ["attention.svg"]);
});

Deno.test("permissions: `deno task inspect --out out/x.svg` works as written, creating out/", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  const hadOut = await Deno.stat(`${REPO}/out`).then(() => true, () => false);
  const svg = `out/.permissions_test_${Deno.pid}.svg`;
  try {
    const r = await runCli(
      ["inspect", "--prompt", "ROMEO:", "--tokens", "4", "--out", svg],
      { permissions: taskPermissions(config.tasks.inspect), cwd: REPO },
    );
    assertNoStackTrace(r.stderr);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(await Deno.readTextFile(`${REPO}/${svg}`), /^<svg/);
    if (!hadOut) assertMatch(r.stderr, /^created folder out$/m);
  } finally {
    await Deno.remove(`${REPO}/${svg}`).catch(() => {});
    if (!hadOut) await Deno.remove(`${REPO}/out`).catch(() => {}); // only if left empty
  }
});
