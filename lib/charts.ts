/**
 * Charts from data, beside the heatmaps of `draw.ts` and shared the same way (the `curve` script,
 * notebooks, any face): a bar chart (the candidates for the next character), a line chart (a loss
 * curve), texts side by side (samples), and {@linkcode Picture}, an SVG or HTML document that
 * shows itself in a Jupyter notebook. Pure functions from data to text; nothing here runs the
 * model.
 *
 * @example The candidates for the next character as a bar chart
 * ```ts ignore
 * import { barChartSvg, displayChar, loadWeights, nextCharDistribution, picture, shippedWeightsUrl } from "@baregpt/baregpt";
 * const model = await loadWeights(shippedWeightsUrl);
 * const top = nextCharDistribution(model, "To be, or not to b", { top: 10 });
 * const svg = barChartSvg(top.map((c) => ({ label: displayChar(c.char), value: c.prob })));
 * picture(svg); // the last expression of a notebook cell: the chart is drawn
 * ```
 *
 * @module
 */

import { escapeXml } from "./draw.ts";

/** The pictures' font (the heatmaps use a monospace one for characters; charts read as text). */
const FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif";
const MONO = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace";
/** The charts' colours: blue first (the README's loss curve), then others for more series. */
const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700"];

// ---------------------------------------------------------------------------------------------
// Pictures that show themselves

/** The media type of a {@linkcode Picture}. */
export type PictureType = "image/svg+xml" | "text/html";

/**
 * An SVG or HTML document that shows itself in a Jupyter notebook: Deno's kernel (`deno jupyter`)
 * draws any object with a `Symbol.for("Jupyter.display")` method, and a cell's last expression
 * (or `Deno.jupyter.display(picture)`) is drawn. Elsewhere it is a plain object: `String(picture)`
 * and `picture.text` are the document.
 *
 * @example
 * ```ts
 * import { Picture } from "@baregpt/baregpt";
 * const dot = new Picture('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>');
 * console.log(dot.type, String(dot).length); // "image/svg+xml" 62
 * ```
 */
export class Picture {
  /** The document. */
  readonly text: string;
  /** Its media type. */
  readonly type: PictureType;

  /**
   * A picture of a document.
   *
   * @param text an SVG document or an HTML fragment.
   * @param type its media type (default: SVG when the text starts with `<svg`, else HTML).
   */
  constructor(text: string, type?: PictureType) {
    this.text = text;
    this.type = type ?? (/^\s*<svg[\s>]/.test(text) ? "image/svg+xml" : "text/html");
  }

  /** The document. */
  toString(): string {
    return this.text;
  }

  /** What a Jupyter kernel shows: the document under its media type. */
  [Symbol.for("Jupyter.display")](): Record<string, string> {
    return { [this.type]: this.text };
  }
}

/**
 * Wraps an SVG or HTML document as a {@linkcode Picture}, which a Jupyter notebook draws.
 *
 * @param text the document (`barChartSvg(...)`, `attentionSvg(...)`, HTML).
 * @param type its media type (default: from the text).
 * @returns the picture.
 *
 * @example
 * ```ts
 * import { lineChartSvg, picture } from "@baregpt/baregpt";
 * const chart = picture(lineChartSvg({ points: [{ x: 0, y: 4.2 }, { x: 10, y: 3.1 }] }));
 * console.log(chart.type); // "image/svg+xml"
 * ```
 */
export function picture(text: string, type?: PictureType): Picture {
  return new Picture(text, type);
}

// ---------------------------------------------------------------------------------------------
// Bar chart

/** One bar of {@linkcode barChartSvg}. */
export interface Bar {
  /** Its label, drawn as given (pass characters through `displayChar` to see spaces). */
  label: string;
  /** Its length. */
  value: number;
}

/** Options of {@linkcode barChartSvg}. */
export interface BarChartOptions {
  /** A title line (default none). */
  title?: string;
  /** How a value is written beside its bar (default: as a percentage, `31.2%`). */
  format?: (value: number) => string;
  /** The value of a full-length bar (default: the largest value). */
  max?: number;
  /** Width of the picture in pixels (default 560). */
  width?: number;
}

/**
 * A horizontal bar chart as an SVG document: one row per bar, top to bottom in the order given,
 * the label on the left (monospace, so characters line up), the value on the right. Each bar is
 * one `<rect>` (the only ones), with its label and value as a tooltip.
 *
 * @param bars the bars, e.g. the candidates for the next character.
 * @param options title, value format, scale and width.
 * @returns the SVG document.
 *
 * @example
 * ```ts
 * import { barChartSvg } from "@baregpt/baregpt";
 * const svg = barChartSvg([{ label: "e", value: 0.6 }, { label: "a", value: 0.3 }], { title: "after th" });
 * console.log(svg.match(/<rect /g)?.length); // 2
 * ```
 */
export function barChartSvg(bars: readonly Bar[], options: BarChartOptions = {}): string {
  const format = options.format ?? ((v: number) => `${(100 * v).toFixed(1)}%`);
  const W = options.width ?? 560, rowH = 22, barH = 16;
  const top = options.title ? 36 : 12, labelW = 16 + 9 * Math.max(1, ...bars.map(labelLength));
  const valueW = 64, barMax = Math.max(40, W - labelW - valueW - 16);
  const max = options.max ?? Math.max(0, ...bars.map((b) => b.value));
  const H = top + rowH * bars.length + 10;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12">`,
    `<title>${escapeXml(options.title ?? "bar chart")}</title>`,
    `<path d="M0 0H${W}V${H}H0Z" fill="#fff"/>`,
  ];
  if (options.title) {
    out.push(
      `<text x="12" y="22" font-size="14" font-weight="600" fill="#111">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  for (const [i, bar] of bars.entries()) {
    const y = top + i * rowH, cy = (y + rowH / 2).toFixed(1);
    const len = max > 0 ? Math.max(0, Math.min(1, bar.value / max)) * barMax : 0;
    const label = escapeXml(bar.label), value = escapeXml(format(bar.value));
    out.push(
      `<text x="${
        labelW - 8
      }" y="${cy}" text-anchor="end" dominant-baseline="central" font-family="${MONO}" font-size="13" fill="#111">${label}</text>`,
      `<rect x="${labelW}" y="${y + (rowH - barH) / 2}" width="${
        len.toFixed(1)
      }" height="${barH}" fill="${COLORS[0]}"><title>${label}: ${value}</title></rect>`,
      `<text x="${
        (labelW + len + 6).toFixed(1)
      }" y="${cy}" dominant-baseline="central" fill="#333">${value}</text>`,
    );
  }
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** A label's width in characters (code points). */
function labelLength(b: Bar): number {
  return [...b.label].length;
}

// ---------------------------------------------------------------------------------------------
// Line chart

/** One point of a {@linkcode LineSeries}. */
export interface LinePoint {
  /** Across (a step). */
  x: number;
  /** Up (a loss). */
  y: number;
}

/** One line of {@linkcode lineChartSvg}. */
export interface LineSeries {
  /** Its name, in the legend (a legend is drawn when some series has a name). */
  name?: string;
  /** Its points, in order of x. */
  points: readonly LinePoint[];
  /** A colour (default: blue, then red, green, purple, yellow for the series after). */
  color?: string;
  /** A dot on every point, with its values as a tooltip (default false). */
  markers?: boolean;
  /** Line width in pixels (default 2). */
  lineWidth?: number;
  /** Opacity of the line, 0..1 (default 1). */
  opacity?: number;
}

/** Options of {@linkcode lineChartSvg}. */
export interface LineChartOptions {
  /** A title line (default none). */
  title?: string;
  /** Label of the x axis (default "step"). */
  xLabel?: string;
  /** Label of the y axis (default "loss (nats per character)"). */
  yLabel?: string;
  /** Size of the picture in pixels (default 560 x 320). */
  width?: number;
  /** Height of the picture in pixels (default 320). */
  height?: number;
  /** The x axis reaches at least this far (default: the largest x); it always starts at 0. */
  xMax?: number;
}

/**
 * A line chart as an SVG document: one or more series (a loss curve against the step, say) over
 * a grid of round ticks, with axis labels and, when series are named, a legend. The x axis starts
 * at 0; the y axis spans the values, widened to round ticks. With no points yet, the axes alone
 * (so a chart can be drawn before a run and redrawn as it goes).
 *
 * @param series a series or several.
 * @param options title, axis labels and size.
 * @returns the SVG document.
 *
 * @example A loss curve, and its validation points
 * ```ts
 * import { lineChartSvg } from "@baregpt/baregpt";
 * const svg = lineChartSvg([
 *   { name: "training", points: [{ x: 1, y: 4.1 }, { x: 50, y: 2.9 }, { x: 100, y: 2.5 }] },
 *   { name: "validation", points: [{ x: 100, y: 2.6 }], markers: true },
 * ], { title: "loss" });
 * console.log(svg.includes("<polyline")); // true
 * ```
 */
export function lineChartSvg(
  series: LineSeries | readonly LineSeries[],
  options: LineChartOptions = {},
): string {
  const list: readonly LineSeries[] = Array.isArray(series) ? series : [series as LineSeries];
  const W = options.width ?? 560, H = options.height ?? 320;
  const left = 56, right = 16, top = options.title ? 34 : 14, bottom = 44;
  const points = list.flatMap((s) => s.points).filter((p) =>
    Number.isFinite(p.x) && Number.isFinite(p.y)
  );
  const ys = points.map((p) => p.y);
  const xTicks = niceTicks(0, Math.max(options.xMax ?? 0, ...points.map((p) => p.x), 1e-9), 6);
  const yTicks = ys.length > 0
    ? niceTicks(Math.min(...ys), Math.max(...ys), 8)
    : { lo: 0, hi: 1, step: 0.2 };
  const x = (v: number) => left + ((W - left - right) * v) / xTicks.hi;
  const y = (v: number) =>
    top + ((H - top - bottom) * (yTicks.hi - v)) / (yTicks.hi - yTicks.lo || 1);
  const xLabel = options.xLabel ?? "step";
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${FONT}" font-size="12">`,
    `<title>${escapeXml(options.title ?? "line chart")}</title>`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  if (options.title) {
    out.push(
      `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${
        escapeXml(options.title)
      }</text>`,
    );
  }
  for (const v of tickValues(yTicks)) {
    const py = y(v).toFixed(1);
    out.push(
      `<line x1="${left}" x2="${W - right}" y1="${py}" y2="${py}" stroke="#e5e5e5"/>`,
      `<text x="${left - 6}" y="${Number(py) + 4}" text-anchor="end">${
        tickText(v, yTicks.step)
      }</text>`,
    );
  }
  for (const v of tickValues(xTicks)) {
    const px = x(v).toFixed(1);
    out.push(
      `<line x1="${px}" x2="${px}" y1="${H - bottom}" y2="${H - bottom + 4}" stroke="#333"/>`,
      `<text x="${px}" y="${H - bottom + 17}" text-anchor="middle">${
        tickText(v, xTicks.step)
      }</text>`,
    );
  }
  const midY = (top + H - bottom) / 2;
  out.push(
    `<line x1="${left}" x2="${W - right}" y1="${H - bottom}" y2="${H - bottom}" stroke="#333"/>`,
    `<line x1="${left}" x2="${left}" y1="${top}" y2="${H - bottom}" stroke="#333"/>`,
    `<text x="${(left + W - right) / 2}" y="${H - 8}" text-anchor="middle">${
      escapeXml(xLabel)
    }</text>`,
    `<text x="14" y="${midY}" text-anchor="middle" transform="rotate(-90 14 ${midY})">${
      escapeXml(options.yLabel ?? "loss (nats per character)")
    }</text>`,
  );
  for (const [i, s] of list.entries()) {
    const color = s.color ?? COLORS[i % COLORS.length];
    const shown = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
    if (shown.length > 1) {
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="${s.lineWidth ?? 2}"${
          s.opacity === undefined ? "" : ` stroke-opacity="${s.opacity}"`
        } stroke-linejoin="round" points="${
          shown.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ")
        }"/>`,
      );
    }
    if (s.markers || shown.length === 1) {
      for (const p of shown) {
        out.push(
          `<circle cx="${x(p.x).toFixed(1)}" cy="${
            y(p.y).toFixed(1)
          }" r="3" fill="${color}"><title>${escapeXml(xLabel)} ${p.x}: ${p.y}</title></circle>`,
        );
      }
    }
  }
  const named = list.map((s, i) => ({ s, i })).filter(({ s }) => s.name !== undefined);
  for (const [row, { s, i }] of named.entries()) {
    const ly = top + 10 + row * 16, lx = W - right - 150;
    out.push(
      `<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${
        s.color ?? COLORS[i % COLORS.length]
      }" stroke-width="3"/>`,
      `<text x="${lx + 24}" y="${ly + 4}">${escapeXml(s.name!)}</text>`,
    );
  }
  out.push("</svg>");
  return out.join("\n") + "\n";
}

/** Round ticks covering lo..hi, about `count` of them: steps of 1, 2 or 5 times a power of ten. */
function niceTicks(
  lo: number,
  hi: number,
  count: number,
): { lo: number; hi: number; step: number } {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const a = Math.floor(lo / step + 1e-9) * step, b = Math.ceil(hi / step - 1e-9) * step;
  return { lo: a, hi: b > a ? b : a + step, step };
}

/** The values of ticks lo, lo + step, ..., hi. */
function tickValues(t: { lo: number; hi: number; step: number }): number[] {
  const n = Math.round((t.hi - t.lo) / t.step);
  return Array.from({ length: n + 1 }, (_, i) => t.lo + i * t.step);
}

/** A tick's label with as many decimals as its step needs. */
function tickText(v: number, step: number): string {
  return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
}

// ---------------------------------------------------------------------------------------------
// Texts side by side

/** One column of {@linkcode textColumnsHtml}. */
export interface TextColumn {
  /** Its heading (say, the sampling settings). */
  title: string;
  /** The text, shown as it is (escaped, line breaks kept). */
  text: string;
}

/**
 * Texts side by side as an HTML table: one column each, its title above, the text in a `<pre>`
 * that keeps its line breaks. For samples drawn with different settings from the same prompt.
 *
 * @param columns the texts and their titles.
 * @returns the HTML fragment.
 *
 * @example
 * ```ts
 * import { textColumnsHtml } from "@baregpt/baregpt";
 * const html = textColumnsHtml([{ title: "T 0.5", text: "ROMEO:\nI" }, { title: "T 1.5", text: "ROMEO:\nQ" }]);
 * console.log(html.startsWith("<table")); // true
 * ```
 */
export function textColumnsHtml(columns: readonly TextColumn[]): string {
  const cell = "vertical-align:top;text-align:left;padding:4px 8px";
  const pre = "white-space:pre-wrap;font-size:12px;margin:0";
  const heads = columns.map((c) => `<th style="${cell}">${escapeXml(c.title)}</th>`).join("");
  const texts = columns.map((c) =>
    `<td style="${cell}"><pre style="${pre}">${escapeXml(c.text)}</pre></td>`
  )
    .join("");
  return `<table style="table-layout:fixed;width:100%">\n<tr>${heads}</tr>\n<tr>${texts}</tr>\n</table>\n`;
}
