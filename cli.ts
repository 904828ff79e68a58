#!/usr/bin/env -S deno run
/**
 * The BareGPT command line: train, sample, eval, inspect, info. With no arguments it streams text
 * from the shipped weights (training them first if there are none), as BareGPT does.
 *
 * stdout carries only the product (sampled text, the eval line, JSON); configuration, progress
 * and errors go to stderr. Exit codes: 0 success, 2 bad input, 1 any other failure.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { decodeText, makeCorpus } from "./lib/data.ts";
import { BareGPTError, InputError, WeightsError } from "./lib/errors.ts";
import {
  type FlagValues as Values,
  kernelsFlag,
  numberFlag,
  requireFlag,
  stringFlag,
} from "./lib/flags.ts";
import type { KernelTier } from "./lib/kernels/mod.ts";
import { setupKernels } from "./lib/tensor.ts";
import { inspectCommand } from "./lib/inspect_cli.ts";
import {
  DEFAULT_CONFIG,
  GPT,
  type GPTConfig,
  parameterCount,
  validateConfig,
} from "./lib/model.ts";
import { generateTokens, validateSampling } from "./lib/sample.ts";
import { Tokenizer } from "./lib/tokenizer.ts";
import { Checkpoint, evaluate, TRAIN_DEFAULTS, Trainer } from "./lib/train.ts";
import { activationBytes } from "./lib/pool.ts";
import { loadModel, saveModel } from "./lib/weights.ts";

/** The shipped weights and the default corpus, found beside this module (not the working dir). */
export const SHIPPED_WEIGHTS = new URL("./weights/shakespeare.safetensors", import.meta.url);
export const DEFAULT_CORPUS = new URL("./data/tinyshakespeare.txt", import.meta.url);

// ---------------------------------------------------------------------------------------------
// Flags

type FlagType = "string" | "boolean";
interface Flag {
  type: FlagType;
  help: string;
  short?: string;
}

const COMMON: Record<string, Flag> = {
  help: { type: "boolean", short: "h", help: "show this help" },
  debug: { type: "boolean", help: "print stack traces of errors" },
  kernels: {
    type: "string",
    help: "kernel tier: relaxed, simd or js (default: the fastest available)",
  },
};

const COMMANDS: Record<string, { summary: string; usage: string; flags: Record<string, Flag> }> = {
  train: {
    summary: "train a model on a text file and save its weights",
    usage: "train --data FILE --out FILE [options]",
    flags: {
      data: { type: "string", help: "UTF-8 corpus to train on (90% train, last 10% validation)" },
      out: { type: "string", help: "weights file to write (.safetensors); refused if it exists" },
      steps: { type: "string", help: `optimizer steps (default ${TRAIN_DEFAULTS.steps})` },
      batch: { type: "string", help: `sequences per step (default ${TRAIN_DEFAULTS.batch})` },
      block: {
        type: "string",
        help: `context length block_size (default ${DEFAULT_CONFIG.blockSize})`,
      },
      "d-model": { type: "string", help: `model width (default ${DEFAULT_CONFIG.dModel})` },
      layers: { type: "string", help: `transformer blocks (default ${DEFAULT_CONFIG.nLayers})` },
      heads: {
        type: "string",
        help: `attention heads, dividing d-model (default ${DEFAULT_CONFIG.nHeads})`,
      },
      lr: { type: "string", help: `peak learning rate (default ${TRAIN_DEFAULTS.lr})` },
      warmup: { type: "string", help: `linear warmup steps (default ${TRAIN_DEFAULTS.warmup})` },
      "min-lr": {
        type: "string",
        help: `final learning rate of the decay (default ${TRAIN_DEFAULTS.minLr})`,
      },
      decay: {
        type: "string",
        help:
          `learning-rate decay after warmup: cosine or linear (default ${TRAIN_DEFAULTS.decay})`,
      },
      "weight-decay": {
        type: "string",
        help: `AdamW weight decay on 2-D weights (default ${TRAIN_DEFAULTS.weightDecay})`,
      },
      beta1: {
        type: "string",
        help: `AdamW decay rate of the gradient average (default ${TRAIN_DEFAULTS.beta1})`,
      },
      beta2: {
        type: "string",
        help: `AdamW decay rate of the squared-gradient average (default ${TRAIN_DEFAULTS.beta2})`,
      },
      clip: {
        type: "string",
        help: `gradient-norm clip, 0 for none (default ${TRAIN_DEFAULTS.clip})`,
      },
      dropout: {
        type: "string",
        help:
          `dropout on the embedding and each block's outputs, 0 for none (default ${TRAIN_DEFAULTS.dropout})`,
      },
      seed: {
        type: "string",
        help: `seed of initialization and batches (default ${TRAIN_DEFAULTS.seed})`,
      },
      "eval-every": {
        type: "string",
        help: "full validation loss every N steps, 0 for none (default 650)",
      },
      "eval-batches": {
        type: "string",
        help: "estimate the periodic validation loss on N windows (default 0: every window)",
      },
      "checkpoint-every": {
        type: "string",
        help: "write <out>.ckpt every N steps, 0 for none (default 0); Ctrl-C always writes one; " +
          "removed once the run finishes",
      },
      resume: {
        type: "boolean",
        help: "continue from <out>.ckpt (same settings), or start fresh if there is none",
      },
      init: { type: "string", help: "start from these weights (fine-tuning) instead of random" },
      force: { type: "boolean", help: "overwrite an existing --out" },
      threads: { type: "string", help: "worker threads (default: all cores)" },
    },
  },
  sample: {
    summary: "stream text from a model",
    usage: "sample [--weights FILE] [--prompt TEXT] [options]",
    flags: {
      weights: { type: "string", help: "weights file (default: the shipped weights)" },
      prompt: { type: "string", help: "text to continue (default: start of a line)" },
      tokens: { type: "string", help: "characters to generate (default 1000)" },
      temperature: { type: "string", help: "0 is greedy; higher is more random (default 1)" },
      "top-k": { type: "string", help: "sample among the k most likely characters (default: all)" },
      "top-p": {
        type: "string",
        help: "sample among the most likely characters of mass p (default 1)",
      },
      seed: { type: "string", help: "random seed (default: drawn and printed to stderr)" },
    },
  },
  eval: {
    summary: "validation loss and bits per character of a model on a text",
    usage: "eval --weights FILE --data FILE [--split val|all] [--json]",
    flags: {
      weights: { type: "string", help: "weights file" },
      data: { type: "string", help: "UTF-8 text to evaluate on" },
      split: { type: "string", help: "val: the last 10% (default); all: the whole file" },
      json: { type: "boolean", help: "print JSON instead of a line" },
    },
  },
  inspect: {
    summary: "top candidates per generated step and attention heatmaps (SVG)",
    usage:
      "inspect --weights FILE --prompt TEXT [--tokens N] [--top N] [--layer L] [--out FILE.svg]",
    flags: {
      weights: { type: "string", help: "weights file (default: the shipped weights)" },
      prompt: { type: "string", help: "text to start from" },
      tokens: { type: "string", help: "characters to generate (default 20)" },
      top: { type: "string", help: "candidates shown per step (default 5)" },
      layer: { type: "string", help: "layer whose attention is drawn (default: the last)" },
      out: { type: "string", help: "write the attention heatmaps to this SVG file" },
      temperature: {
        type: "string",
        help: "sample at this temperature instead of greedy (needs --seed)",
      },
      seed: { type: "string", help: "random seed when sampling" },
    },
  },
  info: {
    summary: "config, parameter count, vocabulary and training facts of a weights file",
    usage: "info [--weights FILE]",
    flags: {
      weights: { type: "string", help: "weights file (default: the shipped weights)" },
    },
  },
};

function helpText(name?: string): string {
  if (name === undefined) {
    const lines = [
      "BareGPT: a character-level GPT, trained and sampled on the CPU.",
      "",
      "usage: deno run [permissions] cli.ts <command> [options]",
      "       (no command: stream text from the shipped weights, training them first if needed)",
      "",
      "commands:",
      ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(8)} ${c.summary}`),
      "",
      "Run `cli.ts <command> --help` for a command's options.",
    ];
    return lines.join("\n");
  }
  const c = COMMANDS[name];
  const flags = { ...c.flags, ...COMMON };
  const rows = Object.entries(flags).map(([f, spec]) => {
    const left = `--${f}${spec.type === "string" ? " " + f.toUpperCase().replace(/-/g, "_") : ""}`;
    return `  ${left.padEnd(30)} ${spec.help}`;
  });
  return [`usage: cli.ts ${c.usage}`, "", c.summary + ".", "", "options:", ...rows].join("\n");
}

/** Parses a command's flags; unknown flags and stray arguments are InputErrors. */
export function parseFlags(command: string, args: string[]): Values {
  const flags = { ...COMMANDS[command].flags, ...COMMON };
  const options: Record<string, { type: FlagType; short?: string }> = {};
  for (const [name, f] of Object.entries(flags)) {
    options[name] = f.short === undefined ? { type: f.type } : { type: f.type, short: f.short };
  }
  // `--tokens -3` is a value, not a flag: join a string flag to a value that starts with "-"
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    if (options[name]?.type === "string" && i + 1 < args.length && /^-[\d.]/.test(args[i + 1])) {
      joined.push(`${args[i]}=${args[++i]}`);
    } else joined.push(args[i]);
  }
  try {
    const { values, positionals } = parseArgs({
      args: joined,
      options,
      strict: true,
      allowPositionals: true,
    });
    if (positionals.length > 0) {
      throw new InputError(
        `unexpected argument ${
          JSON.stringify(positionals[0])
        } for ${command}; see \`${command} --help\``,
      );
    }
    return values as Values;
  } catch (e) {
    if (e instanceof InputError) throw e;
    const msg = (e as Error).message;
    const unknown = msg.match(/Unknown option '([^']+)'/);
    if (unknown) {
      throw new InputError(`unknown flag ${unknown[1]} for ${command}; see \`${command} --help\``);
    }
    const missing = msg.match(/Option '([^']+?)(?: <value>)?' argument missing/);
    if (missing) {
      throw new InputError(
        `flag ${missing[1].split(",").pop()!.trim()} needs a value; see \`${command} --help\``,
      );
    }
    throw new InputError(`${msg.split("\n")[0]}; see \`${command} --help\``);
  }
}

// ---------------------------------------------------------------------------------------------
// Files

/** The largest corpus read: its text must fit in a JavaScript string. */
const MAX_CORPUS_BYTES = 500 * 2 ** 20;
/** The largest weights or checkpoint file read: the kernels address 4 GiB. */
const MAX_WEIGHTS_BYTES = 2 ** 32;

/**
 * Reads a file the user named (a URL other than file: is fetched); a missing, unreadable or
 * too large file is an InputError. Devices and pipes are read up to the limit, so `/dev/zero`
 * is an error rather than an out-of-memory crash.
 */
export async function readInput(
  path: string | URL,
  what: string,
  maxBytes = what === "corpus" ? MAX_CORPUS_BYTES : MAX_WEIGHTS_BYTES,
): Promise<Uint8Array> {
  const shown = path instanceof URL ? displayPath(path) : path;
  const tooLarge = (limit = maxBytes) => {
    const mib = limit / 2 ** 20;
    const advice = limit < maxBytes
      ? "save it to a file first"
      : what === "corpus"
      ? "use a smaller text"
      : "it is not a BareGPT model";
    const where = limit < maxBytes ? " from a pipe or device" : "";
    return new InputError(
      `${what} ${shown} is larger than ${mib} MiB, the most BareGPT reads${where}; ${advice}`,
    );
  };
  try {
    if (path instanceof URL && path.protocol !== "file:") {
      const res = await fetch(path);
      if (!res.ok) {
        await res.body?.cancel();
        throw new InputError(`${what} ${shown} could not be fetched: HTTP ${res.status}`);
      }
      if (Number(res.headers.get("content-length") ?? 0) > maxBytes) {
        await res.body?.cancel();
        throw tooLarge();
      }
      const bytes = new Uint8Array(await res.arrayBuffer());
      if (bytes.length > maxBytes) throw tooLarge();
      return bytes;
    }
    using file = await Deno.open(path, { read: true });
    const info = await file.stat();
    if (info.isDirectory) throw new InputError(`${what} ${shown} is a directory; give a file`);
    if (info.isFile) {
      if (info.size > maxBytes) throw tooLarge();
      const bytes = new Uint8Array(info.size);
      let n = 0;
      while (n < bytes.length) {
        const got = await file.read(bytes.subarray(n));
        if (got === null) break;
        n += got;
      }
      return n === bytes.length ? bytes : bytes.subarray(0, n);
    }
    // a device or a pipe: read until its end or the limit (lower for weights: no size to check)
    const limit = what === "corpus" ? maxBytes : Math.min(maxBytes, 2 ** 28);
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(1 << 16);
      const got = await file.read(chunk);
      if (got === null) break;
      total += got;
      if (total > limit) throw tooLarge(limit);
      chunks.push(chunk.subarray(0, got));
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) (bytes.set(c, at), at += c.length);
    return bytes;
  } catch (e) {
    if (e instanceof BareGPTError) throw e;
    if (e instanceof Deno.errors.NotFound) {
      throw new InputError(`${what} ${shown} does not exist; check the path`);
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new InputError(
        `${what} ${shown} is not readable (permission denied); check its permissions`,
      );
    }
    if (e instanceof Deno.errors.IsADirectory || (e as Error).message?.includes("Is a directory")) {
      throw new InputError(`${what} ${shown} is a directory; give a file`);
    }
    if (e instanceof Deno.errors.NotADirectory) {
      throw new InputError(`${what} ${shown} does not exist (a part of its path is a file)`);
    }
    if (e instanceof TypeError && !(path instanceof URL && path.protocol === "file:")) {
      throw new InputError(
        `${what} ${shown} could not be fetched: ${(e as Error).message.split("\n")[0]}`,
      );
    }
    throw e;
  }
}

/** A module-relative URL shown relative to the working directory when possible. */
function displayPath(url: URL): string {
  if (url.protocol !== "file:") return url.href;
  const here = new URL("./", import.meta.url).pathname;
  return url.pathname.startsWith(here) ? url.pathname.slice(here.length) : url.pathname;
}

/** True when a file exists (a permission error propagates). */
async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Writes a file atomically: a temporary file in the same folder, flushed to disk, then a rename,
 * so a failure or a kill at any moment never leaves a truncated file where a good one was.
 */
export async function writeFileAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = tempPath(path);
  try {
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let rest = bytes;
      while (rest.length > 0) rest = rest.subarray(await file.write(rest));
      await file.syncData();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new BareGPTError(
      `cannot write ${path}: ${writeFailure(e)}; choose another path or free space`,
    );
  }
}

/** The temporary file of an atomic write of `path` (unique to this process). */
function tempPath(path: string): string {
  return `${path}.${Deno.pid}.tmp`;
}

/** Why a write failed, in words. */
function writeFailure(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "its folder does not exist";
  if (e instanceof Deno.errors.NotADirectory) return "a part of the path is a file, not a folder";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  return (e as Error)?.message?.split("\n")[0] ?? String(e);
}

/** The folder of a path ("." for a bare file name). */
function folderOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/**
 * Makes sure a permission is granted (asking on a terminal where Deno would prompt); otherwise an
 * InputError naming the flag that grants it.
 */
async function needPermission(name: "read" | "write", path: string, why: string): Promise<void> {
  const desc: Deno.PermissionDescriptor = { name, path };
  let { state } = await Deno.permissions.query(desc);
  if (state === "prompt") state = (await Deno.permissions.request(desc)).state;
  if (state !== "granted") {
    throw new InputError(
      `no ${name} permission for ${path} (${why}); run again with --allow-${name}=${path}`,
    );
  }
}

/**
 * Checks before any work that training can write `out` and its checkpoint: read and write
 * permission on the folder, the folder exists and is writable (a probe file is created and
 * removed). Temporary files that killed runs left beside `out` are removed once a minute old.
 */
async function checkOutput(out: string): Promise<void> {
  const dir = folderOf(out);
  await needPermission("read", dir, "the folder of --out");
  await needPermission("write", dir, "the folder of --out");
  const probe = tempPath(out);
  try {
    await Deno.writeFile(probe, new Uint8Array(0));
    await Deno.remove(probe).catch(() => {});
  } catch (e) {
    await Deno.remove(probe).catch(() => {});
    if (e instanceof Deno.errors.NotCapable) throw e;
    throw new InputError(`cannot write ${out}: ${writeFailure(e)}; choose another --out`);
  }
  const base = out.slice(Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\")) + 1);
  const stale = new RegExp(`^${escapeRegExp(base)}(\\.ckpt)?\\.\\d+\\.tmp$`);
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile || !stale.test(entry.name)) continue;
      const path = `${dir}/${entry.name}`;
      // a minute old: not the write in progress of another run into the same folder
      const age = Date.now() - ((await Deno.stat(path)).mtime?.getTime() ?? Date.now());
      if (age > 60_000) await Deno.remove(path).catch(() => {});
    }
  } catch { /* best effort */ }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function loadWeightsFile(path: string | undefined) {
  const source = path ?? SHIPPED_WEIGHTS;
  const bytes = await readInput(source, "weights file");
  try {
    return loadModel(bytes);
  } catch (e) {
    if (!(e instanceof WeightsError)) throw e;
    const shown = source instanceof URL ? displayPath(source) : source;
    throw new WeightsError(`${shown}: ${e.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const encoder = new TextEncoder();

/** Thrown when stdout's reader went away (`sample | head`): the command ends quietly. */
class PipeClosed extends Error {}

function writeStdout(text: string): void {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe) throw new PipeClosed();
    throw e;
  }
}

function log(line: string): void {
  console.error(line);
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

// ---------------------------------------------------------------------------------------------
// Commands

async function train(v: Values): Promise<void> {
  const dataPath = requireFlag(v, "data", "train");
  const out = requireFlag(v, "out", "train");
  const steps = numberFlag(v, "steps", 1, 1e9, true) ?? TRAIN_DEFAULTS.steps;
  const batch = numberFlag(v, "batch", 1, 4096, true) ?? TRAIN_DEFAULTS.batch;
  const lr = numberFlag(v, "lr", 0, 10, false) ?? TRAIN_DEFAULTS.lr;
  const warmup = numberFlag(v, "warmup", 0, 1e9, true) ?? TRAIN_DEFAULTS.warmup;
  const minLr = numberFlag(v, "min-lr", 0, 10, false) ?? TRAIN_DEFAULTS.minLr;
  const weightDecay = numberFlag(v, "weight-decay", 0, 10, false) ?? TRAIN_DEFAULTS.weightDecay;
  const beta1 = numberFlag(v, "beta1", 0, 0.9999, false) ?? TRAIN_DEFAULTS.beta1;
  const beta2 = numberFlag(v, "beta2", 0, 0.9999, false) ?? TRAIN_DEFAULTS.beta2;
  const clip = numberFlag(v, "clip", 0, 1e9, false) ?? TRAIN_DEFAULTS.clip;
  const seed = numberFlag(v, "seed", 0, Number.MAX_SAFE_INTEGER, true) ?? TRAIN_DEFAULTS.seed;
  const evalEvery = numberFlag(v, "eval-every", 0, 1e9, true) ?? 650;
  const evalBatches = numberFlag(v, "eval-batches", 0, 1e9, true) ?? 0;
  const checkpointEvery = numberFlag(v, "checkpoint-every", 0, 1e9, true) ?? 0;
  const dropout = numberFlag(v, "dropout", 0, 0.9, false) ?? TRAIN_DEFAULTS.dropout;
  const decayFlag = stringFlag(v, "decay") ?? TRAIN_DEFAULTS.decay;
  if (decayFlag !== "cosine" && decayFlag !== "linear") {
    throw new InputError(
      `--decay ${JSON.stringify(decayFlag)} is not a schedule; use cosine or linear`,
    );
  }
  const decay: "cosine" | "linear" = decayFlag;

  const threads = numberFlag(v, "threads", 1, 256, true) ?? defaultThreads();
  const initPath = stringFlag(v, "init");
  const shape = {
    blockSize: numberFlag(v, "block", 1, 4096, true),
    dModel: numberFlag(v, "d-model", 1, 8192, true),
    nLayers: numberFlag(v, "layers", 1, 256, true),
    nHeads: numberFlag(v, "heads", 1, 8192, true),
  };
  if (initPath !== undefined && Object.values(shape).some((x) => x !== undefined)) {
    throw new InputError(
      "--init takes the model's shape from the weights; drop --block, --d-model, --layers and --heads",
    );
  }
  const tierFlag = kernelsFlag(v);
  const force = v.force === true;
  const resume = v.resume === true;
  const ckptPath = `${out}.ckpt`;

  // Before any work: the output folder must be writable, and no file may be lost by this run.
  await checkOutput(out);
  const outExists = await exists(out);
  const ckptExists = await exists(ckptPath);
  if (outExists) {
    if ((await Deno.stat(out)).isDirectory) {
      throw new InputError(`--out ${out} is a folder; give the path of a file`);
    }
    const real = await Deno.realPath(out);
    for (const [flag, path] of [["--data", dataPath], ["--init", initPath]]) {
      if (path !== undefined && (await Deno.realPath(path).catch(() => "")) === real) {
        throw new InputError(`--out ${out} is the file of ${flag}; choose another --out`);
      }
    }
  }
  if (outExists && !force && !(resume && ckptExists)) {
    throw new InputError(
      resume
        ? `${out} already exists and there is no checkpoint ${ckptPath} to resume (the run finished); pass --force to train it again`
        : `${out} already exists; pass --force to overwrite it or choose another --out`,
    );
  }
  if (ckptExists && !resume && !force) {
    throw new InputError(
      `${ckptPath} holds an interrupted run; pass --resume to continue it, or --force to start over`,
    );
  }

  const corpusBytes = await readInput(dataPath, "corpus");
  const text = decodeText(corpusBytes, dataPath);
  const corpusSha = await sha256Hex(corpusBytes);

  const tier = setupKernels(tierFlag);
  let config: GPTConfig;
  let tokenizer: Tokenizer;
  let initFlat: Float32Array | Float64Array | undefined;
  if (initPath !== undefined) {
    const loaded = await loadWeightsFile(initPath);
    tokenizer = loaded.tokenizer;
    config = loaded.model.config;
    initFlat = loaded.model.flat;
  } else {
    tokenizer = Tokenizer.fromText(text);
    config = {
      vocabSize: tokenizer.size,
      blockSize: shape.blockSize ?? DEFAULT_CONFIG.blockSize,
      dModel: shape.dModel ?? DEFAULT_CONFIG.dModel,
      nLayers: shape.nLayers ?? DEFAULT_CONFIG.nLayers,
      nHeads: shape.nHeads ?? DEFAULT_CONFIG.nHeads,
    };
    validateConfig(config);
  }
  const useThreads = tier === "js" ? 1 : Math.min(threads, batch);
  checkMemory(config, batch, useThreads, tier);
  const model = new GPT(config);
  if (initFlat !== undefined) model.flat.set(initFlat);
  else model.init(seed);
  const corpus = makeCorpus(text, tokenizer);
  const c = model.config;
  if (corpus.val.length < c.blockSize + 1 && evalEvery > 0) {
    throw new InputError(
      `the validation split of ${dataPath} has ${corpus.val.length} characters, fewer than block_size + 1 = ${
        c.blockSize + 1
      }; use a longer corpus, a smaller --block, or --eval-every 0`,
    );
  }
  if (useThreads > 1) await checkWorkerPermission(useThreads);
  const options = {
    batch,
    steps,
    lr,
    minLr,
    warmup,
    decay,
    weightDecay,
    beta1,
    beta2,
    clip,
    dropout,
    seed: seed + 1,
    threads,
  };
  // The settings a resumed run must share with the run it continues (flag name -> value).
  const settings = {
    steps,
    batch,
    lr,
    "min-lr": minLr,
    decay,
    warmup,
    "weight-decay": weightDecay,
    beta1,
    beta2,
    clip,
    dropout,
    seed,
  };
  const trainer = await Trainer.create(model, corpus.train, options);
  // A first SIGINT/SIGTERM asks the loop to save a checkpoint and stop; a second stops at once
  // (every file is written atomically, so nothing is left half-written).
  let signal: "SIGINT" | "SIGTERM" | undefined;
  const listeners: [Deno.Signal, () => void][] = [];
  for (const name of ["SIGINT", "SIGTERM"] as const) {
    const listener = () => {
      if (signal !== undefined) {
        log(`${name} again: stopping now; the last checkpoint is kept`);
        Deno.exit(name === "SIGINT" ? 130 : 143);
      }
      signal = name;
    };
    try {
      Deno.addSignalListener(name, listener);
      listeners.push([name, listener]);
    } catch { /* SIGTERM cannot be listened to on Windows */ }
  }
  try {
    let resumed = false;
    if (resume) {
      if (ckptExists) {
        await resumeFrom(trainer, ckptPath, corpusSha, tokenizer, settings, tier);
        resumed = true;
      } else log(`no checkpoint at ${ckptPath}; starting fresh`);
    }

    const command = [
      "train",
      `--data ${dataPath}`,
      ...(initPath ? [`--init ${initPath}`] : [
        `--block ${c.blockSize}`,
        `--d-model ${c.dModel}`,
        `--layers ${c.nLayers}`,
        `--heads ${c.nHeads}`,
      ]),
      `--steps ${steps}`,
      `--batch ${batch}`,
      `--lr ${lr}`,
      `--min-lr ${minLr}`,
      `--decay ${decay}`,
      `--warmup ${warmup}`,
      `--weight-decay ${weightDecay}`,
      `--beta1 ${beta1}`,
      `--beta2 ${beta2}`,
      `--clip ${clip}`,
      `--dropout ${dropout}`,
      `--seed ${seed}`,
      `--threads ${trainer.threads}`,
    ].join(" ");
    log(
      `model: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads, block ${c.blockSize}, vocab ${c.vocabSize}; ${
        parameterCount(c).toLocaleString("en-US")
      } parameters`,
    );
    log(
      `training: ${steps} steps of ${batch} x ${c.blockSize} tokens, lr ${lr} -> ${minLr} (warmup ${warmup}, ${decay} decay), weight decay ${weightDecay}, betas (${beta1}, ${beta2}), clip ${clip}, dropout ${dropout}, seed ${seed}, ${trainer.threads} thread${
        trainer.threads > 1 ? "s" : ""
      }, kernels ${tier}`,
    );
    log(
      `corpus: ${dataPath}, ${corpus.tokens.length.toLocaleString("en-US")} characters (${
        corpus.train.length.toLocaleString("en-US")
      } train, ${corpus.val.length.toLocaleString("en-US")} validation)`,
    );

    const ckptFacts = {
      corpus_sha256: corpusSha,
      command,
      train_settings: JSON.stringify(settings),
      threads: String(trainer.threads),
      kernels: tier,
    };
    let wroteCheckpoint = false;
    const saveCheckpoint = async () => {
      await writeFileAtomic(ckptPath, trainer.checkpoint(ckptFacts, tokenizer));
      wroteCheckpoint = true;
    };
    const progress = new Progress(steps, trainer.step, batch * c.blockSize);
    try {
      while (trainer.step < steps) {
        const r = await trainer.trainStep();
        progress.update(r.step, r.loss);
        if (r.step >= steps) break; // the last step: finish rather than checkpoint
        if (signal !== undefined) {
          await saveCheckpoint();
          progress.note(
            `${signal}: stopped after step ${r.step} of ${steps}; saved ${ckptPath}; to continue, run the same command with --resume`,
          );
          Deno.exitCode = signal === "SIGINT" ? 130 : 143;
          return;
        }
        if (checkpointEvery > 0 && r.step % checkpointEvery === 0) await saveCheckpoint();
        if (evalEvery > 0 && r.step % evalEvery === 0) {
          const e = await trainer.evaluate(corpus.val, evalBatches > 0 ? evalBatches : undefined);
          progress.note(
            `step ${r.step}: validation loss ${evalBatches > 0 ? "~" : ""}${e.loss.toFixed(4)}${
              evalBatches > 0 ? ` (estimate on ${e.windows} windows)` : ""
            }`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 0)); // let a signal be seen
      }
    } finally {
      progress.done();
    }
    if (!allFinite(model.flat)) {
      throw new BareGPTError(
        `the weights hold NaN or Inf after step ${trainer.step} (training diverged); lower --lr; ${out} was not written`,
      );
    }
    const facts: Record<string, string> = {
      steps: String(trainer.step),
      corpus_sha256: corpusSha,
      command,
    };
    if (evalEvery > 0) {
      const e = await trainer.evaluate(corpus.val);
      facts.val_loss = e.loss.toFixed(4);
      log(
        `final validation loss ${e.loss.toFixed(4)} (${
          e.bpc.toFixed(4)
        } bits per character, ${e.windows} windows)`,
      );
    }
    await writeFileAtomic(out, saveModel(model, tokenizer, facts));
    log(`saved ${out}`);
    // The checkpoint of this run is spent once its weights are saved.
    if (wroteCheckpoint || resumed) await Deno.remove(ckptPath).catch(() => {});
  } finally {
    for (const [name, listener] of listeners) Deno.removeSignalListener(name, listener);
    trainer.close();
  }
}

/** Restores a checkpoint into the trainer after checking it belongs to this run. */
async function resumeFrom(
  trainer: Trainer,
  ckptPath: string,
  corpusSha: string,
  tokenizer: Tokenizer,
  settings: Record<string, number | string>,
  tier: KernelTier,
): Promise<void> {
  const bytes = await readInput(ckptPath, "checkpoint");
  let ckpt: Checkpoint;
  try {
    ckpt = Checkpoint.decode(bytes);
  } catch (e) {
    if (!(e instanceof WeightsError)) throw e;
    throw new WeightsError(
      `checkpoint ${ckptPath} is unusable (${
        e.message.replace(/; re-download or re-train it$/, "")
      }); delete it to start over`,
    );
  }
  ckpt.check(trainer.model.config, corpusSha, tokenizer, ckptPath);
  ckpt.checkSettings(settings, ckptPath);
  const { threads, kernels } = ckpt.metadata;
  if (
    (threads !== undefined && threads !== String(trainer.threads)) ||
    (kernels !== undefined && kernels !== tier)
  ) {
    log(
      `note: the checkpoint was made on ${threads} thread(s) with ${kernels} kernels and this run uses ${trainer.threads} with ${tier}; the result will differ in the last bits from an uninterrupted run`,
    );
  }
  trainer.restore(ckpt);
  log(`resumed from ${ckptPath} at step ${trainer.step}`);
}

/** True when every value is finite. */
function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) return false;
  }
  return true;
}

/** The WebAssembly kernels address at most 4 GiB: refuse a model that cannot fit, up front. */
function checkMemory(c: GPTConfig, batch: number, threads: number, tier: KernelTier): void {
  if (tier === "js") return;
  const params = parameterCount(c);
  // weights, gradients, two Adam moments, a gradient buffer per extra thread, activations
  const bytes = 4 * params * (4 + threads - 1) + activationBytes(c, batch) + 64 * 2 ** 20;
  if (bytes > 2 ** 32) {
    throw new InputError(
      `this model (${
        params.toLocaleString("en-US")
      } parameters, batch ${batch} x ${c.blockSize}) needs about ${
        (bytes / 2 ** 30).toFixed(1)
      } GiB, more than the 4 GiB the WebAssembly kernels can address; use a smaller --d-model, --layers, --block or --batch`,
    );
  }
}

/**
 * Workers load the library's modules (lib/) as the main program did: that needs read permission
 * for lib/ (net permission for its host when run from a URL). Refuse clearly when it is missing.
 */
async function checkWorkerPermission(threads: number): Promise<void> {
  const lib = new URL("./lib/", import.meta.url);
  const alternative = "or pass --threads 1";
  if (lib.protocol === "file:") {
    const path = decodeURIComponent(lib.pathname).replace(/\/$/, "");
    await needPermission("read", path, `training on ${threads} threads starts workers from it`)
      .catch((e) => {
        throw e instanceof InputError ? new InputError(`${e.message}, ${alternative}`) : e;
      });
  } else if (lib.protocol === "http:" || lib.protocol === "https:") {
    const desc: Deno.PermissionDescriptor = { name: "net", host: lib.host };
    let { state } = await Deno.permissions.query(desc);
    if (state === "prompt") state = (await Deno.permissions.request(desc)).state;
    if (state !== "granted") {
      throw new InputError(
        `no net permission for ${lib.host} (training on ${threads} threads starts workers from it); run again with --allow-net=${lib.host}, ${alternative}`,
      );
    }
  }
}

function defaultThreads(): number {
  return Math.max(1, Math.min(navigator.hardwareConcurrency ?? 1, 64));
}

/** Training progress on stderr: a live bar on a TTY, plain lines otherwise. */
class Progress {
  readonly #tty = Deno.stderr.isTerminal();
  readonly #start = performance.now();
  readonly #firstStep: number;
  readonly #total: number;
  readonly #tokensPerStep: number;
  #lastPrint = 0;
  #live = false;

  constructor(total: number, firstStep: number, tokensPerStep: number) {
    this.#total = total;
    this.#firstStep = firstStep;
    this.#tokensPerStep = tokensPerStep;
  }

  update(step: number, loss: number): void {
    const elapsed = (performance.now() - this.#start) / 1000;
    const done = step - this.#firstStep;
    const perStep = elapsed / Math.max(1, done);
    const line = `step ${step}/${this.#total} loss ${loss.toFixed(4)} ${
      Math.round((done * this.#tokensPerStep) / Math.max(elapsed, 1e-9)).toLocaleString("en-US")
    } tok/s ${(perStep * 1000).toFixed(0)} ms/step eta ${
      formatDuration((this.#total - step) * perStep)
    }`;
    if (this.#tty) {
      const width = 20;
      const filled = Math.round((width * step) / this.#total);
      Deno.stderr.writeSync(
        encoder.encode(`\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${line}\x1b[K`),
      );
      this.#live = true;
    } else if (step === this.#total || step - this.#lastPrint >= 10 || done === 1) {
      log(line);
      this.#lastPrint = step;
    }
  }

  note(line: string): void {
    if (this.#live) Deno.stderr.writeSync(encoder.encode("\r\x1b[K"));
    this.#live = false;
    log(line);
  }

  done(): void {
    if (this.#live) Deno.stderr.writeSync(encoder.encode("\n"));
    this.#live = false;
  }
}

async function sample(v: Values): Promise<void> {
  const tokens = numberFlag(v, "tokens", 0, 1e9, true) ?? 1000;
  const temperature = numberFlag(v, "temperature", 0, 100, false) ?? 1;
  const topK = numberFlag(v, "top-k", 0, 65536, true) ?? 0;
  const topP = numberFlag(v, "top-p", 0, 1, false) ?? 1;
  if (topP === 0) {
    throw new InputError(`--top-p 0 is out of range; use a number above 0 and at most 1`);
  }
  let seed = numberFlag(v, "seed", 0, 2 ** 32 - 1, true);
  const prompt = stringFlag(v, "prompt") ?? "";
  setupKernels(kernelsFlag(v));
  const { model, tokenizer } = await loadWeightsFile(stringFlag(v, "weights"));
  validateSampling({ temperature, topK, topP }, model.config.vocabSize);
  let promptIds: Uint16Array;
  try {
    promptIds = tokenizer.encode(prompt);
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw new InputError(e.message.replace(/^the text/, "the prompt"));
  }
  if (seed === undefined) {
    seed = crypto.getRandomValues(new Uint32Array(1))[0];
    log(`seed ${seed}`);
  }
  const newline = tokenizer.has("\n") ? tokenizer.encode("\n")[0] : 0;
  writeStdout(prompt);
  for (
    const id of generateTokens(model, promptIds, newline, { tokens, temperature, topK, topP, seed })
  ) {
    writeStdout(tokenizer.vocab[id]);
  }
  writeStdout("\n");
}

async function evalCommand(v: Values): Promise<void> {
  const weightsPath = requireFlag(v, "weights", "eval");
  const dataPath = requireFlag(v, "data", "eval");
  const split = stringFlag(v, "split") ?? "val";
  if (split !== "val" && split !== "all") {
    throw new InputError(`--split ${JSON.stringify(split)} is not a split; use val or all`);
  }
  setupKernels(kernelsFlag(v));
  const { model, tokenizer } = await loadWeightsFile(weightsPath);
  const text = decodeText(await readInput(dataPath, "corpus"), dataPath);
  let corpus;
  try {
    corpus = makeCorpus(text, tokenizer);
  } catch (e) {
    if (e instanceof InputError) throw new InputError(`${dataPath}: ${e.message}`);
    throw e;
  }
  const tokens = split === "val" ? corpus.val : corpus.tokens;
  const r = evaluate(model, tokens);
  if (v.json) {
    writeStdout(
      JSON.stringify({ loss: r.loss, bpc: r.bpc, tokens: r.tokens, windows: r.windows, split }) +
        "\n",
    );
  } else {
    writeStdout(`loss ${r.loss.toFixed(4)} bpc ${r.bpc.toFixed(4)} tokens ${r.tokens}\n`);
  }
}

async function info(v: Values): Promise<void> {
  const path = stringFlag(v, "weights");
  const { model, tokenizer, facts } = await loadWeightsFile(path);
  const c = model.config;
  const lines = [
    `weights     ${path ?? displayPath(SHIPPED_WEIGHTS)}`,
    `config      vocab_size ${c.vocabSize}, block_size ${c.blockSize}, d_model ${c.dModel}, n_layers ${c.nLayers}, n_heads ${c.nHeads}`,
    `parameters  ${parameterCount(c).toLocaleString("en-US")}`,
    `vocab       ${JSON.stringify(tokenizer.vocab.join(""))}`,
    ...Object.keys(facts).sort().map((k) => `${k.padEnd(11)} ${facts[k]}`),
  ];
  writeStdout(lines.join("\n") + "\n");
}

/** With no arguments: stream from the shipped weights, training them first if they are missing. */
async function start(): Promise<void> {
  if (SHIPPED_WEIGHTS.protocol !== "file:") return await sample({}); // run from a URL: fetch them
  try {
    await Deno.lstat(SHIPPED_WEIGHTS);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    log(
      `no weights at ${displayPath(SHIPPED_WEIGHTS)}: training them first on ${
        displayPath(DEFAULT_CORPUS)
      }`,
    );
    try {
      await Deno.lstat(DEFAULT_CORPUS);
    } catch {
      throw new InputError(
        `the default corpus ${
          displayPath(DEFAULT_CORPUS)
        } is missing; run \`deno task data\` first`,
      );
    }
    await train({ data: DEFAULT_CORPUS.pathname, out: SHIPPED_WEIGHTS.pathname });
  }
  await sample({});
}

// ---------------------------------------------------------------------------------------------
// Entry point

const HANDLERS: Record<string, (v: Values) => Promise<void>> = {
  train,
  sample,
  eval: evalCommand,
  inspect: (v) =>
    inspectCommand(v, { readInput, writeStdout, writeFileAtomic, log, loadWeightsFile }),
  info,
};

/** Translates a permission Deno refused into the flag that grants it. */
function permissionMessage(e: Error): string {
  const m = e.message.match(/Requires (\w+) access to ([^,]+),/);
  if (!m) return `a permission was not granted (${e.message.split("\n")[0]})`;
  const [, kind, target] = m;
  const flag = `--allow-${kind}`;
  const value = target.replace(/^"|"$/g, "");
  return `no ${kind} permission for ${value}; run again with ${flag}=${value}`;
}

/** Runs the CLI and returns its exit code. */
export async function main(args: string[]): Promise<number> {
  const debug = args.includes("--debug");
  try {
    if (args.length === 0) {
      await start();
      return 0;
    }
    const [command, ...rest] = args;
    if (command === "--help" || command === "-h" || command === "help") {
      writeStdout(helpText() + "\n");
      return 0;
    }
    if (!(command in HANDLERS)) {
      throw new InputError(
        `unknown command ${JSON.stringify(command)}; use one of ${
          Object.keys(HANDLERS).join(", ")
        }`,
      );
    }
    const values = parseFlags(command, rest);
    if (values.help) {
      writeStdout(helpText(command) + "\n");
      return 0;
    }
    await HANDLERS[command](values);
    return 0;
  } catch (e) {
    if (e instanceof PipeClosed) return 0;
    if (debug) console.error(e);
    if (e instanceof BareGPTError) {
      log(`error: ${e.message}`);
      return e.exitCode;
    }
    if (e instanceof Deno.errors.NotCapable) {
      log(`error: ${permissionMessage(e)}`);
      return 2;
    }
    if (e instanceof RangeError && /alloc|array length|memory/i.test(e.message)) {
      log(
        `error: not enough memory (${
          e.message.split("\n")[0]
        }); use a smaller model, batch or block size`,
      );
      return 1;
    }
    log(
      `error: internal error: ${
        (e as Error)?.message?.split("\n")[0] ?? e
      }; rerun with --debug and report it`,
    );
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(Deno.exitCode !== 0 && code === 0 ? Deno.exitCode : code);
}
