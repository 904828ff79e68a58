// Fuzzes the safetensors decoder: a valid small file is mutated many thousands of times with a
// seeded PRNG; every mutant must either decode to well-formed tensors or throw a WeightsError with
// a one-line message. Any other exception (TypeError, RangeError, out of memory...) fails the test.

import assert from "node:assert/strict";
import { WeightsError } from "../lib/errors.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";

const ITERATIONS = 20_000;
const SEED = 0x5afe7e45;

/** mulberry32: a small, fast, seeded 32-bit PRNG; returns floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = mulberry32(SEED);
const int = (n: number) => Math.floor(rand() * n); // [0, n)
const pick = <T>(items: readonly T[]): T => items[int(items.length)];

function baseFile(): Uint8Array {
  const values = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1) * 0.02);
  return encodeSafetensors(
    [
      { name: "wte.weight", shape: [5, 4], data: values(20) },
      { name: "wpe.weight", shape: [3, 4], data: values(12) },
      { name: "h.0.ln_1.bias", shape: [4], data: values(4) },
      { name: "empty", shape: [0, 4], data: new Float32Array(0) },
      { name: "scale", shape: [], data: new Float32Array([1.5]) },
    ],
    { config: '{"vocab_size":5,"block_size":3,"d_model":4}', vocab: '["a","b","c","d","\\n"]' },
  );
}

const utf8 = new TextEncoder();
const utf8Decode = new TextDecoder(); // lenient: mutants of the header may be invalid UTF-8

/** The header length a file claims (0 for a file shorter than 8 bytes). */
function headerLengthOf(bytes: Uint8Array): number {
  if (bytes.length < 8) return 0;
  return Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
}

/** Splits a (valid-length) file into header text and data section. */
function split(bytes: Uint8Array): { text: string; data: Uint8Array } {
  const n = Math.min(headerLengthOf(bytes), bytes.length - 8);
  return { text: utf8Decode.decode(bytes.subarray(8, 8 + n)), data: bytes.subarray(8 + n) };
}

/** Rebuilds a file from header text and data, with a consistent header length. */
function join(text: string, data: Uint8Array): Uint8Array {
  const h = utf8.encode(text);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const HEADER_LENGTHS = [
  0n,
  1n,
  7n,
  2n ** 31n,
  2n ** 32n,
  2n ** 32n + 1n,
  2n ** 53n,
  2n ** 53n + 1n,
  2n ** 63n,
  2n ** 64n - 1n,
  100_000_000n,
  100_000_001n,
];
const NUMBERS = [
  "0",
  "1",
  "-1",
  "3",
  "4",
  "8",
  "1.5",
  "-0",
  "4.0",
  "1e400",
  "-1e400",
  "2147483648",
  "4294967296",
  "9007199254740992",
  "9007199254740993",
  "18446744073709551615",
  "1e-7",
  '"4"',
  "null",
  "true",
  "[]",
  "{}",
  "[4]",
];
const DTYPES = ["F16", "BF16", "F64", "I32", "U8", "BOOL", "f32", "", "F32 ", "F3", "F320"];

type Mutator = (bytes: Uint8Array) => Uint8Array;

const MUTATORS: Record<string, Mutator> = {
  flipHeaderBit(b) {
    const out = b.slice();
    const i = 8 + int(Math.min(headerLengthOf(b), b.length - 8) || 1);
    if (i < out.length) out[i] ^= 1 << int(8);
    return out;
  },
  flipDataBit(b) {
    const out = b.slice();
    const start = 8 + Math.min(headerLengthOf(b), b.length - 8);
    if (start < out.length) out[start + int(out.length - start)] ^= 1 << int(8);
    return out;
  },
  setAnyByte(b) {
    const out = b.slice();
    if (out.length > 0) out[int(out.length)] = int(256);
    return out;
  },
  truncate(b) {
    return b.slice(0, int(b.length));
  },
  spliceChunk(b) {
    // Copy a random chunk of the file (or random bytes) over, or into, a random place.
    const len = 1 + int(24);
    const chunk = rand() < 0.5
      ? b.slice(int(b.length), int(b.length) + len)
      : Uint8Array.from({ length: len }, () => int(256));
    const at = int(b.length + 1);
    if (rand() < 0.5) {
      const out = b.slice();
      out.set(chunk.subarray(0, Math.max(0, out.length - at)), at);
      return out;
    }
    const out = new Uint8Array(b.length + chunk.length);
    out.set(b.subarray(0, at));
    out.set(chunk, at);
    out.set(b.subarray(at), at + chunk.length);
    return out;
  },
  editHeaderLength(b) {
    const out = b.length >= 8 ? b.slice() : new Uint8Array(8);
    const n = BigInt(headerLengthOf(out));
    const choices = [...HEADER_LENGTHS, n - 1n, n + 1n, n - 8n, n + 8n, BigInt(out.length)];
    choices.push(BigInt(int(2 ** 32)), BigInt(int(2 ** 32)) * 2n ** 32n + BigInt(int(2 ** 32)));
    new DataView(out.buffer).setBigUint64(0, BigInt.asUintN(64, pick(choices)), true);
    return out;
  },
  editJsonNumber(b) {
    const { text, data } = split(b);
    const numbers = [...text.matchAll(/-?\d+(\.\d+)?([eE][+-]?\d+)?/g)];
    if (numbers.length === 0) return b;
    const m = pick(numbers);
    const replacement = rand() < 0.7 ? pick(NUMBERS) : String(int(200));
    return join(text.slice(0, m.index) + replacement + text.slice(m.index + m[0].length), data);
  },
  swapDtype(b) {
    const { text, data } = split(b);
    const hits = [...text.matchAll(/"F32"/g)];
    if (hits.length === 0) return b;
    const at = pick(hits).index;
    return join(`${text.slice(0, at)}"${pick(DTYPES)}"${text.slice(at + 5)}`, data);
  },
  editJsonStructure(b) {
    const { text, data } = split(b);
    let header: Record<string, Record<string, unknown>>;
    try {
      header = JSON.parse(text);
      if (typeof header !== "object" || header === null || Array.isArray(header)) return b;
    } catch {
      return b;
    }
    const names = Object.keys(header);
    if (names.length === 0) return b;
    const name = pick(names);
    const entry = header[name];
    const other = header[pick(names)];
    const valueLikeJson = () => JSON.parse(pick(NUMBERS));
    switch (int(9)) {
      case 0:
        delete header[name];
        break;
      case 1:
        if (entry && typeof entry === "object") {
          delete entry[pick(["dtype", "shape", "data_offsets"])];
        }
        break;
      case 2:
        header[`${name}.copy`] = entry;
        break;
      case 3: // swap offsets between two entries
        if (entry && other && typeof entry === "object" && typeof other === "object") {
          [entry.data_offsets, other.data_offsets] = [other.data_offsets, entry.data_offsets];
        }
        break;
      case 4:
        header[name] = valueLikeJson();
        break;
      case 5:
        if (entry && typeof entry === "object") {
          entry[pick(["dtype", "shape", "data_offsets"])] = valueLikeJson();
        }
        break;
      case 6:
        header.__metadata__ = pick([{ a: 1 }, [], "x", null, { __proto__: "p" }, {
          k: "v",
        }]) as never;
        break;
      case 7:
        if (entry && typeof entry === "object") entry.extra = valueLikeJson();
        break;
      default: // grow or shrink the data section by one float
        return join(
          JSON.stringify(header),
          rand() < 0.5 ? data.slice(4) : new Uint8Array([...data, 0, 0, 0, 0]),
        );
    }
    return join(JSON.stringify(header), data);
  },
  writeNonFinite(b) {
    const out = b.slice();
    const start = 8 + Math.min(headerLengthOf(b), b.length - 8);
    if (out.length - start < 4) return out;
    const at = start + 4 * int((out.length - start) / 4);
    new DataView(out.buffer).setFloat32(at, pick([NaN, Infinity, -Infinity]), true);
    return out;
  },
  garbage() {
    return Uint8Array.from({ length: int(64) }, () => int(256));
  },
};

function checkAccepted(bytes: Uint8Array) {
  const decoded = decodeSafetensors(bytes);
  for (const [name, { shape, data }] of decoded.tensors) {
    assert.ok(data instanceof Float32Array, name);
    assert.equal(data.length, shape.reduce((n, d) => n * d, 1), `${name}: length matches shape`);
    assert.ok(data.every(Number.isFinite), `${name}: finite`);
  }
  for (const value of Object.values(decoded.metadata)) assert.equal(typeof value, "string");
  // Whatever was accepted survives a re-encode unchanged.
  const again = decodeSafetensors(
    encodeSafetensors(
      [...decoded.tensors].map(([name, t]) => ({ name, ...t })),
      decoded.metadata,
    ),
  );
  assert.deepEqual([...again.tensors.keys()], [...decoded.tensors.keys()]);
  assert.deepEqual({ ...again.metadata }, { ...decoded.metadata });
}

Deno.test(`fuzz: ${ITERATIONS} mutated safetensors files decode or throw WeightsError`, () => {
  const base = baseFile();
  checkAccepted(base);
  const kinds = Object.keys(MUTATORS);
  const byKind: Record<string, { accepted: number; rejected: number }> = {};
  const messages = new Map<string, number>();
  let accepted = 0;
  let rejected = 0;
  const start = performance.now();
  for (let i = 0; i < ITERATIONS; i++) {
    // One to three mutations, stacked.
    let bytes = base;
    const applied: string[] = [];
    for (let k = 1 + (rand() < 0.3 ? 1 + int(2) : 0); k > 0; k--) {
      const kind = pick(kinds);
      applied.push(kind);
      bytes = MUTATORS[kind](bytes);
    }
    const label = applied[0];
    byKind[label] ??= { accepted: 0, rejected: 0 };
    try {
      checkAccepted(bytes);
      accepted++;
      byKind[label].accepted++;
    } catch (e) {
      if (!(e instanceof WeightsError) || /[\r\n]/.test(e.message) || e.message === "") {
        const hex = Array.from(bytes.subarray(0, 256), (x) => x.toString(16).padStart(2, "0"));
        throw new Error(
          `iteration ${i} (${applied.join(" + ")}): decoder threw ${e} ` +
            `for file of ${bytes.length} bytes starting ${hex.join("")}`,
          { cause: e },
        );
      }
      rejected++;
      byKind[label].rejected++;
      // Group messages by their wording, without names and numbers.
      const wording = e.message.split("; ")[0]
        .replace(/"(?:[^"\\]|\\.)*"/g, '"_"')
        .replace(/\[[^\]]*\]|-?\d+(?:\.\d+)?(?:e[+-]?\d+)?/g, "#")
        .replace(/\b(got|dimension|contains) .*?( at|, which|$)/, "$1 _$2");
      messages.set(wording, (messages.get(wording) ?? 0) + 1);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  console.log(
    `fuzz: ${ITERATIONS} iterations in ${seconds.toFixed(2)} s ` +
      `(${Math.round(ITERATIONS / seconds)}/s): ${accepted} accepted, ${rejected} rejected, ` +
      `${messages.size} distinct error messages`,
  );
  for (const [kind, c] of Object.entries(byKind)) {
    console.log(`  ${kind.padEnd(18)} accepted ${c.accepted}, rejected ${c.rejected}`);
  }
  for (const [wording, count] of [...messages].sort((a, b) => b[1] - a[1])) {
    console.log(`  ${String(count).padStart(6)}  ${wording}`);
  }
  // The fuzzer must reach deep into the decoder, not only bounce off the first checks.
  assert.equal(accepted + rejected, ITERATIONS);
  assert.ok(accepted > 0 && rejected > 0);
  assert.ok(messages.size >= 15, `only ${messages.size} kinds of error reached`);
});
