/**
 * `deno task curve LOG [OUT.svg]`: the validation loss curve of a training run, from the log that
 * `train` writes to stderr. Reads every full-sweep evaluation ("step N: validation loss X" and the
 * final "final validation loss X"), prints them as a Markdown table and writes an SVG chart.
 * Estimates ("~X (estimate on N windows)") are left out: published curves are full sweeps.
 *
 * A log captured from a terminal (`train ... 2> train.log` on a TTY, or `script`) holds the live
 * progress bar: lines joined by `\r` and terminal escapes (`ESC[K`). Lines are split on `\r` as
 * well as `\n`, and the escapes are dropped, so such a log reads as a plain one.
 *
 * The task may write the SVG in `docs/` and `out/` (created on demand); elsewhere the error says
 * which folder to grant.
 *
 * @module
 */

import { lineChartSvg } from "../mod.ts";

/** One point of the curve. */
export interface CurvePoint {
  step: number;
  loss: number;
}

/** Terminal escapes (CSI sequences such as the progress bar's `ESC[K`). */
const ESCAPES = new RegExp("\u001b\\[[0-9;?]*[ -/]*[@-~]", "g");

/** The lines of a log: split on `\r\n`, `\n` and a lone `\r`, terminal escapes dropped. */
export function logLines(log: string): string[] {
  return log.replace(ESCAPES, "").split(/\r\n|\r|\n/);
}

/** The full-sweep validation losses of a training log, in step order. */
export function parseCurve(log: string): CurvePoint[] {
  const points: CurvePoint[] = [];
  let lastStep = 0;
  for (const line of logLines(log)) {
    const progress = line.match(/step (\d+)\/\d+ loss/);
    if (progress) lastStep = Number(progress[1]);
    const periodic = line.match(/^step (\d+): validation loss (\d+\.\d+)$/);
    if (periodic) points.push({ step: Number(periodic[1]), loss: Number(periodic[2]) });
    const final = line.match(/^final validation loss (\d+\.\d+)/);
    if (final) points.push({ step: lastStep, loss: Number(final[1]) });
  }
  return points;
}

/**
 * An SVG line chart of the curve (validation loss against step), with axes and labels: the
 * library's line chart, the one notebooks draw their loss curves with.
 */
export function curveSvg(points: CurvePoint[], title = "validation loss"): string {
  const line = points.map((p) => ({ x: p.step, y: p.loss }));
  return lineChartSvg({ points: line, markers: true }, { title, xLabel: "step" });
}

/** The folder of a path ("." for a bare file name). */
function folderOf(path: string): string {
  const slash = path.replace(/\/+$/, "").lastIndexOf("/");
  return slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
}

/** A permission error (Deno 2 throws NotCapable for a missing --allow-* flag). */
function isPermissionError(e: unknown): boolean {
  return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
}

/** Stops with one line on stderr and exit code 2. */
function fail(message: string): never {
  console.error(`error: ${message}`);
  Deno.exit(2);
}

/** Reads the log, or stops with one line saying why. */
async function readLog(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) fail(`no log at ${path}`);
    if (isPermissionError(e)) {
      fail(
        `no read permission for ${folderOf(path)}; run again with --allow-read=${folderOf(path)}`,
      );
    }
    if (e instanceof Deno.errors.IsADirectory) fail(`${path} is a folder, not a training log`);
    throw e;
  }
}

/** Writes the SVG (creating its folder), or stops with one line naming the folder to grant. */
async function writeSvg(path: string, svg: string): Promise<void> {
  const folder = folderOf(path);
  try {
    await Deno.mkdir(folder, { recursive: true });
    await Deno.writeTextFile(path, svg);
  } catch (e) {
    if (isPermissionError(e)) {
      fail(
        `no write permission for ${folder}; \`deno task curve\` writes only in docs/ and out/ (write there, or run scripts/curve.ts with --allow-write=${folder})`,
      );
    }
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
      fail(`cannot write ${path}: ${folder} is not a folder`);
    }
    throw e;
  }
}

if (import.meta.main) {
  const [logPath, outPath] = Deno.args;
  if (!logPath) {
    console.error("usage: deno task curve LOG [OUT.svg]");
    Deno.exit(2);
  }
  const points = parseCurve(await readLog(logPath));
  if (points.length === 0) {
    fail(`${logPath} holds no full-sweep validation loss; train with --eval-every N`);
  }
  console.log("| step | validation loss |\n| ---: | ---: |");
  for (const p of points) console.log(`| ${p.step} | ${p.loss.toFixed(4)} |`);
  if (outPath) {
    await writeSvg(outPath, curveSvg(points));
    console.error(`wrote ${outPath}`);
  }
}
