// Failures keep the last good state, and bad input gets a clear answer (DESIGN.md "Reliability
// and safety", issue 6 items 2 and 3). Every bad input below must give one line on stderr starting
// with `error:`, exit code 2, no stack trace, and leave every existing file as it was.
// BAREGPT_PRINT_ERRORS=1 prints each input with its message (the list in the issue's closing note).

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { writeFileAtomic } from "../cli.ts";
import { BareGPTError } from "../lib/errors.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import { decodeSafetensors } from "../lib/safetensors.ts";
import {
  assertNoStackTrace,
  assertSameBytes,
  assertUserError,
  CLI,
  exists,
  isRoot,
  pooled,
  runCli,
  type RunResult,
  smallCorpus,
  tempDir,
  TINY,
} from "./cli_run.ts";

const PRINT = Deno.env.get("BAREGPT_PRINT_ERRORS") === "1";
const utf8 = new TextEncoder();

/** A folder with a corpus, a trained tiny model and a file standing for a good --out. */
async function fixtures() {
  const tmp = await tempDir("baregpt_robust_");
  const dir = tmp.path;
  const corpus = `${dir}/corpus.txt`;
  await Deno.writeTextFile(corpus, smallCorpus());
  const weights = `${dir}/good.safetensors`;
  const r = await runCli([
    "train",
    "--data",
    corpus,
    "--out",
    weights,
    "--steps",
    "2",
    "--eval-every",
    "0",
    "--threads",
    "1",
    ...TINY,
  ]);
  assertEquals(r.code, 0, r.stderr);
  const keep = `${dir}/keep.safetensors`; // an existing output that no failure may touch
  await Deno.copyFile(weights, keep);
  const keepBytes = await Deno.readFile(keep);
  return {
    dir,
    corpus,
    weights,
    keep,
    keepBytes,
    [Symbol.asyncDispose]: () => tmp[Symbol.asyncDispose](),
  };
}

/** Runs every case (at most three at a time) and checks it is a clean user error. */
async function expectUserErrors(cases: [string, string[], RegExp][]): Promise<void> {
  const results = await pooled(cases.map(([, args]) => () => runCli(args)));
  const failures: string[] = [];
  results.forEach((r: RunResult, i) => {
    const [what, , pattern] = cases[i];
    if (PRINT) console.log(`${what.padEnd(44)} exit ${r.code}  ${r.stderr.trimEnd()}`);
    try {
      assertUserError(r, pattern);
    } catch (e) {
      failures.push(`${what}: ${(e as Error).message}`);
    }
  });
  assertEquals(failures, []);
}

// ---------------------------------------------------------------------------------------------
// Editing a safetensors file

function parse(bytes: Uint8Array) {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return { header, data: bytes.slice(8 + n) };
}

function build(headerText: string, data: Uint8Array): Uint8Array {
  const json = utf8.encode(headerText);
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + data.length).fill(0x20, 8, 8 + padded);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.set(data, 8 + padded);
  return out;
}

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;

/** The file with its header changed by `edit` (data unchanged). */
function edited(bytes: Uint8Array, edit: (h: Header) => void): Uint8Array {
  const { header, data } = parse(bytes);
  edit(header);
  return build(JSON.stringify(header), data);
}

/** The file without tensor `name` (its data cut out, later offsets moved down). */
function withoutTensor(bytes: Uint8Array, name: string): Uint8Array {
  const { header, data } = parse(bytes);
  const [b, e] = header[name].data_offsets;
  delete header[name];
  for (const [k, t] of Object.entries(header as Header)) {
    if (k === "__metadata__") continue;
    if (t.data_offsets[0] >= e) {
      t.data_offsets = [t.data_offsets[0] - (e - b), t.data_offsets[1] - (e - b)];
    }
  }
  const cut = new Uint8Array(data.length - (e - b));
  cut.set(data.subarray(0, b));
  cut.set(data.subarray(e), b);
  return build(JSON.stringify(header), cut);
}

function withHeaderLength(bytes: Uint8Array, n: bigint): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setBigUint64(0, n, true);
  return out;
}

// ---------------------------------------------------------------------------------------------

Deno.test("bad input: corpus files, each a one-line error with exit 2 and --out untouched", async () => {
  await using f = await fixtures();
  const d = f.dir;
  await Deno.writeFile(`${d}/empty.txt`, new Uint8Array(0));
  await Deno.writeFile(`${d}/nul.txt`, utf8.encode("ROMEO:\nlove\0night\n".repeat(20)));
  await Deno.writeFile(
    `${d}/latin1.txt`,
    new Uint8Array([...utf8.encode("ROMEO: caf"), 0xe9, ...utf8.encode(" night\n".repeat(20))]),
  );
  await Deno.writeTextFile(`${d}/short.txt`, "ROMEO: hi");
  // more distinct characters than a vocabulary holds: 65,537 code points from U+10000
  const many = Array.from({ length: 65537 }, (_, i) => String.fromCodePoint(0x10000 + i)).join("");
  await Deno.writeTextFile(`${d}/many.txt`, many);
  await Deno.mkdir(`${d}/folder.txt`);
  const train = (data: string, extra: string[] = []) => [
    "train",
    "--data",
    data,
    "--out",
    f.keep,
    "--force",
    "--steps",
    "2",
    "--threads",
    "1",
    ...TINY,
    ...extra,
  ];
  const devZero: [string, string[], RegExp][] = await exists("/dev/zero")
    ? [
      [
        "corpus /dev/zero (endless)",
        train("/dev/zero"),
        /corpus \/dev\/zero is larger than 500 MiB/,
      ],
      [
        "weights /dev/zero (endless)",
        ["sample", "--weights", "/dev/zero"],
        /weights file \/dev\/zero is larger than 256 MiB, the most BareGPT reads from a pipe/,
      ],
    ]
    : [];
  const corpusBefore = await Deno.readFile(f.corpus);
  await expectUserErrors([
    ...devZero,
    ["corpus missing", train(`${d}/missing.txt`), /corpus .*missing\.txt does not exist/],
    ["corpus empty", train(`${d}/empty.txt`), /corpus .*empty\.txt is empty/],
    ["corpus with NUL bytes", train(`${d}/nul.txt`), /nul\.txt holds NUL bytes/],
    [
      "corpus not UTF-8 (says where, and what to do)",
      train(`${d}/latin1.txt`),
      /latin1\.txt is not valid UTF-8: byte 0xe9 at byte offset 10 \(line 1\) does not begin a valid UTF-8 character; convert the file to UTF-8/,
    ],
    ["corpus is a folder", train(`${d}/folder.txt`), /folder\.txt is a directory/],
    [
      "corpus shorter than block_size + 1",
      train(`${d}/short.txt`),
      /has \d+ characters, fewer than --block \+ 1 = 17/,
    ],
    [
      "corpus shorter than block_size + 1 (no eval)",
      train(`${d}/short.txt`, ["--eval-every", "0"]),
      /the training split \(the first 90% of the text\) has \d+ characters, fewer than --block \+ 1 = 17/,
    ],
    [
      "corpus with 65,537 distinct characters",
      train(`${d}/many.txt`),
      /65537 distinct characters, more than the 65536/,
    ],
    ["--out is the corpus (with --force)", [
      "train",
      "--data",
      f.corpus,
      "--out",
      f.corpus,
      "--force",
      ...TINY,
    ], /--out .*corpus\.txt is the file of --data; choose another --out/],
    [
      "eval text with characters outside the vocab (all dropped: too little left)",
      ["eval", "--weights", f.weights, "--data", `${d}/many.txt`],
      /many\.txt: the text has \d+ characters outside the model's vocabulary and only 0 in it, fewer than --block \+ 1/,
    ],
  ]);
  assertSameBytes(await Deno.readFile(f.keep), f.keepBytes, "--out");
  assertSameBytes(await Deno.readFile(f.corpus), corpusBefore, "the corpus");
});

Deno.test("a corpus cut mid-character (head -c) trains without its incomplete last character", async () => {
  await using tmp = await tempDir("baregpt_cut_");
  const whole = utf8.encode(smallCorpus() + "\nROMEO: café");
  const cut = `${tmp.path}/cut.txt`;
  await Deno.writeFile(cut, whole.subarray(0, whole.length - 1)); // half of "é"
  const out = `${tmp.path}/cut.safetensors`;
  const r = await runCli([
    "train",
    "--data",
    cut,
    "--out",
    out,
    "--steps",
    "1",
    "--eval-every",
    "0",
    "--threads",
    "1",
    ...TINY,
  ]);
  assertEquals(r.code, 0, r.stderr);
  const { metadata } = decodeSafetensors(await Deno.readFile(out));
  const vocab: string[] = JSON.parse(metadata.vocab);
  assert(vocab.includes("f") && !vocab.includes("é") && !vocab.includes("\ufffd"), metadata.vocab);
  assertMatch(r.stderr, /note: dropped an incomplete final character/);
});

Deno.test("bad input: corrupt and hostile weights files, each a one-line error with exit 2", async () => {
  await using f = await fixtures();
  const d = f.dir;
  const good = await Deno.readFile(f.weights);
  const { header } = parse(good);
  const cfg = JSON.parse(header.__metadata__.config);
  const V = cfg.vocab_size, C = cfg.d_model;
  const files: Record<string, Uint8Array> = {
    "truncated.st": good.subarray(0, good.length - 64),
    "cut-in-header.st": good.subarray(0, 40),
    "too-short.st": good.subarray(0, 5),
    "beyond.st": withHeaderLength(good, BigInt(good.length)),
    "huge.st": withHeaderLength(good, 1n << 62n),
    "json.st": build('{"wte.weight": {"dtype": "F32", ', parse(good).data),
    "dtype.st": edited(good, (h) => (h["wte.weight"].dtype = "F16")),
    "shape.st": edited(good, (h) => (h["wte.weight"].shape = [C, V])),
    "config.st": edited(good, (h) => {
      const meta = (h as unknown as Record<string, Record<string, string>>).__metadata__;
      meta.config = JSON.stringify({ ...cfg, d_model: 2 * C, n_heads: 2 });
    }),
    "range.st": edited(good, (h) => {
      const [b, e] = h["ln_f.bias"].data_offsets;
      h["ln_f.bias"].data_offsets = [b + 1_000_000, e + 1_000_000];
    }),
    "overlap.st": edited(good, (h) => {
      h["h.0.ln_1.bias"].data_offsets = h["h.0.ln_1.weight"].data_offsets;
    }),
    "missing-tensor.st": withoutTensor(good, "ln_f.bias"),
    "nan.st": (() => {
      const bytes = good.slice();
      const at = bytes.length - parse(good).data.length + header["wte.weight"].data_offsets[0];
      new DataView(bytes.buffer).setFloat32(at + 12, NaN, true);
      return bytes;
    })(),
    "empty.st": new Uint8Array(0),
  };
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${d}/${name}`, bytes);
  await Deno.mkdir(`${d}/folder.st`);
  const sample = (name: string) => ["sample", "--weights", `${d}/${name}`, "--seed", "1"];
  const cases: [string, string[], RegExp][] = [
    ["weights missing", sample("missing.st"), /weights file .*missing\.st does not exist/],
    ["weights is a folder", sample("folder.st"), /folder\.st is a directory/],
    ["weights empty", sample("empty.st"), /empty\.st: weights file is too short: 0 bytes/],
    ["weights under 8 bytes", sample("too-short.st"), /weights file is too short: 5 bytes/],
    [
      "weights truncated (data)",
      sample("truncated.st"),
      /truncated\.st: .*run past the end of the \d+-byte data section; the file is truncated/,
    ],
    [
      "weights truncated (header)",
      sample("cut-in-header.st"),
      /weights file is truncated: header claims \d+ bytes but only 32 follow/,
    ],
    [
      "header length beyond the file",
      sample("beyond.st"),
      /weights file is truncated: header claims \d+ bytes/,
    ],
    [
      "header length absurdly large (2^62)",
      sample("huge.st"),
      /weights header length 4611686018427387904 is larger than the limit/,
    ],
    ["header not valid JSON", sample("json.st"), /weights header is not valid JSON/],
    ["unknown dtype", sample("dtype.st"), /"wte\.weight" has dtype "F16" but only F32/],
    [
      "shape contradicts the config",
      sample("shape.st"),
      new RegExp(
        `tensor wte\\.weight has shape \\[${C},${V}\\] but the config needs \\[${V},${C}\\]`,
      ),
    ],
    [
      "config contradicts the tensors",
      sample("config.st"),
      /tensor wte\.weight has shape \[\d+,16\] but the config needs \[\d+,32\]/,
    ],
    ["offsets out of range", sample("range.st"), /"ln_f\.bias" data_offsets .* run past the end/],
    ["offsets overlapping", sample("overlap.st"), /overlap in the data section/],
    ["tensor missing", sample("missing-tensor.st"), /weights file lacks tensor ln_f\.bias/],
    ["NaN value", sample("nan.st"), /"wte\.weight" contains NaN at index 3/],
    [
      "info on a corrupt file",
      ["info", "--weights", `${d}/huge.st`],
      /larger than the limit/,
    ],
    [
      "eval on a corrupt file",
      ["eval", "--weights", `${d}/overlap.st`, "--data", f.corpus],
      /overlap in the data section/,
    ],
  ];
  if (isRoot()) {
    console.log("skipped: an unreadable weights file (running as root, file modes do not apply)");
  } else {
    await Deno.copyFile(f.weights, `${d}/unreadable.st`);
    await Deno.chmod(`${d}/unreadable.st`, 0o000);
    cases.push(["weights unreadable", sample("unreadable.st"), /is not readable \(permission/]);
  }
  await expectUserErrors(cases);
});

Deno.test("bad input: flags out of range, unknown flags, prompts outside the vocab", async () => {
  await using f = await fixtures();
  const train = (...extra: string[]) => [
    "train",
    "--data",
    f.corpus,
    "--out",
    f.keep,
    "--force",
    "--threads",
    "1",
    "--steps",
    "2",
    ...TINY,
    ...extra,
  ];
  const sample = (
    ...extra: string[]
  ) => ["sample", "--weights", f.weights, "--seed", "1", ...extra];
  const range = (flag: string, value: string) => new RegExp(`--${flag} "${value}" is out of range`);
  const cases: [string, string[], RegExp][] = [
    ["--steps 0", train("--steps", "0"), range("steps", "0")],
    ["--steps 1.5", train("--steps", "1.5"), /--steps "1\.5" is not an integer/],
    ["--steps abc", train("--steps", "abc"), /--steps "abc" is not a number/],
    ["--batch 0", train("--batch", "0"), range("batch", "0")],
    ["--batch 100000", train("--batch", "100000"), range("batch", "100000")],
    ["--block 0", train("--block", "0"), range("block", "0")],
    ["--block 100000", train("--block", "100000"), range("block", "100000")],
    ["--d-model 0", train("--d-model", "0"), range("d-model", "0")],
    ["--layers 0", train("--layers", "0"), range("layers", "0")],
    ["--heads 0", train("--heads", "0"), range("heads", "0")],
    ["--heads 3 (d_model 16)", train("--heads", "3"), /--d-model 16 is not divisible by --heads 3/],
    ["--threads 0", train("--threads", "0"), range("threads", "0")],
    ["--threads 1000", train("--threads", "1000"), range("threads", "1000")],
    ["--lr -1", train("--lr", "-1"), range("lr", "-1")],
    ["--lr NaN", train("--lr", "NaN"), /--lr "NaN" is not a number/],
    ["--warmup -5", train("--warmup", "-5"), range("warmup", "-5")],
    ["--clip -1", train("--clip", "-1"), range("clip", "-1")],
    ["--weight-decay 11", train("--weight-decay", "11"), range("weight-decay", "11")],
    ["--beta1 1", train("--beta1", "1"), range("beta1", "1")],
    ["--beta2 -0.5", train("--beta2", "-0.5"), range("beta2", "-0.5")],
    ["--seed -1", train("--seed", "-1"), range("seed", "-1")],
    ["--eval-every -1", train("--eval-every", "-1"), range("eval-every", "-1")],
    [
      "--checkpoint-every 2.5",
      train("--checkpoint-every", "2.5"),
      /--checkpoint-every "2\.5" is not an integer/,
    ],
    ["--kernels gpu", train("--kernels", "gpu"), /--kernels "gpu" is not a kernel tier/],
    ["--init with --d-model", train("--init", f.weights), /--init takes the model's shape/],
    [
      "model too large for the kernels",
      train(
        "--d-model",
        "8192",
        "--layers",
        "256",
        "--heads",
        "2",
        "--block",
        "4096",
        "--kernels",
        "simd",
      ),
      /needs about [\d.]+ GiB for its weights and gradients, more than the 4 GiB/,
    ],
    ["train --bogus", train("--bogus"), /unknown flag --bogus for train/],
    ["train stray argument", train("extra"), /unexpected argument "extra" for train/],
    ["train --data without value", ["train", "--out", f.keep, "--data"], /--data needs a value/],
    ["train without --data", ["train", "--out", f.keep], /train needs --data/],
    ["--temperature -1", sample("--temperature", "-1"), range("temperature", "-1")],
    ["--temperature 1000", sample("--temperature", "1000"), range("temperature", "1000")],
    ["--top-k -1", sample("--top-k", "-1"), range("top-k", "-1")],
    ["--top-k 100000", sample("--top-k", "100000"), range("top-k", "100000")],
    ["--top-p 0", sample("--top-p", "0"), /--top-p 0 is out of range/],
    ["--top-p 1.5", sample("--top-p", "1.5"), range("top-p", "1.5")],
    ["--tokens -3", sample("--tokens", "-3"), range("tokens", "-3")],
    ["--tokens 1e10", sample("--tokens", "1e10"), range("tokens", "1e10")],
    ["sample --seed 2^32", sample("--seed", "4294967296"), range("seed", "4294967296")],
    ["sample --frob=1", sample("--frob=1"), /unknown flag --frob for sample/],
    [
      "eval --split test",
      ["eval", "--weights", f.weights, "--data", f.corpus, "--split", "test"],
      /--split "test" is not a split/,
    ],
    ["unknown command", ["frobnicate"], /unknown command "frobnicate"/],
    [
      "prompt outside the vocab",
      sample("--prompt", "ROMEO€✓"),
      /the prompt has 2 characters outside the model's vocabulary: "€", "✓"/,
    ],
  ];
  await expectUserErrors(cases);
  assertSameBytes(await Deno.readFile(f.keep), f.keepBytes, "--out");
});

Deno.test("bad input: `sample | head -c 100` ends quietly", async () => {
  await using f = await fixtures();
  const deno = Deno.execPath();
  const script =
    `"${deno}" run --quiet --allow-read="${f.weights}" "${CLI}" sample --weights "${f.weights}" ` +
    `--tokens 1000000 --seed 1 | head -c 100; echo " status=\${PIPESTATUS[0]}"`;
  const out = await new Deno.Command("bash", {
    args: ["-c", `set +o pipefail; ${script}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0);
  assertEquals(stderr, "", "nothing on stderr when the reader goes away");
  assertMatch(stdout, / status=0\n$/); // the CLI itself exits 0
  assertEquals(utf8.encode(stdout.replace(/ status=\d+\n$/, "")).length, 100);
});

// ---------------------------------------------------------------------------------------------
// Failures keep the last good state

Deno.test("NaN loss: training stops with exit 1; the last checkpoint and the existing --out are kept", async () => {
  await using f = await fixtures();
  const ckpt = `${f.keep}.ckpt`;
  // lr 10 with weight decay 10 multiplies the 2-D weights by -99 per step: overflow in a few steps
  const args = [
    "train",
    "--data",
    f.corpus,
    "--out",
    f.keep,
    "--force",
    "--steps",
    "1000",
    "--lr",
    "10",
    "--weight-decay",
    "10",
    "--warmup",
    "0",
    "--checkpoint-every",
    "1",
    "--eval-every",
    "0",
    "--threads",
    "1",
    ...TINY,
  ];
  const diverged =
    /^error: (the loss became (NaN|-?Infinity) at step (\d+)|the model or optimizer state holds NaN or Inf at step (\d+))/;
  const first = await runCli(args);
  assertNoStackTrace(first.stderr);
  assertEquals(first.code, 1, first.stderr);
  const lines = first.stderr.trimEnd().split("\n");
  assertMatch(lines.at(-1)!, diverged);
  assertEquals(lines.filter((l) => l.startsWith("error:")).length, 1);
  assertSameBytes(await Deno.readFile(f.keep), f.keepBytes, "--out after NaN");
  // the checkpoint on disk is the last good one: whole, finite, from before the failure
  const saved = await Deno.readFile(ckpt);
  const c = Checkpoint.decode(saved); // decoding rejects NaN and Inf
  const m = lines.at(-1)!.match(diverged)!;
  const failedAt = Number(m[3] ?? m[4]);
  assert(c.step >= 1 && c.step < failedAt, `checkpoint step ${c.step}, failure at ${failedAt}`);

  // resuming it fails the same way and leaves both files exactly as they were
  const again = await runCli([...args.filter((a) => a !== "--force"), "--resume"]);
  assertEquals(again.code, 1, again.stderr);
  assertMatch(again.stderr, /resumed from/);
  assertMatch(again.stderr.trimEnd().split("\n").at(-1)!, diverged);
  assertSameBytes(await Deno.readFile(ckpt), saved, "checkpoint after a second NaN");
  assertSameBytes(await Deno.readFile(f.keep), f.keepBytes, "--out after a second NaN");
});

Deno.test("failed writes: a missing or unwritable folder is refused before training, nothing written", async () => {
  await using f = await fixtures();
  const d = f.dir;
  const train = (out: string, ...extra: string[]) => [
    "train",
    "--data",
    f.corpus,
    "--out",
    out,
    "--steps",
    "2",
    "--threads",
    "1",
    ...TINY,
    ...extra,
  ];
  // a missing folder is made (issue 13): the run trains into it
  const made = await runCli(train(`${d}/missing/deeper/model.safetensors`));
  assertEquals(made.code, 0, made.stderr);
  assertMatch(made.stderr, /created folder .*missing\/deeper/);
  assert((await Deno.stat(`${d}/missing/deeper/model.safetensors`)).isFile);
  const cases: [string, string[], RegExp][] = [
    [
      "--out under a file",
      train(`${d}/corpus.txt/model.safetensors`),
      /cannot write .*corpus\.txt\/model\.safetensors: a part of the path is a file, not a folder/,
    ],
  ];
  await Deno.mkdir(`${d}/folder.safetensors`);
  cases.push([
    "--out is a folder (with --force)",
    train(`${d}/folder.safetensors`, "--force"),
    /--out .*folder\.safetensors is a folder; give the path of a file/,
  ]);
  if (isRoot()) {
    console.log("skipped: a read-only --out folder (running as root, file modes do not apply)");
  } else {
    await Deno.mkdir(`${d}/ro`);
    await Deno.copyFile(f.keep, `${d}/ro/keep.safetensors`);
    await Deno.chmod(`${d}/ro`, 0o555);
    cases.push([
      "--out in a read-only folder",
      train(`${d}/ro/keep.safetensors`, "--force"),
      /cannot write .*ro\/keep\.safetensors: permission denied/,
    ]);
  }
  await expectUserErrors(cases);
  if (!isRoot()) {
    assertSameBytes(await Deno.readFile(`${d}/ro/keep.safetensors`), f.keepBytes, "read-only");
    assertEquals([...Deno.readDirSync(`${d}/ro`)].length, 1);
    await Deno.chmod(`${d}/ro`, 0o755);
  }
});

Deno.test("failed writes: writeFileAtomic never leaves a truncated file where a good one was", async () => {
  await using tmp = await tempDir("baregpt_atomic_");
  const dir = tmp.path;
  const path = `${dir}/model.safetensors`;
  const good = utf8.encode("good weights ".repeat(1000));
  await Deno.writeFile(path, good);
  const listing = () => [...Deno.readDirSync(dir)].map((e) => e.name).sort();

  // the temporary file cannot be created (a folder is in its way): the good file stays
  await Deno.mkdir(`${path}.${Deno.pid}.tmp`);
  await Deno.writeTextFile(`${path}.${Deno.pid}.tmp/x`, "in the way");
  const e1 = await writeFileAtomic(path, utf8.encode("new")).catch((e) => e);
  assert(e1 instanceof BareGPTError && e1.exitCode === 1, String(e1));
  assertMatch(e1.message, /^cannot write .*model\.safetensors: .*; choose another path/);
  assertSameBytes(await Deno.readFile(path), good, "after a failed write");
  await Deno.remove(`${path}.${Deno.pid}.tmp`, { recursive: true });

  // the rename cannot happen (the target is a non-empty folder): no temporary file is left
  const folder = `${dir}/folder.safetensors`;
  await Deno.mkdir(folder);
  await Deno.writeTextFile(`${folder}/x`, "keep");
  const e2 = await writeFileAtomic(folder, good).catch((e) => e);
  assert(e2 instanceof BareGPTError, String(e2));
  assertEquals(listing(), ["folder.safetensors", "model.safetensors"]);
  assertEquals(await Deno.readTextFile(`${folder}/x`), "keep");

  // a missing folder
  const e3 = await writeFileAtomic(`${dir}/nope/x.safetensors`, good).catch((e) => e);
  assertMatch((e3 as Error).message, /its folder does not exist/);

  // success replaces the file whole and leaves nothing else
  await writeFileAtomic(path, utf8.encode("new weights"));
  assertEquals(await Deno.readTextFile(path), "new weights");
  assertEquals(listing(), ["folder.safetensors", "model.safetensors"]);
});
