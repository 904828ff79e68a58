/**
 * No command: stream from the shipped weights, training them first if they are missing. An
 * interrupted first training (Ctrl-C) left a checkpoint beside them: running it again resumes it.
 *
 * @module
 */

import { InputError } from "../mod.ts";
import { DEFAULT_CORPUS, displayPath, exists, SHIPPED_WEIGHTS } from "./files.ts";
import { log } from "./output.ts";
import { sample } from "./sample.ts";
import { train } from "./train.ts";

/** Streams from the shipped weights (run from a URL: fetches them). */
export async function start(): Promise<void> {
  if (SHIPPED_WEIGHTS.protocol !== "file:") return await sample({});
  try {
    await Deno.lstat(SHIPPED_WEIGHTS);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const path = (url: URL) => decodeURIComponent(url.pathname);
    const checkpoint = new URL(`${SHIPPED_WEIGHTS.href}.ckpt`);
    const resume = await exists(path(checkpoint));
    log(
      resume
        ? `no weights at ${displayPath(SHIPPED_WEIGHTS)}: resuming the interrupted training from ${
          displayPath(checkpoint)
        }`
        : `no weights at ${displayPath(SHIPPED_WEIGHTS)}: training them first on ${
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
    await train(
      {
        data: path(DEFAULT_CORPUS),
        out: path(SHIPPED_WEIGHTS),
        // a crash or a closed terminal loses at most 100 steps of the 14-minute first run
        "checkpoint-every": "100",
        ...(resume ? { resume } : {}),
      },
      { continueWith: "`deno task start` again (cli.ts with no arguments resumes it)" },
    );
    if (Deno.exitCode !== 0) return; // interrupted again: the checkpoint is saved, nothing to stream
  }
  await sample({});
}
