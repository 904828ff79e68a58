/**
 * The CLI's flags: every command's flag specs and help text, parsing, and reading values with the
 * project's one-line errors. Numeric ranges come from the library's option specs.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  DECAYS,
  describeRange,
  InputError,
  type KernelChoice,
  MODEL_OPTIONS,
  OPTIMIZERS,
  type OptionSpec,
  TRAIN_OPTIONS,
} from "../mod.ts";

/** Parsed flags: name to value (string flags) or true (boolean flags). */
export type Values = Record<string, string | boolean | undefined>;

const TRAIN_DEFAULTS = {
  ...Object.fromEntries(Object.entries(TRAIN_OPTIONS).map(([k, s]) => [k, s.default])),
  decay: DECAYS[0],
  optimizer: OPTIMIZERS[0],
} as Record<string, number | string>;
const DEFAULT_CONFIG = {
  blockSize: MODEL_OPTIONS.blockSize.default,
  dModel: MODEL_OPTIONS.dModel.default,
  nLayers: MODEL_OPTIONS.nLayers.default,
  nHeads: MODEL_OPTIONS.nHeads.default,
};

type FlagType = "string" | "boolean";
interface Flag {
  type: FlagType;
  help: string;
  short?: string;
  /** The value's name in the help (default: the flag's name in capitals). */
  arg?: string;
}

const COMMON: Record<string, Flag> = {
  help: { type: "boolean", short: "h", help: "show this help" },
  debug: { type: "boolean", help: "print stack traces of errors" },
  kernels: {
    type: "string",
    arg: "TIER",
    help: "kernel tier: relaxed, simd, js or webgpu (default: the fastest WebAssembly one); " +
      "js: the plain TypeScript reference in lib/tensor.ts — run it after editing that file; " +
      "webgpu: train, sample and eval on the GPU",
  },
};

export const COMMANDS: Record<
  string,
  { summary: string; usage: string; flags: Record<string, Flag> }
> = {
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
        help: `learning-rate decay: ${DECAYS.join(", ")} (default ${TRAIN_DEFAULTS.decay})`,
      },
      cooldown: {
        type: "string",
        help:
          `fraction of the steps after warmup spent decaying; below 1 the peak holds first (default ${TRAIN_DEFAULTS.cooldown})`,
      },
      optimizer: {
        type: "string",
        help: `${
          OPTIMIZERS.join(" or ")
        }: Muon for the hidden matrices, AdamW for the rest (default ${TRAIN_DEFAULTS.optimizer})`,
      },
      "muon-lr": {
        type: "string",
        help: `Muon's peak learning rate (default ${TRAIN_DEFAULTS.muonLr})`,
      },
      "muon-momentum": {
        type: "string",
        help: `Muon's momentum (default ${TRAIN_DEFAULTS.muonMomentum})`,
      },
      "muon-steps": {
        type: "string",
        help: `Muon's Newton-Schulz iterations (default ${TRAIN_DEFAULTS.muonSteps})`,
      },
      "weight-decay": {
        type: "string",
        help: `weight decay on 2-D weights (default ${TRAIN_DEFAULTS.weightDecay})`,
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
        help:
          "full validation loss every N steps, 0 for none; the final one is always stored (default 650)",
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
      prompt: {
        type: "string",
        help: 'text to continue (default, or --prompt "": start from a newline)',
      },
      tokens: { type: "string", help: "characters to generate (default 1000)" },
      temperature: {
        type: "string",
        help: "0 is greedy (no seed needed); higher is more random (default 1)",
      },
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
    usage: "eval [--weights FILE] --data FILE [--split val|all] [--json] [--threads N]",
    flags: {
      weights: { type: "string", help: "weights file (default: the shipped weights)" },
      data: { type: "string", help: "UTF-8 text to evaluate on" },
      split: { type: "string", help: "val: the last 10% (default); all: the whole file" },
      json: { type: "boolean", help: "print JSON instead of a line" },
      threads: { type: "string", help: "worker threads (default: all cores)" },
    },
  },
  inspect: {
    summary: "top candidates per generated step and attention heatmaps (SVG)",
    usage:
      "inspect [--weights FILE] --prompt TEXT [--tokens N] [--top N] [--layer L] [--out FILE.svg]",
    flags: {
      weights: { type: "string", help: "weights file (default: the shipped weights)" },
      prompt: { type: "string", help: 'text to start from ("" starts from a newline)' },
      tokens: { type: "string", help: "characters to generate (default 20)" },
      top: { type: "string", help: "candidates shown per step (default 5)" },
      layer: { type: "string", help: "layer whose attention is drawn (default: the last)" },
      out: {
        type: "string",
        help: "write the attention heatmaps to this SVG file (its folder is created if missing); " +
          "- writes the SVG to stdout (the table and the text then go to stderr)",
      },
      force: { type: "boolean", help: "overwrite an existing --out" },
      temperature: {
        type: "string",
        help: "sample at this temperature instead of greedy (default 0: greedy)",
      },
      seed: {
        type: "string",
        help: "random seed when sampling (default: drawn and printed to stderr)",
      },
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

/** The help of the CLI (no name) or of one command. */
export function helpText(name?: string): string {
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
  const lefts = Object.entries(flags).map(([f, spec]) =>
    `--${f}${spec.type === "string" ? " " + (spec.arg ?? METAVARS[f] ?? metavar(f)) : ""}`
  );
  // one help column for every row, wide enough for the longest flag; long help lines wrap to it
  const column = 2 + Math.max(...lefts.map((l) => l.length)) + 2;
  const rows = Object.values(flags).flatMap((spec, i) =>
    wrap(spec.help, HELP_WIDTH - column).map((line, k) =>
      (k === 0 ? `  ${lefts[i]}`.padEnd(column) : " ".repeat(column)) + line
    )
  );
  return [`usage: cli.ts ${c.usage}`, "", c.summary + ".", "", "options:", ...rows].join("\n");
}

/** The width the help is laid out in (its lines may be longer only for a word that long). */
export const HELP_WIDTH = 100;

/** The value names of the flags whose name is not the best one. */
const METAVARS: Record<string, string> = {
  data: "FILE",
  out: "FILE",
  init: "FILE",
  weights: "FILE",
  prompt: "TEXT",
  split: "val|all",
  decay: "NAME",
  optimizer: "NAME",
};

/** A flag's value name: N for counts, X for other numbers. */
function metavar(flag: string): string {
  return /^(lr|min-lr|muon-lr|muon-momentum|cooldown|weight-decay|beta1|beta2|clip|dropout|temperature|top-p)$/
      .test(flag)
    ? "X"
    : "N";
}

/** Splits text into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line === "" ? word : `${line} ${word}`;
  }
  lines.push(line);
  return lines;
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

/** A string flag: undefined when absent; an empty value is an InputError. */
export function stringFlag(v: Values, name: string): string | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || raw === "") throw new InputError(`--${name} needs a value`);
  return raw;
}

/** A choice flag such as --decay: the first choice when absent, else one of them or an error. */
export function choiceFlag<T extends string>(
  v: Values,
  name: string,
  choices: readonly T[],
  what: string,
): T {
  const value = stringFlag(v, name) ?? choices[0];
  if (!choices.includes(value as T)) {
    throw new InputError(
      `--${name} ${JSON.stringify(value)} is not ${what}; use ${choices.join(" or ")}`,
    );
  }
  return value as T;
}

/** A text flag such as --prompt: undefined when absent; an empty value is allowed. */
export function textFlag(v: Values, name: string): string | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string") throw new InputError(`--${name} needs a value`);
  return raw;
}

/** A string flag the command cannot do without. */
export function requireFlag(v: Values, name: string, command: string): string {
  const s = stringFlag(v, name);
  if (s === undefined) {
    throw new InputError(`${command} needs --${name}; see \`${command} --help\``);
  }
  return s;
}

/** A range of a flag the library has no option for. */
export function range(min: number, max: number, integer = true): OptionSpec {
  return { min, max, integer };
}

/** A numeric flag: undefined when absent, else a number within the spec's range. */
export function numberFlag(v: Values, name: string, spec: OptionSpec): number | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  const n = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  if (Number.isNaN(n)) {
    throw new InputError(
      `--${name} ${JSON.stringify(raw)} is not a number; use ${describeRange(spec)}`,
    );
  }
  if (spec.integer && Number.isFinite(n) && !Number.isInteger(n)) {
    throw new InputError(
      `--${name} ${JSON.stringify(raw)} is not an integer; use ${describeRange(spec)}`,
    );
  }
  if (!Number.isFinite(n) || n < spec.min || n > spec.max) {
    throw new InputError(
      `--${name} ${JSON.stringify(raw)} is out of range; use ${describeRange(spec)}`,
    );
  }
  return n;
}

/** The --kernels flag: a kernel tier, or undefined for the fastest WebAssembly one. */
export function kernelsFlag(v: Values): KernelChoice | undefined {
  const k = stringFlag(v, "kernels");
  if (k === undefined) return undefined;
  if (k !== "relaxed" && k !== "simd" && k !== "js" && k !== "webgpu") {
    throw new InputError(
      `--kernels ${JSON.stringify(k)} is not a kernel tier; use relaxed, simd, js or webgpu`,
    );
  }
  return k;
}
