// The library's own errors where the platform's used to show (issue 13, items 7 and 8): a corpus
// cut mid-character or with an invalid byte says where; a missing permission for the worker
// module or a weights URL is an InputError naming the flag that grants it.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { decodeCorpus, InputError } from "../mod.ts";
import { utf8Error } from "../lib/data.ts";
import { detectTier } from "../lib/kernels/mod.ts";

const utf8 = new TextEncoder();
const ROOT = new URL("../", import.meta.url);
const LIB = new URL("lib", ROOT).pathname;

/** The InputError message of `f`, failing when it does not throw one. */
function inputError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    assert(e instanceof InputError, String(e));
    assert(!e.message.includes("\n"));
    return e.message;
  }
  throw new Error("expected an InputError");
}

Deno.test("decodeCorpus: an incomplete final character is dropped, with a note", () => {
  for (const ch of ["é", "€", "𝄞"]) {
    const whole = utf8.encode(`ROMEO:\nlove ${ch}`);
    assertEquals(decodeCorpus(whole, "ok.txt"), `ROMEO:\nlove ${ch}`);
    const bytes = utf8.encode(ch).length;
    for (let cut = 1; cut < bytes; cut++) {
      const notes: string[] = [];
      const text = decodeCorpus(whole.subarray(0, whole.length - cut), "cut.txt", {
        onNote: (n) => notes.push(n),
      });
      assertEquals(text, "ROMEO:\nlove ");
      assertEquals(notes, [
        `dropped an incomplete final character (the last ${bytes - cut} byte${
          bytes - cut > 1 ? "s" : ""
        } of cut.txt: the file ends mid-character)`,
      ]);
      // without a listener, the same text
      assertEquals(decodeCorpus(whole.subarray(0, whole.length - cut), "cut.txt"), text);
    }
  }
  // a complete file gives no note
  const notes: string[] = [];
  decodeCorpus(utf8.encode("to be"), "ok.txt", { onNote: (n) => notes.push(n) });
  assertEquals(notes, []);
  // nothing but an incomplete character is no text
  assertMatch(
    inputError(() => decodeCorpus(new Uint8Array([0xe2, 0x82]), "half.txt")),
    /^corpus half\.txt holds only an incomplete UTF-8 character \(2 bytes\); give a UTF-8 text file$/,
  );
});

Deno.test("decodeCorpus: invalid UTF-8 names the byte offset and line, and what to do", () => {
  const latin1 = new Uint8Array([...utf8.encode("ROMEO:\nsweet\nmy caf"), 0xe9, 0x20, 0x6e]);
  assertEquals(
    inputError(() => decodeCorpus(latin1, "latin1.txt")),
    "corpus latin1.txt is not valid UTF-8: byte 0xe9 at byte offset 19 (line 3) does not begin a valid UTF-8 character; convert the file to UTF-8 (for example iconv -f latin1 -t utf-8), or if you cut it from a larger file, cut at a line end (head -n) rather than a byte count",
  );
  // two files joined after a cut: the broken character is in the middle, so it is an error
  const euro = utf8.encode("€");
  const joined = new Uint8Array([...utf8.encode("a\nb\nc"), euro[0], euro[1], ...utf8.encode("d")]);
  assertMatch(
    inputError(() => decodeCorpus(joined, "j.txt")),
    /byte 0xe2 at byte offset 5 \(line 3\)/,
  );
  // a stray continuation byte, a surrogate, an overlong form, beyond U+10FFFF
  for (
    const [bytes, offset] of [
      [[0x61, 0x80], 1],
      [[0x61, 0xed, 0xa0, 0x80], 1],
      [[0xc0, 0xaf, 0x61], 0],
      [[0x61, 0x62, 0xf4, 0x90, 0x80, 0x80], 2],
      [[0x61, 0xff], 1],
    ] as [number[], number][]
  ) {
    assertMatch(
      inputError(() => decodeCorpus(new Uint8Array(bytes), "x.txt")),
      new RegExp(`at byte offset ${offset} \\(line 1\\)`),
    );
  }
});

Deno.test("utf8Error agrees with a fatal TextDecoder on random bytes", () => {
  const fatal = new TextDecoder("utf-8", { fatal: true });
  let s = 12345;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pool = [0x41, 0x0a, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef];
  pool.push(0xf0, 0xf4, 0xf5, 0xff);
  for (let trial = 0; trial < 5000; trial++) {
    const bytes = Uint8Array.from(
      { length: 1 + Math.floor(next() * 8) },
      () => pool[Math.floor(next() * pool.length)],
    );
    let valid = true;
    try {
      fatal.decode(bytes);
    } catch {
      valid = false;
    }
    const bad = utf8Error(bytes);
    assertEquals(bad === null, valid, String([...bytes]));
    if (bad === null) continue;
    // everything before the offset is valid; a truncated sequence runs to the end
    fatal.decode(bytes.subarray(0, bad.offset));
    // a truncated sequence is what a streaming decoder holds back, waiting for more bytes
    let waits = true;
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(bytes, { stream: true });
    } catch {
      waits = false;
    }
    assertEquals(bad.truncated, waits, String([...bytes]));
  }
});

/** Runs a script with the given permission flags; returns its exit code and output. */
async function runScript(source: string, permissions: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "baregpt_perm_" });
  try {
    const script = `${dir}/script.ts`;
    await Deno.writeTextFile(script, source);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", "--no-prompt", ...permissions, script],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    const out = new TextDecoder().decode(stdout);
    return { code, out, err: new TextDecoder().decode(stderr), dir };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A script that runs `body` and prints the error it throws as JSON (name, class, message). */
function catching(body: string): string {
  const mod = new URL("mod.ts", ROOT).href;
  return `import * as lib from ${JSON.stringify(mod)};
try {
  ${body}
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(JSON.stringify({ name: e.name, input: e instanceof lib.InputError, message: e.message }));
}
`;
}

Deno.test({
  name: "createTrainer on 2 threads without read access to lib/: an InputError naming it",
  ignore: detectTier() === "js",
  fn: async () => {
    const body = `const text = "abcdefgh ".repeat(40);
  const model = lib.createModel(text, { blockSize: 8, dModel: 16, nHeads: 2, nLayers: 1 });
  using t = await lib.createTrainer(model, text, { threads: 2, batch: 2, steps: 1 });
  await t.run();`;
    const denied = await runScript(catching(body), []);
    assertEquals(denied.code, 0, denied.err);
    const worker = new URL("lib/worker.ts", ROOT).href;
    assertEquals(JSON.parse(denied.out), {
      name: "InputError",
      input: true,
      message:
        `running on 2 threads starts workers from ${worker}; allow reading it (--allow-read=${LIB}) or use threads: 1`,
    });
    // granted as the message says, it trains
    const granted = await runScript(catching(body), [`--allow-read=${LIB}`]);
    assertEquals(JSON.parse(granted.out), { ok: true }, granted.err);
  },
});

Deno.test("loadWeights over http without --allow-net: an InputError naming the host", async () => {
  const url = "http://127.0.0.1:47123/weights/model.safetensors";
  const denied = await runScript(catching(`await lib.loadWeights(${JSON.stringify(url)});`), []);
  assertEquals(denied.code, 0, denied.err);
  assertEquals(JSON.parse(denied.out), {
    name: "InputError",
    input: true,
    message: "no network permission for 127.0.0.1:47123; allow it (--allow-net=127.0.0.1:47123)",
  });
  // with the permission, the fetch is tried (and the closed port is a plain input error)
  const tried = await runScript(
    catching(`await lib.loadWeights(${JSON.stringify(url)});`),
    ["--allow-net=127.0.0.1:47123"],
  );
  const r = JSON.parse(tried.out);
  assertEquals([r.name, r.input], ["InputError", true], tried.err);
  assertMatch(r.message, /^cannot fetch weights from http:\/\/127\.0\.0\.1:47123\//);
  // a file: URL without read access names the path
  const file = new URL("weights/shakespeare.safetensors", ROOT);
  const noRead = await runScript(
    catching(`await lib.loadWeights(new URL(${JSON.stringify(file.href)}));`),
    [],
  );
  assertEquals(JSON.parse(noRead.out), {
    name: "InputError",
    input: true,
    message:
      `no read permission for ${file.pathname}; allow it (--allow-read=${file.pathname}) or pass the file's bytes`,
  });
});
