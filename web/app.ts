/// <reference lib="dom" />
/**
 * The browser page: loads the shipped weights, streams generated text as it is produced, and shows
 * for the selected character (under the cursor, pinned, or the last produced) the candidates the
 * model weighed and where the query that predicted it looked, plus the attention heatmaps of one
 * layer over the whole window. The model runs here with the same `lib/` code as the CLI, on the
 * WebAssembly kernels this browser supports (or a tier forced with ?tier=).
 *
 * Bundled into web/dist/app.js by `deno task bundle`.
 *
 * @module
 */

import {
  attentionColor,
  type AttentionMap,
  attentionWindow,
  displayChar,
  type InspectStep,
  inspectSteps,
  renderAttentionSvg,
  scalePosition,
  topCandidates,
} from "../lib/inspect.ts";
import { detectTier, type KernelTier } from "../lib/kernels/mod.ts";
import { type GPT, KVCache, parameterCount } from "../lib/model.ts";
import { nextDistribution } from "../lib/sample.ts";
import { defaultArena, kernelTier, useKernels } from "../lib/tensor.ts";
import type { Tokenizer } from "../lib/tokenizer.ts";
import { loadModel } from "../lib/weights.ts";

// ---------------------------------------------------------------------------------------------
// Elements and URL options

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  status: $<HTMLParagraphElement>("status"),
  form: $<HTMLFormElement>("controls"),
  prompt: $<HTMLTextAreaElement>("prompt"),
  tokens: $<HTMLInputElement>("tokens"),
  temperature: $<HTMLInputElement>("temperature"),
  temperatureValue: $<HTMLOutputElement>("temperature-value"),
  topk: $<HTMLInputElement>("topk"),
  seed: $<HTMLInputElement>("seed"),
  layer: $<HTMLSelectElement>("layer"),
  tier: $<HTMLSelectElement>("tier"),
  generate: $<HTMLButtonElement>("generate"),
  stop: $<HTMLButtonElement>("stop"),
  output: $<HTMLDivElement>("output"),
  candidates: $<HTMLTableElement>("candidates"),
  candidatesCaption: $<HTMLElement>("candidates-caption"),
  explain: $<HTMLParagraphElement>("explain"),
  heatmaps: $<HTMLDivElement>("heatmaps"),
  strip: $<HTMLCanvasElement>("strip"),
  stripCaption: $<HTMLElement>("strip-caption"),
  attentionCaption: $<HTMLElement>("attention-caption"),
  tooltip: $<HTMLDivElement>("tooltip"),
};

const params = new URLSearchParams(location.search);
const WEIGHTS_URL = new URL(
  params.get("weights") ?? "../weights/shakespeare.safetensors",
  location.href,
);
for (
  const [key, input] of [
    ["prompt", ui.prompt],
    ["tokens", ui.tokens],
    ["temperature", ui.temperature],
    ["topk", ui.topk],
    ["seed", ui.seed],
  ] as const
) {
  const value = params.get(key);
  if (value !== null) input.value = value;
}
{
  const tier = params.get("tier");
  if (tier === "auto" || tier === "relaxed" || tier === "simd" || tier === "js") {
    ui.tier.value = tier;
  }
}

/** Top candidates listed. */
const TOP = 10;

// ---------------------------------------------------------------------------------------------
// State

interface Loaded {
  model: GPT;
  tokenizer: Tokenizer;
  facts: Record<string, string>;
  tier: KernelTier;
  /** One cache for generation, one for the batched pass of the heatmaps (allocated once). */
  genCache: KVCache;
  viewCache: KVCache;
}

let weightsBytes: Uint8Array | null = null;
/** The status line of the loaded model (the run's speed is appended to it). */
let modelStatus = "";
let loaded: Loaded | null = null;
/** The whole text (prompt + generated) as ids, the prompt's length, and a step per generated id. */
let text: number[] = [];
let promptLength = 0;
let steps: InspectStep[] = [];
/** The sampling options of the current text (for the candidates of prompt characters). */
let sampling = { temperature: 0, topK: 0 };
let view: AttentionMap | null = null;
let running = false;
let stopRequested = false;
/** Selected position: hovered, else pinned, else the last character. */
let hovered: number | null = null;
let pinned: number | null = null;
let spans: HTMLSpanElement[] = [];
let rowMarks: SVGPathElement[] = [];

function setState(state: "loading" | "ready" | "running" | "done" | "error"): void {
  document.body.dataset.state = state;
}

function setStatus(message: string, error = false): void {
  ui.status.textContent = message;
  if (error) setState("error");
}

// ---------------------------------------------------------------------------------------------
// Kernels and model

const RANK: Record<KernelTier, number> = { js: 0, simd: 1, relaxed: 2 };

/**
 * Floats a model and two caches take in the kernels' memory (a first guess: if the arena still
 * has to grow, the model is loaded again into a memory of the measured size).
 */
function estimateBytes(bytes: Uint8Array): number {
  if (bytes.length < 8) return 1 << 20; // loadModel will say what is wrong
  const headerLength = Number(
    new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true),
  );
  let blockSize = 256, dModel = 512, nLayers = 8, vocabSize = 256;
  try {
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
    const c = JSON.parse(header.__metadata__.config);
    [blockSize, dModel, nLayers, vocabSize] = [c.block_size, c.d_model, c.n_layers, c.vocab_size];
  } catch {
    // a bad file: loadModel will say what is wrong
  }
  const T = blockSize, C = dModel;
  const cacheFloats = 3 * nLayers * T * C + 8 * T * C + 2 * T + T * vocabSize;
  return bytes.length + 8 * cacheFloats + (1 << 20);
}

/**
 * Loads the model on a kernel tier. The WebAssembly tiers get a fresh non-shared memory (a page
 * that is not cross-origin isolated has no SharedArrayBuffer; this page runs on one thread, so it
 * does not need one). A non-shared memory must not grow after the model is in it (growing detaches
 * the views), so it is sized up front.
 */
function loadOnTier(bytes: Uint8Array, tier: KernelTier): Loaded {
  let size = estimateBytes(bytes);
  for (let attempt = 0; attempt < 3; attempt++) {
    let memory: WebAssembly.Memory | undefined;
    if (tier === "js") useKernels("js");
    else {
      memory = new WebAssembly.Memory({ initial: Math.ceil(size / 65536), maximum: 65536 });
      useKernels(tier, memory);
    }
    const before = memory?.buffer.byteLength;
    const { model, tokenizer, facts } = loadModel(bytes);
    const genCache = new KVCache(model);
    const viewCache = new KVCache(model);
    if (memory === undefined || memory.buffer.byteLength === before) {
      return { model, tokenizer, facts, tier, genCache, viewCache };
    }
    size = defaultArena().end + (1 << 20); // it grew: load again into a memory that fits
  }
  throw new Error("the kernels' memory kept growing; reload the page");
}

function resolveTier(choice: string): KernelTier {
  const best = detectTier({ requireShared: false });
  if (choice === "auto") return best;
  const tier = choice as KernelTier;
  if (RANK[tier] > RANK[best]) {
    throw new Error(
      `kernel tier ${tier} is not supported by this browser (best: ${best}); choose another`,
    );
  }
  return tier;
}

async function fetchWeights(): Promise<Uint8Array> {
  let response: Response;
  try {
    response = await fetch(WEIGHTS_URL);
  } catch (e) {
    throw new Error(`could not fetch ${WEIGHTS_URL.pathname}: ${(e as Error).message}`);
  }
  if (!response.ok) {
    throw new Error(
      `no weights at ${WEIGHTS_URL.pathname} (HTTP ${response.status}); train them with \`deno task train\` or pass ?weights=path`,
    );
  }
  return new Uint8Array(await response.arrayBuffer());
}

function setup(): void {
  const tier = resolveTier(ui.tier.value);
  loaded = loadOnTier(weightsBytes!, tier);
  const c = loaded.model.config;
  const keepLayer = ui.layer.value === "" ? (params.get("layer") ?? "") : ui.layer.value;
  ui.layer.replaceChildren(
    ...Array.from({ length: c.nLayers }, (_, l) => new Option(`layer ${l}`, String(l))),
  );
  const layer = Number(keepLayer);
  ui.layer.value = keepLayer !== "" && layer >= 0 && layer < c.nLayers
    ? String(layer)
    : String(c.nLayers - 1);
  ui.topk.max = String(c.vocabSize);
  document.body.dataset.tier = tier;
  const facts = loaded.facts;
  modelStatus = `${
    WEIGHTS_URL.pathname.split("/").pop()
  }: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads, block ${c.blockSize}, vocab ${c.vocabSize}, ${
    (parameterCount(c) / 1e6).toFixed(2)
  }M parameters${
    facts.val_loss ? `, validation loss ${facts.val_loss}` : ""
  } · kernels: ${kernelTier()}${ui.tier.value === "auto" ? " (auto)" : ""} · ${
    crossOriginIsolated ? "cross-origin isolated" : "not cross-origin isolated"
  }`;
  setStatus(modelStatus);
  setState("ready");
}

// ---------------------------------------------------------------------------------------------
// Generation

/** Yields to the event loop (a message, not a 4 ms timer), so the page paints between steps. */
function nextTask(): Promise<void> {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

/** Spans produced but not yet in the page: they are added once per animation frame. */
let pending: HTMLSpanElement[] = [];
let frameRequested = false;

/** Puts the new characters in the page and shows the selected one (once per frame). */
function flush(): void {
  frameRequested = false;
  if (pending.length > 0) {
    ui.output.append(...pending);
    pending = [];
    ui.output.scrollTop = ui.output.scrollHeight;
  }
  // the selected character's views cost more than a frame's text: at most 10 times a second
  const now = performance.now();
  if (hovered === null && pinned === null && (!running || now - lastShown >= 100)) {
    lastShown = now;
    showPosition(text.length - 1);
  }
}

/** When the views of the last character were last drawn while streaming. */
let lastShown = 0;

function requestFlush(): void {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(flush);
}

function charSpan(id: number, position: number, kind: "p" | "g"): HTMLSpanElement {
  const span = document.createElement("span");
  span.textContent = loaded!.tokenizer.vocab[id];
  span.className = kind;
  span.dataset.i = String(position);
  return span;
}

async function generate(): Promise<void> {
  if (running || loaded === null) return;
  const { model, tokenizer, genCache } = loaded;
  const V = model.config.vocabSize;
  const count = Math.floor(Number(ui.tokens.value));
  const temperature = Number(ui.temperature.value);
  const topK = Math.floor(Number(ui.topk.value) || 0);
  const seed = Math.floor(Number(ui.seed.value) || 0);
  if (!(count >= 1 && count <= 5000)) return setStatus("Length must be from 1 to 5000.", true);
  if (!(temperature >= 0 && temperature <= 100)) {
    return setStatus("Temperature must be from 0 to 100.", true);
  }
  if (!(topK >= 0 && topK <= V)) return setStatus(`Top-k must be from 0 to ${V}.`, true);
  let prompt: number[];
  try {
    prompt = Array.from(tokenizer.encode(ui.prompt.value === "" ? "\n" : ui.prompt.value));
  } catch (e) {
    return setStatus((e as Error).message, true);
  }
  const newline = tokenizer.has("\n") ? tokenizer.encode("\n")[0] : 0;
  text = [...prompt];
  promptLength = prompt.length;
  steps = [];
  sampling = { temperature, topK };
  view = null;
  hovered = pinned = null;
  spans = prompt.map((id, i) => charSpan(id, i, "p"));
  pending = [];
  shaded = [];
  strip = null;
  ui.output.replaceChildren(...spans);
  ui.heatmaps.replaceChildren();
  rowMarks = [];
  running = true;
  stopRequested = false;
  ui.generate.disabled = ui.tier.disabled = true;
  ui.stop.disabled = false;
  setState("running");
  const started = performance.now();
  try {
    const layer = Number(ui.layer.value);
    const generator = inspectSteps(model, prompt, newline, {
      tokens: count,
      top: TOP,
      layer,
      temperature,
      topK,
      seed,
      cache: genCache,
    });
    for (const step of generator) {
      steps.push(step);
      text.push(step.id);
      const span = charSpan(step.id, step.position, "g");
      spans.push(span);
      pending.push(span);
      requestFlush(); // the page shows new characters once per frame
      if (stopRequested) break;
      await nextTask();
    }
    const seconds = (performance.now() - started) / 1000;
    flush();
    refreshView();
    ui.status.textContent = `${modelStatus} · ${steps.length} characters in ${
      seconds.toFixed(2)
    } s (${Math.round(steps.length / Math.max(seconds, 1e-6))}/s)${
      stopRequested ? ", stopped" : ""
    }`;
    setState("done");
  } catch (e) {
    setStatus(`error: ${(e as Error).message}`, true);
  } finally {
    running = false;
    ui.generate.disabled = ui.tier.disabled = false;
    ui.stop.disabled = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Views

/** Recomputes the attention of the window (one batched pass) and redraws the heatmaps. */
function refreshView(): void {
  if (loaded === null || text.length === 0) return;
  view = attentionWindow(loaded.model, text, {
    layer: Number(ui.layer.value),
    promptLength,
    cache: loaded.viewCache,
  });
  const n = view.tokens.length;
  ui.heatmaps.innerHTML = renderAttentionSvg(view, loaded.tokenizer.vocab, {
    cell: Math.max(5, Math.min(18, Math.floor(560 / n))),
    columns: Math.min(view.nHeads, 2),
  });
  ui.heatmaps.dataset.window = String(n);
  ui.attentionCaption.textContent =
    `layer ${view.layer}, one heatmap per head over the last ${n} characters (one forward pass over them); hover a cell`;
  rowMarks = [...ui.heatmaps.querySelectorAll<SVGGElement>("g.cells")].map((g) => {
    const mark = document.createElementNS("http://www.w3.org/2000/svg", "path");
    mark.setAttribute("class", "row-mark");
    g.append(mark);
    return mark;
  });
  spans.forEach((s, i) => s.classList.toggle("out", i < view!.start));
  showPosition(selected());
}

function selected(): number {
  return hovered ?? pinned ?? text.length - 1;
}

/**
 * Shows position p: the candidates that predicted the character at p, and the attention of the
 * query that predicted it (position p - 1) in the text and in the heatmaps.
 */
function showPosition(p: number): void {
  if (loaded === null || p < 0 || p >= text.length) return;
  const vocab = loaded.tokenizer.vocab;
  const c = loaded.model.config;
  for (const s of ui.output.querySelectorAll("span.sel")) s.classList.remove("sel", "pinned");
  spans[p]?.classList.add("sel");
  if (pinned === p) spans[p]?.classList.add("pinned");
  const ch = `“${displayChar(vocab[text[p]])}”`;
  const q = p - 1; // the query whose output predicted p

  // candidates
  let probs: ArrayLike<number> | null = null;
  let how = "";
  const step = p >= promptLength ? steps[p - promptLength] : undefined;
  if (step !== undefined) {
    probs = step.probs;
    how = sampling.temperature > 0
      ? `drawn at temperature ${sampling.temperature}${
        sampling.topK > 0 ? `, top-k ${sampling.topK}` : ""
      }`
      : "greedy: the most likely one was taken";
  } else if (q >= 0 && view !== null && q >= view.start) {
    const V = c.vocabSize;
    const row = view.logits.subarray((q - view.start) * V, (q - view.start + 1) * V);
    probs = nextDistribution(
      row,
      sampling.temperature > 0 ? { temperature: sampling.temperature, topK: sampling.topK } : {},
    );
    how = "a prompt character: what the model expected here";
  }
  const body = ui.candidates.tBodies[0];
  body.replaceChildren();
  if (probs === null) {
    ui.candidatesCaption.textContent = p === 0
      ? `for ${ch} at position 0`
      : `for ${ch} at position ${p}`;
    ui.explain.textContent = p === 0
      ? "The first character is given: nothing predicts it."
      : "This character is outside the attention window; its prediction was not kept.";
  } else {
    ui.candidatesCaption.textContent = `for ${ch} at position ${p} (${how})`;
    const top = topCandidates(probs, TOP);
    if (!top.some((t) => t.id === text[p])) top.push({ id: text[p], prob: probs[text[p]] });
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
  const H = c.nHeads;
  let rows: Float32Array[] = [];
  let start = 0;
  if (view !== null && row >= view.start && row < view.start + view.tokens.length) {
    const n = view.tokens.length, r = row - view.start;
    start = view.start;
    rows = Array.from(
      { length: H },
      (_, h) => view!.probs.slice((h * n + r) * n, (h * n + r) * n + r + 1),
    );
    for (const mark of rowMarks) mark.setAttribute("d", `M0 ${r}h${r + 1}v1h${-r - 1}Z`);
  } else if (step !== undefined) {
    // while streaming: the row recorded at generation time, [H, window length]
    const w = step.attention.length / H;
    start = step.windowStart;
    rows = Array.from({ length: H }, (_, h) => step.attention.slice(h * w, (h + 1) * w));
    for (const mark of rowMarks) mark.removeAttribute("d");
  }
  const keys = rows[0]?.length ?? 0;
  for (const i of shaded) spans[i].style.background = "";
  shaded = [];
  for (let j = 0; j < keys; j++) {
    let wgt = 0;
    for (const r of rows) wgt += r[j] / H;
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

/** Spans shaded by the last selection. */
let shaded: number[] = [];
/** The query row drawn in the strip: per head, its attention over keys start.. */
let strip: { rows: Float32Array[]; start: number; row: number } | null = null;
const STRIP = { left: 58, top: 22, maxCell: 18, minCell: 7 };

/**
 * Draws one query's attention as a strip per head on a canvas (redrawn at every selection, so
 * cheap): a row of cells over the keys, the key characters as labels above.
 */
function drawStrip(): void {
  const canvas = ui.strip;
  const ctx = canvas.getContext("2d")!;
  if (strip === null || loaded === null) {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const { rows, start } = strip;
  const vocab = loaded.tokenizer.vocab;
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

// ---------------------------------------------------------------------------------------------
// Events

ui.temperature.addEventListener("input", () => {
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
});
ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);

ui.form.addEventListener("submit", (event) => {
  event.preventDefault();
  generate();
});
ui.stop.addEventListener("click", () => {
  stopRequested = true;
});
ui.layer.addEventListener("change", () => {
  if (!running) refreshView();
});
ui.tier.addEventListener("change", () => {
  try {
    setup();
    text = [];
    steps = [];
    spans = [];
    rowMarks = [];
    view = null;
    ui.output.replaceChildren();
    ui.heatmaps.replaceChildren();
    strip = null;
    shaded = [];
    drawStrip();
    ui.candidates.tBodies[0].replaceChildren();
    ui.candidatesCaption.textContent = ui.explain.textContent = ui.stripCaption.textContent = "";
    ui.generate.disabled = false;
  } catch (e) {
    setStatus(`error: ${(e as Error).message}`, true);
    ui.generate.disabled = true;
  }
});

function positionOf(target: EventTarget | null): number | null {
  const el = target as HTMLElement | null;
  if (el === null || el.tagName !== "SPAN" || el.dataset.i === undefined) return null;
  return Number(el.dataset.i);
}

ui.output.addEventListener("mouseover", (event) => {
  const p = positionOf(event.target);
  if (p === null) return;
  hovered = p;
  showPosition(p);
});
ui.output.addEventListener("mouseleave", () => {
  hovered = null;
  showPosition(selected());
});
ui.output.addEventListener("click", (event) => {
  const p = positionOf(event.target);
  pinned = p === null || p === pinned ? null : p;
  showPosition(selected());
});
ui.output.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
  event.preventDefault();
  const p = selected() + (event.key === "ArrowLeft" ? -1 : 1);
  if (p < 0 || p >= text.length) return;
  pinned = p;
  hovered = null;
  showPosition(p);
  spans[p]?.scrollIntoView({ block: "nearest" });
});

ui.heatmaps.addEventListener("mousemove", (event) => {
  const rect = event.target as SVGElement;
  if (view === null || loaded === null || rect.tagName !== "rect") {
    ui.tooltip.hidden = true;
    return;
  }
  const head = Number(rect.closest("g.head")?.getAttribute("data-head"));
  const j = Number(rect.getAttribute("x")), t = Number(rect.getAttribute("y"));
  const n = view.tokens.length;
  const vocab = loaded.tokenizer.vocab;
  const w = view.probs[(head * n + t) * n + j];
  ui.tooltip.textContent = `head ${head}\nquery ${view.start + t} “${
    displayChar(vocab[view.tokens[t]])
  }” → key ${view.start + j} “${displayChar(vocab[view.tokens[j]])}”\nattention ${w.toFixed(4)}`;
  const box = ui.heatmaps.parentElement!.getBoundingClientRect();
  ui.tooltip.style.left = `${event.clientX - box.left + 14}px`;
  ui.tooltip.style.top = `${event.clientY - box.top + 14}px`;
  ui.tooltip.hidden = false;
});
ui.heatmaps.addEventListener("mouseleave", () => {
  ui.tooltip.hidden = true;
});

ui.strip.addEventListener("mousemove", (event) => {
  const at = stripCell(event);
  if (at === null || strip === null || loaded === null) {
    ui.tooltip.hidden = true;
    return;
  }
  const vocab = loaded.tokenizer.vocab;
  const key = strip.start + at.j;
  ui.tooltip.textContent = `head ${at.h}\nquery ${strip.row} “${
    displayChar(vocab[text[strip.row]])
  }” → key ${key} “${displayChar(vocab[text[key]])}”\nattention ${
    strip.rows[at.h][at.j].toFixed(4)
  }`;
  const box = ui.strip.parentElement!.getBoundingClientRect();
  ui.tooltip.style.left = `${event.clientX - box.left + 14}px`;
  ui.tooltip.style.top = `${event.clientY - box.top + 14}px`;
  ui.tooltip.hidden = false;
});
ui.strip.addEventListener("mouseleave", () => {
  ui.tooltip.hidden = true;
});

// ---------------------------------------------------------------------------------------------
// Start

async function start(): Promise<void> {
  document.body.dataset.app = "1";
  document.body.dataset.best = detectTier({ requireShared: false });
  setState("loading");
  try {
    setStatus(`Loading ${WEIGHTS_URL.pathname}…`);
    weightsBytes = await fetchWeights();
    setup();
    ui.generate.disabled = false;
    if (params.get("autorun") === "1") await generate();
  } catch (e) {
    setStatus(`error: ${(e as Error).message}`, true);
  }
}

start();
