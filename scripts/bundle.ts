/**
 * Builds the browser page's script: bundles `web/app.ts` (and the `lib/` code it imports) into
 * `web/dist/app.js` with a source map, for browsers, and the library's training worker
 * (`lib/worker.ts`) into `web/dist/worker.js`, which the bundled worker pool starts from beside
 * `app.js` (training on several threads in a cross-origin isolated page). The bundle is an output of this task, never
 * written by hand, and is git-ignored.
 *
 * ```sh
 * deno task bundle
 * # which runs: deno run --unstable-bundle --allow-read=. --allow-write=web/dist scripts/bundle.ts
 * ```
 *
 * Uses Deno's built-in bundler (`Deno.bundle`, behind `--unstable-bundle` in Deno 2.9; the same
 * engine as `deno bundle`).
 *
 * @module
 */

/** The page's entry point and the bundle's folder. */
export const ENTRY = new URL("../web/app.ts", import.meta.url);
/** The training worker, bundled on its own (a worker is a separate script). */
export const WORKER_ENTRY = new URL("../lib/worker.ts", import.meta.url);
export const OUT_DIR = new URL("../web/dist/", import.meta.url);

interface BundleResult {
  success: boolean;
  errors: { text?: string; message?: string }[];
  warnings: { text?: string; message?: string }[];
}

type BundleFn = (options: {
  entrypoints: string[];
  outputDir: string;
  platform: "browser";
  format: "esm";
  sourcemap: "linked";
  minify: boolean;
  write: boolean;
}) => Promise<BundleResult>;

/** Bundles the page; returns the path of the script written. */
export async function bundleWeb(options: { minify?: boolean } = {}): Promise<string> {
  const bundle = (Deno as unknown as { bundle?: BundleFn }).bundle;
  if (bundle === undefined) {
    throw new Error("Deno.bundle is missing: run with --unstable-bundle (deno task bundle does)");
  }
  const outDir = decodeURIComponent(OUT_DIR.pathname);
  await Deno.mkdir(outDir, { recursive: true });
  const text = (m: { text?: string; message?: string }) => m.text ?? m.message ?? String(m);
  // one entry point per call: each script is written as <entry's name>.js in web/dist/
  for (const entry of [ENTRY, WORKER_ENTRY]) {
    const result = await bundle({
      entrypoints: [decodeURIComponent(entry.pathname)],
      outputDir: outDir,
      platform: "browser",
      format: "esm",
      sourcemap: "linked",
      minify: options.minify ?? false,
      write: true,
    });
    for (const w of result.warnings) console.error(`warning: ${text(w)}`);
    if (!result.success || result.errors.length > 0) {
      throw new Error(`bundling failed: ${result.errors.map(text).join("; ")}`);
    }
  }
  return outDir + "app.js";
}

if (import.meta.main) {
  try {
    const path = await bundleWeb({ minify: Deno.args.includes("--minify") });
    const size = (await Deno.stat(path)).size;
    console.error(`wrote ${path} (${Math.round(size / 1024)} KiB)`);
  } catch (e) {
    console.error(`error: ${(e as Error).message.split("\n")[0]}`);
    Deno.exit(1);
  }
}
