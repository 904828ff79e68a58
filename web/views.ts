/// <reference lib="dom" />
/**
 * The page's views of the selected character: the candidates table (what the model weighed for
 * it), the text shaded by where the query that predicted it looked, the attention strip of that
 * query on a canvas, the heatmaps of one layer over the whole window (an SVG drawn by the library),
 * and the tooltips of the heatmaps and the strip.
 *
 * @module
 */

import {
  attentionColor,
  type AttentionMap,
  attentionMap,
  type Candidate,
  clipAttention,
  displayChar,
  nextCharDistribution,
  renderAttentionSvg,
  scalePosition,
} from "../mod.ts";
import { page, TOP, ui } from "./state.ts";

/** The attention of the window, computed when a text is complete. */
let view: AttentionMap | null = null;
/** A row mark per heatmap: the query row of the selection. */
let rowMarks: SVGPathElement[] = [];
/** Spans shaded by the last selection. */
let shaded: number[] = [];
/** The query row drawn in the strip: per head, its attention over keys start.. */
let strip: { rows: Float32Array[]; start: number; row: number } | null = null;
const STRIP = { left: 58, top: 22, maxCell: 18, minCell: 7 };

/** Forgets the views of the last text (a new one starts): no window, no heatmaps, no strip. */
export function resetViews(): void {
  view = null;
  shaded = [];
  strip = null;
  ui.heatmaps.replaceChildren();
  rowMarks = [];
}

/** Clears every view (the model changed): also the strip, the candidates and the captions. */
export function clearViews(): void {
  resetViews();
  drawStrip();
  ui.candidates.tBodies[0].replaceChildren();
  ui.candidatesCaption.textContent = ui.explain.textContent = ui.stripCaption.textContent = "";
}

/** Heatmap cells in pixels, and the width of a heatmap's labels and padding. */
const HEATMAP_CELL = { min: 10, max: 18, margin: 70 };

/**
 * The heatmaps' cell size and columns for a window of n characters: the SVG is drawn at its own
 * size (the container scrolls sideways), its axis labels at 0.85 of a cell, so a cell is never
 * below HEATMAP_CELL.min pixels (labels of 8.5 px, at 128 characters too); two heatmaps side by
 * side while they fit the page at that size, else one per row.
 */
function heatmapSize(n: number, heads: number): { cell: number; columns: number } {
  const { min, max, margin } = HEATMAP_CELL;
  const width = Math.max(560, ui.heatmaps.clientWidth);
  const fit = (columns: number) => Math.floor((width / columns - margin) / n);
  const columns = heads > 1 && fit(2) >= min ? 2 : 1;
  return { cell: Math.max(min, Math.min(max, fit(columns))), columns };
}

/** Recomputes the attention of the window (one batched pass) and redraws the heatmaps. */
export function refreshView(): void {
  const { loaded, text } = page;
  if (loaded === null || text.length === 0) return;
  const { model } = loaded;
  // the part drawn (the last 256 positions, the first 16 heads of a large model) is the view:
  // row marks, tooltips and the shaded text map onto the heatmaps as drawn
  const clip = clipAttention(
    attentionMap(model, model.tokenizer.decode(text), {
      layer: Number(ui.layer.value),
      promptLength: page.promptLength,
    }),
  );
  view = clip.map;
  const n = view.tokens.length;
  ui.heatmaps.innerHTML = renderAttentionSvg(
    view,
    model.tokenizer.vocab,
    heatmapSize(n, view.nHeads),
  );
  ui.heatmaps.dataset.window = String(n);
  ui.attentionCaption.textContent =
    `layer ${view.layer}, one heatmap per head over the last ${n} characters (one forward pass over ${clip.positions}${
      clip.heads > view.nHeads ? `; heads 0..${view.nHeads - 1} of ${clip.heads} drawn` : ""
    }); hover a cell`;
  rowMarks = [...ui.heatmaps.querySelectorAll<SVGGElement>("g.cells")].map((g) => {
    const mark = document.createElementNS("http://www.w3.org/2000/svg", "path");
    mark.setAttribute("class", "row-mark");
    g.append(mark);
    return mark;
  });
  page.spans.forEach((s, i) => s.classList.toggle("out", i < view!.start));
  showPosition(selected());
}

/** The selected position: hovered, else pinned, else the last character. */
export function selected(): number {
  return page.hovered ?? page.pinned ?? page.text.length - 1;
}

/**
 * Shows position p: the candidates that predicted the character at p, and the attention of the
 * query that predicted it (position p - 1) in the text and in the heatmaps.
 */
export function showPosition(p: number): void {
  const { loaded, text, promptLength, steps, sampling, spans } = page;
  if (loaded === null || p < 0 || p >= text.length) return;
  const { model } = loaded;
  const vocab = model.tokenizer.vocab;
  const c = model.config;
  for (const s of ui.output.querySelectorAll("span.sel")) s.classList.remove("sel", "pinned");
  spans[p]?.classList.add("sel");
  if (page.pinned === p) spans[p]?.classList.add("pinned");
  const ch = `“${displayChar(vocab[text[p]])}”`;
  const q = p - 1; // the query whose output predicted p

  // candidates: the top ones, and the probability of the character that is there
  let top: Candidate[] | null = null;
  let chosenProb = 0;
  let how = "";
  const step = p >= promptLength ? steps[p - promptLength] : undefined;
  if (step !== undefined) {
    top = [...step.candidates];
    chosenProb = step.probs[text[p]];
    how = sampling.temperature > 0
      ? `drawn at temperature ${sampling.temperature}${
        sampling.topK > 0 ? `, top-k ${sampling.topK}` : ""
      }`
      : "greedy: the most likely one was taken";
  } else if (q >= 0 && view !== null && q >= view.start) {
    // what the window's pass predicted after position q: the distribution after the window's
    // characters up to q (the plain softmax when greedy, as for generated characters)
    const dist = nextCharDistribution(
      model,
      model.tokenizer.decode(text.slice(view.start, p)),
      sampling.temperature > 0 ? { temperature: sampling.temperature, topK: sampling.topK } : {},
    );
    top = dist.slice(0, TOP).filter((d) => d.prob > 0).map(({ id, prob }) => ({ id, prob }));
    chosenProb = dist.find((d) => d.id === text[p])?.prob ?? 0;
    how = "a prompt character: what the model expected here";
  }
  const body = ui.candidates.tBodies[0];
  body.replaceChildren();
  if (top === null) {
    ui.candidatesCaption.textContent = p === 0
      ? `for ${ch} at position 0`
      : `for ${ch} at position ${p}`;
    ui.explain.textContent = p === 0
      ? "The first character is given: nothing predicts it."
      : "This character is outside the attention window; its prediction was not kept.";
  } else {
    ui.candidatesCaption.textContent = `for ${ch} at position ${p} (${how})`;
    if (!top.some((t) => t.id === text[p])) top.push({ id: text[p], prob: chosenProb });
    const max = Math.max(...top.map((t) => t.prob), 1e-9);
    for (const [rank, cand] of top.entries()) {
      const tr = body.insertRow();
      if (cand.id === text[p]) tr.className = "chosen";
      tr.insertCell().textContent = rank < TOP ? String(rank + 1) : "…";
      tr.insertCell().textContent = displayChar(vocab[cand.id]);
      tr.insertCell().textContent = cand.prob.toFixed(4);
      const bar = tr.insertCell();
      bar.className = "bar";
      const div = document.createElement("div");
      div.style.width = `${(100 * cand.prob) / max}%`;
      bar.append(div);
    }
    ui.explain.textContent = `Row ${q} of each heatmap is the query at “${
      displayChar(vocab[text[q]])
    }” (position ${q}): its output predicted ${ch}. The text is shaded by how much that query attended to each character (mean over heads).`;
  }

  // attention of query q, per head: a strip of cells over the keys, a row mark in the
  // heatmaps, and the text shaded by the mean over heads
  const row = q >= 0 ? q : p;
  let rows: Float32Array[] = [];
  let start = 0;
  if (view !== null && row >= view.start && row < view.start + view.tokens.length) {
    const n = view.tokens.length, r = row - view.start;
    start = view.start;
    rows = Array.from(
      { length: view.nHeads },
      (_, h) => view!.probs.slice((h * n + r) * n, (h * n + r) * n + r + 1),
    );
    for (const mark of rowMarks) mark.setAttribute("d", `M0 ${r}h${r + 1}v1h${-r - 1}Z`);
  } else if (step !== undefined) {
    // while streaming: the row recorded at generation time, [H, window length]
    const H = c.nHeads, w = step.attention.length / H;
    start = step.windowStart;
    rows = Array.from({ length: H }, (_, h) => step.attention.slice(h * w, (h + 1) * w));
    for (const mark of rowMarks) mark.removeAttribute("d");
  }
  const keys = rows[0]?.length ?? 0;
  for (const i of shaded) spans[i].style.background = "";
  shaded = [];
  for (let j = 0; j < keys; j++) {
    let wgt = 0;
    for (const r of rows) wgt += r[j] / rows.length;
    if (wgt > 0 && spans[start + j] !== undefined) {
      spans[start + j].style.background = `rgba(250, 176, 5, ${
        (0.85 * scalePosition(wgt)).toFixed(3)
      })`;
      shaded.push(start + j);
    }
  }
  strip = keys === 0 ? null : { rows, start, row };
  drawStrip();
  ui.stripCaption.textContent = keys === 0
    ? ""
    : `query ${row} “${displayChar(vocab[text[row]])}”, layer ${
      view?.layer ?? ui.layer.value
    }: one row per head over the keys ${start}..${start + keys - 1}; hover a cell`;
}

/**
 * Draws one query's attention as a strip per head on a canvas (redrawn at every selection, so
 * cheap): a row of cells over the keys, the key characters as labels above.
 */
function drawStrip(): void {
  const canvas = ui.strip;
  const ctx = canvas.getContext("2d")!;
  if (strip === null || page.loaded === null) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const { rows, start } = strip;
  const { text, promptLength } = page;
  const vocab = page.loaded.model.tokenizer.vocab;
  const w = rows[0].length;
  const avail = Math.max(300, canvas.parentElement!.clientWidth - STRIP.left - 10);
  const cell = Math.max(STRIP.minCell, Math.min(STRIP.maxCell, Math.floor(avail / w)));
  const cellH = Math.max(cell, 15); // a head's row is tall enough for its label
  const width = STRIP.left + w * cell + 10, height = STRIP.top + rows.length * cellH + 4;
  const dpr = globalThis.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  ctx.font = `${Math.min(13, cell * 0.9).toFixed(1)}px ui-monospace, Menlo, Consolas, monospace`;
  for (let j = 0; j < w; j++) {
    ctx.fillStyle = start + j < promptLength ? "#8a8a8a" : "#111";
    ctx.fillText(displayChar(vocab[text[start + j]]), STRIP.left + (j + 0.5) * cell, STRIP.top - 6);
  }
  ctx.textAlign = "left";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#555";
  for (let h = 0; h < rows.length; h++) {
    ctx.fillText(`head ${h}`, 4, STRIP.top + (h + 0.72) * cellH);
    for (let j = 0; j < w; j++) {
      ctx.fillStyle = attentionColor(rows[h][j]);
      ctx.fillRect(STRIP.left + j * cell, STRIP.top + h * cellH, cell, cellH);
    }
    ctx.fillStyle = "#555";
  }
}

/** The strip cell under a mouse event: head and key index, or null. */
function stripCell(event: MouseEvent): { h: number; j: number } | null {
  if (strip === null) return null;
  const box = ui.strip.getBoundingClientRect();
  const w = strip.rows[0].length;
  const cell = (box.width - STRIP.left - 10) / w;
  const cellH = (box.height - STRIP.top - 4) / strip.rows.length;
  const j = Math.floor((event.clientX - box.left - STRIP.left) / cell);
  const h = Math.floor((event.clientY - box.top - STRIP.top) / cellH);
  return j >= 0 && j < w && h >= 0 && h < strip.rows.length ? { h, j } : null;
}

/** Shows the tooltip with `text` next to the pointer, placed within `container`. */
function showTooltip(event: MouseEvent, container: HTMLElement, text: string): void {
  ui.tooltip.textContent = text;
  const box = container.getBoundingClientRect();
  ui.tooltip.style.left = `${event.clientX - box.left + 14}px`;
  ui.tooltip.style.top = `${event.clientY - box.top + 14}px`;
  ui.tooltip.hidden = false;
}

/** Hides the tooltip. */
export function hideTooltip(): void {
  ui.tooltip.hidden = true;
}

/** The tooltip of the heatmap cell under the pointer: head, query, key and attention. */
export function heatmapTooltip(event: MouseEvent): void {
  const rect = event.target as SVGElement;
  if (view === null || page.loaded === null || rect.tagName !== "rect") return hideTooltip();
  const head = Number(rect.closest("g.head")?.getAttribute("data-head"));
  const j = Number(rect.getAttribute("x")), t = Number(rect.getAttribute("y"));
  const n = view.tokens.length;
  const vocab = page.loaded.model.tokenizer.vocab;
  const w = view.probs[(head * n + t) * n + j];
  showTooltip(
    event,
    ui.heatmaps.parentElement!,
    `head ${head}\nquery ${view.start + t} “${displayChar(vocab[view.tokens[t]])}” → key ${
      view.start + j
    } “${displayChar(vocab[view.tokens[j]])}”\nattention ${w.toFixed(4)}`,
  );
}

/** The tooltip of the strip cell under the pointer. */
export function stripTooltip(event: MouseEvent): void {
  const at = stripCell(event);
  if (at === null || strip === null || page.loaded === null) return hideTooltip();
  const { text } = page;
  const vocab = page.loaded.model.tokenizer.vocab;
  const key = strip.start + at.j;
  showTooltip(
    event,
    ui.strip.parentElement!,
    `head ${at.h}\nquery ${strip.row} “${displayChar(vocab[text[strip.row]])}” → key ${key} “${
      displayChar(vocab[text[key]])
    }”\nattention ${strip.rows[at.h][at.j].toFixed(4)}`,
  );
}
