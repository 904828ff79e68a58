/**
 * No command: stream from the shipped weights, training them first if they are missing.
 *
 * @module
 */

import { InputError } from "../mod.ts";
import { DEFAULT_CORPUS, displayPath, SHIPPED_WEIGHTS } from "./files.ts";
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
    const path = (url: URL) => decodeURIComponent(url.pathname);
    await train({ data: path(DEFAULT_CORPUS), out: path(SHIPPED_WEIGHTS) });
  }
  await sample({});
}
