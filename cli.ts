#!/usr/bin/env -S deno run
/**
 * The BareGPT command line: train, sample, eval, inspect, info. With no arguments it streams text
 * from the shipped weights (training them first if there are none), as BareGPT does.
 *
 * stdout carries only the product (sampled text, the eval line, JSON); configuration, progress
 * and errors go to stderr. Exit codes: 0 success, 2 bad input, 1 any other failure. The commands
 * live in cli/; this module is the entry: the command table, exit codes and error printing.
 *
 * @module
 */

import { BareGPTError, InputError } from "./mod.ts";
import { evalCommand } from "./cli/eval.ts";
import { helpText, parseFlags, type Values } from "./cli/flags.ts";
import { info } from "./cli/info.ts";
import { inspectCommand } from "./cli/inspect.ts";
import { folderOf, taskHint } from "./cli/files.ts";
import { log, PipeClosed, writeStdout } from "./cli/output.ts";
import { sample } from "./cli/sample.ts";
import { start } from "./cli/start.ts";
import { train } from "./cli/train.ts";

export { DEFAULT_CORPUS, readInput, SHIPPED_WEIGHTS, writeFileAtomic } from "./cli/files.ts";
export { parseFlags } from "./cli/flags.ts";

const HANDLERS: Record<string, (v: Values) => Promise<void>> = {
  train,
  sample,
  eval: evalCommand,
  inspect: inspectCommand,
  info,
};

/** The flags of the library's option names (others are `--name`). */
const FLAG_OF: Record<string, string> = {
  dModel: "--d-model",
  nHeads: "--heads",
  nLayers: "--layers",
  blockSize: "--block",
  minLr: "--min-lr",
  weightDecay: "--weight-decay",
  muonLr: "--muon-lr",
  muonMomentum: "--muon-momentum",
  muonSteps: "--muon-steps",
  topK: "--top-k",
  topP: "--top-p",
};

/** A library error's message with the options it names reworded as the CLI's flags. */
export function flagWording(e: BareGPTError): string {
  const names = e.options.filter((n) => /^\w+$/.test(n));
  if (names.length === 0) return e.message;
  const re = new RegExp(`(?<![\\w-])(${names.join("|")})\\b`, "g");
  return e.message.replace(re, (name) => FLAG_OF[name] ?? `--${name}`);
}

/** Translates a permission Deno refused into the flag that grants it. */
function permissionMessage(e: Error): string {
  const m = e.message.match(/Requires (\w+) access to ([^,]+),/);
  if (!m) return `a permission was not granted (${e.message.split("\n")[0]})`;
  const [, kind, target] = m;
  const flag = `--allow-${kind}`;
  const value = target.replace(/^"|"$/g, "");
  if (/\.\d+\.tmp$/.test(value)) {
    // an atomic write's temporary file: its name changes every run, so name its folder
    const dir = folderOf(value);
    return `no ${kind} permission for ${dir}, where ${
      value.replace(/\.\d+\.tmp$/, "")
    } is written (an atomic write needs read and write there); run again with --allow-read=${dir} --allow-write=${dir}${
      taskHint(dir)
    }`;
  }
  const hint = kind === "read" || kind === "write" ? taskHint(value) : "";
  return `no ${kind} permission for ${value}; run again with ${flag}=${value}${hint}`;
}

/** True for the error of a path whose symbolic links lead back to themselves (ELOOP). */
function isSymlinkLoop(e: unknown): boolean {
  return e instanceof Deno.errors.FilesystemLoop ||
    (e instanceof Error && /Too many levels of symbolic links|os error 40\b/.test(e.message));
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
      log(`error: ${flagWording(e)}`);
      return e.exitCode;
    }
    if (isSymlinkLoop(e)) {
      // the path, as the failed call quotes it ("...: open '/tmp/x'")
      const path = (e as Error).message.match(/: \w+ '(.*)'(?: -> '.*')?$/)?.[1];
      log(`error: ${path ?? "a path given"} is a symlink loop; give a real file`);
      return 2;
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
