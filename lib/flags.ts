/**
 * Reading command-line flag values (as parsed by `node:util` parseArgs) with the project's
 * one-line errors, shared by the CLI's commands. Web-standard only.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { KernelTier } from "./kernels/mod.ts";

/** Parsed flags: name to value (string flags) or true (boolean flags). */
export type FlagValues = Record<string, string | boolean | undefined>;

/** A string flag: undefined when absent; an empty value is an InputError. */
export function stringFlag(v: FlagValues, name: string): string | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || raw === "") throw new InputError(`--${name} needs a value`);
  return raw;
}

/** A string flag the command cannot do without. */
export function requireFlag(v: FlagValues, name: string, command: string): string {
  const s = stringFlag(v, name);
  if (s === undefined) {
    throw new InputError(`${command} needs --${name}; see \`${command} --help\``);
  }
  return s;
}

/** A numeric flag: undefined when absent, else a number within [min, max] (integer if asked). */
export function numberFlag(
  v: FlagValues,
  name: string,
  min: number,
  max: number,
  integer: boolean,
): number | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  const n = typeof raw === "string" && raw.trim() !== "" ? Number(raw) : NaN;
  const kind = integer ? "an integer" : "a number";
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min || n > max) {
    throw new InputError(
      `--${name} ${JSON.stringify(raw)} is out of range; use ${kind} from ${min} to ${max}`,
    );
  }
  return n;
}

/** The --kernels flag: a kernel tier, or undefined for the fastest available. */
export function kernelsFlag(v: FlagValues): KernelTier | undefined {
  const k = stringFlag(v, "kernels");
  if (k === undefined) return undefined;
  if (k !== "relaxed" && k !== "simd" && k !== "js") {
    throw new InputError(
      `--kernels ${JSON.stringify(k)} is not a kernel tier; use relaxed, simd or js`,
    );
  }
  return k;
}
