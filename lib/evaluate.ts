/**
 * Evaluation, one definition everywhere: the mean cross-entropy over every non-overlapping
 * blockSize window of a text (window i reads tokens [iT, (i+1)T) and predicts iT+1 .. (i+1)T),
 * or an estimate over evenly spaced windows.
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { eventLoopTurns } from "./turns.ts";
import { windowBatch, windowCount } from "./data.ts";

/** The model's loss on a text. */
export interface Evaluation {
  /** Mean cross-entropy per predicted character, in nats. */
  loss: number;
  /** Bits per character: loss / ln 2. */
  bpc: number;
  /** Characters predicted. */
  tokens: number;
  /** Windows of blockSize characters evaluated. */
  windows: number;
  /**
   * Characters of the text left out before scoring because they are outside the vocabulary
   * (with `unknown: "drop"`; 0 otherwise).
   */
  dropped: number;
}

/**
 * Indices of the windows to evaluate: all floor((n - 1) / T) of them, or maxWindows evenly spaced
 * ones. Throws InputError when the text holds no window.
 */
export function evalWindows(n: number, T: number, maxWindows?: number): number[] {
  const total = windowCount(n, T);
  if (total === 0) {
    throw new InputError(
      `the text to evaluate has ${n} characters, fewer than blockSize + 1 = ${
        T + 1
      }; use a longer text`,
      { options: ["blockSize"] },
    );
  }
  const count = maxWindows !== undefined && maxWindows < total ? maxWindows : total;
  return Array.from({ length: count }, (_, i) => Math.floor((i * total) / count));
}

/** Where evaluation runs: batches of up to B windows in inputs/targets, and their loss sum. */
export interface LossRunner {
  B: number;
  inputs: Uint16Array;
  targets: Uint16Array;
  /** The sum of the losses of the first `count` sequences of inputs/targets. */
  lossSum(count: number): number | Promise<number>;
}

/** The evaluation of DESIGN.md over `tokens`, batch by batch, yielding to the event loop. */
export async function evaluateTokens(
  tokens: Uint16Array,
  T: number,
  runner: LossRunner,
  maxWindows?: number,
  onProgress?: (windowsDone: number, windowsTotal: number) => void,
): Promise<Evaluation> {
  if (maxWindows !== undefined && (!Number.isInteger(maxWindows) || maxWindows < 1)) {
    throw new InputError(`maxWindows ${maxWindows} is not a positive integer; use 1 or more`, {
      options: ["maxWindows"],
    });
  }
  const windows = evalWindows(tokens.length, T, maxWindows);
  let sum = 0;
  const turn = eventLoopTurns();
  for (let first = 0; first < windows.length; first += runner.B) {
    const count = Math.min(runner.B, windows.length - first);
    windowBatch(runner.inputs, runner.targets, tokens, windows, first, count, T);
    sum += await runner.lossSum(count);
    onProgress?.(first + count, windows.length);
    await turn();
  }
  const loss = sum / (windows.length * T);
  const tokenCount = windows.length * T;
  return { loss, bpc: loss / Math.LN2, tokens: tokenCount, windows: windows.length, dropped: 0 };
}
