// Hostile inputs, second pass (issue 14, items 6 to 8): a stranger's file cannot drive the
// terminal, finite weights that overflow are an error, and the environment's errors (symlink
// loops, a full disk, config values of the wrong type) are named for what they are.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import {
  createModel,
  evaluate,
  generate,
  inspect,
  inspectStream,
  loadWeights,
  nextCharDistribution,
  saveWeights,
  WeightsError,
} from "../mod.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";
import { escapeControls } from "../cli/output.ts";
import {
  assertNoStackTrace,
  assertUserError,
  CLI,
  denoRunArgs,
  runCli,
  type RunResult,
  tempDir,
} from "./cli_run.ts";

const TEXT = "the cat sat on the mat. a bat and a rat sat on a hat. ".repeat(8);
const SMALL = { blockSize: 16, dModel: 16, nHeads: 2, nLayers: 1, seed: 3 };

/** Control characters a terminal acts on (C0 but newline, DEL, C1, U+2028, U+2029). */
// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]/;

/** The bytes of a small model with `facts` (the trained-or-not state does not matter here). */
function modelBytes(facts: Record<string, string> = {}, vocab = TEXT): Uint8Array {
  return saveWeights(createModel(vocab, SMALL), facts);
}

/** `bytes` with its metadata changed by `edit` and every tensor's data by `data` (if given). */
function rewrite(
  bytes: Uint8Array,
  edit: (metadata: Record<string, string>) => void,
  data?: (name: string, values: Float32Array) => void,
): Uint8Array {
  const { tensors, metadata } = decodeSafetensors(bytes);
  edit(metadata);
  const entries = [...tensors].map(([name, t]) => {
    const copy = Float32Array.from(t.data);
    data?.(name, copy);
    return { name, shape: t.shape, data: copy };
  });
  return encodeSafetensors(entries, metadata);
}

/** The config metadata of `bytes` with one key set to `value` (undefined: removed). */
function withConfig(bytes: Uint8Array, key: string, value: unknown): Uint8Array {
  return rewrite(bytes, (m) => {
    const c = JSON.parse(m.config);
    if (value === undefined) delete c[key];
    else c[key] = value;
    m.config = JSON.stringify(c);
  });
}

/** A stderr of exactly one `error:` line matching pattern, exit code `code`. */
function assertOneError(r: RunResult, code: number, pattern: RegExp): void {
  assertNoStackTrace(r.stderr);
  assertEquals(r.code, code, `exit code ${code} expected: ${r.stderr}`);
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, `one line expected, got: ${r.stderr}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
  assert(!RAW_CONTROL.test(r.stderr), `raw control characters on stderr: ${r.stderr}`);
}

// ---------------------------------------------------------------------------------------------
// 6. A stranger's file cannot drive your terminal

Deno.test("escapeControls: C0, DEL, C1, U+2028/9 escaped; printable Unicode and `keep` kept", () => {
  const cases: [string, string, string?][] = [
    ["plain text, café, 日本語, ✓ 🎉", "plain text, café, 日本語, ✓ 🎉"],
    ["\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"],
    ["\x1b]52;c;aGVsbG8=\x07", "\\x1b]52;c;aGVsbG8=\\x07"],
    ["ok\nerror: forged", "ok\\nerror: forged"],
    ["a\rb\tc\0d", "a\\rb\\tc\\x00d"],
    ["\x7f\x80\x9b\x9f\xa0", "\\x7f\\x80\\x9b\\x9f\xa0"],
    ["x\u2028y\u2029z", "x\\u2028y\\u2029z"],
    ["keep\nthis\tand \x1b that", "keep\nthis\tand \\x1b that", "\n\t"],
  ];
  for (const [input, expected, keep] of cases) {
    assertEquals(escapeControls(input, keep), expected, JSON.stringify(input));
  }
});

Deno.test("info: facts and vocabulary from a file are escaped; nothing can forge a line", async () => {
  await using tmp = await tempDir("baregpt_hostile_info_");
  const hostile: [string, Record<string, string>, RegExp][] = [
    ["ANSI colours", { note: "\x1b[31mred\x1b[0m" }, /^note\s+\\x1b\[31mred\\x1b\[0m$/m],
    [
      "OSC 52 (clipboard)",
      { note: "\x1b]52;c;aGVsbG8=\x07" },
      /^note\s+\\x1b\]52;c;aGVsbG8=\\x07$/m,
    ],
    ["a forged error line", { note: "fine\nerror: forged" }, /^note\s+fine\\nerror: forged$/m],
    ["CR over the line", { note: "ok\rerror: forged" }, /^note\s+ok\\rerror: forged$/m],
    ["C1 CSI and DEL", { note: "\x9b2J\x7f" }, /^note\s+\\x9b2J\\x7f$/m],
    ["U+2028 and U+2029", { note: "a\u2028b\u2029c" }, /^note\s+a\\u2028b\\u2029c$/m],
    ["a hostile key", { "k\x1b[2J": "v" }, /^k\\x1b\[2J\s+v$/m],
    ["printable Unicode", { note: "café ✓ 日本語 🎉" }, /^note\s+café ✓ 日本語 🎉$/m],
  ];
  for (const [what, facts, expected] of hostile) {
    const path = `${tmp.path}/info.safetensors`;
    await Deno.writeFile(path, modelBytes(facts));
    const r = await runCli(["info", "--weights", path]);
    assertEquals(r.code, 0, `${what}: ${r.stderr}`);
    assert(!RAW_CONTROL.test(r.stdout), `${what}: raw control characters in ${r.stdout}`);
    assert(!/^error:/m.test(r.stdout), `${what}: a forged error line in ${r.stdout}`);
    assertEquals(r.stdout.trimEnd().split("\n").length, 4 + Object.keys(facts).length, what);
    assertMatch(r.stdout, expected, what);
  }
  // the vocabulary: JSON escapes C0; DEL, C1 and U+2028 are escaped as well
  const path = `${tmp.path}/vocab.safetensors`;
  await Deno.writeFile(path, modelBytes({}, "ab\x1b\x7f\x9b\u2028"));
  const r = await runCli(["info", "--weights", path]);
  assertEquals(r.code, 0, r.stderr);
  assert(!RAW_CONTROL.test(r.stdout), r.stdout);
  assertMatch(r.stdout, /^vocab\s+"\\u001bab\\x7f\\x9b\\u2028"$/m);
});

Deno.test("sample: a vocabulary with control characters reaches a pipe byte for byte", async () => {
  await using tmp = await tempDir("baregpt_hostile_sample_");
  const vocabs = ["a\x1b", "b\x07\x1b]", "c\x9b\x7f", "d\u2028\x00"];
  for (const vocab of vocabs) {
    const bytes = modelBytes({}, vocab);
    const path = `${tmp.path}/v.safetensors`;
    await Deno.writeFile(path, bytes);
    const args = ["sample", "--weights", path, "--tokens", "60", "--seed", "5", "--prompt", ""];
    const r = await runCli(args);
    assertEquals(r.code, 0, r.stderr);
    const expected = (await Array.fromAsync(
      generate(await loadWeights(bytes), { prompt: "", tokens: 60, seed: 5 }),
    )).join("") + "\n";
    assertEquals(r.stdout, expected, JSON.stringify(vocab));
    assert(RAW_CONTROL.test(r.stdout), `the model drew no control character from ${vocab}`);
  }
});

Deno.test("errors that quote a file are escaped: a tensor name with ANSI escapes", async () => {
  await using tmp = await tempDir("baregpt_hostile_err_");
  const good = decodeSafetensors(modelBytes());
  for (const name of ["x\x1b[2Jy", "evil\nerror: forged", "osc\x1b]52;c;aGk=\x07", "c1\x9b"]) {
    const entries = [...good.tensors].map(([n, t]) => ({ name: n, shape: t.shape, data: t.data }));
    entries.push({ name, shape: [1], data: new Float32Array(1) });
    const path = `${tmp.path}/t.safetensors`;
    await Deno.writeFile(path, encodeSafetensors(entries, good.metadata));
    const r = await runCli(["info", "--weights", path]);
    assertOneError(r, 2, /unexpected tensor/);
    assertEquals(r.stdout, "");
  }
});

// ---------------------------------------------------------------------------------------------
// 7. Finite but overflowing weights are an error

/** Variants of weights that are finite in the file but overflow in the forward pass. */
function overflowing(): [string, Uint8Array][] {
  const bytes = modelBytes();
  return [
    ["all 3e38", rewrite(bytes, () => {}, (_, d) => d.fill(3e38))],
    ["all -3e38", rewrite(bytes, () => {}, (_, d) => d.fill(-3e38))],
    [
      "one tensor (mlp c_fc) 3e38",
      rewrite(bytes, () => {}, (n, d) => {
        if (/mlp\.c_fc\.weight$/.test(n)) d.fill(3e38);
      }),
    ],
    [
      "alternating +-3e38",
      rewrite(bytes, () => {}, (_, d) => {
        for (let i = 0; i < d.length; i++) d[i] = i % 2 ? 3e38 : -3e38;
      }),
    ],
  ];
}

Deno.test("library: overflowing weights throw WeightsError in evaluate and generation", async () => {
  for (const [what, bytes] of overflowing()) {
    const model = await loadWeights(bytes);
    const isNonFinite = (e: unknown) =>
      e instanceof WeightsError && /non-finite logits \(NaN or Inf\)/.test(e.message);
    await evaluate(model, TEXT).then(
      () => assert(false, `${what}: evaluate did not throw`),
      (e) => assert(isNonFinite(e), `${what}: ${e}`),
    );
    await Array.fromAsync(generate(model, { tokens: 5, seed: 1 })).then(
      () => assert(false, `${what}: generate did not throw`),
      (e) => assert(isNonFinite(e), `${what}: ${e}`),
    );
    let thrown: unknown;
    try {
      nextCharDistribution(model, "the");
    } catch (e) {
      thrown = e;
    }
    assert(isNonFinite(thrown), `${what}: nextCharDistribution: ${thrown}`);
    thrown = undefined;
    try {
      inspect(model, "the", { tokens: 3 });
    } catch (e) {
      thrown = e;
    }
    assert(isNonFinite(thrown), `${what}: inspect: ${thrown}`);
    await Array.fromAsync(inspectStream(model, "the", { tokens: 3 })).then(
      () => assert(false, `${what}: inspectStream did not throw`),
      (e) => assert(isNonFinite(e), `${what}: inspectStream: ${e}`),
    );
  }
  // a good model still evaluates and generates as before
  const good = await loadWeights(modelBytes());
  assert(Number.isFinite((await evaluate(good, TEXT)).loss));
  assertEquals((await Array.fromAsync(generate(good, { tokens: 5, seed: 1 }))).length, 5);
});

Deno.test("eval and sample: overflowing weights exit 2 naming the file", async () => {
  await using tmp = await tempDir("baregpt_hostile_nan_");
  const data = `${tmp.path}/text.txt`;
  await Deno.writeTextFile(data, TEXT);
  for (const [what, bytes] of overflowing()) {
    const path = `${tmp.path}/w.safetensors`;
    await Deno.writeFile(path, bytes);
    const pattern = new RegExp(
      `the weights of ${path.replace(/[.]/g, "\\.")} produce non-finite logits \\(NaN or Inf\\)`,
    );
    for (const threads of ["1", "2"]) {
      const r = await runCli(["eval", "--weights", path, "--data", data, "--threads", threads]);
      assertUserError(r, pattern);
      assertEquals(r.code, 2, `${what} eval --threads ${threads}`);
    }
    for (
      const how of [["--seed", "1"], ["--temperature", "0"], ["--prompt", "the cat", "--seed", "2"]]
    ) {
      const s = await runCli(["sample", "--weights", path, "--tokens", "20", ...how]);
      // what came before the first non-finite step may have been printed: a line, ended
      assertOneError(s, 2, pattern);
      assertMatch(s.stdout, /^([^\n]*\n)?$/, `${what} sample ${how}`);
      assert(s.stdout.length <= 30, `${what} sample ${how}: ${JSON.stringify(s.stdout)}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// 8. The environment's errors are the project's errors

Deno.test("a symlink loop as --data or --weights is named as such, exit 2", async () => {
  await using tmp = await tempDir("baregpt_hostile_loop_");
  const a = `${tmp.path}/loop_a`, b = `${tmp.path}/loop_b`, self = `${tmp.path}/self`;
  await Deno.symlink(b, a);
  await Deno.symlink(a, b);
  await Deno.symlink(self, self);
  const weights = `${tmp.path}/good.safetensors`;
  await Deno.writeFile(weights, modelBytes());
  for (const loop of [a, self]) {
    const loopError = new RegExp(`${loop} is a symlink loop; give a real file`);
    assertUserError(await runCli(["eval", "--weights", weights, "--data", loop]), loopError);
    assertUserError(await runCli(["info", "--weights", loop]), loopError);
    assertUserError(await runCli(["sample", "--weights", loop, "--tokens", "3"]), loopError);
    assertUserError(await runCli(["eval", "--weights", loop, "--data", weights]), loopError);
    // the library, given the path
    await loadWeights(loop).then(
      () => assert(false, "loadWeights read a symlink loop"),
      (e) => assertMatch(String(e), /is a symlink loop; give a real file/),
    );
  }
});

/** Runs the CLI with its stdout sent to /dev/full (written by the shell, nothing else). */
async function toDevFull(args: string[]): Promise<RunResult> {
  const quoted = [Deno.execPath(), ...denoRunArgs(args)].map((s) =>
    `'${s.replace(/'/g, "'\\''")}'`
  );
  const out = await new Deno.Command("sh", {
    args: ["-c", `${quoted.join(" ")} > /dev/full`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    signal: out.signal,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

// Deno stats /dev only with --allow-all: ask the shell (which only reads it)
const hasDevFull = Deno.build.os !== "windows" &&
  (await new Deno.Command("sh", { args: ["-c", "test -c /dev/full"] }).output()).success;

Deno.test({
  name: "stdout to a full disk (/dev/full) is named, exit 1, not an internal error",
  ignore: !hasDevFull,
  async fn() {
    await using tmp = await tempDir("baregpt_hostile_full_");
    const data = `${tmp.path}/text.txt`;
    await Deno.writeTextFile(data, TEXT);
    const weights = `${tmp.path}/good.safetensors`;
    await Deno.writeFile(weights, modelBytes());
    const commands = [
      ["info", "--weights", weights],
      ["sample", "--weights", weights, "--tokens", "10", "--seed", "1"],
      ["eval", "--weights", weights, "--data", data, "--threads", "1"],
      ["--help"],
    ];
    for (const args of commands) {
      const r = await toDevFull(args);
      assertOneError(
        r,
        1,
        /^error: cannot write to standard output: no space left on device/,
      );
      assert(!/internal error/.test(r.stderr), r.stderr);
    }
    assert(CLI.endsWith("cli.ts"));
  },
});

Deno.test("config values of the wrong type are named with their type, exit 2", async () => {
  await using tmp = await tempDir("baregpt_hostile_config_");
  const bytes = modelBytes();
  const cases: [string, unknown, RegExp][] = [
    ["d_model", "16", /config d_model is the string "16"; it must be an integer/],
    ["vocab_size", "20", /config vocab_size is the string "20"; it must be an integer/],
    ["n_heads", "\x1b[2J", /config n_heads is the string "\\u001b\[2J"; it must be an integer/],
    ["d_model", 16.5, /config d_model is 16\.5; it must be an integer/],
    ["block_size", 1e300, /config block_size is 1e\+300; it must be an integer/],
    ["d_model", -16, /config is invalid: d_model -16 is out of range/],
    ["n_layers", 0, /config is invalid: n_layers 0 is out of range/],
    ["n_heads", 3, /d_model 16 is not divisible by n_heads 3/],
    ["d_model", null, /config d_model is null; it must be an integer/],
    ["n_layers", true, /config n_layers is the boolean true; it must be an integer/],
    ["n_heads", [2], /config n_heads is a list; it must be an integer/],
    ["block_size", { v: 16 }, /config block_size is an object; it must be an integer/],
    ["n_layers", undefined, /config has no n_layers; it must be an integer/],
  ];
  for (const [key, value, pattern] of cases) {
    const hostile = withConfig(bytes, key, value);
    await loadWeights(hostile).then(
      () => assert(false, `${key} ${JSON.stringify(value)} was accepted`),
      (e) => {
        assert(e instanceof WeightsError, `${key}: ${e}`);
        assertMatch(e.message, pattern);
        assert(!/dModel|nHeads|nLayers|blockSize|vocabSize/.test(e.message), e.message);
      },
    );
    const path = `${tmp.path}/c.safetensors`;
    await Deno.writeFile(path, hostile);
    assertUserError(await runCli(["info", "--weights", path]), pattern);
  }
});

Deno.test("a file whose size reads 0 but holds text (/proc) is read to its end", async () => {
  // /proc/self/status is read-only and harmless; its stat size is 0
  const r = await runCli([
    "eval",
    "--data",
    "/proc/self/status",
    "--split",
    "all",
    "--threads",
    "1",
  ]);
  assert(!/is empty/.test(r.stderr), r.stderr);
  // its text has characters Tiny Shakespeare lacks (digits, tabs): they are dropped and counted
  if (r.code === 0) assertMatch(r.stderr, /note: dropped \d+ characters/);
  else assertMatch(r.stderr, /outside the model's vocabulary and only \d+ in it/);
});
