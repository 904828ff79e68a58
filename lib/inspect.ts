/**
 * Look inside the model: generation step by step with the top candidate probabilities, and the
 * attention maps of a layer over a text, drawn as SVG heatmaps (one per head), as a terminal
 * heatmap, or read as numbers. Web-standard APIs only: the CLI's `inspect` command and the browser
 * page run this same code.
 *
 * Two views, the same two BareGPT's notebook draws with matplotlib:
 * - **candidates**: at each generated step, the characters the model ranked highest and their
 *   probabilities (the distribution the character was drawn from; with greedy decoding, the
 *   model's plain softmax);
 * - **attention**: for one layer, one heatmap per head over the prompt and generated text (the
 *   last `blockSize` characters): row t is query t, what position t attended to over 0..t.
 *
 * @example Greedy steps, a candidate table and an SVG
 * ```ts ignore
 * import { loadModel } from "./weights.ts";
 * import { formatCandidateTable, inspectText, renderAttentionSvg } from "./inspect.ts";
 *
 * const { model, tokenizer } = loadModel(await Deno.readFile("weights/shakespeare.safetensors"));
 * const result = inspectText(model, tokenizer.encode("ROMEO:"), { tokens: 20, top: 5 });
 * console.log(formatCandidateTable(result.steps, tokenizer.vocab));
 * await Deno.writeTextFile("attention.svg", renderAttentionSvg(result.attention, tokenizer.vocab));
 * ```
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { type GPT, KVCache } from "./model.ts";
import type { Rng } from "./rng.ts";
import { decodeSteps, nextDistribution, type SamplingOptions, validateSampling } from "./sample.ts";

// ---------------------------------------------------------------------------------------------
// Candidates

/** One candidate for the next character: its token id and probability. */
export interface Candidate {
  id: number;
  prob: number;
}

/**
 * The `n` most likely entries of a probability vector, most likely first (ties by id, so the
 * order is deterministic). Entries of probability 0 are left out.
 *
 * @example
 * ```ts
 * import { topCandidates } from "./inspect.ts";
 * console.log(topCandidates([0.1, 0.6, 0, 0.3], 2)); // [{ id: 1, prob: 0.6 }, { id: 3, prob: 0.3 }]
 * ```
 */
export function topCandidates(probs: ArrayLike<number>, n: number): Candidate[] {
  const out: Candidate[] = [];
  // insertion into a short sorted list: O(V n), no full sort of the vocabulary
  for (let id = 0; id < probs.length; id++) {
    const prob = probs[id];
    if (!(prob > 0)) continue;
    if (out.length === n && prob <= out[n - 1].prob) continue;
    let at = out.length;
    while (at > 0 && out[at - 1].prob < prob) at--;
    out.splice(at, 0, { id, prob });
    if (out.length > n) out.pop();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generation step by step

/** Options of {@link inspectSteps} and {@link inspectText}. */
export interface InspectOptions extends SamplingOptions {
  /** Characters to generate. Default 20. */
  tokens?: number;
  /** Candidates kept per step. Default 5. */
  top?: number;
  /** Layer whose attention is recorded. Default: the last. */
  layer?: number;
  /** RNG seed (default 0) or a generator; used only when temperature > 0. */
  seed?: number | Rng;
  /** A cache to reuse (it is reset); default a new one. Reuse it where memory cannot grow. */
  cache?: KVCache;
}

/** One generated step. */
export interface InspectStep {
  /** Index of the generated character in the whole text (prompt + generated). */
  position: number;
  /** Token id of the character chosen. */
  id: number;
  /** Its probability under the shown distribution. */
  prob: number;
  /** The most likely characters, most likely first. */
  candidates: Candidate[];
  /**
   * The distribution shown: the one the character was drawn from (after temperature, top-k and
   * top-p), or with greedy decoding (temperature 0) the model's plain softmax.
   */
  probs: Float64Array;
  /**
   * What the query that predicted this character (the character before it) attended to in the
   * recorded layer: [H, windowLength], row h over the cache's positions 0..windowLength-1.
   */
  attention: Float32Array;
  /** Index in the whole text of the cache's position 0 when this step was computed. */
  windowStart: number;
}

function checkLayer(model: GPT, layer: number): void {
  const L = model.config.nLayers;
  if (!Number.isInteger(layer) || layer < 0 || layer >= L) {
    throw new InputError(
      `layer ${layer} is out of range; use an integer from 0 to ${L - 1}`,
    );
  }
}

/**
 * Generates `tokens` characters after a prompt, one step at a time, yielding for each the
 * character chosen, the top candidates and the attention of the query that predicted it.
 *
 * The choices are exactly those of {@link generateTokens} with the same options (same sliding
 * window, same random draws): greedy by default, or sampled with `temperature` and `seed`. An
 * empty prompt is replaced by `[newlineId]`, which then counts as the text's first character.
 */
export function* inspectSteps(
  model: GPT,
  prompt: ArrayLike<number>,
  newlineId: number,
  options: InspectOptions = {},
): Generator<InspectStep> {
  const T = model.config.blockSize, H = model.config.nHeads;
  const count = options.tokens ?? 20;
  const top = options.top ?? 5;
  const layer = options.layer ?? model.config.nLayers - 1;
  const sampling: SamplingOptions = {
    temperature: options.temperature ?? 0,
    topK: options.topK,
    topP: options.topP,
  };
  validateSampling(sampling, model.config.vocabSize);
  checkLayer(model, layer);
  const greedy = sampling.temperature === 0;
  let position = Math.max(prompt.length, 1);
  const steps = decodeSteps(model, prompt, newlineId, {
    ...sampling,
    tokens: count,
    seed: options.seed,
    cache: options.cache,
  });
  for (const { id, probs, logits, cache, windowStart } of steps) {
    const shown = greedy ? nextDistribution(logits, {}) : Float64Array.from(probs);
    const q = cache.length - 1; // the query that produced these logits
    const attention = new Float32Array(H * cache.length);
    const maps = cache.attention[layer];
    for (let h = 0; h < H; h++) {
      const row = (h * T + q) * T;
      attention.set(maps.subarray(row, row + cache.length), h * cache.length);
    }
    yield {
      position: position++,
      id,
      prob: shown[id],
      candidates: topCandidates(shown, top),
      probs: shown,
      attention,
      windowStart,
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Attention over a window

/** The attention maps of one layer over a window of text, from one batched forward pass. */
export interface AttentionMap {
  /** The layer shown (0-based) and the model's layer count. */
  layer: number;
  nLayers: number;
  nHeads: number;
  /** Index in the whole text of the window's first character. */
  start: number;
  /** Token ids of the window (n of them). */
  tokens: number[];
  /** Characters of the window that belong to the prompt (the first promptLength; 0 if none). */
  promptLength: number;
  /** Attention probabilities [H, n, n]: entry (h, t, j) is what query t gave key j (0 for j > t). */
  probs: Float32Array;
  /** Logits of every row of the pass, [n, V]: row t predicts the character after position t. */
  logits: Float32Array;
}

/** Options of {@link attentionWindow}. */
export interface AttentionOptions {
  /** Layer (default: the last). */
  layer?: number;
  /** Prompt length in the whole text, to tell prompt from generated characters (default 0). */
  promptLength?: number;
  /** A cache to reuse (it is reset); default a new one. */
  cache?: KVCache;
}

/**
 * Feeds the last `blockSize` tokens of `text` into a fresh cache in one batched pass and returns
 * the attention maps of a layer over that window, with every row's logits. Every row comes from
 * the same pass, so the map is what one forward over the window computes.
 */
export function attentionWindow(
  model: GPT,
  text: ArrayLike<number>,
  options: AttentionOptions = {},
): AttentionMap {
  const c = model.config;
  const T = c.blockSize, H = c.nHeads;
  const layer = options.layer ?? c.nLayers - 1;
  checkLayer(model, layer);
  if (text.length === 0) throw new InputError("the text to inspect is empty; give a prompt");
  const start = Math.max(0, text.length - T);
  const tokens = Array.from(text).slice(start);
  const n = tokens.length;
  const cache = options.cache ?? new KVCache(model);
  cache.reset();
  const logits = Float32Array.from(cache.feed(tokens, true)); // [n, V]
  const maps = cache.attention[layer];
  const probs = new Float32Array(H * n * n);
  for (let h = 0; h < H; h++) {
    for (let t = 0; t < n; t++) {
      const row = (h * T + t) * T;
      probs.set(maps.subarray(row, row + n), (h * n + t) * n);
    }
  }
  return {
    layer,
    nLayers: c.nLayers,
    nHeads: H,
    start,
    tokens,
    promptLength: Math.max(0, Math.min(n, (options.promptLength ?? 0) - start)),
    probs,
    logits,
  };
}

/** The result of {@link inspectText}. */
export interface InspectResult {
  /** The prompt's ids (an empty prompt becomes the newline). */
  prompt: number[];
  /** The generated ids. */
  generated: number[];
  steps: InspectStep[];
  /** The chosen layer's attention over the last blockSize characters of prompt + generated. */
  attention: AttentionMap;
}

/**
 * Runs {@link inspectSteps} to the end, then {@link attentionWindow} over the whole text (prompt
 * and generated, the last blockSize characters of it).
 */
export function inspectText(
  model: GPT,
  prompt: ArrayLike<number>,
  options: InspectOptions & { newlineId?: number } = {},
): InspectResult {
  const promptIds = Array.from(prompt.length > 0 ? prompt : [Math.max(0, options.newlineId ?? 0)]);
  const cache = options.cache ?? new KVCache(model);
  const steps = [...inspectSteps(model, promptIds, options.newlineId ?? 0, { ...options, cache })];
  const generated = steps.map((s) => s.id);
  const attention = attentionWindow(model, [...promptIds, ...generated], {
    layer: options.layer,
    promptLength: promptIds.length,
    cache,
  });
  return { prompt: promptIds, generated, steps, attention };
}

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
  return [
    Math.round(a[0] + (b[0] - a[0]) * f),
    Math.round(a[1] + (b[1] - a[1]) * f),
    Math.round(a[2] + (b[2] - a[2]) * f),
  ];
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
  /** A title line (default: says the layer and the window). */
  title?: string;
}

/** Where everything of a heatmap grid is drawn; the page uses it to map the mouse to cells. */
export interface HeatmapLayout {
  /** Cells per side (the window length). */
  n: number;
  cell: number;
  columns: number;
  width: number;
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
  const rows = Math.ceil(H / columns);
  const pad = 16;
  const labelSpace = Math.max(14, cell * 1.4); // query labels on the left, key labels on top
  const panelTitle = 20;
  const grid = n * cell;
  const panelW = labelSpace + 14 + grid + pad; // 14: the "queries" axis title
  const panelH = panelTitle + labelSpace + 14 + grid + pad;
  const top = 66; // title and subtitle
  const width = Math.max(pad * 2 + columns * panelW, 560);
  const legendY = top + rows * panelH + 4;
  const height = legendY + 64;
  return {
    n,
    cell,
    columns,
    width: Math.ceil(width),
    height: Math.ceil(height),
    origin(h: number) {
      const col = h % columns, row = Math.floor(h / columns);
      return {
        x: pad + col * panelW + 14 + labelSpace,
        y: top + row * panelH + panelTitle + 14 + labelSpace,
      };
    },
    legendY,
  };
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
 * `<rect>`), and a colour scale with its legend.
 */
export function renderAttentionSvg(
  map: AttentionMap,
  vocab: readonly string[],
  options: SvgOptions = {},
): string {
  const n = map.tokens.length, H = map.nHeads;
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
    }, over characters ${map.start}..${end}`;
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
  /** The layer the weights come from and the model's layer count (for the title). */
  layer?: number;
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
 * import { attention, attentionSvg, loadWeights } from "@baregpt/baregpt";
 * const model = await loadWeights();
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

/** Options of {@link renderAttentionTerminal}. */
export interface TerminalOptions {
  /** 24-bit ANSI background colours (default false: shades of block characters). */
  color?: boolean;
  /** Colour scale (default "sqrt"). */
  scale?: ColorScale;
  /** Heads to draw (default all). */
  heads?: number[];
}

const SHADES = [" ", "░", "▒", "▓", "█"];

/**
 * The attention maps as text for a terminal: per head, one line per query with the keys across,
 * the characters as labels; coloured cells (24-bit ANSI) or block-character shades.
 */
export function renderAttentionTerminal(
  map: AttentionMap,
  vocab: readonly string[],
  options: TerminalOptions = {},
): string {
  const n = map.tokens.length;
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
    }: rows are queries, columns keys`,
    `scale (${scale === "sqrt" ? "square root" : "linear"}): ${legend}`,
  );
  for (const h of options.heads ?? Array.from({ length: map.nHeads }, (_, i) => i)) {
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
