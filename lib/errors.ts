/**
 * The project's error classes. Web-standard only (no Deno APIs), so `lib/` stays portable.
 *
 * - {@linkcode BareGPTError}: base class; a failure not caused by the user's input (CLI exit 1).
 * - {@linkcode InputError}: the user's input is wrong: a flag, a file, a prompt (CLI exit 2).
 * - {@linkcode WeightsError}: a weights or checkpoint file is invalid (an InputError, exit 2).
 *
 * Messages are one line that says what is wrong and what to do; the CLI prints `error: <message>`.
 *
 * @module
 */

/** Collapses any line breaks so that every message is exactly one line. */
function oneLine(message: string): string {
  return message.replace(/\s*[\r\n]+\s*/g, " ").trim();
}

/** The standard error options, and the options (by name) an error is about. */
export interface BareGPTErrorOptions extends ErrorOptions {
  /** Names of the options the message mentions (`dModel`), so a face can reword them. */
  options?: string[];
}

/**
 * Base class of every error the project raises on purpose. Thrown directly for failures that are
 * not the user's fault (a failed write, NaN during training): the CLI exits with code 1.
 *
 * @example
 * ```ts
 * import { BareGPTError } from "./errors.ts";
 * const e = new BareGPTError("the loss became NaN at step 12; lower lr", { options: ["lr"] });
 * console.log(e.name, e.exitCode); // "BareGPTError" 1
 * ```
 */
export class BareGPTError extends Error {
  /** The CLI exit code for this kind of error: 1 here, 2 for {@linkcode InputError}. */
  get exitCode(): number {
    return 1;
  }

  /** Names of the options the message mentions (the CLI rewords them as its flags). */
  readonly options: readonly string[];

  /**
   * Creates the error.
   *
   * @param message one line: what is wrong and what to do.
   * @param options the standard error options (`cause`), and the options the message names.
   */
  constructor(message: string, options?: BareGPTErrorOptions) {
    super(oneLine(message), options);
    this.name = "BareGPTError";
    this.options = options?.options ?? [];
  }
}

/**
 * The user's input is wrong: a flag, a named file that is missing or invalid, a prompt with
 * characters outside the vocabulary. The CLI exits with code 2.
 *
 * @example
 * ```ts
 * import { InputError } from "./errors.ts";
 * const e = new InputError("temperature -1 is out of range; use a number from 0 to 100");
 * console.log(e instanceof InputError, e.exitCode); // true 2
 * ```
 */
export class InputError extends BareGPTError {
  /** The CLI exit code for this kind of error: 2. */
  override get exitCode(): number {
    return 2;
  }

  /**
   * Creates the error.
   *
   * @param message one line: what is wrong and what to do.
   * @param options the standard error options (`cause`), and the options the message names.
   */
  constructor(message: string, options?: BareGPTErrorOptions) {
    super(message, options);
    this.name = "InputError";
  }
}

/**
 * A weights or checkpoint file is invalid: truncated, corrupt or hostile. The CLI exits with code 2.
 *
 * @example
 * ```ts
 * import { InputError, WeightsError } from "./errors.ts";
 * const e = new WeightsError(
 *   "weights file is truncated: header claims 1234 bytes but only 1000 follow; " +
 *     "re-download or re-train it",
 * );
 * console.log(e.name, e instanceof InputError, e.exitCode); // "WeightsError" true 2
 * ```
 */
export class WeightsError extends InputError {
  /**
   * Creates the error.
   *
   * @param message one line: what is wrong and what to do.
   * @param options the standard error options (`cause`), and the options the message names.
   */
  constructor(message: string, options?: BareGPTErrorOptions) {
    super(message, options);
    this.name = "WeightsError";
  }
}

/**
 * True when `e` is one of the project's own errors (as opposed to a bug or a platform error).
 *
 * @example
 * ```ts
 * import { InputError, isBareGPTError } from "./errors.ts";
 * try {
 *   throw new InputError("steps 0 is out of range; use an integer from 1 to 1000000000");
 * } catch (e) {
 *   if (isBareGPTError(e)) console.error(`error: ${e.message}`);
 *   else throw e;
 * }
 * ```
 */
export function isBareGPTError(e: unknown): e is BareGPTError {
  return e instanceof BareGPTError;
}
