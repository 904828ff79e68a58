/**
 * The CLI's output: stdout carries only the product, stderr the rest; training progress.
 *
 * @module
 */

const encoder = new TextEncoder();

/** Thrown when stdout's reader went away (`sample | head`): the command ends quietly. */
export class PipeClosed extends Error {}

/** Writes text to stdout; PipeClosed when its reader is gone. */
export function writeStdout(text: string): void {
  let bytes = encoder.encode(text);
  try {
    while (bytes.length > 0) bytes = bytes.subarray(Deno.stdout.writeSync(bytes));
  } catch (e) {
    if (e instanceof Deno.errors.BrokenPipe) throw new PipeClosed();
    throw e;
  }
}

/** One line on stderr. */
export function log(line: string): void {
  console.error(line);
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
