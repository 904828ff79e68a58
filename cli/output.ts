/**
 * The CLI's output: stdout carries only the product, stderr the rest; training progress.
 *
 * @module
 */

import { BareGPTError } from "../mod.ts";

const encoder = new TextEncoder();

/** Thrown when stdout's reader went away (`sample | head`): the command ends quietly. */
export class PipeClosed extends Error {}

/**
 * Writes text to stdout; PipeClosed when its reader is gone, BareGPTError (exit 1) when it
 * cannot be written (a full disk).
 */
export function writeStdout(text: string): void {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe) throw new PipeClosed();
    if (e instanceof Deno.errors.NotCapable) throw e;
    const err = e as Error & { code?: string };
    if (err?.code === "ENOSPC" || /No space left on device|os error 28/.test(err?.message ?? "")) {
      throw new BareGPTError(
        "cannot write to standard output: no space left on device; free some space or redirect it elsewhere",
        { cause: e },
      );
    }
    throw new BareGPTError(
      `cannot write to standard output: ${err?.message?.split("\n")[0] ?? String(e)}`,
      { cause: e },
    );
  }
}

/** Control characters: C0, DEL, C1, and the Unicode line and paragraph separators. */
// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/g;
// deno-lint-ignore no-control-regex
const HAS_CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

/**
 * Text from a file made safe for a terminal: every control character (C0, DEL, C1, U+2028 and
 * U+2029) but those in `keep` is written as an escape (`\n`, `\t`, `\r`, `\x1b`, `\u2028`), so
 * a file cannot move the cursor, set colours, write the clipboard (OSC 52) or forge lines.
 * Printable characters, any script, are kept; text without control characters is returned as is.
 */
export function escapeControls(text: string, keep = ""): string {
  if (!HAS_CONTROL.test(text)) return text;
  return text.replace(CONTROL, (ch) => {
    if (keep.includes(ch)) return ch;
    if (ch === "\n") return "\\n";
    if (ch === "\r") return "\\r";
    if (ch === "\t") return "\\t";
    const code = ch.charCodeAt(0);
    return code < 0x100
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

/**
 * One line on stderr. Control characters are escaped (a message may quote a file or a path):
 * whatever it holds, it stays one line and cannot drive the terminal.
 */
export function log(line: string): void {
  console.error(escapeControls(line));
}

/** Seconds as "12s", "3m04s" or "1h02m". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** Training progress on stderr: a live bar on a TTY, plain lines otherwise. */
export class Progress {
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
