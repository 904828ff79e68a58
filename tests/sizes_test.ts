// Sizes from a file are bounded before anything is allocated (issue 14, item 4): a config whose
// implied size exceeds the file or the kernels' 4 GiB, a model whose inference needs more than
// 4 GiB, a huge safetensors header, and a long window drawn by `inspect`.

import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  throws as assertThrows,
} from "node:assert";
import { createModel, inspect, loadWeights, saveWeights, WeightsError } from "../mod.ts";
import { clipAttention, renderAttentionSvg, renderAttentionTerminal } from "../lib/draw.ts";
import { encodeSafetensors } from "../lib/safetensors.ts";
import { MAX_MODEL_HEADER_BYTES } from "../lib/weights.ts";
import { assertNoStackTrace, assertUserError, denoRunArgs, runCli, tempDir } from "./cli_run.ts";

const VOCAB = "abcdefgh ";
const vocabJson = (n: number) =>
  JSON.stringify(Array.from({ length: n }, (_, i) => String.fromCodePoint(65 + i)));

/** A model file with `config` (file key names) and the given tensors (none by default). */
function configFile(
  config: Record<string, number>,
  tensors: { name: string; shape: number[] }[] = [],
): Uint8Array {
  const entries = tensors.map(({ name, shape }) => ({
    name,
    shape,
    data: new Float32Array(shape.reduce((a, b) => a * b, 1)),
  }));
  return encodeSafetensors(entries, {
    config: JSON.stringify(config),
    vocab: vocabJson(config.vocab_size),
  });
}

/** A file whose header is `n` bytes: `{`, spaces or a filler string, `}`. */
function headerFile(n: number, filler: "spaces" | "string"): Uint8Array {
  const b = new Uint8Array(8 + n);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  b.fill(filler === "spaces" ? 0x20 : 0x61, 8);
  if (filler === "spaces") {
    b.set(new TextEncoder().encode("{"), 8);
  } else {
    b.set(new TextEncoder().encode('{"__metadata__":{"note":"'), 8);
    b.set(new TextEncoder().encode('"}'), 8 + n - 3);
  }
  b[8 + n - 1] = 0x7d;
  return b;
}

const HUGE_CONFIGS: [string, Uint8Array, RegExp][] = [
  [
    "1,024 layers of width 65,536, no tensors (the 145-byte file)",
    configFile({ vocab_size: 2, block_size: 8, d_model: 65536, n_layers: 1024, n_heads: 1 }),
    /config is invalid: d_model 65536 is out of range/,
  ],
  [
    "the largest the validator allows, no tensors",
    configFile({ vocab_size: 2, block_size: 8192, d_model: 8192, n_layers: 256, n_heads: 1 }),
    /implies 206,252,834,816 parameters .* more than the 4 GiB .* the file holds 0/,
  ],
  [
    "the largest the validator allows, one small tensor",
    configFile({ vocab_size: 2, block_size: 8192, d_model: 8192, n_layers: 256, n_heads: 1 }, [
      { name: "wte.weight", shape: [2, 4] },
    ]),
    /implies .* parameters .* the file holds 8;/,
  ],
  [
    "65,536 characters of width 8,192, 1 layer, no tensors",
    configFile({ vocab_size: 65536, block_size: 8192, d_model: 8192, n_layers: 1, n_heads: 8 }),
    /implies .* parameters/,
  ],
  [
    "under 4 GiB implied, tensors missing",
    configFile({ vocab_size: 2, block_size: 1024, d_model: 1024, n_layers: 64, n_heads: 8 }, [
      { name: "wte.weight", shape: [2, 1024] },
    ]),
    /lacks tensor wpe\.weight/,
  ],
  [
    "under 4 GiB implied, a tensor of the wrong shape",
    configFile({ vocab_size: 2, block_size: 1024, d_model: 1024, n_layers: 64, n_heads: 8 }, [
      { name: "wte.weight", shape: [2, 4] },
    ]),
    /tensor wte\.weight has shape \[2,4\] but the config needs \[2,1024\]/,
  ],
];

Deno.test("sizes: a config larger than its file is a WeightsError in the library", async () => {
  for (const [name, bytes, pattern] of HUGE_CONFIGS) {
    let error: unknown;
    await loadWeights(bytes).catch((e) => (error = e));
    assert(error instanceof WeightsError, `${name}: ${error}`);
    assertMatch((error as Error).message, pattern, name);
  }
});

Deno.test("sizes: ... and in a plain (non-shared) memory, before the memory is sized", async () => {
  await using dir = await tempDir("baregpt-sizes-");
  const files = HUGE_CONFIGS.map(([, bytes], i) => {
    const path = `${dir.path}/huge${i}.safetensors`;
    Deno.writeFileSync(path, bytes);
    return path;
  });
  const script = `${dir.path}/plain.ts`;
  Deno.writeTextFileSync(
    script,
    `import { loadWeights, selectKernels } from ${
      JSON.stringify(new URL("../mod.ts", import.meta.url).href)
    };
selectKernels(undefined, { shared: false });
for (const f of ${JSON.stringify(files)}) {
  const e = await loadWeights(Deno.readFileSync(f)).then(() => null, (e) => e);
  console.log(e?.name);
}`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: denoRunArgs([], ["--allow-read"], script),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, stderr);
  assertEquals(
    new TextDecoder().decode(out.stdout).trim().split("\n"),
    files.map(() => "WeightsError"),
  );
});

Deno.test("sizes: a config larger than its file is exit 2 and one line in the CLI", async () => {
  await using dir = await tempDir("baregpt-sizes-");
  for (const [i, [name, bytes, pattern]] of HUGE_CONFIGS.entries()) {
    const path = `${dir.path}/huge${i}.safetensors`;
    Deno.writeFileSync(path, bytes);
    for (
      const args of [
        ["sample", "--weights", path, "--tokens", "3"],
        ["info", "--weights", path],
        ["inspect", "--weights", path, "--prompt", "AB"],
      ]
    ) {
      const r = await runCli(args);
      assertUserError(r, pattern);
      assert(r.stderr.includes(path), `${name}: ${r.stderr}`);
    }
  }
});

/** A model whose one KV cache (8 heads x 8192^2 floats x 4 layers) is 8 GiB: valid, unrunnable. */
function wideContext(): Uint8Array {
  return saveWeights(createModel(VOCAB, { blockSize: 8192, dModel: 16, nHeads: 8, nLayers: 4 }));
}

Deno.test("sizes: a model whose inference needs more than 4 GiB is refused up front", async () => {
  await using dir = await tempDir("baregpt-sizes-");
  const big = `${dir.path}/b8192.safetensors`;
  Deno.writeFileSync(big, wideContext());
  const pattern =
    /context of 8192 positions needs about 8\.0 GiB to run .* 4 layers of 8 heads.*block_size 8192/;
  let error: unknown;
  await loadWeights(Deno.readFileSync(big)).catch((e) => (error = e));
  assert(error instanceof WeightsError, String(error));
  assertMatch((error as Error).message, pattern);
  for (
    const args of [
      ["sample", "--weights", big, "--tokens", "5", "--seed", "1"],
      ["sample", "--weights", big, "--tokens", "5", "--kernels", "js"],
      ["inspect", "--weights", big, "--prompt", "abc", "--tokens", "2"],
    ]
  ) {
    assertUserError(await runCli(args), pattern);
  }
  // block 8192 with one head and one layer (a 256 MiB cache) fits: it samples
  const small = `${dir.path}/b8192s.safetensors`;
  Deno.writeFileSync(
    small,
    saveWeights(createModel(VOCAB, { blockSize: 8192, dModel: 16, nHeads: 1, nLayers: 1 })),
  );
  const r = await runCli(["sample", "--weights", small, "--tokens", "5", "--seed", "1"]);
  assertNoStackTrace(r.stderr);
  assertEquals(r.code, 0, r.stderr);
  assertEquals([...r.stdout.trimEnd()].length, 5 + 0);
});

Deno.test("sizes: a header over 4 MiB is refused before it is decoded", async () => {
  await using dir = await tempDir("baregpt-sizes-");
  const cases: [string, number, "spaces" | "string"][] = [
    ["10 MB of spaces", 10_000_000, "spaces"],
    ["10 MB string", 10_000_000, "string"],
    ["59 MB of spaces", 59_000_000, "spaces"],
    ["59 MB string", 59_000_000, "string"],
    ["4 MiB + 8", MAX_MODEL_HEADER_BYTES + 8, "string"],
  ];
  for (const [name, n, filler] of cases) {
    const bytes = headerFile(n, filler);
    let error: unknown;
    await loadWeights(bytes).catch((e) => (error = e));
    assert(error instanceof WeightsError, `${name}: ${error}`);
    assertMatch((error as Error).message, /larger than the limit of 4194304 bytes/, name);
    const path = `${dir.path}/header.safetensors`;
    Deno.writeFileSync(path, bytes);
    assertUserError(
      await runCli(["sample", "--weights", path]),
      /header length \d+ is larger than the limit of 4194304 bytes/,
    );
  }
  // a header just under the limit is decoded (and then refused for what it holds)
  const under = headerFile(MAX_MODEL_HEADER_BYTES - 8, "string");
  const e = await loadWeights(under).then(() => null, (e) => e);
  assertMatch(String(e), /no config in its metadata/);
});

Deno.test("sizes: saveWeights never writes a header that loadWeights would refuse", async () => {
  const model = createModel(VOCAB, { blockSize: 16, dModel: 16, nHeads: 2, nLayers: 1 });
  assertThrows(
    () => saveWeights(model, { note: "x".repeat(MAX_MODEL_HEADER_BYTES) }),
    /facts make a header of more than 4 MiB/,
  );
  const note = "x".repeat(3 * 2 ** 20); // 3 MiB of facts: within the limit, and it loads back
  const copy = await loadWeights(saveWeights(model, { note }));
  assertEquals(copy.facts.note, note);
});

Deno.test("sizes: what is drawn of an attention map is bounded (the last positions)", () => {
  const model = createModel(VOCAB, { blockSize: 512, dModel: 16, nHeads: 2, nLayers: 1, seed: 2 });
  const prompt = "abc defgh ".repeat(80); // 800 characters: the window is the last 512
  const r = inspect(model, prompt, { tokens: 0 });
  const map = r.attention;
  assertEquals(map.tokens.length, 512);
  const svg = renderAttentionSvg(map, model.tokenizer.vocab);
  assertEquals(svg.match(/<rect /g)?.length, 2 * 256 * 257 / 2);
  assertMatch(
    svg,
    /<title>[^<]*over characters 544\.\.799 \(drawn: the last 256 of 512 characters\)/,
  );
  // a caller may ask for more or fewer; within the limits nothing changes
  const all = renderAttentionSvg(map, model.tokenizer.vocab, { maxPositions: 512 });
  assertEquals(all.match(/<rect /g)?.length, 2 * 512 * 513 / 2);
  assert(!all.includes("drawn:"));
  const few = clipAttention(map, { maxPositions: 3, maxHeads: 1 });
  assertEquals(few.map.tokens, map.tokens.slice(-3));
  assertEquals(few.map.nHeads, 1);
  assertEquals(few.note, "the last 3 of 512 characters, heads 0..0 of 2");
  const n = 512;
  for (let t = 0; t < 3; t++) {
    for (let j = 0; j < 3; j++) {
      assertEquals(few.map.probs[t * 3 + j], map.probs[(n - 3 + t) * n + n - 3 + j]);
    }
  }
  assertThrows(() => clipAttention(map, { maxPositions: 0 }), /maxPositions 0 must be/);
  const text = renderAttentionTerminal(map, model.tokenizer.vocab);
  assertMatch(text, /\(the last 256 of 512 drawn\)/);
  assert(text.split("\n").every((line) => [...line].length < 300));
  // a short window is drawn as before: the same map gives the same SVG with or without limits
  const short = inspect(model, "abc", { tokens: 2 }).attention;
  assertEquals(
    renderAttentionSvg(short, model.tokenizer.vocab),
    renderAttentionSvg(short, model.tokenizer.vocab, { maxPositions: 10_000, maxHeads: 99 }),
  );
});

Deno.test("sizes: inspect with a long prompt draws the last 256 positions, with a note", async () => {
  await using dir = await tempDir("baregpt-sizes-");
  const weights = `${dir.path}/b512.safetensors`;
  Deno.writeFileSync(
    weights,
    saveWeights(createModel(VOCAB, { blockSize: 512, dModel: 16, nHeads: 2, nLayers: 1 })),
  );
  for (const length of [300, 2000, 8000]) {
    const prompt = "abc defgh ".repeat(length / 10);
    const svg = `${dir.path}/a${length}.svg`;
    const r = await runCli([
      "inspect",
      "--weights",
      weights,
      "--prompt",
      prompt,
      "--tokens",
      "2",
      "--out",
      svg,
    ]);
    assertNoStackTrace(r.stderr);
    assertEquals(r.code, 0, r.stderr);
    const size = Deno.statSync(svg).size;
    assert(size < 8_000_000, `${length}: an SVG of ${size} bytes`);
    assertMatch(
      r.stderr,
      /^note: the attention is too large to draw whole: drawing the last 256 of/m,
    );
    assertMatch(r.stderr, /2 attention heatmaps of 256 x 256 characters/);
    assertMatch(
      Deno.readTextFileSync(svg),
      /<title>[^<]*\(drawn: the last 256 of \d+ characters\)/,
    );
  }
  // to standard output, and the terminal view
  const prompt = "abc defgh ".repeat(800);
  const out = await runCli(["inspect", "--weights", weights, "--prompt", prompt, "--out", "-"]);
  assertEquals(out.code, 0, out.stderr);
  assert(out.stdout.length < 8_000_000 && out.stdout.startsWith("<svg"));
  assertMatch(out.stderr, /^note: the attention is too large to draw whole/m);
  const term = await runCli(["inspect", "--weights", weights, "--prompt", prompt, "--tokens", "1"]);
  assertEquals(term.code, 0, term.stderr);
  assertMatch(term.stdout, /\(the last 256 of 512 drawn\): rows are queries/);
  assertMatch(term.stderr, /^note: the attention is too large to draw whole/m);
  // a short prompt gets no note
  const plain = await runCli(["inspect", "--weights", weights, "--prompt", "abc", "--tokens", "2"]);
  assertEquals(plain.code, 0, plain.stderr);
  assert(!plain.stderr.includes("note:"), plain.stderr);
});
