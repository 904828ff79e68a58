// Outputs (issue 14, items 1 to 3): an output only ever replaces a regular file; no command writes
// over its own inputs (through symbolic and hard links, checkpoints, locks and temporary files
// included); one writer per output. Every refusal is exit 2 with one stderr line, before any work,
// and leaves every file as it was (same kind, same inode, same bytes, for a device the same rdev).
// Devices, FIFOs, sockets and links are made inside a temporary folder, never in system paths.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { writeFileAtomic } from "../cli.ts";
import { BareGPTError } from "../mod.ts";
import {
  assertNoStackTrace,
  assertUserError,
  isRoot,
  pooled,
  REPO,
  runCli,
  smallCorpus,
  spawnCli,
  tempDir,
  TINY,
} from "./cli_run.ts";

const SHIPPED = `${REPO}/weights/shakespeare.safetensors`;

/** What is at a path, in enough detail to tell that nothing replaced or changed it. */
async function snapshot(path: string): Promise<string> {
  let i: Deno.FileInfo;
  try {
    i = await Deno.lstat(path);
  } catch {
    return "absent";
  }
  const id = `ino ${i.ino} mode ${i.mode?.toString(8)} nlink ${i.nlink}`;
  if (i.isSymlink) return `symlink -> ${await Deno.readLink(path)} (${id})`;
  if (i.isCharDevice) return `char device rdev ${i.rdev} (${id})`;
  if (i.isBlockDevice) return `block device rdev ${i.rdev} (${id})`;
  if (i.isFifo) return `fifo (${id})`;
  if (i.isSocket) return `socket (${id})`;
  if (i.isDirectory) {
    const names = [...Deno.readDirSync(path)].map((e) => e.name).sort();
    return `folder [${names.join(", ")}] (${id})`;
  }
  const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return `file ${i.size} bytes sha256 ${
    [...sum].map((b) => b.toString(16).padStart(2, "0")).join("")
  } (${id})`;
}

/** Every entry of a folder (not following links), with its snapshot. */
async function snapshotDir(dir: string): Promise<Record<string, string>> {
  const all: Record<string, string> = {};
  for (const e of [...Deno.readDirSync(dir)].map((e) => e.name).sort()) {
    all[e] = await snapshot(`${dir}/${e}`);
  }
  return all;
}

/** Runs a command (mknod, mkfifo) that must succeed. */
async function sh(cmd: string, ...args: string[]): Promise<void> {
  const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!r.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(r.stderr)}`);
  }
}

/**
 * A folder with a corpus and one thing of every kind that is not a regular file: a copy of
 * /dev/null made with mknod (root only), a FIFO, a folder, a unix socket (where it can be made),
 * a symbolic link to a file, to the device and to nothing.
 */
async function hostileDir(prefix: string) {
  const tmp = await tempDir(prefix);
  const d = tmp.path;
  await Deno.writeTextFile(`${d}/corpus.txt`, smallCorpus());
  await Deno.writeTextFile(`${d}/other.txt`, "someone else's file\n");
  const kinds: [string, RegExp][] = [];
  if (isRoot()) {
    await sh("mknod", `${d}/null`, "c", "1", "3");
    kinds.push(["null", /is a character device, not a regular file; choose a file path$/]);
    await Deno.symlink(`${d}/null`, `${d}/link-to-null`);
    kinds.push(["link-to-null", /is a symbolic link \(to .*\/null\), not a regular file/]);
  } else console.log("skipped: device variants (mknod needs root)");
  await sh("mkfifo", `${d}/fifo`);
  kinds.push(["fifo", /is a FIFO \(named pipe\), not a regular file; choose a file path$/]);
  await Deno.mkdir(`${d}/folder`);
  await Deno.writeTextFile(`${d}/folder/inside`, "keep");
  kinds.push(["folder", /is a folder; give the path of a file$/]);
  await Deno.symlink(`${d}/other.txt`, `${d}/link-to-file`);
  kinds.push(["link-to-file", /is a symbolic link \(to .*other\.txt\), not a regular file/]);
  await Deno.symlink(`${d}/nowhere`, `${d}/dangling`);
  kinds.push(["dangling", /is a symbolic link \(to .*nowhere\), not a regular file/]);
  try {
    // a socket file outlives the process that bound it (Deno.listen would need --allow-net)
    await sh(
      "python3",
      "-c",
      "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
      `${d}/socket`,
    );
    kinds.push(["socket", /is a socket, not a regular file; choose a file path$/]);
  } catch (e) {
    console.log(`skipped: a unix socket (cannot be made here: ${(e as Error).message})`);
  }
  return { tmp, d, kinds };
}

const trainArgs = (data: string, out: string, extra: string[] = []) => [
  "train",
  "--data",
  data,
  "--out",
  out,
  "--steps",
  "2",
  "--threads",
  "1",
  "--eval-every",
  "0",
  ...TINY,
  ...extra,
];
const inspectArgs = (extra: string[]) => ["inspect", "--prompt", "RO", "--tokens", "2", ...extra];

/** Runs every case (args, one-line pattern); asserts each, then that the folder is as it was. */
async function expectRefusals(dir: string, cases: [string, string[], RegExp][]): Promise<void> {
  const before = await snapshotDir(dir);
  const results = await pooled(cases.map(([, args]) => () => runCli(args)));
  results.forEach((r, i) => {
    try {
      assertUserError(r, cases[i][2]);
    } catch (e) {
      throw new Error(`${cases[i][0]}: ${(e as Error).message}`);
    }
  });
  assertEquals(await snapshotDir(dir), before, "every file is left as it was");
}

Deno.test("outputs: train --out, <out>.ckpt and <out>.lock must be absent or regular files", async () => {
  const { tmp, d, kinds } = await hostileDir("baregpt_outputs_kinds_");
  await using _ = tmp;
  const corpus = `${d}/corpus.txt`;
  const cases: [string, string[], RegExp][] = [];
  for (const [name, message] of kinds) {
    for (const extra of [[], ["--force"], ["--resume"]]) {
      cases.push([
        `--out ${name} ${extra.join(" ")}`,
        trainArgs(corpus, `${d}/${name}`, extra),
        new RegExp(`^error: --out ${d}/${name} ${message.source}`),
      ]);
    }
  }
  await expectRefusals(d, cases);

  // a checkpoint or a lock that is a FIFO or a link: refused (moved into place one at a time)
  const beside: [string, string, RegExp][] = [];
  for (const [name] of kinds) {
    for (const [suffix, what] of [[".ckpt", "its checkpoint"], [".lock", "its lock file"]]) {
      beside.push([name, suffix, new RegExp(`would write ${what} .*${suffix}, which is `)]);
    }
  }
  for (const [name, suffix, message] of beside) {
    const out = `${d}/model-${name}`;
    await Deno.rename(`${d}/${name}`, `${out}${suffix}`);
    try {
      await expectRefusals(d, [
        [`${name} as ${suffix}`, trainArgs(corpus, out, ["--force"]), message],
      ]);
    } finally {
      await Deno.rename(`${out}${suffix}`, `${d}/${name}`);
    }
  }
});

Deno.test("outputs: inspect --out must be absent or a regular file; --out - writes the SVG to stdout", async () => {
  const { tmp, d, kinds } = await hostileDir("baregpt_outputs_inspect_");
  await using _ = tmp;
  const cases: [string, string[], RegExp][] = kinds.map(([name, message]) => [
    `inspect --out ${name}`,
    inspectArgs(["--out", `${d}/${name}`, "--force"]),
    new RegExp(`^error: --out ${d}/${name} ${message.source}`),
  ]);
  await expectRefusals(d, cases);

  // `-`: stdout holds the SVG and nothing else; the table and the text go to stderr
  const r = await runCli(inspectArgs(["--out", "-"]));
  assertEquals(r.code, 0, r.stderr);
  assertMatch(r.stdout, /^<svg[\s\S]*<\/svg>\n$/);
  assertMatch(r.stderr, /wrote the SVG to standard output/);
  assertMatch(r.stderr, /^pos +chose/m);
});

Deno.test("outputs: writeFileAtomic replaces only a regular file, and never follows its temporary name", async () => {
  const { tmp, d, kinds } = await hostileDir("baregpt_outputs_atomic_");
  await using _ = tmp;
  const before = await snapshotDir(d);
  for (const [name] of kinds) {
    const e = await writeFileAtomic(`${d}/${name}`, new TextEncoder().encode("x")).catch((e) => e);
    assert(e instanceof BareGPTError && e.exitCode === 2, `${name}: ${e}`);
    assertMatch(e.message, /^cannot write .*: it is .*, not a regular file; choose another path$/);
  }
  assertEquals(await snapshotDir(d), before);
  // something not a regular file where the temporary file goes: refused, left as it was
  for (const [name] of kinds) {
    const target = `${d}/t-${name}`;
    await Deno.rename(`${d}/${name}`, `${target}.${Deno.pid}.tmp`);
    try {
      const e = await writeFileAtomic(target, new TextEncoder().encode("x")).catch((e) => e);
      assert(e instanceof BareGPTError, `${name}: ${e}`);
      assertMatch(e.message, /its temporary file .* is in the way .*; choose another path/);
      assert(!(await Deno.lstat(target).then(() => true, () => false)), `${target} written`);
    } finally {
      await Deno.rename(`${target}.${Deno.pid}.tmp`, `${d}/${name}`);
    }
  }
  assertEquals(await snapshotDir(d), before);
  // a leftover regular temporary file of this pid is replaced, the write succeeds
  await Deno.writeTextFile(`${d}/ok.${Deno.pid}.tmp`, "left by a killed process");
  await writeFileAtomic(`${d}/ok`, new TextEncoder().encode("new"));
  assertEquals(await Deno.readTextFile(`${d}/ok`), "new");
  assert(!(await Deno.lstat(`${d}/ok.${Deno.pid}.tmp`).then(() => true, () => false)));
});

Deno.test("outputs: no command writes over its own inputs, through links, checkpoints and locks", async () => {
  await using tmp = await tempDir("baregpt_outputs_inputs_");
  const d = tmp.path;
  const corpus = `${d}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  await Deno.symlink(corpus, `${d}/link-to-corpus`);
  await Deno.link(corpus, `${d}/hard-corpus`);
  await Deno.writeTextFile(`${d}/x.ckpt`, smallCorpus()); // a corpus named like a checkpoint
  await Deno.link(`${d}/x.ckpt`, `${d}/h.ckpt`); // <h>.ckpt is a hard link of x.ckpt
  await Deno.writeTextFile(`${d}/y.lock`, smallCorpus()); // a corpus named like a lock
  // weights: a trained model to fine-tune from and to inspect
  const weights = `${d}/w.safetensors`;
  const trained = await runCli(trainArgs(corpus, weights));
  assertEquals(trained.code, 0, trained.stderr);
  await Deno.symlink(weights, `${d}/link-to-weights`);
  await Deno.link(weights, `${d}/hard-weights`);
  const sameAs = (flag: string) => `is the file of ${flag}; choose another --out$`;
  const ofData = sameAs("--data"), ofInit = sameAs("--init"), ofWeights = sameAs("--weights");
  const cases: [string, string[], RegExp][] = [
    ["--out = --data (same path)", trainArgs(corpus, corpus, ["--force"]), RegExp(ofData)],
    [
      "--out = --data (another spelling)",
      trainArgs(corpus, `${d}/./corpus.txt`, ["--force"]),
      RegExp(ofData),
    ],
    ["--out a symlink to --data", trainArgs(corpus, `${d}/link-to-corpus`), RegExp(ofData)],
    [
      "--data a symlink to --out",
      trainArgs(`${d}/link-to-corpus`, corpus, ["--force"]),
      RegExp(ofData),
    ],
    [
      "--out a hard link of --data",
      trainArgs(corpus, `${d}/hard-corpus`, ["--force"]),
      RegExp(ofData),
    ],
    [
      "<out>.ckpt = --data",
      trainArgs(`${d}/x.ckpt`, `${d}/x`, ["--checkpoint-every", "1"]),
      /--out .*\/x would write its checkpoint .*\/x\.ckpt, which is the file of --data; choose another --out$/,
    ],
    [
      "<out>.ckpt = --data, with --resume",
      trainArgs(`${d}/x.ckpt`, `${d}/x`, ["--resume"]),
      /would write its checkpoint .*\/x\.ckpt, which is the file of --data/,
    ],
    [
      "<out>.ckpt a hard link of --data",
      trainArgs(`${d}/x.ckpt`, `${d}/h`),
      /would write its checkpoint .*\/h\.ckpt, which is the file of --data/,
    ],
    [
      "<out>.lock = --data",
      trainArgs(`${d}/y.lock`, `${d}/y`),
      /would write its lock file .*\/y\.lock, which is the file of --data/,
    ],
    [
      "--out = --init",
      ["train", "--data", corpus, "--out", weights, "--force", "--init", weights],
      RegExp(ofInit),
    ],
    [
      "--out a hard link of --init",
      ["train", "--data", corpus, "--out", `${d}/hard-weights`, "--force", "--init", weights],
      RegExp(ofInit),
    ],
    [
      "--out a symlink to --init",
      ["train", "--data", corpus, "--out", `${d}/link-to-weights`, "--init", weights],
      RegExp(ofInit),
    ],
    [
      "inspect --weights V --out V",
      inspectArgs(["--weights", weights, "--out", weights, "--force"]),
      RegExp(ofWeights),
    ],
    [
      "inspect --weights V --out V (no --force)",
      inspectArgs(["--weights", weights, "--out", weights]),
      RegExp(ofWeights),
    ],
    [
      "inspect --weights (a symlink to V) --out V",
      inspectArgs(["--weights", `${d}/link-to-weights`, "--out", weights, "--force"]),
      RegExp(ofWeights),
    ],
    [
      "inspect --weights V --out (a hard link of V)",
      inspectArgs(["--weights", weights, "--out", `${d}/hard-weights`, "--force"]),
      RegExp(ofWeights),
    ],
  ];
  await expectRefusals(d, cases);
  // the shipped weights, read when --weights is not given, are an input too
  const before = await snapshot(SHIPPED);
  assertUserError(
    await runCli(inspectArgs(["--out", SHIPPED, "--force"])),
    /--out .*shakespeare\.safetensors is the file of the shipped weights \(the default --weights\)/,
  );
  assertEquals(await snapshot(SHIPPED), before);
});

Deno.test("outputs: inspect --out over an existing file needs --force", async () => {
  await using tmp = await tempDir("baregpt_outputs_force_");
  const d = tmp.path;
  for (const name of ["a.svg", "b.txt"]) await Deno.writeTextFile(`${d}/${name}`, "keep me\n");
  await expectRefusals(d, [
    [
      "an existing SVG",
      inspectArgs(["--out", `${d}/a.svg`]),
      /a\.svg already exists; pass --force to overwrite it or choose another --out$/,
    ],
    [
      "an existing other file",
      inspectArgs(["--out", `${d}/b.txt`]),
      /b\.txt already exists; pass --force/,
    ],
  ]);
  const r = await runCli(inspectArgs(["--out", `${d}/a.svg`, "--force"]));
  assertEquals(r.code, 0, r.stderr);
  assertMatch(await Deno.readTextFile(`${d}/a.svg`), /^<svg/);
  assertEquals([...Deno.readDirSync(d)].map((e) => e.name).sort(), ["a.svg", "b.txt"]);
});

Deno.test("outputs: one writer per output: a second train with the same --out fails at once", async () => {
  await using tmp = await tempDir("baregpt_outputs_lock_");
  const d = tmp.path;
  const corpus = `${d}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  const out = `${d}/model.safetensors`;
  const long = (extra: string[] = []) => trainArgs(corpus, out, ["--steps", "100000", ...extra]);
  const first = spawnCli(long(["--checkpoint-every", "5"]));
  try {
    await first.waitFor(/step 1\//);
    const lock = await Deno.readTextFile(`${out}.lock`);
    assertMatch(lock, new RegExp(`^baregpt lock: pid ${first.child.pid}, started \\S+\\n$`));
    const busy = new RegExp(
      `^error: another run \\(pid ${first.child.pid}\\) is writing .*model\\.safetensors .*; wait for it or choose another --out$`,
    );
    const before = await snapshot(`${out}.lock`);
    const cases: [string[], string][] = [
      [trainArgs(corpus, out), "plain"],
      [trainArgs(corpus, out, ["--force"]), "--force"],
      [trainArgs(corpus, out, ["--resume"]), "--resume"],
      [trainArgs(corpus, out, ["--force", "--checkpoint-every", "1"]), "--force, checkpoints"],
    ];
    for (const [args, what] of cases) {
      const t0 = performance.now();
      const r = await runCli(args);
      try {
        assertUserError(r, busy);
      } catch (e) {
        throw new Error(`${what}: ${(e as Error).message}`);
      }
      // at once: refused before reading the corpus or building a model (a deno start is ~0.1 s)
      assert(performance.now() - t0 < 10_000, `${what} took ${performance.now() - t0} ms`);
    }
    assertEquals(await snapshot(`${out}.lock`), before, "the lock of the first run is kept");
    assert(!(await Deno.lstat(out).then(() => true, () => false)), "nothing written at --out");
  } finally {
    first.child.kill("SIGINT");
  }
  const ended = await first.done();
  assertEquals(ended.code, 130, ended.stderr);
  assert(!(await Deno.lstat(`${out}.lock`).then(() => true, () => false)), "lock removed");

  // a run killed with SIGKILL leaves its lock file, but the operating system dropped its lock:
  // the next run (plain, --resume or --force) takes it over with a note
  const killed = spawnCli(long(["--resume", "--checkpoint-every", "5"]));
  await killed.waitFor(/step \d+\//);
  killed.child.kill("SIGKILL");
  await killed.done();
  assertMatch(await Deno.readTextFile(`${out}.lock`), new RegExp(`pid ${killed.child.pid},`));
  const plain = await runCli(
    trainArgs(corpus, out, ["--force", "--steps", "3", "--checkpoint-every", "1"]),
  );
  assertNoStackTrace(plain.stderr);
  assertEquals(plain.code, 0, plain.stderr);
  assertMatch(
    plain.stderr,
    new RegExp(
      `^note: took over the lock .*\\.lock of pid ${killed.child.pid}, no longer running$`,
      "m",
    ),
  );
  assertEquals([...Deno.readDirSync(d)].map((e) => e.name).sort(), [
    "corpus.txt",
    "model.safetensors",
  ]);
});

Deno.test("outputs: two trains started together with the same --out: exactly one writes it", async () => {
  await using tmp = await tempDir("baregpt_outputs_race_");
  const d = tmp.path;
  const corpus = `${d}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  for (const round of [1, 2]) {
    const out = `${d}/race-${round}.safetensors`;
    const args = trainArgs(corpus, out, ["--steps", "400"]);
    const [a, b] = await Promise.all([runCli(args), runCli(args)]);
    const codes = [a.code, b.code].sort();
    assertEquals(codes, [0, 2], `round ${round}: ${a.stderr}\n---\n${b.stderr}`);
    const loser = a.code === 2 ? a : b;
    assertUserError(
      loser,
      // refused by the lock (held, or taken and released while this one was starting); or,
      // where one run was slow to start, by the overwrite rule
      /^error: (another run (.* )?(is writing|wrote) .*race-\d\.safetensors|.*race-\d\.safetensors already exists; pass --force)/,
    );
  }
  assertEquals([...Deno.readDirSync(d)].map((e) => e.name).sort(), [
    "corpus.txt",
    "race-1.safetensors",
    "race-2.safetensors",
  ]);
});

Deno.test("outputs: a lock file that is not BareGPT's is refused, not removed", async () => {
  await using tmp = await tempDir("baregpt_outputs_foreign_");
  const d = tmp.path;
  const corpus = `${d}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  await Deno.writeTextFile(`${d}/m.lock`, "my own notes, not a lock\n");
  await expectRefusals(d, [
    [
      "a foreign m.lock",
      trainArgs(corpus, `${d}/m`, ["--force"]),
      /m\.lock exists and is not a lock file of BareGPT; remove it or choose another --out$/,
    ],
  ]);
});
