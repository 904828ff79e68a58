/**
 * Pictures of a model's insides, shared by the CLI, the page and notebooks: attention heatmaps as
 * SVG (one per head) and as terminal text, the candidate table, probability bars, and the colour
 * scale they share; with `charts.ts`, bar and line charts. Pure functions from data to text.
 *
 * @example An SVG of one layer's attention, from the library's `attentionMap`
 * ```ts ignore
 * import { attentionMap, loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 * import { renderAttentionSvg } from "@baregpt/baregpt/draw";
 * const model = await loadWeights(shippedWeightsUrl);
 * const map = attentionMap(model, "ROMEO:\nBut soft, what light", { layer: 0 });
 * await Deno.writeTextFile("attention.svg", renderAttentionSvg(map, model.tokenizer.vocab));
 * ```
 *
 * @module
 */

import { InputError } from "./errors.ts";
import type { AttentionMap, InspectStep } from "./inspect.ts";

export type { AttentionMap, Candidate, InspectStep } from "./inspect.ts";
// bar and line charts, texts side by side, and Picture (shows itself in Jupyter): charts.ts
export * from "./charts.ts";

// ---------------------------------------------------------------------------------------------
// Characters and colours

/**
 * A character as a label: newline as ⏎, space as ·, tab as ⇥, other control characters as their
 * Unicode control pictures (␀..␟, ␡).
 */
export function displayChar(ch: string): string {
  if (ch === "\n") return "⏎";
  if (ch === " ") return "·";
  if (ch === "\t") return "⇥";
  if (ch === "\r") return "␍";
  const code = ch.codePointAt(0) ?? 0;
  if (code < 0x20) return String.fromCodePoint(0x2400 + code);
  if (code === 0x7f) return "␡";
  return ch;
}

/** Escapes text for XML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => XML_ESCAPES[c]);
}

const XML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Viridis, sampled at nine points (dark purple for 0, yellow for 1). */
const VIRIDIS: [number, number, number][] = [
  [68, 1, 84],
  [71, 44, 122],
  [59, 81, 139],
  [44, 113, 142],
  [33, 144, 141],
  [39, 173, 129],
  [92, 200, 99],
  [170, 220, 50],
  [253, 231, 37],
];

/** How an attention probability maps to the colour scale. */
export type ColorScale = "sqrt" | "linear";

/**
 * Position of a probability on the colour scale, 0..1. The default square-root scale makes the
 * small weights of long contexts visible; "linear" maps p itself.
 */
export function scalePosition(p: number, scale: ColorScale = "sqrt"): number {
  const v = Math.min(1, Math.max(0, p));
  return scale === "sqrt" ? Math.sqrt(v) : v;
}

/** RGB of a scale position 0..1 (viridis). */
export function scaleColor(t: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const f = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  return [0, 1, 2].map((k) => Math.round(a[k] + (b[k] - a[k]) * f)) as [number, number, number];
}

/** The colour of an attention probability as `#rrggbb`. */
export function attentionColor(p: number, scale: ColorScale = "sqrt"): string {
  const [r, g, b] = scaleColor(scalePosition(p, scale));
  return "#" + ((1 << 24) | (r << 16) | (g << 8) | b).toString(16).slice(1);
}

// ---------------------------------------------------------------------------------------------
// SVG heatmaps

/** Options of {@link renderAttentionSvg}. */
export interface SvgOptions {
  /** Pixels per cell (default: from the window length, 5 to 18). */
  cell?: number;
  /** Heatmaps per row of the grid (default: ceil(sqrt(heads))). */
  columns?: number;
  /** Colour scale (default "sqrt"). */
  scale?: ColorScale;
  /** A title line (default: says the layer and the window, and what was left out). */
  title?: string;
  /** Positions drawn at most: the last ones of a longer window (default 256). */
  maxPositions?: number;
  /** Heads drawn at most: the first ones (default 16). */
  maxHeads?: number;
}

/** What is drawn of an attention map by default: the last 256 positions, the first 16 heads. */
export const DRAW_LIMITS = { maxPositions: 256, maxHeads: 16 } as const;

/**
 * The last `maxPositions` positions (queries and keys) and first `maxHeads` heads of a map (see
 * {@link DRAW_LIMITS}), so that no picture grows with the square of a long window: `map` is the
 * part drawn (rows keep only the attention paid within it), `note` says what was left out ("the
 * last 256 of 8000 characters"; "" when nothing was).
 */
export function clipAttention(
  map: AttentionMap,
  options: { maxPositions?: number; maxHeads?: number } = {},
): { map: AttentionMap; positions: number; heads: number; note: string } {
  const n = map.tokens.length, H = map.nHeads, limits = [0, 0];
  for (const [i, name] of (["maxPositions", "maxHeads"] as const).entries()) {
    const v = limits[i] = options[name] ?? DRAW_LIMITS[name];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new InputError(`${name} ${v} must be a positive integer`, { options: [name] });
    }
  }
  const N = Math.min(n, limits[0]), K = Math.min(H, limits[1]), cut = n - N;
  if (N === n && K === H) return { map, positions: n, heads: H, note: "" };
  const probs = new Float32Array(K * N * N);
  for (let h = 0; h < K; h++) {
    for (let t = 0, from = (h * n + cut) * n + cut; t < N; t++, from += n) {
      probs.set(map.probs.subarray(from, from + N), (h * N + t) * N);
    }
  }
  const note = (N < n ? `the last ${N} of ${n} characters` : "") +
    (N < n && K < H ? ", " : "") + (K < H ? `heads 0..${K - 1} of ${H}` : "");
  const clipped = { ...map, nHeads: K, start: map.start + cut, tokens: map.tokens.slice(cut) };
  clipped.promptLength = Math.max(0, map.promptLength - cut);
  clipped.logits = map.logits.subarray((map.logits.length / n) * cut); // [N, V]
  return { map: { ...clipped, probs }, positions: n, heads: H, note };
}

/** Where everything of a heatmap grid is drawn; the page uses it to map the mouse to cells. */
export interface HeatmapLayout {
  /** Cells per side (the window length). */
  n: number;
  /** Pixels per cell. */
  cell: number;
  /** Heatmaps per row of the grid. */
  columns: number;
  /** Size of the whole picture, in pixels. */
  width: number;
  /** Height of the whole picture, in pixels. */
  height: number;
  /** Top-left corner of head h's cell grid, in SVG pixels. */
  origin(h: number): { x: number; y: number };
  /** Top of the legend. */
  legendY: number;
}

const FONT = "ui-monospace, SFMono-Regular, Menlo, Consolas, 'DejaVu Sans Mono', monospace";

/** The geometry of a grid of heatmaps: n cells per side, H heads. */
export function heatmapLayout(n: number, H: number, options: SvgOptions = {}): HeatmapLayout {
  const cell = options.cell ?? Math.max(5, Math.min(18, Math.floor(720 / Math.max(1, n))));
  const columns = Math.max(1, Math.min(H, options.columns ?? Math.ceil(Math.sqrt(H))));
  const rows = Math.ceil(H / columns), grid = n * cell;
  const pad = 16, panelTitle = 20, top = 66; // top: the title and subtitle
  const labelSpace = Math.max(14, cell * 1.4); // query labels on the left, key labels on top
  const panelW = labelSpace + 14 + grid + pad; // 14: the "queries" axis title
  const panelH = panelTitle + labelSpace + 14 + grid + pad;
  const width = Math.ceil(Math.max(pad * 2 + columns * panelW, 560));
  const legendY = top + rows * panelH + 4, height = Math.ceil(legendY + 64);
  const origin = (h: number) => {
    const col = h % columns, row = Math.floor(h / columns);
    const x = pad + col * panelW + 14 + labelSpace;
    return { x, y: top + row * panelH + panelTitle + 14 + labelSpace };
  };
  return { n, cell, columns, width, height, origin, legendY };
}

/** The staircase from the top-left cell's top-right corner down the diagonal (relative path). */
function stairs(n: number, c: number): string {
  let d = "";
  for (let t = 0; t < n; t++) d += `h${c}v${c}`;
  return d;
}

/** Number formatting for legends: 0, 0.01, 0.1, 0.25, 0.5, 1. */
function tickLabel(v: number): string {
  return String(Number(v.toPrecision(2)));
}

/**
 * Renders the attention maps as an SVG document: one heatmap per head in a grid, queries down and
 * keys across, the characters as axis labels (prompt characters grey, generated ones dark), one
 * `<rect>` per cell of the causal triangle (masked cells are left empty, and no other element is a
 * `<rect>`), and a colour scale with its legend; of a longer map, only what {@link clipAttention}
 * keeps (the last 256 positions and first 16 heads by default), as the default title says.
 */
export function renderAttentionSvg(
  whole: AttentionMap,
  vocab: readonly string[],
  options: SvgOptions = {},
): string {
  const clip = clipAttention(whole, options);
  const map = clip.map, n = map.tokens.length, H = map.nHeads;
  const scale = options.scale ?? "sqrt";
  const L = heatmapLayout(n, H, options);
  const c = L.cell;
  const fontSize = Math.max(4, Math.min(13, c * 0.85));
  const labels = map.tokens.map((id) => escapeXml(displayChar(vocab[id] ?? "?")));
  const labelColor = (t: number) => (t < map.promptLength ? "#8a8a8a" : "#111");
  const end = map.start + n - 1;
  const title = options.title ??
    `Attention of layer ${map.layer} (of ${map.nLayers}), ${H} head${
      H > 1 ? "s" : ""
    }, over characters ${map.start}..${end}${clip.note && ` (drawn: ${clip.note})`}`;
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${L.width}" height="${L.height}" viewBox="0 0 ${L.width} ${L.height}" font-family="${FONT}">`,
    `<title>${escapeXml(title)}</title>`,
    `<path d="M0 0H${L.width}V${L.height}H0Z" fill="#fff"/>`,
    `<text x="16" y="22" font-size="15" font-weight="600" fill="#111">${escapeXml(title)}</text>`,
    `<text x="16" y="40" font-size="11.5" fill="#555">rows: queries (the character attending) · columns: keys (what it attends to)</text>`,
    `<text x="16" y="55" font-size="11.5" fill="#555">future cells are masked and left empty · ⏎ is a newline, · a space</text>`,
  );
  for (let h = 0; h < H; h++) {
    const { x, y } = L.origin(h);
    const grid = n * c;
    out.push(`<g class="head" data-head="${h}">`);
    out.push(
      `<text x="${x}" y="${
        y - 14 - Math.max(14, c * 1.4) - 6
      }" font-size="13" font-weight="600" fill="#111">head ${h}</text>`,
      `<text x="${x + grid / 2}" y="${
        y - Math.max(14, c * 1.4) - 4
      }" font-size="10" fill="#666" text-anchor="middle">keys →</text>`,
      `<text transform="translate(${x - Math.max(14, c * 1.4) - 4} ${
        y + grid / 2
      }) rotate(-90)" font-size="10" fill="#666" text-anchor="middle">← queries</text>`,
      // the n x n frame and the staircase edge of the causal triangle (paths: rects are only cells)
      `<path d="M${x - 0.5} ${y - 0.5}h${grid + 1}v${grid + 1}h${
        -grid - 1
      }Z" fill="none" stroke="#ddd" stroke-width="1"/>`,
      `<path d="M${x} ${y}${stairs(n, c)}V${
        y + grid
      }H${x}Z" fill="none" stroke="#aaa" stroke-width="0.75"/>`,
    );
    // axis labels: keys across the top, queries down the left
    out.push(
      `<g font-size="${fontSize.toFixed(1)}" text-anchor="middle" dominant-baseline="central">`,
    );
    for (let t = 0; t < n; t++) {
      const cx = (x + (t + 0.5) * c).toFixed(1);
      const cy = (y + (t + 0.5) * c).toFixed(1);
      const fill = labelColor(t);
      out.push(
        `<text x="${cx}" y="${(y - c * 0.7).toFixed(1)}" fill="${fill}">${labels[t]}</text>`,
        `<text x="${(x - c * 0.7).toFixed(1)}" y="${cy}" fill="${fill}">${labels[t]}</text>`,
      );
    }
    out.push(`</g>`);
    // one rect per cell of the causal triangle, in cell units
    out.push(
      `<g class="cells" transform="translate(${x} ${y}) scale(${c})" shape-rendering="crispEdges">`,
    );
    for (let t = 0; t < n; t++) {
      const row = (h * n + t) * n;
      for (let j = 0; j <= t; j++) {
        out.push(
          `<rect x="${j}" y="${t}" width="1" height="1" fill="${
            attentionColor(map.probs[row + j], scale)
          }"/>`,
        );
      }
    }
    out.push(`</g></g>`);
  }
  // legend: a gradient bar (a path) with ticks at probabilities
  const lx = 16, ly = L.legendY + 18, lw = Math.min(360, L.width - 140), lh = 12;
  out.push(`<defs><linearGradient id="attention-scale" x1="0" x2="1" y1="0" y2="0">`);
  for (let i = 0; i < VIRIDIS.length; i++) {
    const [r, g, b] = VIRIDIS[i];
    out.push(
      `<stop offset="${(i / (VIRIDIS.length - 1)).toFixed(3)}" stop-color="rgb(${r},${g},${b})"/>`,
    );
  }
  out.push(`</linearGradient></defs>`);
  out.push(
    `<g class="legend">`,
    `<text x="${lx}" y="${ly - 6}" font-size="11" fill="#333">attention probability (${
      scale === "sqrt" ? "square-root scale" : "linear scale"
    })</text>`,
    `<path d="M${lx} ${ly}h${lw}v${lh}h${-lw}Z" fill="url(#attention-scale)" stroke="#999" stroke-width="0.5"/>`,
  );
  for (const v of [0, 0.01, 0.05, 0.25, 0.5, 1]) {
    const tx = lx + scalePosition(v, scale) * lw;
    out.push(
      `<path d="M${tx.toFixed(1)} ${ly + lh}v4" stroke="#333" stroke-width="1"/>`,
      `<text x="${tx.toFixed(1)}" y="${
        ly + lh + 14
      }" font-size="10" fill="#333" text-anchor="middle">${tickLabel(v)}</text>`,
    );
  }
  const kx = lx + lw + 24;
  out.push(
    `<text x="${kx}" y="${ly + 4}" font-size="11" fill="#8a8a8a">a  prompt character</text>`,
    `<text x="${kx}" y="${ly + 20}" font-size="11" fill="#111">a  generated character</text>`,
    `</g></svg>`,
  );
  return out.join("\n") + "\n";
}

/** What {@link attentionSvg} needs to know besides the weights. */
export interface AttentionSvgOptions extends SvgOptions {
  /** The layer the weights come from (for the title). */
  layer?: number;
  /** The model's layer count (for the title). */
  nLayers?: number;
  /** Index in the whole text of the first character (default 0). */
  start?: number;
  /** How many of the characters are the prompt, drawn grey (default 0). */
  promptLength?: number;
}

/**
 * Renders one layer's attention given as characters and per-head rows, the shape the public
 * API's `attention()` returns (`weights[layer]` is `[head][query][key]`), as the SVG of
 * {@link renderAttentionSvg}.
 *
 * @example One SVG per layer with the public API
 * ```ts ignore
 * import { attention, loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 * import { attentionSvg } from "@baregpt/baregpt/draw";
 * const model = await loadWeights(shippedWeightsUrl);
 * const a = attention(model, "ROMEO:\nBut soft, what light");
 * for (const [layer, heads] of a.weights.entries()) {
 *   const svg = attentionSvg(a.chars, heads, { layer, nLayers: a.weights.length });
 *   await Deno.writeTextFile(`attention-${layer}.svg`, svg);
 * }
 * ```
 */
export function attentionSvg(
  chars: readonly string[],
  heads: readonly (readonly ArrayLike<number>[])[],
  options: AttentionSvgOptions = {},
): string {
  const n = chars.length, H = heads.length;
  const probs = new Float32Array(H * n * n);
  for (let h = 0; h < H; h++) {
    if (heads[h].length !== n) {
      throw new InputError(`head ${h} has ${heads[h].length} rows for ${n} characters`);
    }
    for (let t = 0; t < n; t++) {
      const row = heads[h][t];
      for (let j = 0; j <= t && j < row.length; j++) probs[(h * n + t) * n + j] = row[j];
    }
  }
  const map: AttentionMap = {
    layer: options.layer ?? 0,
    nLayers: options.nLayers ?? 1,
    nHeads: H,
    start: options.start ?? 0,
    tokens: chars.map((_, i) => i), // ids into `chars` itself
    promptLength: options.promptLength ?? 0,
    probs,
    logits: new Float32Array(0),
  };
  return renderAttentionSvg(map, chars, options);
}

// ---------------------------------------------------------------------------------------------
// Text views

const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/** A bar of block characters for a probability, `width` cells for probability 1. */
export function probabilityBar(p: number, width = 8): string {
  const eighths = Math.round(Math.min(1, Math.max(0, p)) * width * 8);
  return "█".repeat(Math.floor(eighths / 8)) + EIGHTHS[eighths % 8];
}

/** Options of {@link formatCandidateTable}. */
export interface TableOptions {
  /** Candidates per row (default: all of each step's). */
  top?: number;
  /** Draw block-character bars after each probability (default false). */
  bars?: boolean;
}

/**
 * A compact aligned table: one row per step with the position, the character chosen, its
 * probability, and the top candidates with their probabilities (and bars).
 *
 * ```
 *  pos  chose   prob   candidates
 *    6  ⏎      0.934   ⏎ 0.934   · 0.031   , 0.012
 * ```
 */
export function formatCandidateTable(
  steps: readonly InspectStep[],
  vocab: readonly string[],
  options: TableOptions = {},
): string {
  const top = options.top ?? Math.max(1, ...steps.map((s) => s.candidates.length));
  const bars = options.bars ?? false;
  const posWidth = Math.max(3, String(steps.at(-1)?.position ?? 0).length);
  const cellWidth = 7 + (bars ? 9 : 0); // "x 0.934" + " ████▌   "
  const lines = [
    `${"pos".padStart(posWidth)}  chose   prob   ${
      `top ${top} candidates`.padEnd(top * (cellWidth + 2) - 2)
    }`.trimEnd(),
  ];
  for (const s of steps) {
    const cells = s.candidates.slice(0, top).map((cand) => {
      const cellText = `${displayChar(vocab[cand.id])} ${cand.prob.toFixed(3)}`;
      return bars ? `${cellText} ${probabilityBar(cand.prob).padEnd(8)}` : cellText;
    });
    lines.push(
      `${String(s.position).padStart(posWidth)}  ${displayChar(vocab[s.id]).padEnd(5)} ${
        s.prob.toFixed(3).padStart(6)
      }   ${cells.join("  ")}`.trimEnd(),
    );
  }
  return lines.join("\n") + "\n";
}

/** Options of {@link renderAttentionTerminal}: scale and at most what is drawn as for SVG. */
export interface TerminalOptions extends Pick<SvgOptions, "scale" | "maxPositions" | "maxHeads"> {
  /** 24-bit ANSI background colours (default false: shades of block characters). */
  color?: boolean;
  /** Heads to draw (default all; at most `maxHeads`, 16 by default). */
  heads?: number[];
}

const SHADES = [" ", "░", "▒", "▓", "█"];

/**
 * The attention maps as text for a terminal: per head, one line per query with the keys across,
 * the characters as labels; coloured cells (24-bit ANSI) or block-character shades.
 */
export function renderAttentionTerminal(
  whole: AttentionMap,
  vocab: readonly string[],
  options: TerminalOptions = {},
): string {
  const all = options.heads ?? Array.from({ length: whole.nHeads }, (_, i) => i);
  const heads = all.slice(0, options.maxHeads ?? DRAW_LIMITS.maxHeads);
  // the heads asked for are kept by clipping to the highest one (the picture's heads are 0..K-1)
  const maxHeads = Math.max(1, ...heads.map((h) => h + 1));
  const clip = clipAttention(whole, { maxPositions: options.maxPositions, maxHeads });
  const map = clip.map, n = map.tokens.length;
  const note = clip.positions > n ? ` (the last ${n} of ${clip.positions} drawn)` : "";
  const scale = options.scale ?? "sqrt";
  const labels = map.tokens.map((id) => displayChar(vocab[id] ?? "?"));
  const lines: string[] = [];
  const legend = options.color
    ? [0, 0.01, 0.05, 0.25, 0.5, 1].map((v) => {
      const [r, g, b] = scaleColor(scalePosition(v, scale));
      return `\x1b[48;2;${r};${g};${b}m  \x1b[0m ${tickLabel(v)}`;
    }).join("  ")
    : `shades "${SHADES.join("")}" from 0 to 1`;
  lines.push(
    `attention of layer ${map.layer} (of ${map.nLayers}) over characters ${map.start}..${
      map.start + n - 1
    }${note}: rows are queries, columns keys`,
    `scale (${scale === "sqrt" ? "square root" : "linear"}): ${legend}`,
  );
  for (const h of heads) {
    lines.push("", `head ${h}`, `  ${labels.join("")}`);
    for (let t = 0; t < n; t++) {
      let row = `${labels[t]} `;
      for (let j = 0; j <= t; j++) {
        const pos = scalePosition(map.probs[(h * n + t) * n + j], scale);
        if (options.color) {
          const [r, g, b] = scaleColor(pos);
          row += `\x1b[48;2;${r};${g};${b}m \x1b[0m`;
        } else {
          row += SHADES[Math.round(pos * (SHADES.length - 1))];
        }
      }
      lines.push(row);
    }
  }
  return lines.join("\n") + "\n";
}
