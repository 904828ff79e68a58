// Fuzzes everything that reads a file, with seeded PRNGs (every case is reproducible from its kind
// and index alone):
//
// 1. the safetensors decoder: a valid small file is mutated at the byte level; every mutant must
//    decode to well-formed tensors or throw a WeightsError with a one-line message;
// 2. model files through the public loader (`loadWeights`): structurally valid files (their
//    headers parse) with hostile configs, vocabularies, metadata, tensors and values; each must
//    load and then work (or refuse to, with a WeightsError, when its weights overflow) or be
//    refused with a WeightsError or InputError of one line;
// 3. training checkpoints, structurally valid but hostile, through `loadWeights` and
//    `Trainer.restore`: a refused restore leaves the trainer exactly as it was, and usable;
// 4. byte-level mutants of a checkpoint through `Checkpoint.decode` and `Trainer.restore`.
//
// Any other exception (TypeError, RangeError, out of memory...) fails the test, naming the case.
// Nothing is printed on success; FUZZ_REPORT=1 (with --allow-env) prints each kind's outcomes.

import assert from "node:assert/strict";
import {
  BareGPTError,
  createModel,
  createTrainer,
  evaluate,
  generate,
  InputError,
  loadWeights,
  type Model,
  nextCharDistribution,
  saveWeights,
  type Trainer,
  WeightsError,
} from "../mod.ts";
import { Checkpoint } from "../lib/checkpoint.ts";
import { decodeSafetensors, encodeSafetensors } from "../lib/safetensors.ts";
import { MAX_MODEL_HEADER_BYTES } from "../lib/weights.ts";

/** Byte-level mutants of a small safetensors file, through the decoder. */
const ITERATIONS = 20_000;
/** Structurally valid model files with hostile contents, through `loadWeights`. */
const MODEL_CASES = 10_000;
/** Structurally valid checkpoints with hostile contents, through `loadWeights` and `restore`. */
const CHECKPOINT_CASES = 6_000;
/** Byte-level mutants of a checkpoint, through `Checkpoint.decode` and `restore`. */
const CHECKPOINT_BYTE_CASES = 4_000;
const SEED = 0x5afe7e45;

/** The random streams, one per kind of case. */
const STREAM = { decoder: 0, model: 1, checkpoint: 2, checkpointBytes: 3 } as const;

/** FUZZ_REPORT=1 prints the outcomes of every kind (needs --allow-env; silent otherwise). */
const REPORT = Deno.permissions.querySync({ name: "env", variable: "FUZZ_REPORT" }).state ===
    "granted" && Deno.env.get("FUZZ_REPORT") === "1";

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

let rand = mulberry32(SEED);
/** Restarts the PRNG for case `i` of a stream, so that any case can be replayed on its own. */
function reseed(stream: number, i: number): void {
  rand = mulberry32(SEED ^ Math.imul(stream + 1, 0x85ebca6b) ^ Math.imul(i + 1, 0x9e3779b1));
}
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

/** A message's wording, without names and numbers, to group messages by. */
function wording(message: string): string {
  return message.split("; ")[0]
    .replace(/"(?:[^"\\]|\\.)*"/g, '"_"')
    .replace(/\[[^\]]*\]|-?\d+(?:[.,]\d+)*(?:e[+-]?\d+)?/g, "#")
    .replace(/\b(got|dimension|contains) .*?( at|, which|$)/, "$1 _$2");
}

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
    reseed(STREAM.decoder, i);
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
      const w = wording(e.message);
      messages.set(w, (messages.get(w) ?? 0) + 1);
    }
  }
  const seconds = (performance.now() - start) / 1000;
  if (REPORT) report();
  // The fuzzer must reach deep into the decoder, not only bounce off the first checks.
  assert.equal(accepted + rejected, ITERATIONS);
  assert.ok(accepted > 0 && rejected > 0);
  assert.ok(messages.size >= 15, `only ${messages.size} kinds of error reached`);

  function report() {
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
  }
});

// ---------------------------------------------------------------------------------------------
// Structurally valid files with hostile contents: shared pieces

/** One tensor of a file being built: any dtype, a shape (or its raw JSON), raw data bytes. */
interface Part {
  name: string;
  dtype: string;
  shape: number[];
  /** Raw JSON written in place of `shape` (for shapes no number[] can hold). */
  shapeText?: string;
  /** Raw JSON of an extra field of the entry, which readers ignore. */
  extraText?: string;
  bytes: Uint8Array;
}

/** A file being built: its tensors in file order and its metadata (a prototype-less record). */
interface Draft {
  parts: Part[];
  metadata: Record<string, string>;
}

type ModelOutcome = "loaded" | "use refused" | "refused";

/** A change to a draft; returns the outcome it must have when it is the only change, if certain. */
interface Mutation<O extends string> {
  name: string;
  group: string;
  weight?: number;
  apply(d: Draft): O | void;
}

const record = (entries: Record<string, string> = {}): Record<string, string> =>
  Object.assign(Object.create(null), entries);

const clone = (d: Draft): Draft => ({
  parts: d.parts.map((p) => ({ ...p })),
  metadata: record(d.metadata),
});

const elements = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const floatBytes = (values: Float32Array) =>
  new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
const floatsOf = (bytes: Uint8Array) => new Float32Array(bytes.slice(0, bytes.length & ~3).buffer);
const filledBytes = (n: number, value: number) => floatBytes(new Float32Array(n).fill(value));

function draftOf(bytes: Uint8Array): Draft {
  const { tensors, metadata } = decodeSafetensors(bytes);
  const parts = [...tensors].map(([name, t]) => ({
    name,
    dtype: "F32",
    shape: t.shape,
    bytes: floatBytes(t.data),
  }));
  return { parts, metadata: record(metadata) };
}

/**
 * The bytes of a draft: through the library's own encoder when it can write it (F32, finite,
 * distinct names, shapes that match the data), otherwise written the same way by hand (any dtype,
 * shape or value), so that the header always parses and the offsets always match the data.
 */
function encodeDraft(d: Draft): Uint8Array {
  if (d.parts.every((p) => p.dtype === "F32" && !p.shapeText && !p.extraText)) {
    try {
      const tensors = d.parts.map((p) => ({
        name: p.name,
        shape: p.shape,
        data: floatsOf(p.bytes),
      }));
      if (d.parts.every((p) => p.bytes.length % 4 === 0)) {
        return encodeSafetensors(tensors, d.metadata);
      }
    } catch (e) {
      if (!(e instanceof RangeError)) throw e; // NaN, a duplicate name, a shape that does not fit
    }
  }
  return encodeByHand(d);
}

function encodeByHand(d: Draft): Uint8Array {
  const fields: string[] = [];
  const keys = Object.keys(d.metadata).sort();
  if (keys.length > 0) {
    const pairs = keys.map((k) => {
      assert.equal(typeof d.metadata[k], "string", `metadata ${k} is a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(d.metadata[k])}`;
    });
    fields.push(`"__metadata__":{${pairs.join(",")}}`);
  }
  let offset = 0;
  for (const p of d.parts) {
    const end = offset + p.bytes.length;
    const extra = p.extraText ? `,"extra":${p.extraText}` : "";
    fields.push(
      `${JSON.stringify(p.name)}:{"dtype":${JSON.stringify(p.dtype)},"shape":${
        p.shapeText ?? `[${p.shape.join(",")}]`
      },"data_offsets":[${offset},${end}]${extra}}`,
    );
    offset = end;
  }
  const json = utf8.encode(`{${fields.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let pos = 8 + headerLength;
  for (const p of d.parts) {
    out.set(p.bytes, pos);
    pos += p.bytes.length;
  }
  return out;
}

/** Picks by weight (default 1). */
function pickWeighted<T extends { weight?: number }>(items: readonly T[]): T {
  const total = items.reduce((n, x) => n + (x.weight ?? 1), 0);
  let r = rand() * total;
  for (const x of items) {
    r -= x.weight ?? 1;
    if (r < 0) return x;
  }
  return items[items.length - 1];
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = int(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** Asserts that `e` is a one-line InputError (WeightsError is one); returns its message. */
function refusal(e: unknown, what: string, also: (e: unknown) => boolean = () => false): string {
  if (!(e instanceof InputError) && !also(e)) {
    throw new Error(`${what}: threw ${e instanceof Error ? e.name : typeof e}: ${e}`, { cause: e });
  }
  const message = (e as Error).message;
  if (message === "" || /[\r\n]/.test(message)) {
    throw new Error(`${what}: the message is not one line: ${JSON.stringify(message)}`, {
      cause: e,
    });
  }
  return message;
}

const isBareGPTError = (e: unknown) => e instanceof BareGPTError;

/** A message's template: its wording, with tensor names and config values left out too. */
function template(message: string): string {
  return wording(message)
    .replace(/\b(tensor|tensors) (?!")\S+( and \S+)?/g, "$1 _")
    .replace(/(unexpected tensor) .*/s, "$1 _")
    .replace(/(config \w+ is) .*/s, "$1 _")
    .replace(/(made with) .*?, (this run has) .*/s, "$1 _, $2 _")
    .replace(/(at step) .*/s, "$1 _");
}

/** Outcomes per group and message wordings per outcome, for the non-vacuity checks and reports. */
class Tally {
  readonly groups = new Map<string, Map<string, number>>();
  readonly messages = new Map<string, number>();
  /** Messages that carry a file's control characters or Unicode line separators as they are. */
  readonly raw = new Map<string, number>();
  slowest = { ms: 0, what: "" };

  add(group: string, outcome: string, message?: string): void {
    const g = this.groups.get(group) ?? new Map<string, number>();
    this.groups.set(group, g);
    g.set(outcome, (g.get(outcome) ?? 0) + 1);
    if (message !== undefined) {
      // one line by \r and \n, the contract; a terminal may still see these (the CLI escapes them)
      // deno-lint-ignore no-control-regex
      const raw = message.match(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
      if (raw) {
        const key = `U+${raw[0].charCodeAt(0).toString(16).padStart(4, "0")} in: ${
          JSON.stringify(message).slice(1, 80)
        }`;
        this.raw.set(key, (this.raw.get(key) ?? 0) + 1);
      }
      const key = `${outcome}: ${template(message).slice(0, 80)}`;
      this.messages.set(key, (this.messages.get(key) ?? 0) + 1);
    }
  }

  count(group: string | null, outcome: string): number {
    let n = 0;
    for (const [name, g] of this.groups) {
      if (group === null || name === group) n += g.get(outcome) ?? 0;
    }
    return n;
  }

  time(ms: number, what: string): void {
    if (ms > this.slowest.ms) this.slowest = { ms, what };
  }

  /** Asserts that every group saw every one of `outcomes`. */
  assertReached(outcomes: Record<string, readonly string[]>): void {
    for (const [group, wanted] of Object.entries(outcomes)) {
      for (const outcome of wanted) {
        assert.ok(this.count(group, outcome) > 0, `group ${group}: no case had outcome ${outcome}`);
      }
    }
  }

  print(title: string, seconds: number): void {
    if (!REPORT) return;
    const { ms, what } = this.slowest;
    const rss = (Deno.memoryUsage().rss / 2 ** 20).toFixed(0);
    console.log(
      `${title}: ${seconds.toFixed(2)} s, rss ${rss} MiB${
        what ? `; slowest ${ms.toFixed(1)} ms (${what})` : ""
      }`,
    );
    for (const [group, g] of this.groups) {
      console.log(`  ${group.padEnd(22)} ${[...g].map(([o, n]) => `${o} ${n}`).join(", ")}`);
    }
    for (const [m, n] of [...this.messages].sort((a, b) => b[1] - a[1])) {
      console.log(`  ${String(n).padStart(6)}  ${m}`);
    }
    for (const [m, n] of [...this.raw].sort((a, b) => b[1] - a[1])) {
      console.log(`  ${String(n).padStart(6)}  raw ${m}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Model files

const TEXT = "the quick brown fox jumps over the lazy dog. ".repeat(8);
const BASE_OPTIONS = { blockSize: 8, dModel: 16, nLayers: 1, nHeads: 2 };
const BASE_FACTS = { steps: "10", val_loss: "2.5", command: "train --data corpus.txt" };
/** The valid models the cases start from (the first one half of the time). */
const BASES = [
  { text: TEXT, options: BASE_OPTIONS },
  { text: "ab", options: { blockSize: 1, dModel: 1, nLayers: 1, nHeads: 1 } },
  {
    text: "a\u0000\u001b[31m\n\r\t\u{1f600}\u00e9\u2028\ufeff\u{10ffff}",
    options: { blockSize: 4, dModel: 4, nLayers: 2, nHeads: 4 },
  },
  { text: "z", options: { blockSize: 16, dModel: 8, nLayers: 2, nHeads: 1 } },
  { text: TEXT, options: { blockSize: 3, dModel: 12, nLayers: 3, nHeads: 3 } },
];

let baseDrafts: Draft[] | undefined;
function modelBases(): Draft[] {
  return baseDrafts ??= BASES.map(({ text, options }) => {
    using model = createModel(text, options);
    return draftOf(saveWeights(model, BASE_FACTS));
  });
}

const CONFIG_KEYS = ["vocab_size", "block_size", "d_model", "n_layers", "n_heads"];
/** JSON tokens (and a few that are not JSON) for config values. */
const CONFIG_TOKENS = [
  "0",
  "-1",
  "1",
  "2",
  "3",
  "-0",
  "1.5",
  "2.0",
  "1e3",
  "1e400",
  "-1e400",
  "65536",
  "65537",
  "8192",
  "8193",
  "256",
  "257",
  "1024",
  "2147483648",
  "4294967296",
  "9007199254740992",
  "9007199254740993",
  "1e-7",
  '"16"',
  '"8"',
  "null",
  "true",
  "false",
  "[]",
  "{}",
  "[16]",
  '"NaN"',
  '"Infinity"',
  "NaN",
  "Infinity",
  "0x10",
  "+1",
  ".5",
  "01",
];
const JSON_TOKENS = CONFIG_TOKENS.filter((t) => {
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
});
const CONFIG_TEXTS = [
  "",
  " ",
  "{",
  "}",
  "null",
  "[]",
  "[28,8,16,1,2]",
  '"config"',
  "0",
  "true",
  "{}",
  "NaN",
  "Infinity",
  "\u0000",
  "\ufeff{}",
  "{'vocab_size':28}",
  '{"vocab_size":28',
  "x".repeat(100_000),
  "[".repeat(10_000) + "]".repeat(10_000),
];
/** Configs that declare far more than any file holds, or more than the kernels address. */
const HUGE_CONFIGS: { config: Record<string, number>; keepTensors: boolean }[] = [
  { config: { n_layers: 1024, d_model: 65536 }, keepTensors: false },
  { config: { n_layers: 1024, d_model: 65536 }, keepTensors: true },
  { config: { n_layers: 256, d_model: 8192, n_heads: 8192, block_size: 8192 }, keepTensors: false },
  {
    config: { n_layers: 256, d_model: 8192, n_heads: 1, block_size: 8192, vocab_size: 65536 },
    keepTensors: true,
  },
  { config: { block_size: 65536 }, keepTensors: true },
  { config: { block_size: 8192 }, keepTensors: true },
  { config: { d_model: 8192, n_layers: 1, n_heads: 1, block_size: 8192 }, keepTensors: false },
  { config: { d_model: 8192, n_layers: 1, n_heads: 1, block_size: 8192 }, keepTensors: true },
  { config: { vocab_size: 65536 }, keepTensors: true },
  { config: { d_model: 2 ** 31 }, keepTensors: true },
  { config: { n_layers: 2 ** 53 }, keepTensors: false },
  { config: { n_layers: 0 }, keepTensors: true },
  { config: { n_heads: 0 }, keepTensors: true },
  { config: { n_heads: -2 }, keepTensors: true },
];
const VOCAB_TEXTS = [
  "",
  " ",
  "[",
  "null",
  "{}",
  '"abc"',
  "[]",
  "[1,2]",
  "[[]]",
  "[null]",
  '["a",1]',
  "abc",
  "\u0000",
  '["ab"]',
  '[""]',
  '["\\ud800\\udc00\\ud800"]',
  "[]]]",
];
/** Single code points a vocabulary may hold (all must load unless repeated). */
const SINGLE_CHARS = [
  "\u0000",
  "\u001b",
  "\n",
  "\r",
  "\t",
  "\u007f",
  "\u0085",
  "\u2028",
  "\u2029",
  "\ufeff",
  "\ufffd",
  "\ud800",
  "\udfff",
  "\u{10ffff}",
  "\u{1f600}",
  "\u0301",
  '"',
  "\\",
  "<",
  "%",
];
/** Entries that are not one character. */
const MULTI_CHARS = [
  "ab",
  "",
  "e\u0301",
  "\r\n",
  "\u{1f600}\u{1f600}",
  "\u{1f44d}\u{1f3fd}",
  "\\n",
];
const NOT_STRINGS = [1, 0, null, true, [], {}, ["a"], { a: "b" }];
/** Strings to hide in metadata and names: escapes, line breaks, lone surrogates, markup. */
const HOSTILE_STRINGS = [
  "\u001b[2J\u001b[31mred\u001b[0m",
  "line one\nline two",
  "a\r\nb",
  "\r",
  "\u0000",
  "\u0007",
  "\ud800",
  "\udfff",
  "\u2028\u2029",
  "\u0085",
  "\ufeff",
  '"',
  "\\",
  "\\n",
  "</script><script>alert(1)</script>",
  "${Deno.exit(1)}",
  "%s%n",
  "",
  " ",
  "NaN",
  "-1",
  "1e400",
  "[object Object]",
  "__proto__",
  "\u{1f600}",
  "\u{10ffff}",
  "x".repeat(10_000),
];
const FACT_KEYS = [
  "note",
  "command",
  "steps",
  "val_loss",
  "corpus_sha256",
  "__proto__",
  "constructor",
  "toString",
  "hasOwnProperty",
  "",
  " ",
  "\u001b[31mred",
  "a\nb",
  "\ud800",
  "x".repeat(1000),
];
const EXTRA_NAMES = [
  "h.1.ln_1.weight",
  "h.99.mlp.c_fc.bias",
  "h.-1.ln_1.weight",
  "h.01.ln_1.weight",
  "lm_head.weight",
  "wte.weight.extra",
  "WTE.weight",
  " wte.weight",
  "",
  "\u001b[31mred",
  "line\nbreak",
  "line\u2028separator",
  "next\u0085line",
  "__proto__",
  "constructor",
  "toString",
  "h.0.attn.bias",
  "optimizer.m.wte.weight",
  "\ud800",
];
const SHAPE_TEXTS = [
  "[2147483648,2147483648,2147483648]",
  "[9007199254740992,2]",
  "[9007199254740993]",
  "[18446744073709551616]",
  "[4294967296,4294967296]",
  "[1e308]",
  "[1e400]",
  "[-1,16]",
  "[1.5,16]",
  '["16"]',
  "[null]",
  '"16"',
  "{}",
  "16",
  "[[16]]",
  "null",
];
/** Dtypes other than F32, with their element widths. */
const DTYPE_WIDTHS: [string, number][] = [
  ["F16", 2],
  ["BF16", 2],
  ["F64", 8],
  ["I32", 4],
  ["I64", 8],
  ["U8", 1],
  ["BOOL", 1],
  ["f32", 4],
  ["", 4],
  ["F32\u0000", 4],
];
const FILL_VALUES = [3e38, -3e38, 1e30, 1e20, 1e10, 65504, 1, 0, -0, 1e-45, -1e-45, 1e-38];
const NON_FINITE = [NaN, Infinity, -Infinity];

function configOf(d: Draft): Record<string, unknown> | null {
  try {
    const c = JSON.parse(d.metadata.config ?? "");
    return c !== null && typeof c === "object" && !Array.isArray(c) ? c : null;
  } catch {
    return null;
  }
}

function vocabOf(d: Draft): unknown[] | null {
  try {
    const v = JSON.parse(d.metadata.vocab ?? "");
    return Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

/** An object's JSON with `key` (new or not) written as the raw `token`, keys in order. */
function rawObject(obj: Record<string, unknown>, key: string, token: string): string {
  const keys = Object.keys(obj).includes(key) ? Object.keys(obj) : [...Object.keys(obj), key];
  const fields = keys.map((k) =>
    `${JSON.stringify(k)}:${k === key ? token : JSON.stringify(obj[k])}`
  );
  return `{${fields.join(",")}}`;
}

/** Gives every tensor named `suffix` (and its optimizer moments) `rows` rows, zero-filled. */
function setRows(d: Draft, suffix: string, rows: number): void {
  for (const p of d.parts) {
    if (!p.name.endsWith(suffix) || p.shape.length !== 2) continue;
    const cols = p.shape[1], data = new Float32Array(rows * cols);
    data.set(floatsOf(p.bytes).subarray(0, Math.min(rows, p.shape[0]) * cols));
    p.shape = [rows, cols];
    p.bytes = floatBytes(data);
  }
}

const bigVocabs = new Map<number, string>();
/** The JSON of `n` distinct characters: every control character and lone surrogate first. */
function bigVocab(n: number): string {
  let json = bigVocabs.get(n);
  if (json === undefined) {
    const chars: string[] = [];
    for (let c = 0; c < 0x20; c++) chars.push(String.fromCharCode(c));
    for (let c = 0xd800; c < 0xe000; c++) chars.push(String.fromCharCode(c));
    for (let c = 0x20; chars.length < n; c++) {
      if (c < 0xd800 || c >= 0xe000) chars.push(String.fromCodePoint(c));
    }
    json = JSON.stringify(chars);
    bigVocabs.set(n, json);
  }
  return json;
}

const randomPart = (d: Draft): Part | undefined => d.parts[int(d.parts.length)];

const MODEL_MUTATIONS: Mutation<ModelOutcome>[] = [
  // --- config
  {
    name: "config value",
    group: "config",
    weight: 3,
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      const key = pick([...CONFIG_KEYS, ...CONFIG_KEYS, "extra"]);
      const v = typeof c[key] === "number" ? c[key] as number : 1;
      const token = rand() < 0.7
        ? pick(CONFIG_TOKENS)
        : String(pick([v + 1, v - 1, v * 2, v * 1024, -v, v / 2]));
      d.metadata.config = rawObject(c, key, token);
    },
  },
  {
    name: "config heads",
    group: "config",
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      c.n_heads = pick([1, 2, 3, 4, 5, 8, 16, 32, 12, 7]);
      d.metadata.config = JSON.stringify(c);
    },
  },
  {
    name: "config key removed",
    group: "config",
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      delete c[pick(CONFIG_KEYS)];
      d.metadata.config = JSON.stringify(c);
      return "refused";
    },
  },
  {
    name: "config extra key",
    group: "config",
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      const key = pick(["n_embd", "bias", "dropout", "__proto__", "constructor", "vocab_size "]);
      d.metadata.config = rawObject(c, key, pick(JSON_TOKENS));
      return "loaded";
    },
  },
  {
    name: "config duplicate key",
    group: "config",
    apply(d) {
      const text = d.metadata.config ?? "{}";
      d.metadata.config = text.replace(/\}\s*$/, `,"${pick(CONFIG_KEYS)}":${pick(CONFIG_TOKENS)}}`);
    },
  },
  {
    name: "config reformatted",
    group: "config",
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      const keys = rand() < 0.5 ? Object.keys(c).reverse() : Object.keys(c);
      const spaced = JSON.stringify(c, keys, pick([1, 2, "\t", "\n", "\r\n "]));
      d.metadata.config = spaced;
      return "loaded";
    },
  },
  {
    name: "config text",
    group: "config",
    apply(d) {
      d.metadata.config = pick(CONFIG_TEXTS);
      return "refused";
    },
  },
  {
    name: "config huge",
    group: "config",
    apply(d) {
      const { config, keepTensors } = pick(HUGE_CONFIGS);
      d.metadata.config = JSON.stringify({ ...configOf(d), ...config });
      if (!keepTensors) d.parts = [];
    },
  },
  {
    name: "config block_size fitted",
    group: "config",
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      c.block_size = 1 + int(24);
      setRows(d, "wpe.weight", c.block_size as number);
      d.metadata.config = JSON.stringify(c);
      return "loaded";
    },
  },
  {
    name: "config of another model",
    group: "config",
    apply(d) {
      const other = pick(modelBases());
      d.metadata.config = other.metadata.config;
      if (rand() < 0.5) d.metadata.vocab = other.metadata.vocab;
    },
  },
  // --- vocabulary
  {
    name: "vocab text",
    group: "vocab",
    apply(d) {
      d.metadata.vocab = pick(VOCAB_TEXTS);
      return "refused";
    },
  },
  {
    name: "vocab repeats a character",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d);
      if (!v || v.length === 0) return;
      if (v.length < 2) v[0] = "ab";
      else {
        const i = int(v.length);
        v[i] = v[(i + 1 + int(v.length - 1)) % v.length];
      }
      d.metadata.vocab = JSON.stringify(v);
      return "refused";
    },
  },
  {
    name: "vocab multi-character",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d);
      if (!v || v.length === 0) return;
      v[int(v.length)] = pick(MULTI_CHARS);
      d.metadata.vocab = JSON.stringify(v);
      return "refused";
    },
  },
  {
    name: "vocab not strings",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d);
      if (!v || v.length === 0) return;
      v[int(v.length)] = pick(NOT_STRINGS);
      d.metadata.vocab = JSON.stringify(v);
      return "refused";
    },
  },
  {
    name: "vocab exotic character",
    group: "vocab",
    weight: 2,
    apply(d) {
      const v = vocabOf(d);
      if (!v || v.length === 0) return;
      const ch = pick(SINGLE_CHARS);
      const repeated = v.includes(ch);
      v[int(v.length)] = ch;
      d.metadata.vocab = JSON.stringify(v);
      if (!repeated) return "loaded";
    },
  },
  {
    name: "vocab resized",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d), c = configOf(d);
      if (!v || !c) return;
      if (rand() < 0.5) v.pop();
      else v.push(SINGLE_CHARS.find((ch) => !v.includes(ch)));
      d.metadata.vocab = JSON.stringify(v);
      if (rand() < 0.5) return "refused"; // the config still says the old size
      c.vocab_size = v.length;
      d.metadata.config = JSON.stringify(c);
      setRows(d, "wte.weight", v.length);
      return v.length > 0 ? "loaded" : "refused";
    },
  },
  {
    name: "vocab reordered",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d);
      if (!v) return;
      d.metadata.vocab = JSON.stringify(shuffle(v), null, pick([undefined, 1, "\n"]));
      return "loaded";
    },
  },
  {
    name: "vocab escaped",
    group: "vocab",
    apply(d) {
      const v = vocabOf(d);
      if (!v) return;
      const esc = (s: string) =>
        [...s].map((c) => {
          const units = c.length === 1 ? [c] : [c[0], c[1]];
          return units.map((u) => `\\u${u.charCodeAt(0).toString(16).padStart(4, "0")}`).join("");
        }).join("");
      d.metadata.vocab = `[${v.map((ch) => `"${esc(String(ch))}"`).join(",")}]`;
      return "loaded";
    },
  },
  {
    name: "vocab of 65,536",
    group: "vocab",
    weight: 0.1,
    apply(d) {
      const c = configOf(d);
      if (!c) return;
      const n = pick([65536, 65537]);
      c.vocab_size = n;
      d.metadata.config = JSON.stringify(c);
      d.metadata.vocab = bigVocab(n);
      setRows(d, "wte.weight", n);
      return n === 65536 ? "loaded" : "refused";
    },
  },
  // --- metadata
  {
    name: "fact hostile",
    group: "metadata",
    weight: 2,
    apply(d) {
      d.metadata[pick(FACT_KEYS)] = pick(HOSTILE_STRINGS);
      return "loaded";
    },
  },
  {
    name: "fact large",
    group: "metadata",
    weight: 0.1,
    apply(d) {
      d.metadata.note = pick(["x", "\u001b[31m", "\n", "\u00e9", "\ud800"]).repeat(
        pick([10_000, 300_000]),
      );
      return "loaded";
    },
  },
  {
    name: "header over the cap",
    group: "metadata",
    weight: 0.05,
    apply(d) {
      d.metadata.note = "x".repeat(MAX_MODEL_HEADER_BYTES + 1);
      return "refused";
    },
  },
  {
    name: "facts many",
    group: "metadata",
    weight: 0.2,
    apply(d) {
      for (let k = 0; k < 5000; k++) d.metadata[`fact_${k}`] = String(k);
      return "loaded";
    },
  },
  {
    name: "metadata removed",
    group: "metadata",
    apply(d) {
      const key = pick(["config", "vocab", pick(Object.keys(d.metadata))]);
      delete d.metadata[key];
      if (key === "config" || key === "vocab") return "refused";
    },
  },
  {
    name: "metadata key misspelt",
    group: "metadata",
    apply(d) {
      const key = pick(["config", "vocab"]);
      const value = d.metadata[key];
      if (value === undefined) return;
      delete d.metadata[key];
      d.metadata[pick([key.toUpperCase(), `${key} `, ` ${key}`, `${key}\u0000`])] = value;
      return "refused";
    },
  },
  {
    name: "checkpoint keys in a model file",
    group: "metadata",
    apply(d) {
      d.metadata.adam_t = pick(["1", "x", "", "-1"]);
      if (rand() < 0.5) d.metadata.rng_state = pick(["[1,2,3,4]", "[0,0,0,0]", "x"]);
      return "loaded";
    },
  },
  // --- tensors
  {
    name: "tensor removed",
    group: "tensors",
    apply(d) {
      d.parts.splice(int(d.parts.length), 1);
      return "refused";
    },
  },
  {
    name: "tensors removed",
    group: "tensors",
    apply(d) {
      d.parts = rand() < 0.5 ? [] : d.parts.filter(() => rand() < 0.5);
    },
  },
  {
    name: "tensor added",
    group: "tensors",
    apply(d) {
      const shape = pick([[2], [], [0], [1, 1]]), name = pick(EXTRA_NAMES);
      const twice = d.parts.some((p) => p.name === name);
      d.parts.splice(int(d.parts.length + 1), 0, {
        name,
        dtype: "F32",
        shape,
        bytes: filledBytes(elements(shape), 0.5),
      });
      // a name written twice: JSON keeps the last entry, and an empty first one leaves no gap
      if (!twice) return "refused";
    },
  },
  {
    name: "tensor renamed",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      const others = d.parts.filter((q) => q !== p).map((q) => q.name);
      p.name = rand() < 0.5 || others.length === 0 ? pick(EXTRA_NAMES) : pick(others);
      return "refused";
    },
  },
  {
    name: "tensor names swapped",
    group: "tensors",
    apply(d) {
      const p = randomPart(d), q = randomPart(d);
      if (!p || !q) return;
      [p.name, q.name] = [q.name, p.name];
      if (String(p.shape) === String(q.shape)) return "loaded";
    },
  },
  {
    name: "tensor reshaped",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      const n = elements(p.shape), s = p.shape;
      const candidates = [[n], [1, ...s], [...s, 1], [...s].reverse(), [], [n, 1], [1, n]]
        .filter((c) => elements(c) === n && (String(c) !== String(s) || c.length !== s.length));
      if (candidates.length === 0) return;
      p.shape = pick(candidates);
      return "refused";
    },
  },
  {
    name: "tensor zero dimension",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      p.shape = p.shape.length === 0
        ? [0]
        : p.shape.map((x, i) => (i === int(p.shape.length) ? 0 : x));
      if (!p.shape.includes(0)) p.shape[0] = 0;
      p.bytes = new Uint8Array(0);
      return "refused";
    },
  },
  {
    name: "tensor shape hostile",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      p.shapeText = pick(SHAPE_TEXTS);
      return "refused";
    },
  },
  {
    name: "tensor data length",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      const delta = pick([-4, 4, -1, 1, 2, 3, 400]);
      const bytes = new Uint8Array(Math.max(0, p.bytes.length + delta));
      bytes.set(p.bytes.subarray(0, bytes.length));
      p.bytes = bytes;
      return "refused";
    },
  },
  {
    name: "tensor dtype",
    group: "tensors",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      const [dtype, width] = pick(DTYPE_WIDTHS);
      p.dtype = dtype;
      p.bytes = Uint8Array.from({ length: elements(p.shape) * width }, () => int(256));
      return "refused";
    },
  },
  {
    name: "tensors reordered",
    group: "tensors",
    apply(d) {
      shuffle(d.parts);
      return "loaded";
    },
  },
  {
    name: "tensor entry extra field",
    group: "tensors",
    weight: 0.5,
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      p.extraText = pick([
        "1",
        '"\\u001b[31m"',
        "null",
        "[".repeat(5000) + "]".repeat(5000),
        '{"__proto__":{"dtype":"F16"}}',
      ]);
      return "loaded";
    },
  },
  // --- values
  {
    name: "values all",
    group: "values",
    apply(d) {
      const value = pick(FILL_VALUES);
      for (const p of d.parts) p.bytes = filledBytes(p.bytes.length / 4, value);
      if (Math.abs(value) === 3e38) return "use refused";
      if (value === 0 || Math.abs(value) < 1e-30) return "loaded";
    },
  },
  {
    name: "values one tensor",
    group: "values",
    apply(d) {
      const p = randomPart(d);
      if (p) p.bytes = filledBytes(p.bytes.length / 4, pick(FILL_VALUES));
    },
  },
  {
    name: "values scaled",
    group: "values",
    apply(d) {
      const p = randomPart(d);
      if (!p) return;
      const scale = 10 ** (int(84) - 45);
      p.bytes = floatBytes(floatsOf(p.bytes).map((x) => x * scale));
    },
  },
  {
    name: "value not finite",
    group: "values",
    apply(d) {
      const p = d.parts.find((q) => q.bytes.length >= 4 && rand() < 0.3) ??
        d.parts.find((q) => q.bytes.length >= 4);
      if (!p) return;
      const bytes = p.bytes.slice(), view = new DataView(bytes.buffer);
      if (rand() < 0.3) {
        view.setUint32(4 * int(bytes.length / 4), pick([0x7fc00001, 0xffffffff, 0x7f800001]), true);
      } else if (rand() < 0.5) {
        for (let i = 0; i < bytes.length; i += 4) view.setFloat32(i, pick(NON_FINITE), true);
      } else view.setFloat32(4 * int(bytes.length / 4), pick(NON_FINITE), true);
      p.bytes = bytes;
      return "refused";
    },
  },
];

/** A text of `n` token ids cycling through the vocabulary, for evaluation. */
const idsOf = (n: number, vocabSize: number) =>
  Uint16Array.from({ length: n }, (_, j) => j % vocabSize);

/**
 * Uses a loaded model as a program would: the next character's distribution, then (unless
 * `light`) a few generated characters, the loss on a short text, and a save and reload. Returns
 * the message of the first use refused (a WeightsError or InputError of one line), or undefined
 * when every use worked.
 */
async function useModel(model: Model, d: Draft, what: string, seed: number, light: boolean) {
  const V = model.config.vocabSize, T = model.config.blockSize, vocab = model.tokenizer.vocab;
  assert.equal(vocab.length, V, `${what}: vocabulary size`);
  // the facts are the file's metadata, every value as it was, less what is the model itself
  const checkpoint = d.metadata.adam_t !== undefined;
  const facts = Object.entries(d.metadata).filter(([k]) =>
    k !== "config" && k !== "vocab" && !(checkpoint && (k === "adam_t" || k === "rng_state"))
  );
  assert.deepEqual(
    Object.entries(model.facts).sort(),
    facts.sort(),
    `${what}: the facts are the file's metadata`,
  );
  let refused: string | undefined;
  try {
    const dist = nextCharDistribution(model, "");
    assert.equal(dist.length, V, `${what}: a probability per character`);
    let sum = 0;
    for (const { prob, char, id } of dist) {
      assert.ok(Number.isFinite(prob) && prob >= 0, `${what}: probability ${prob}`);
      assert.equal(char, vocab[id], `${what}: character of id ${id}`);
      sum += prob;
    }
    assert.ok(Math.abs(sum - 1) < 1e-6, `${what}: probabilities sum to ${sum}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    refused ??= refusal(e, `${what}: nextCharDistribution`);
  }
  if (light) return refused;
  try {
    const out = await Array.fromAsync(generate(model, { tokens: 3, seed, temperature: 1 }));
    assert.equal(out.length, 3, `${what}: generated characters`);
    for (const ch of out) assert.ok(vocab.includes(ch), `${what}: generated ${JSON.stringify(ch)}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    refused ??= refusal(e, `${what}: generate`);
  }
  try {
    const { loss } = await evaluate(model, idsOf(2 * T + 1, V), { maxWindows: 2 });
    assert.ok(Number.isFinite(loss) && loss >= 0, `${what}: loss ${loss}`);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    refused ??= refusal(e, `${what}: evaluate`);
  }
  // nothing is lost in a save and reload: config, vocabulary, facts
  const again = await loadWeights(saveWeights(model));
  try {
    assert.deepEqual(again.config, model.config, `${what}: config after a save and reload`);
    assert.deepEqual(again.tokenizer.vocab, vocab, `${what}: vocabulary after a save and reload`);
    assert.deepEqual(
      { ...again.facts },
      { ...model.facts },
      `${what}: facts after a save and reload`,
    );
  } finally {
    again.dispose();
  }
  return refused;
}

/** Loads bytes and uses the model; the outcome and, when refused, the message. */
async function tryModelFile(
  bytes: Uint8Array,
  d: Draft,
  what: string,
  seed: number,
  light = false,
): Promise<{ outcome: ModelOutcome; message?: string }> {
  let model: Model;
  try {
    model = await loadWeights(bytes);
  } catch (e) {
    return { outcome: "refused", message: refusal(e, `${what}: loadWeights`) };
  }
  try {
    const message = await useModel(model, d, what, seed, light);
    if (message === undefined) return { outcome: "loaded" };
    // a file that loads can only fail to work by overflowing
    assert.match(message, /non-finite logits/, `${what}: a loaded model refused to work`);
    return { outcome: "use refused", message };
  } finally {
    model.dispose();
  }
}

/** Applies one mutation, and one to two more a quarter of the time; returns the names applied. */
function mutate<O extends string>(
  d: Draft,
  first: readonly Mutation<O>[],
  more: readonly Mutation<string>[],
): { applied: string[]; group: string; expect: O | void } {
  const m = pickWeighted(first);
  const expect = m.apply(d);
  const applied = [m.name];
  if (rand() < 0.25) {
    for (let k = 1 + int(2); k > 0; k--) {
      const n = pickWeighted(more);
      n.apply(d);
      applied.push(n.name);
    }
    return { applied, group: m.group, expect: undefined };
  }
  return { applied, group: m.group, expect };
}

Deno.test(`fuzz: ${MODEL_CASES} hostile model files load and work, or throw WeightsError`, async () => {
  const bases = modelBases();
  // the hand-written encoder writes what the library's does
  for (const b of bases) assert.deepEqual(encodeByHand(b), encodeDraft(b));
  const tally = new Tally();
  const start = performance.now();
  for (let i = 0; i < MODEL_CASES; i++) {
    reseed(STREAM.model, i);
    const t0 = performance.now();
    const baseIndex = rand() < 0.5 ? 0 : int(bases.length);
    const d = clone(bases[baseIndex]);
    const { applied, group, expect } = mutate(d, MODEL_MUTATIONS, MODEL_MUTATIONS);
    const what = `model case ${i} (base ${baseIndex}: ${applied.join(" + ")})`;
    const { outcome, message } = await tryModelFile(encodeDraft(d), d, what, i);
    if (expect !== undefined) assert.equal(outcome, expect, `${what}: ${message ?? "no error"}`);
    if (expect === "use refused") assert.match(message!, /non-finite logits/, what);
    tally.add(group, outcome, message);
    tally.time(performance.now() - t0, what);
  }
  tally.print(`model files: ${MODEL_CASES} cases`, (performance.now() - start) / 1000);
  const all = ["loaded", "refused"] as const;
  tally.assertReached({
    config: all,
    vocab: all,
    metadata: all,
    tensors: all,
    values: ["loaded", "use refused", "refused"],
  });
});

// ---------------------------------------------------------------------------------------------
// Checkpoints

type RestoreOutcome = "restored" | "refused";

const CKPT_OPTIONS = { steps: 4, batch: 2, seed: 3 };
const CKPT_FACTS = { command: "train --data corpus.txt --out model.safetensors" };
const INT_STRINGS = [
  "-1",
  "-0",
  "0",
  "1",
  "2",
  "4",
  "5",
  "1.5",
  "1e300",
  "1e400",
  "Infinity",
  "NaN",
  "abc",
  "",
  " ",
  " 1 ",
  "0x10",
  "0b1",
  "1e0",
  "+1",
  "\u0661",
  "9007199254740993",
  "4294967296",
  "null",
  "[1]",
  "\u001b[31m1",
];
const RNG_STATES = [
  "[0,0,0,0]",
  "[1,2,3]",
  "[1,2,3,4,5]",
  "[1,2,3,4.5]",
  "[-1,2,3,4]",
  "[4294967296,1,1,1]",
  '["1","2","3","4"]',
  "deadbeefdeadbeefdeadbeefdeadbeef",
  '"deadbeef"',
  "",
  "null",
  "{}",
  "[1e0,2,3,4]",
  "[0,0,0,1]",
  "[4294967295,4294967295,4294967295,4294967295]",
  "[1,2,3,NaN]",
  "[1, 2, 3, 4]",
  "[[1],2,3,4]",
  "[1,2,3,4]\n",
];
const SETTINGS_TEXTS = [
  "{",
  "",
  "null",
  "[]",
  "42",
  '"x"',
  "{}",
  "true",
  "[1,2]",
  '{"batch":"2"}',
  '{"steps":4.0}',
  '{"lr":1e400}',
  '{"__proto__":{"batch":3}}',
  '{"batch":2,"batch":3}',
  "x".repeat(10_000),
];
const SETTING_KEYS = [
  "batch",
  "steps",
  "lr",
  "minLr",
  "warmup",
  "weightDecay",
  "beta1",
  "beta2",
  "clip",
  "dropout",
  "seed",
  "decay",
];
const SETTING_TOKENS = [
  "3",
  "-1",
  "0",
  "1e400",
  "null",
  '"2"',
  "true",
  "[]",
  "{}",
  "0.004",
  "4e-3",
  '"cosine"',
  "1e9",
];

/** Sets (or, a tenth of the time, deletes) a metadata value. */
function setMeta(d: Draft, key: string, value: string): void {
  if (rand() < 0.1) delete d.metadata[key];
  else d.metadata[key] = value;
}

/** A metadata integer as `Checkpoint.decode` reads it: a whole number of 0 or more, or null. */
function wholeNumber(text: string | undefined): number | null {
  const x = Number(text);
  return Number.isInteger(x) && x >= 0 ? x : null;
}

const optimizerParts = (d: Draft) => d.parts.filter((p) => p.name.startsWith("optimizer."));
const weightParts = (d: Draft) => d.parts.filter((p) => !p.name.startsWith("optimizer."));

const CHECKPOINT_MUTATIONS: Mutation<RestoreOutcome>[] = [
  {
    name: "adam_t",
    group: "ckpt state",
    apply(d) {
      setMeta(d, "adam_t", pick(INT_STRINGS));
      return wholeNumber(d.metadata.adam_t) === null ? "refused" : undefined;
    },
  },
  {
    name: "step",
    group: "ckpt state",
    apply(d) {
      setMeta(d, "step", pick(INT_STRINGS));
      const step = wholeNumber(d.metadata.step);
      if (step === null || step > CKPT_OPTIONS.steps) return "refused";
    },
  },
  {
    name: "rng_state",
    group: "ckpt state",
    apply(d) {
      setMeta(d, "rng_state", pick(RNG_STATES));
    },
  },
  {
    name: "train_settings text",
    group: "ckpt settings",
    apply(d) {
      setMeta(d, "train_settings", pick(SETTINGS_TEXTS));
    },
  },
  {
    name: "train_settings value",
    group: "ckpt settings",
    weight: 2,
    apply(d) {
      let s: Record<string, unknown>;
      try {
        s = JSON.parse(d.metadata.train_settings ?? "");
      } catch {
        return;
      }
      if (s === null || typeof s !== "object") return;
      const key = pick([...SETTING_KEYS, "threads", "extra"]);
      if (rand() < 0.3) {
        delete s[key];
        d.metadata.train_settings = JSON.stringify(s);
        return "restored"; // a setting not stored is not compared
      }
      d.metadata.train_settings = rawObject(s, key, pick(SETTING_TOKENS));
    },
  },
  {
    name: "corpus_sha256",
    group: "ckpt settings",
    apply(d) {
      const sha = d.metadata.corpus_sha256 ?? "";
      setMeta(
        d,
        "corpus_sha256",
        pick([sha.toUpperCase(), `${sha} `, sha.slice(1), "0".repeat(64), ""]),
      );
      return "refused";
    },
  },
  {
    name: "threads and kernels",
    group: "ckpt settings",
    apply(d) {
      setMeta(
        d,
        pick(["threads", "kernels"]),
        pick([...HOSTILE_STRINGS, "0", "-1", "1e9", "wasm"]),
      );
      return "restored";
    },
  },
  {
    name: "optimizer tensor removed",
    group: "ckpt tensors",
    apply(d) {
      const p = pick(optimizerParts(d));
      if (!p) return;
      d.parts = d.parts.filter((q) => q !== p);
      return "refused";
    },
  },
  {
    name: "optimizer tensor reshaped",
    group: "ckpt tensors",
    apply(d) {
      const p = pick(optimizerParts(d));
      if (!p) return;
      p.shape = p.shape.length === 1 ? [1, ...p.shape] : [elements(p.shape)];
      return "refused";
    },
  },
  {
    name: "optimizer tensor renamed",
    group: "ckpt tensors",
    apply(d) {
      const p = pick(optimizerParts(d));
      if (!p) return;
      p.name = p.name.replace(/^optimizer\.[mv]\./, pick(["optimizer.x.", "optimizer.", "opt.m."]));
      return "refused";
    },
  },
  {
    name: "optimizer tensor added",
    group: "ckpt tensors",
    apply(d) {
      d.parts.push({
        name: `optimizer.${pick(["extra", "m", "v.extra", "m.h.9.ln_1.weight", "\u001b[31m"])}`,
        dtype: "F32",
        shape: [3],
        bytes: filledBytes(3, 0.25),
      });
      return "restored";
    },
  },
  {
    name: "optimizer values",
    group: "ckpt tensors",
    apply(d) {
      const moment = pick(["m", "v"]);
      const value = pick([3e38, -3e38, -1, 0, 1e-45, 1e30]);
      for (const p of optimizerParts(d)) {
        if (p.name.startsWith(`optimizer.${moment}.`) && rand() < 0.5) {
          p.bytes = filledBytes(p.bytes.length / 4, value);
        }
      }
      // negative second moments (no run makes them) restore today and put NaN in the weights at
      // the next update; refusing them at restore would be right too, so only the rest is fixed
      if (moment === "m" || value >= 0) return "restored";
    },
  },
  {
    name: "weights values",
    group: "ckpt tensors",
    apply(d) {
      const value = pick([3e38, -3e38, 1e20, 0]);
      for (const p of weightParts(d)) {
        if (rand() < 0.5) p.bytes = filledBytes(p.bytes.length / 4, value);
      }
      // overflowing weights restore today and stop the next step; refusing them would be right too
      if (value === 0) return "restored";
    },
  },
  {
    name: "not a checkpoint",
    group: "ckpt state",
    apply(d) {
      delete d.metadata.adam_t;
      if (rand() < 0.5) d.parts = weightParts(d);
      return "refused";
    },
  },
];

/** A trainer with a checkpoint after one step, and a second, fresh trainer to restore into. */
async function checkpointSetup() {
  const model = createModel(TEXT, BASE_OPTIONS);
  let base: Uint8Array;
  {
    using first = await createTrainer(model, TEXT, CKPT_OPTIONS);
    await first.step();
    base = first.checkpoint(CKPT_FACTS);
  }
  const trainer = await createTrainer(model, TEXT, CKPT_OPTIONS);
  trainer.restore(base);
  assert.deepEqual(
    trainer.checkpoint(CKPT_FACTS),
    base,
    "restore, then checkpoint, gives the same bytes",
  );
  return { model, trainer, base };
}

/**
 * Restores bytes into the trainer, which holds `base`'s state. A refused restore must be a
 * one-line WeightsError or InputError and leave the trainer as it was (the same checkpoint bytes,
 * and a step with a finite loss). A restore that succeeds returns the file's threads and kernels
 * as they were; the step after it has a finite loss, or stops with a one-line BareGPTError when
 * the restored state is poisoned (overflowing weights, negative second moments). The trainer is
 * put back to `base` before returning.
 */
async function tryRestore(
  trainer: Trainer,
  base: Uint8Array,
  bytes: Uint8Array,
  metadata: Record<string, string> | null,
  what: string,
): Promise<{ outcome: RestoreOutcome; message?: string; after: string }> {
  let result: { step: number; threads?: string; kernels?: string };
  try {
    result = trainer.restore(bytes);
  } catch (e) {
    const message = refusal(e, `${what}: restore`);
    assert.ok(
      equalBytes(trainer.checkpoint(CKPT_FACTS), base),
      `${what}: a refused restore changed the trainer's state`,
    );
    const loss = await trainer.step();
    assert.ok(Number.isFinite(loss), `${what}: loss ${loss} after a refused restore`);
    trainer.restore(base);
    return { outcome: "refused", message, after: "finite" };
  }
  assert.ok(Number.isSafeInteger(result.step) && result.step >= 0, `${what}: step ${result.step}`);
  if (metadata !== null) {
    assert.equal(result.threads, metadata.threads, `${what}: threads as stored`);
    assert.equal(result.kernels, metadata.kernels, `${what}: kernels as stored`);
  }
  let after = "finite";
  try {
    const loss = await trainer.step();
    assert.ok(Number.isFinite(loss), `${what}: step after restore gave ${loss}`);
    trainer.checkpoint(CKPT_FACTS);
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    after = `diverged: ${refusal(e, `${what}: step after a restore`, isBareGPTError).slice(0, 60)}`;
  }
  trainer.restore(base);
  return { outcome: "restored", after };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test(`fuzz: ${CHECKPOINT_CASES} hostile checkpoints load and restore, or throw WeightsError`, async () => {
  const { model, trainer, base } = await checkpointSetup();
  const baseDraft = draftOf(base);
  const loads = new Tally(), restores = new Tally();
  const start = performance.now();
  try {
    for (let i = 0; i < CHECKPOINT_CASES; i++) {
      reseed(STREAM.checkpoint, i);
      const t0 = performance.now();
      const d = clone(baseDraft);
      // mostly the checkpoint's own state; a quarter of the time what any model file can get
      const first = rand() < 0.75 ? CHECKPOINT_MUTATIONS : MODEL_MUTATIONS;
      const { applied, group, expect } = mutate<string>(d, first, [
        ...CHECKPOINT_MUTATIONS,
        ...MODEL_MUTATIONS,
      ]);
      const what = `checkpoint case ${i} (${applied.join(" + ")})`;
      const bytes = encodeDraft(d);
      // a checkpoint loads as its weights
      const loaded = await tryModelFile(bytes, d, what, i, true);
      loads.add(group, loaded.outcome, loaded.message);
      const restored = await tryRestore(trainer, base, bytes, d.metadata, what);
      if (first === CHECKPOINT_MUTATIONS && expect !== undefined) {
        assert.equal(restored.outcome, expect, `${what}: ${restored.message ?? "no error"}`);
      }
      restores.add(group, restored.outcome, restored.message);
      if (restored.outcome === "restored") restores.add(group, `then ${restored.after}`);
      restores.time(performance.now() - t0, what);
    }
  } finally {
    trainer.close();
    model.dispose();
  }
  const seconds = (performance.now() - start) / 1000;
  loads.print(`checkpoints through loadWeights: ${CHECKPOINT_CASES} cases`, seconds);
  restores.print(`checkpoints through restore: ${CHECKPOINT_CASES} cases`, seconds);
  const both = ["restored", "refused"] as const;
  restores.assertReached({
    "ckpt state": both,
    "ckpt settings": both,
    "ckpt tensors": both,
    config: ["refused"],
  });
  loads.assertReached({ "ckpt state": ["loaded"], "ckpt tensors": ["loaded", "use refused"] });
  assert.ok(loads.count(null, "refused") > 0, "some checkpoint was refused by loadWeights");
});

Deno.test(
  `fuzz: ${CHECKPOINT_BYTE_CASES} mutated checkpoint files decode and restore, or throw WeightsError`,
  async () => {
    const { model, trainer, base } = await checkpointSetup();
    const kinds = Object.keys(MUTATORS);
    const decodes = new Tally(), restores = new Tally();
    const start = performance.now();
    try {
      for (let i = 0; i < CHECKPOINT_BYTE_CASES; i++) {
        reseed(STREAM.checkpointBytes, i);
        const t0 = performance.now();
        let bytes = base;
        const applied: string[] = [];
        for (let k = 1 + (rand() < 0.3 ? 1 + int(2) : 0); k > 0; k--) {
          const kind = pick(kinds);
          applied.push(kind);
          bytes = MUTATORS[kind](bytes);
        }
        const what = `checkpoint byte case ${i} (${applied.join(" + ")})`;
        let metadata: Record<string, string> | null = null;
        try {
          metadata = Checkpoint.decode(bytes).metadata;
          decodes.add(applied[0], "decoded");
        } catch (e) {
          decodes.add(applied[0], "refused", refusal(e, `${what}: Checkpoint.decode`));
        }
        const r = await tryRestore(trainer, base, bytes, metadata, what);
        if (metadata === null) assert.equal(r.outcome, "refused", `${what}: restored, not decoded`);
        restores.add(applied[0], r.outcome, r.message);
        if (r.outcome === "restored") restores.add(applied[0], `then ${r.after}`);
        restores.time(performance.now() - t0, what);
      }
    } finally {
      trainer.close();
      model.dispose();
    }
    const seconds = (performance.now() - start) / 1000;
    decodes.print(`checkpoint bytes through Checkpoint.decode: ${CHECKPOINT_BYTE_CASES}`, seconds);
    restores.print(`checkpoint bytes through restore: ${CHECKPOINT_BYTE_CASES}`, seconds);
    assert.ok(decodes.count(null, "decoded") > 0 && decodes.count(null, "refused") > 0);
    assert.ok(restores.count(null, "restored") > 0 && restores.count(null, "refused") > 0);
    assert.ok(
      restores.messages.size >= 15,
      `only ${restores.messages.size} kinds of error reached`,
    );
  },
);

Deno.test("checkpoint: a header over the model-file cap is refused before it is parsed", async () => {
  const { model, trainer, base } = await checkpointSetup();
  try {
    // a real checkpoint whose metadata is made longer than the cap (Trainer.checkpoint refuses
    // to write one, so it is re-encoded)
    const decoded = decodeSafetensors(base);
    const big = encodeSafetensors(
      [...decoded.tensors].map(([name, t]) => ({ name, shape: t.shape, data: t.data })),
      { ...decoded.metadata, note: "x".repeat(MAX_MODEL_HEADER_BYTES) },
    );
    const over = new RegExp(`larger than the limit of ${MAX_MODEL_HEADER_BYTES} bytes`);
    assert.throws(
      () => Checkpoint.decode(big),
      (e) => e instanceof WeightsError && over.test(e.message),
    );
    await assert.rejects(
      loadWeights(big),
      (e) => e instanceof WeightsError && over.test(e.message),
    );
    assert.throws(
      () => trainer.restore(big),
      (e) => e instanceof WeightsError && over.test(e.message),
    );
    assert.deepEqual(trainer.checkpoint(CKPT_FACTS), base, "the refused restore changed nothing");
    // a header that claims 2^40 bytes is refused by its length alone, not read as truncated
    const claim = new Uint8Array(64);
    new DataView(claim.buffer).setBigUint64(0, 2n ** 40n, true);
    assert.throws(
      () => Checkpoint.decode(claim),
      (e) => e instanceof WeightsError && over.test(e.message),
    );
    // under the cap, a checkpoint with long facts restores
    const long = trainer.checkpoint({ note: "x".repeat(MAX_MODEL_HEADER_BYTES / 2) });
    assert.equal(trainer.restore(long).step, 1);
  } finally {
    trainer.close();
    model.dispose();
  }
});

Deno.test("checkpoint: the cap holds the header of the largest checkpoint the validator allows", () => {
  // 256 layers of width 8192 (3 x 3,076 tensor entries with 11-digit offsets) and 65,536
  // characters of the longest JSON (control characters, lone surrogates, astral characters)
  const L = 256, d = 8192, V = 65536, T = 8192;
  const names = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"];
  for (let i = 0; i < L; i++) {
    for (const n of ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"]) {
      names.push(`h.${i}.${n}`);
    }
    for (const n of ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]) {
      names.push(`h.${i}.${n}.weight`, `h.${i}.${n}.bias`);
    }
  }
  const entry = (name: string) =>
    `${JSON.stringify(name)}:{"dtype":"F32","shape":[${V},${
      4 * d
    }],"data_offsets":[99999999999,99999999999]},`;
  let bytes = 0;
  for (const prefix of ["", "optimizer.m.", "optimizer.v."]) {
    for (const n of names) bytes += utf8.encode(entry(prefix + n)).length;
  }
  const vocab = JSON.stringify(bigVocab(V)); // JSON in JSON: the metadata value
  const config = JSON.stringify(
    JSON.stringify({ vocab_size: V, block_size: T, d_model: d, n_layers: L, n_heads: d }),
  );
  const settings = JSON.stringify(JSON.stringify({ batch: 4096, steps: 1e9, lr: 0.004 }));
  bytes += utf8.encode(vocab).length + config.length + settings.length + 1000;
  assert.ok(bytes < MAX_MODEL_HEADER_BYTES / 2, `${bytes} bytes`);
  if (REPORT) console.log(`largest checkpoint header: about ${bytes} bytes`);
});
