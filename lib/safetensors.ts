/**
 * Reading and writing safetensors files (F32 only), as pure functions over bytes.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON, then the data
 * section. The JSON maps each tensor name to `{"dtype","shape","data_offsets":[begin,end]}`
 * (offsets relative to the start of the data section) and may hold `__metadata__`, an object
 * of string values. See https://github.com/huggingface/safetensors.
 *
 * The decoder treats every file as hostile: it never evaluates anything, checks every size against
 * the file's length before allocating, and throws a {@linkcode WeightsError} with a one-line
 * message for anything that is not a well-formed F32 safetensors file.
 *
 * @module
 */

import { WeightsError } from "./errors.ts";

/** One named F32 tensor: `data.length` equals the product of `shape` (1 for a scalar `[]`). */
export interface TensorEntry {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** What {@linkcode decodeSafetensors} returns. */
export interface DecodedSafetensors {
  /** Tensors by name, in the order their data appears in the file. */
  tensors: Map<string, { shape: number[]; data: Float32Array }>;
  /** The `__metadata__` strings (an object without prototype; empty when absent). */
  metadata: Record<string, string>;
}

/** Options for {@linkcode decodeSafetensors}. */
export interface DecodeOptions {
  /** Largest header accepted, in bytes (default 100 MB, the reference implementation's limit). */
  maxHeaderBytes?: number;
}

/** The default for {@linkcode DecodeOptions.maxHeaderBytes}: 100,000,000 bytes. */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const REDO = "re-download or re-train it";
const CORRUPT = `the file is corrupt or not a safetensors file; ${REDO}`;

/**
 * Encodes tensors and metadata as a safetensors file. Deterministic: tensors in the order given,
 * `__metadata__` first (omitted when empty) with its keys sorted, the header padded with spaces to
 * a multiple of 8 bytes as the reference implementation does, so the same input gives the same
 * bytes. Throws a RangeError for a caller mistake (duplicate name, shape that does not match the
 * data, NaN or Inf values).
 *
 * @example
 * ```ts
 * import { decodeSafetensors, encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors(
 *   [{ name: "ln_f.bias", shape: [2], data: new Float32Array([0.5, -1]) }],
 *   { config: '{"d_model":2}' },
 * );
 * const { tensors, metadata } = decodeSafetensors(bytes);
 * console.log(tensors.get("ln_f.bias")?.data, metadata.config); // Float32Array [0.5, -1] {"d_model":2}
 * ```
 */
export function encodeSafetensors(
  tensors: TensorEntry[],
  metadata: Record<string, string> = {},
): Uint8Array {
  const fields: string[] = [];
  const metaKeys = Object.keys(metadata).sort();
  if (metaKeys.length > 0) {
    const pairs = metaKeys.map((key) => {
      const value = metadata[key];
      if (typeof value !== "string") {
        throw new RangeError(`metadata ${quote(key)} must be a string, got ${typeof value}`);
      }
      return `${JSON.stringify(key)}:${JSON.stringify(value)}`;
    });
    fields.push(`"__metadata__":{${pairs.join(",")}}`);
  }

  // Built by hand rather than with JSON.stringify(object): object keys that look like integers
  // ("0", "1") would be reordered, and the tensor order must be the caller's.
  const seen = new Set<string>();
  let offset = 0;
  for (const { name, shape, data } of tensors) {
    if (name === "__metadata__" || seen.has(name)) {
      throw new RangeError(`tensor name ${quote(name)} is reserved or used twice`);
    }
    seen.add(name);
    const count = shape.reduce((n, d) => {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`tensor ${quote(name)} has an invalid shape [${shape}]`);
      }
      return n * d;
    }, 1);
    if (count !== data.length) {
      throw new RangeError(
        `tensor ${quote(name)} has shape [${shape}] (${count} values) but ${data.length} values`,
      );
    }
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new RangeError(`tensor ${quote(name)} holds ${data[bad]} at index ${bad}`);
    }
    const end = offset + 4 * count;
    fields.push(
      `${JSON.stringify(name)}:{"dtype":"F32","shape":[${shape.join(",")}],` +
        `"data_offsets":[${offset},${end}]}`,
    );
    offset = end;
  }

  const json = new TextEncoder().encode(`{${fields.join(",")}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLength + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength); // space padding
  let pos = 8 + headerLength;
  for (const { data } of tensors) {
    if (HOST_IS_LITTLE_ENDIAN) {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), pos);
    } else {
      for (let i = 0; i < data.length; i++) view.setFloat32(pos + 4 * i, data[i], true);
    }
    pos += data.byteLength;
  }
  return out;
}

/** A tensor's header entry once checked; `begin`/`end` are relative to the data section. */
interface Span {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Decodes and validates a safetensors file of F32 tensors. Every problem throws a
 * {@linkcode WeightsError} with a one-line message: a short file, a bad header length, a header
 * that is not UTF-8 JSON of the right form, a dtype other than F32, a bad shape, offsets that are
 * out of range, overlapping or leave bytes unused, and NaN or Inf values. Tensor data is copied
 * into fresh, aligned Float32Arrays (the input may be a view at any byte offset).
 *
 * @example
 * ```ts
 * import { decodeSafetensors } from "./safetensors.ts";
 * import { isBareGPTError } from "./errors.ts";
 * try {
 *   decodeSafetensors(new Uint8Array([1, 2, 3]));
 * } catch (e) {
 *   if (isBareGPTError(e)) console.error(`error: ${e.message}`); // weights file is too short: ...
 * }
 * ```
 */
export function decodeSafetensors(
  bytes: Uint8Array,
  opts: DecodeOptions = {},
): DecodedSafetensors {
  const maxHeaderBytes = opts.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  if (bytes.length < 8) {
    throw new WeightsError(
      `weights file is too short: ${bytes.length} bytes, a safetensors file needs at least 8; ${REDO}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Exact below 2^53; larger values only ever fail the size checks below.
  const headerLength = view.getUint32(4, true) * 2 ** 32 + view.getUint32(0, true);
  if (headerLength === 0) {
    throw new WeightsError(`weights header length is 0; ${CORRUPT}`);
  }
  if (headerLength > maxHeaderBytes) {
    throw new WeightsError(
      `weights header length ${view.getBigUint64(0, true)} is larger than the limit of ` +
        `${maxHeaderBytes} bytes; ${CORRUPT}`,
    );
  }
  if (headerLength > bytes.length - 8) {
    throw new WeightsError(
      `weights file is truncated: header claims ${headerLength} bytes but only ` +
        `${bytes.length - 8} follow; ${REDO}`,
    );
  }

  const header = parseHeader(bytes.subarray(8, 8 + headerLength));
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;

  const metadata: Record<string, string> = Object.create(null);
  const spans: Span[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (typeof info !== "object" || info === null || Array.isArray(info)) {
        throw new WeightsError(`weights __metadata__ must be an object of strings; ${CORRUPT}`);
      }
      for (const [key, value] of Object.entries(info)) {
        if (typeof value !== "string") {
          throw new WeightsError(
            `weights __metadata__ ${quote(key)} must be a string, got ${
              describe(value)
            }; ${CORRUPT}`,
          );
        }
        metadata[key] = value;
      }
    } else {
      spans.push(checkEntry(name, info, dataLength));
    }
  }

  // The format requires the data section to be fully indexed: tensors laid end to end from byte 0
  // to the last byte. Like the reference implementation, we reject overlaps, gaps between tensors
  // and trailing bytes after the last one (each could hide data or signal a damaged file).
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous = "";
  for (const s of spans) {
    if (s.begin < covered) {
      throw new WeightsError(
        `tensors ${quote(previous)} and ${quote(s.name)} overlap in the data section ` +
          `(byte ${s.begin} is used by both); ${CORRUPT}`,
      );
    }
    if (s.begin > covered) {
      throw new WeightsError(
        `weights data section has a gap: bytes ${covered}..${s.begin} belong to no tensor; ${CORRUPT}`,
      );
    }
    covered = s.end;
    previous = s.name;
  }
  if (covered !== dataLength) {
    throw new WeightsError(
      `weights file has ${dataLength - covered} unused bytes after the last tensor ` +
        `(data section is ${dataLength} bytes, tensors end at ${covered}); ${CORRUPT}`,
    );
  }

  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const { name, shape, begin, end } of spans) {
    const data = readFloat32(bytes, view, dataStart + begin, (end - begin) / 4);
    const bad = data.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      throw new WeightsError(
        `tensor ${quote(name)} contains ${data[bad]} at index ${bad}; ` +
          `the weights are corrupt or came from a diverged run; ${REDO}`,
      );
    }
    tensors.set(name, { shape, data });
  }
  return { tensors, metadata };
}

/** Decodes the header bytes as strict UTF-8 JSON that must be an object. */
function parseHeader(headerBytes: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw new WeightsError(`weights header is not valid UTF-8; ${CORRUPT}`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text); // data only: JSON.parse never runs code
  } catch {
    throw new WeightsError(`weights header is not valid JSON; ${CORRUPT}`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new WeightsError(
      `weights header must be a JSON object, got ${describe(header)}; ${CORRUPT}`,
    );
  }
  return header as Record<string, unknown>;
}

/** Checks one tensor entry of the header against the data section's length. */
function checkEntry(name: string, info: unknown, dataLength: number): Span {
  const tensor = `tensor ${quote(name)}`;
  if (typeof info !== "object" || info === null || Array.isArray(info)) {
    throw new WeightsError(`${tensor} entry must be an object, got ${describe(info)}; ${CORRUPT}`);
  }
  const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
  for (const [field, value] of [["dtype", dtype], ["shape", shape], ["data_offsets", offsets]]) {
    if (value === undefined) throw new WeightsError(`${tensor} has no ${field}; ${CORRUPT}`);
  }

  if (typeof dtype !== "string") {
    throw new WeightsError(`${tensor} dtype must be a string, got ${describe(dtype)}; ${CORRUPT}`);
  }
  if (dtype !== "F32") {
    throw new WeightsError(
      `${tensor} has dtype ${quote(dtype)} but only F32 is supported; convert the weights to ` +
        `float32 and save them again`,
    );
  }

  if (!Array.isArray(shape)) {
    throw new WeightsError(`${tensor} shape must be an array, got ${describe(shape)}; ${CORRUPT}`);
  }
  const dims: number[] = []; // a fresh copy, -0 read as 0
  let count = 1;
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isInteger(d) || d < 0) {
      throw new WeightsError(
        `${tensor} has shape dimension ${describe(d)}; dimensions must be non-negative integers; ` +
          CORRUPT,
      );
    }
    if (!Number.isSafeInteger(d)) {
      throw new WeightsError(`${tensor} has shape dimension ${d}, which is too large; ${CORRUPT}`);
    }
    dims.push(d + 0);
    count *= d;
  }
  // Each dimension is at most 2^53, so an overflowing product stays > 2^53 or becomes Infinity.
  if (dims.includes(0)) count = 0;
  const shapeText = describe(dims);
  if (!Number.isSafeInteger(count)) {
    throw new WeightsError(`${tensor} has shape ${shapeText}, which is too large; ${CORRUPT}`);
  }

  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw new WeightsError(
      `${tensor} data_offsets must be [begin, end], got ${describe(offsets)}; ${CORRUPT}`,
    );
  }
  const [begin, end] = offsets;
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < 0) {
    throw new WeightsError(
      `${tensor} data_offsets ${describe(offsets)} must be two non-negative integers; ${CORRUPT}`,
    );
  }
  if (begin > end) {
    throw new WeightsError(
      `${tensor} data_offsets [${begin}, ${end}] end before they begin; ${CORRUPT}`,
    );
  }
  if (end > dataLength) {
    throw new WeightsError(
      `${tensor} data_offsets [${begin}, ${end}] run past the end of the ${dataLength}-byte ` +
        `data section; the file is truncated or corrupt; ${REDO}`,
    );
  }
  if (count * 4 !== end - begin) {
    throw new WeightsError(
      `${tensor} has shape ${shapeText} (${count} F32 values, ${count * 4} bytes) but ` +
        `data_offsets [${begin}, ${end}] span ${end - begin} bytes; ${CORRUPT}`,
    );
  }
  return { name, shape: dims, begin: begin + 0, end: end + 0 };
}

/** Copies `count` little-endian F32 values starting at `byteIndex` into a fresh array. */
function readFloat32(bytes: Uint8Array, view: DataView, byteIndex: number, count: number) {
  const out = new Float32Array(count);
  const absolute = bytes.byteOffset + byteIndex;
  if (HOST_IS_LITTLE_ENDIAN && absolute % 4 === 0) {
    out.set(new Float32Array(bytes.buffer, absolute, count));
  } else {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(byteIndex + 4 * i, true);
  }
  return out;
}

/** A name from a file, quoted and escaped (controls, line separators) to stay on one short line. */
export function quote(s: string): string {
  const escaped = JSON.stringify(s).replace(
    /[\u007f-\u009f\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const q = [...escaped]; // by code point, so a pair is never cut in half
  return q.length <= 64 ? q.join("") : `${q.slice(0, 60).join("")}..."`;
}

/** A short, one-line description of a JSON value for error messages. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) {
    const items = value.slice(0, 8).map((v) =>
      v !== null && typeof v === "object" ? "..." : describe(v)
    );
    return `[${items.join(", ")}${value.length > 8 ? ", ..." : ""}]`;
  }
  if (typeof value === "string") return quote(value);
  if (typeof value === "object") return "an object";
  return String(value);
}
