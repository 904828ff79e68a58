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

/** An SVG line chart of the curve (validation loss against step), with axes and labels. */
export function curveSvg(points: CurvePoint[], title = "validation loss"): string {
  const W = 560, H = 320, left = 56, right = 16, top = 34, bottom = 44;
  const maxStep = Math.max(...points.map((p) => p.step));
  const losses = points.map((p) => p.loss);
  const lo = Math.floor(Math.min(...losses) * 10) / 10;
  const hi = Math.ceil(Math.max(...losses) * 10) / 10;
  const x = (step: number) => left + ((W - left - right) * step) / maxStep;
  const y = (loss: number) => top + ((H - top - bottom) * (hi - loss)) / (hi - lo || 1);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`,
  ];
  const yTicks = Math.round((hi - lo) / 0.1);
  const every = Math.max(1, Math.ceil(yTicks / 8));
  for (let i = 0; i <= yTicks; i += every) {
    const v = lo + i * 0.1;
    parts.push(
      `<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`,
      `<text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(1)}</text>`,
    );
  }
  const stepTick = maxStep > 2000 ? 500 : maxStep > 500 ? 100 : Math.max(1, Math.ceil(maxStep / 5));
  for (let s = 0; s <= maxStep; s += stepTick) {
    parts.push(
      `<line x1="${x(s)}" x2="${x(s)}" y1="${H - bottom}" y2="${H - bottom + 4}" stroke="#333"/>`,
      `<text x="${x(s)}" y="${H - bottom + 17}" text-anchor="middle">${s}</text>`,
    );
  }
  parts.push(
    `<line x1="${left}" x2="${W - right}" y1="${H - bottom}" y2="${H - bottom}" stroke="#333"/>`,
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${H - bottom}" stroke="#333"/>`,
    `<text x="${(left + W - right) / 2}" y="${H - 8}" text-anchor="middle">step</text>`,
    `<text x="14" y="${(top + H - bottom) / 2}" text-anchor="middle" transform="rotate(-90 14 ${
      (top + H - bottom) / 2
    })">loss (nats per character)</text>`,
    `<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="${
      points.map((p) => `${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" ")
    }"/>`,
    ...points.map((p) =>
      `<circle cx="${x(p.step).toFixed(1)}" cy="${
        y(p.loss).toFixed(1)
      }" r="3" fill="#1f6feb"><title>step ${p.step}: ${p.loss}</title></circle>`
    ),
    "</svg>",
  );
  return parts.join("\n") + "\n";
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
