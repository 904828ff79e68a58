/**
 * `eval`: the loss and bits per character of a model on a text.
 *
 * @module
 */

import {
  decodeCorpus,
  evaluate,
  InputError,
  selectKernels,
  TRAIN_OPTIONS,
  webgpuAdapter,
  WeightsError,
} from "../mod.ts";
import { kernelsFlag, numberFlag, requireFlag, stringFlag, type Values } from "./flags.ts";
import { displayPath, loadWeightsFile, readInput, SHIPPED_WEIGHTS } from "./files.ts";
import { log, writeStdout } from "./output.ts";

/** `eval [--weights FILE] --data FILE [--split val|all] [--json]` (default: shipped weights). */
export async function evalCommand(v: Values): Promise<void> {
  const weightsPath = stringFlag(v, "weights");
  const dataPath = requireFlag(v, "data", "eval");
  const split = stringFlag(v, "split") ?? "val";
  if (split !== "val" && split !== "all") {
    throw new InputError(`--split ${JSON.stringify(split)} is not a split; use val or all`);
  }
  const threadsFlag = numberFlag(v, "threads", TRAIN_OPTIONS.threads);
  const gpu = selectKernels(kernelsFlag(v)) === "webgpu";
  // the GPU, asked for now: a machine without one fails before the weights are read
  if (gpu) await webgpuAdapter();
  const model = await loadWeightsFile(weightsPath);
  const note = (message: string) => log(`note: ${message}`);
  const text = decodeCorpus(await readInput(dataPath, "corpus"), dataPath, { onNote: note });
  // the webgpu kernels evaluate on the GPU, without workers (more than one thread is refused)
  const threads = gpu ? threadsFlag ?? 1 : await cpuThreads(threadsFlag);
  const shown = weightsPath ?? displayPath(SHIPPED_WEIGHTS);
  const tty = Deno.stderr.isTerminal();
  const onProgress = tty
    ? (done: number, total: number) => {
      const line = `evaluating ${shown} on ${
        split === "val" ? "the last 10% of " : ""
      }${dataPath}: ${done}/${total} windows`;
      Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}\x1b[K`));
    }
    : undefined;
  let r;
  try {
    r = await evaluate(model, text, { split, unknown: "drop", threads, onProgress });
  } catch (e) {
    if (e instanceof WeightsError && /^the weights of this model /.test(e.message)) {
      throw new WeightsError(e.message.replace("this model", shown), { cause: e });
    }
    if (e instanceof InputError && /^the text/.test(e.message)) {
      throw new InputError(`${dataPath}: ${e.message}`, { options: [...e.options] });
    }
    throw e;
  } finally {
    if (tty) Deno.stderr.writeSync(new TextEncoder().encode("\r\x1b[K"));
  }
  if (r.dropped > 0) {
    note(
      `dropped ${r.dropped} characters of ${dataPath} that are outside the model's vocabulary; the rest was scored`,
    );
  }
  if (v.json) {
    writeStdout(
      JSON.stringify({ loss: r.loss, bpc: r.bpc, tokens: r.tokens, windows: r.windows, split }) +
        "\n",
    );
  } else {
    writeStdout(`loss ${r.loss.toFixed(4)} bpc ${r.bpc.toFixed(4)} tokens ${r.tokens}\n`);
  }
}

/** Threads of a CPU evaluation: every core, when the worker module can be read. */
async function cpuThreads(threadsFlag: number | undefined): Promise<number> {
  const note = (message: string) => log(`note: ${message}`);
  // the workers load lib/ beside mod.ts
  const lib = new URL("../lib/", import.meta.url);
  const canStartWorkers = lib.protocol !== "file:" ||
    (await Deno.permissions.query({ name: "read", path: decodeURIComponent(lib.pathname) }))
        .state === "granted";
  const cores = Math.max(1, Math.min(navigator.hardwareConcurrency, 64));
  const libFolder = decodeURIComponent(lib.pathname).replace(/\/$/, "");
  if (threadsFlag !== undefined && threadsFlag > 1 && !canStartWorkers) {
    throw new InputError(
      `no read permission for ${libFolder} (eval on ${threadsFlag} threads starts workers from it); run again with --allow-read=${libFolder}, or pass --threads 1`,
    );
  }
  if (threadsFlag !== undefined && threadsFlag > cores) {
    log(`warning: --threads ${threadsFlag} is more than the ${cores} cores of this machine`);
  }
  if (threadsFlag === undefined && !canStartWorkers && cores > 1) {
    note(`evaluating on one thread; allow reading ${libFolder} to use all ${cores} cores`);
  }
  return threadsFlag ?? (canStartWorkers ? cores : 1);
}
