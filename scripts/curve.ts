/**
 * `deno task curve LOG [OUT.svg]`: the validation loss curve of a training run, from the log that
 * `train` writes to stderr. Reads every full-sweep evaluation ("step N: validation loss X" and the
 * final "final validation loss X"), prints them as a Markdown table and writes an SVG chart.
 * Estimates ("~X (estimate on N windows)") are left out: published curves are full sweeps.
 *
 * @module
 */

/** One point of the curve. */
export interface CurvePoint {
  step: number;
  loss: number;
}

/** The full-sweep validation losses of a training log, in step order. */
export function parseCurve(log: string): CurvePoint[] {
  const points: CurvePoint[] = [];
  let lastStep = 0;
  for (const line of log.split("\n")) {
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

if (import.meta.main) {
  const [logPath, outPath] = Deno.args;
  if (!logPath) {
    console.error("usage: deno task curve LOG [OUT.svg]");
    Deno.exit(2);
  }
  const points = parseCurve(await Deno.readTextFile(logPath));
  if (points.length === 0) {
    console.error(
      `error: ${logPath} holds no full-sweep validation loss; train with --eval-every N`,
    );
    Deno.exit(2);
  }
  console.log("| step | validation loss |\n| ---: | ---: |");
  for (const p of points) console.log(`| ${p.step} | ${p.loss.toFixed(4)} |`);
  if (outPath) {
    await Deno.writeTextFile(outPath, curveSvg(points));
    console.error(`wrote ${outPath}`);
  }
}
