import assert from "node:assert/strict";
import { BareGPTError, InputError, isBareGPTError, WeightsError } from "../lib/errors.ts";
import { decodeSafetensors, encodeSafetensors, type TensorEntry } from "../lib/safetensors.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

const utf8 = new TextEncoder();

/** A file from raw parts: u64 LE header length (defaults to the header's), header, data. */
function rawFile(header: string | Uint8Array, data: ArrayLike<number> = [], length?: bigint) {
  const h = typeof header === "string" ? utf8.encode(header) : header;
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

/** Little-endian bytes of F32 values. */
function f32Bytes(...values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return out;
}

/** A header with one entry per [name, shape, begin, end] (and optional extra JSON fields). */
function header(...entries: [string, number[], number, number][]): string {
  const parts = entries.map(([name, shape, b, e]) =>
    `${JSON.stringify(name)}:{"dtype":"F32","shape":${
      JSON.stringify(shape)
    },"data_offsets":[${b},${e}]}`
  );
  return `{${parts.join(",")}}`;
}

/** Asserts that decoding throws a one-line WeightsError containing `substring`. */
function rejects(bytes: Uint8Array, substring: string, opts?: { maxHeaderBytes?: number }) {
  assert.throws(
    () => decodeSafetensors(bytes, opts),
    (e: unknown) => {
      assert.ok(e instanceof WeightsError, `expected WeightsError, got ${e}`);
      assert.ok(
        e.message.includes(substring),
        `message ${JSON.stringify(e.message)} lacks ${JSON.stringify(substring)}`,
      );
      assert.ok(!/[\r\n]/.test(e.message), "message must be one line");
      return true;
    },
  );
}

const bits = (a: Float32Array) => Array.from(new Uint32Array(a.slice().buffer));

// ---------------------------------------------------------------------------------------------
// Errors

Deno.test("errors: classes, names, exit codes, one-line messages", () => {
  const w = new WeightsError("weights file is bad\n  re-download it");
  assert.ok(w instanceof InputError && w instanceof BareGPTError && w instanceof Error);
  assert.equal(w.name, "WeightsError");
  assert.equal(w.message, "weights file is bad re-download it");
  assert.equal(w.exitCode, 2);
  assert.equal(new InputError("x").name, "InputError");
  assert.equal(new InputError("x").exitCode, 2);
  assert.equal(new BareGPTError("x").name, "BareGPTError");
  assert.equal(new BareGPTError("x").exitCode, 1);
  assert.ok(isBareGPTError(w));
  assert.ok(!isBareGPTError(new Error("x")));
  assert.ok(!isBareGPTError("x"));
  const cause = new Error("inner");
  assert.equal(new WeightsError("outer", { cause }).cause, cause);
});

// ---------------------------------------------------------------------------------------------
// Round trip and format

const SAMPLE: TensorEntry[] = [
  { name: "wte.weight", shape: [2, 3], data: new Float32Array([1, -2, 3.5, 0, -0, 1e-42]) },
  { name: "0", shape: [], data: new Float32Array([3.4028234663852886e38]) }, // integer-like name
  { name: "empty", shape: [0, 4], data: new Float32Array(0) },
  { name: "h.0.ln_1.bias ✓ é😀", shape: [1], data: new Float32Array([-1.5e-45]) },
];
// "__proto__" and "constructor" must be plain keys, never prototypes.
const SAMPLE_META: Record<string, string> = JSON.parse(
  '{"vocab":"[\\"a\\",\\"\\\\n\\"]","config":"{\\"d_model\\":3}","__proto__":"p","constructor":"c"}',
);

Deno.test("round trip: encode then decode gives the same tensors and metadata", () => {
  const bytes = encodeSafetensors(SAMPLE, SAMPLE_META);
  const { tensors, metadata } = decodeSafetensors(bytes);
  assert.deepEqual([...tensors.keys()], SAMPLE.map((t) => t.name));
  for (const t of SAMPLE) {
    const got = tensors.get(t.name)!;
    assert.deepEqual(got.shape, t.shape);
    assert.ok(got.data instanceof Float32Array);
    assert.deepEqual(bits(got.data), bits(t.data), `bit-exact data of ${t.name}`);
  }
  assert.deepEqual({ ...metadata }, { ...SAMPLE_META });
  assert.equal(Object.getPrototypeOf(metadata), null);
  assert.equal(metadata["__proto__"], "p");
  assert.equal(({} as Record<string, unknown>).p, undefined);
});

Deno.test("encode is deterministic: same input, same bytes; metadata order does not matter", () => {
  const a = encodeSafetensors(SAMPLE, SAMPLE_META);
  const b = encodeSafetensors(SAMPLE.map((t) => ({ ...t, data: t.data.slice() })), SAMPLE_META);
  const reversed = Object.fromEntries(Object.entries(SAMPLE_META).reverse());
  const c = encodeSafetensors(SAMPLE, reversed);
  assert.deepEqual(a, b);
  assert.deepEqual(a, c);
});

Deno.test("format: readable the way Python's safetensors (or 20 lines of NumPy) reads it", () => {
  // What `safetensors.torch.save_file({"a": torch.tensor([1.0, 2.0])})` writes, byte for byte:
  // a space-padded header whose length is a multiple of 8, then the raw LE floats.
  const json = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}';
  const padded = json.padEnd(Math.ceil(json.length / 8) * 8, " ");
  const expected = rawFile(padded, f32Bytes(1, 2));
  assert.deepEqual(
    encodeSafetensors([{ name: "a", shape: [2], data: new Float32Array([1, 2]) }], {}),
    expected,
  );

  // With metadata: "__metadata__" comes first, its keys sorted.
  const withMeta = encodeSafetensors(
    [{ name: "a", shape: [2], data: new Float32Array([1, 2]) }],
    { z: "1", a: "2" },
  );
  const headerLength = Number(new DataView(withMeta.buffer).getBigUint64(0, true));
  assert.equal(headerLength % 8, 0);
  const text = new TextDecoder().decode(withMeta.subarray(8, 8 + headerLength));
  assert.equal(
    text.trimEnd(),
    '{"__metadata__":{"a":"2","z":"1"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
  );

  // A hand-written reader, as a NumPy user would write it.
  const bytes = encodeSafetensors(SAMPLE, SAMPLE_META);
  const view = new DataView(bytes.buffer);
  const n = Number(view.getBigUint64(0, true));
  assert.equal((8 + n) % 8, 0, "data section is 8-byte aligned");
  const parsed = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  assert.ok(new TextDecoder().decode(bytes.subarray(8, 24)).startsWith('{"__metadata__":'));
  assert.deepEqual(parsed.__metadata__, { ...SAMPLE_META });
  let expectedBegin = 0;
  for (const t of SAMPLE) {
    const entry = parsed[t.name];
    assert.equal(entry.dtype, "F32");
    assert.deepEqual(entry.shape, t.shape);
    assert.deepEqual(entry.data_offsets, [expectedBegin, expectedBegin + 4 * t.data.length]);
    const values = Array.from(
      { length: t.data.length },
      (_, i) => view.getFloat32(8 + n + expectedBegin + 4 * i, true),
    );
    assert.deepEqual(values, Array.from(t.data));
    expectedBegin += 4 * t.data.length;
  }
  assert.equal(bytes.length, 8 + n + expectedBegin);
});

Deno.test("decode: unpadded header, unaligned input view, entries out of data order", () => {
  // Header length 7 mod 8, so the data section starts at an unaligned offset; the entries are
  // listed in the opposite order to their data; an unknown extra field is ignored.
  const h = '{"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}';
  const file = rawFile(h, f32Bytes(0.25, -3, 7));
  for (const shift of [0, 1, 2, 3]) {
    const buffer = new Uint8Array(file.length + shift);
    buffer.set(file, shift);
    const { tensors, metadata } = decodeSafetensors(buffer.subarray(shift));
    assert.deepEqual([...tensors.keys()], ["a", "b"], "tensors in data order");
    assert.deepEqual(Array.from(tensors.get("a")!.data), [0.25, -3]);
    assert.deepEqual(Array.from(tensors.get("b")!.data), [7]);
    assert.equal(tensors.get("a")!.data.byteOffset, 0, "fresh array");
    assert.deepEqual({ ...metadata }, {});
  }
});

Deno.test("decode: empty file of tensors, and a tensor named __proto__, are fine", () => {
  assert.equal(decodeSafetensors(rawFile("{}")).tensors.size, 0);
  const { tensors } = decodeSafetensors(rawFile(header(["__proto__", [1], 0, 4]), f32Bytes(9)));
  assert.deepEqual(Array.from(tensors.get("__proto__")!.data), [9]);
  assert.equal(({} as Record<string, unknown>).dtype, undefined);
});

Deno.test("decode: -0 in a shape or offsets reads as 0 (found by the fuzzer)", () => {
  const file = rawFile('{"a":{"dtype":"F32","shape":[-0,4],"data_offsets":[-0,0]}}');
  const { tensors } = decodeSafetensors(file);
  assert.ok(Object.is(tensors.get("a")!.shape[0], 0));
  assert.equal(tensors.get("a")!.data.length, 0);
});

Deno.test("decode: a 3M-value file (the default model's size) decodes correctly", () => {
  const data = Float32Array.from({ length: 3_000_000 }, (_, i) => (i % 1000) / 1000 - 0.5);
  const bytes = encodeSafetensors([{ name: "big", shape: [3000, 1000], data }], {});
  const got = decodeSafetensors(bytes).tensors.get("big")!;
  assert.deepEqual(got.shape, [3000, 1000]);
  assert.ok(got.data.every((v, i) => v === data[i]));
});

Deno.test("encode: caller mistakes are RangeErrors", () => {
  const t = (name: string, shape: number[], data: number[]) => ({
    name,
    shape,
    data: new Float32Array(data),
  });
  assert.throws(() => encodeSafetensors([t("a", [3], [1, 2])], {}), RangeError);
  assert.throws(() => encodeSafetensors([t("a", [-1], [])], {}), RangeError);
  assert.throws(() => encodeSafetensors([t("a", [1], [1]), t("a", [1], [1])], {}), RangeError);
  assert.throws(() => encodeSafetensors([t("__metadata__", [1], [1])], {}), RangeError);
  assert.throws(() => encodeSafetensors([t("a", [2], [1, NaN])], {}), RangeError);
  assert.throws(() => encodeSafetensors([], { a: 1 as unknown as string }), RangeError);
});

// ---------------------------------------------------------------------------------------------
// Bad inputs: one test per kind, each a WeightsError with a specific message.

const ONE = header(["a", [1], 0, 4]);

Deno.test("bad: file shorter than 8 bytes", () => {
  rejects(new Uint8Array(0), "too short: 0 bytes");
  rejects(new Uint8Array(7), "too short: 7 bytes");
});

Deno.test("bad: header length 0", () => {
  rejects(rawFile("", [], 0n), "header length is 0");
});

Deno.test("bad: header length absurdly large (2^53, 2^64-1, above maxHeaderBytes)", () => {
  rejects(rawFile(ONE, f32Bytes(1), 2n ** 53n), "header length 9007199254740992 is larger");
  rejects(
    rawFile(ONE, f32Bytes(1), 2n ** 64n - 1n),
    "header length 18446744073709551615 is larger",
  );
  rejects(rawFile(ONE, f32Bytes(1), 100_000_001n), "limit of 100000000 bytes");
  rejects(rawFile(ONE, f32Bytes(1)), "limit of 16 bytes", { maxHeaderBytes: 16 });
});

Deno.test("bad: header length beyond the end of the file", () => {
  rejects(rawFile("{}", [], 1234n), "truncated: header claims 1234 bytes but only 2 follow");
  const good = encodeSafetensors([{ name: "a", shape: [1], data: new Float32Array([1]) }], {});
  rejects(good.subarray(0, 20), "truncated: header claims");
});

Deno.test("bad: header not valid UTF-8", () => {
  rejects(rawFile(new Uint8Array([0x7b, 0xff, 0x7d])), "not valid UTF-8");
  rejects(rawFile(new Uint8Array([0x7b, 0xed, 0xa0, 0x80, 0x7d])), "not valid UTF-8"); // surrogate
});

Deno.test("bad: header not valid JSON", () => {
  rejects(rawFile("{not json}"), "not valid JSON");
  rejects(rawFile('{"a":1'), "not valid JSON");
  rejects(rawFile("\uFEFF{}"), "not valid JSON"); // a BOM is not JSON whitespace
  rejects(rawFile("{}\0\0"), "not valid JSON"); // NUL padding is not allowed
});

Deno.test("bad: header not a JSON object", () => {
  rejects(rawFile("[1,2]"), "must be a JSON object, got [1, 2]");
  rejects(rawFile("null"), "must be a JSON object, got null");
  rejects(rawFile('"hi"'), 'must be a JSON object, got "hi"');
  rejects(rawFile("42"), "must be a JSON object, got 42");
});

Deno.test("bad: __metadata__ not an object of strings", () => {
  rejects(rawFile('{"__metadata__":[1]}'), "__metadata__ must be an object of strings");
  rejects(rawFile('{"__metadata__":"x"}'), "__metadata__ must be an object of strings");
  rejects(
    rawFile('{"__metadata__":{"steps":100}}'),
    '__metadata__ "steps" must be a string, got 100',
  );
  rejects(
    rawFile('{"__metadata__":{"a":{"b":"c"}}}'),
    '__metadata__ "a" must be a string, got an object',
  );
});

Deno.test("bad: entry not an object", () => {
  rejects(rawFile('{"a":5}'), 'tensor "a" entry must be an object, got 5');
  rejects(rawFile('{"a":[0,4]}'), 'tensor "a" entry must be an object');
});

Deno.test("bad: entry without dtype, shape or data_offsets", () => {
  rejects(
    rawFile('{"a":{"shape":[1],"data_offsets":[0,4]}}', f32Bytes(1)),
    'tensor "a" has no dtype',
  );
  rejects(
    rawFile('{"a":{"dtype":"F32","data_offsets":[0,4]}}', f32Bytes(1)),
    'tensor "a" has no shape',
  );
  rejects(
    rawFile('{"a":{"dtype":"F32","shape":[1]}}', f32Bytes(1)),
    'tensor "a" has no data_offsets',
  );
});

Deno.test("bad: entry fields of the wrong type", () => {
  const entry = (dtype: string, shape: string, offsets: string) =>
    rawFile(`{"a":{"dtype":${dtype},"shape":${shape},"data_offsets":${offsets}}}`, f32Bytes(1));
  rejects(entry("5", "[1]", "[0,4]"), 'tensor "a" dtype must be a string, got 5');
  rejects(entry('"F32"', '"1"', "[0,4]"), 'tensor "a" shape must be an array, got "1"');
  rejects(
    entry('"F32"', "[1]", '"0-4"'),
    'tensor "a" data_offsets must be [begin, end], got "0-4"',
  );
  rejects(entry('"F32"', "[1]", "[0]"), "data_offsets must be [begin, end], got [0]");
  rejects(entry('"F32"', "[1]", "[0,4,8]"), "data_offsets must be [begin, end]");
});

Deno.test("bad: dtype other than F32 is named", () => {
  for (const dtype of ["F16", "BF16", "F64", "I64", "f32"]) {
    const file = rawFile(
      `{"a":{"dtype":"${dtype}","shape":[1],"data_offsets":[0,4]}}`,
      f32Bytes(1),
    );
    rejects(file, `tensor "a" has dtype "${dtype}" but only F32 is supported`);
  }
});

Deno.test("bad: shape with negative, non-integer or huge dimensions", () => {
  rejects(rawFile(header(["a", [-1], 0, 4]), f32Bytes(1)), 'tensor "a" has shape dimension -1');
  rejects(rawFile(header(["a", [1.5], 0, 4]), f32Bytes(1)), "shape dimension 1.5");
  rejects(
    rawFile('{"a":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}', f32Bytes(1)),
    'shape dimension "1"',
  );
  rejects(
    rawFile('{"a":{"dtype":"F32","shape":[null],"data_offsets":[0,4]}}', f32Bytes(1)),
    "shape dimension null",
  );
  rejects(
    rawFile('{"a":{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}}', f32Bytes(1)),
    "shape dimension Infinity",
  );
  rejects(rawFile(header(["a", [2 ** 60], 0, 4]), f32Bytes(1)), "which is too large");
  rejects(
    rawFile(header(["a", [2 ** 30, 2 ** 30, 2 ** 30], 0, 4]), f32Bytes(1)),
    "[1073741824, 1073741824, 1073741824], which is too large",
  );
});

Deno.test("bad: shape does not match the size of data_offsets", () => {
  rejects(
    rawFile(header(["a", [2], 0, 4]), f32Bytes(1)),
    "has shape [2] (2 F32 values, 8 bytes) but data_offsets [0, 4] span 4 bytes",
  );
  rejects(rawFile(header(["a", [0], 0, 4]), f32Bytes(1)), "span 4 bytes");
  rejects(rawFile(header(["a", [], 0, 6]), [1, 2, 3, 4, 5, 6]), "span 6 bytes");
});

Deno.test("bad: offsets not non-negative integers", () => {
  rejects(
    rawFile(header(["a", [1], 0, 4.5]), f32Bytes(1)),
    "data_offsets [0, 4.5] must be two non-negative integers",
  );
  rejects(rawFile(header(["a", [1], -4, 0]), f32Bytes(1)), "must be two non-negative integers");
  rejects(
    rawFile('{"a":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}', f32Bytes(1)),
    "must be two non-negative integers",
  );
  rejects(
    rawFile(header(["a", [1], 0, 2 ** 64]), f32Bytes(1)),
    "must be two non-negative integers",
  );
});

Deno.test("bad: offsets with begin > end", () => {
  rejects(
    rawFile(header(["a", [1], 4, 0]), f32Bytes(1)),
    'tensor "a" data_offsets [4, 0] end before they begin',
  );
});

Deno.test("bad: offsets out of range of the data section", () => {
  rejects(
    rawFile(header(["a", [2], 0, 8]), f32Bytes(1)),
    "data_offsets [0, 8] run past the end of the 4-byte data section",
  );
  rejects(rawFile(header(["a", [1], 2 ** 40, 2 ** 40 + 4]), f32Bytes(1)), "run past the end");
});

Deno.test("bad: tensors overlapping", () => {
  rejects(
    rawFile(header(["a", [2], 0, 8], ["b", [2], 4, 12]), f32Bytes(1, 2, 3)),
    'tensors "a" and "b" overlap in the data section (byte 4 is used by both)',
  );
  rejects(rawFile(header(["a", [1], 0, 4], ["b", [1], 0, 4]), f32Bytes(1)), "overlap");
  rejects(rawFile(header(["a", [2], 0, 8], ["z", [0], 4, 4]), f32Bytes(1, 2)), "overlap");
});

Deno.test("bad: gaps in the data section and trailing bytes are rejected", () => {
  rejects(
    rawFile(header(["a", [1], 0, 4], ["b", [1], 8, 12]), f32Bytes(1, 2, 3)),
    "has a gap: bytes 4..8 belong to no tensor",
  );
  rejects(rawFile(header(["a", [1], 4, 8]), f32Bytes(1, 2)), "has a gap: bytes 0..4");
  rejects(
    rawFile(header(["a", [1], 0, 4]), f32Bytes(1, 2)),
    "4 unused bytes after the last tensor (data section is 8 bytes, tensors end at 4)",
  );
  rejects(rawFile("{}", [0]), "1 unused bytes after the last tensor");
});

Deno.test("bad: NaN or Inf values name the tensor", () => {
  rejects(
    rawFile(header(["ok", [1], 0, 4], ["h.0.attn.c_attn.weight", [2], 4, 12]), f32Bytes(1, 2, NaN)),
    'tensor "h.0.attn.c_attn.weight" contains NaN at index 1',
  );
  rejects(
    rawFile(header(["a", [1], 0, 4]), f32Bytes(Infinity)),
    'tensor "a" contains Infinity at index 0',
  );
  rejects(rawFile(header(["a", [1], 0, 4]), f32Bytes(-Infinity)), "contains -Infinity");
  rejects(rawFile(header(["a", [1], 0, 4]), [1, 0, 0x80, 0x7f]), "contains NaN"); // signalling NaN bits
});

Deno.test("bad: hostile names stay on one short line", () => {
  const name = "x\n".repeat(200) + "😀".repeat(100);
  rejects(rawFile(header([name, [1], 0, 4]), f32Bytes(NaN)), '"x\\nx\\n');
});
