/// <reference lib="dom" />
/**
 * The browser page: loads the shipped weights, streams generated text as it is produced, and shows
 * for the selected character (under the cursor, pinned, or the last produced) the candidates the
 * model weighed and where the query that predicted it looked, plus the attention heatmaps of one
 * layer over the whole window. The model runs here with the library's public API (`mod.ts`,
 * pictures included), as the CLI does, on the WebAssembly kernels this browser
 * supports (or a tier forced with ?tier=), or with ?tier=webgpu on the GPU through WebGPU.
 *
 * This module loads the model and generates, and starts the page; `state.ts` holds the elements
 * and the shared state, `views.ts` draws the candidates, the attention strip and the heatmaps, and
 * `events.ts` handles the controls and the pointer. Bundled into web/dist/app.js by
 * `deno task bundle`.
 *
 * @module
 */

import {
  bestKernels,
  type InspectStep,
  inspectStream,
  type KernelChoice,
  loadWeights,
  type Model,
} from "../mod.ts";
import { listen } from "./events.ts";
import { listenTraining } from "./train_events.ts";
import {
  AUTOSTART,
  chooseKernels,
  clearError,
  type Kernels,
  kernelsName,
  type Loaded,
  page,
  params,
  ROOT_URL,
  setState,
  setStatus,
  showError,
  TOP,
  ui,
  WEIGHTS_URL,
} from "./state.ts";
import { clearViews, refreshView, resetViews, showPosition } from "./views.ts";

let weightsBytes: Uint8Array | null = null;
/** The model's name in the status line: its file (the page's weights, a file given, a run). */
let modelName = WEIGHTS_URL.pathname.split("/").pop()!;
/** The status line of the loaded model (the run's speed is appended to it). */
let modelStatus = "";

// ---------------------------------------------------------------------------------------------
// Kernels and model

/**
 * The tier chosen in the menu ("auto": the fastest WebAssembly tier here, never webgpu; the
 * library refuses unsupported ones).
 */
function chosenTier(choice: string): KernelChoice | undefined {
  return choice === "auto" ? undefined : choice as KernelChoice;
}

/** The weights' location as a user names it: from the repository root when under it. */
function weightsName(): string {
  const href = WEIGHTS_URL.href;
  return href.startsWith(ROOT_URL.href) ? href.slice(ROOT_URL.href.length) : href;
}

async function fetchWeights(): Promise<Uint8Array> {
  let response: Response;
  try {
    response = await fetch(WEIGHTS_URL);
  } catch (e) {
    throw new Error(`could not fetch ${weightsName()}: ${(e as Error).message}`);
  }
  if (!response.ok) {
    throw new Error(
      `no weights at ${weightsName()} (HTTP ${response.status}); train them with \`deno task train\`, or pass ?weights=path/to/model.safetensors (a path from the repository root, e.g. ?weights=out/my.safetensors)`,
    );
  }
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Loads the model on the chosen kernels (chosen again: the models of an earlier choice are
 * dropped) and fills the layer choice and the status line. On webgpu the model itself is on the
 * CPU's fastest tier, and a missing adapter is an error here, before the model loads.
 */
async function setup(): Promise<void> {
  page.loaded = null;
  const kernels = await chooseKernels(chosenTier(ui.tier.value));
  describe(page.loaded = { model: await loadWeights(weightsBytes!), ...kernels });
}

/** Fills the layer choice and the status line for the loaded model. */
function describe(loaded: Loaded): void {
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
  document.body.dataset.tier = loaded.tier;
  const facts = loaded.model.facts;
  modelStatus =
    `${modelName}: ${c.nLayers} layers, d_model ${c.dModel}, ${c.nHeads} heads, block ${c.blockSize}, vocab ${c.vocabSize}, ${
      (loaded.model.parameterCount / 1e6).toFixed(2)
    }M parameters${facts.val_loss ? `, validation loss ${facts.val_loss}` : ""} · kernels: ${
      kernelsName(loaded)
    }${ui.tier.value === "auto" ? " (auto)" : ""} · ${
      crossOriginIsolated ? "cross-origin isolated" : "not cross-origin isolated"
    }`;
  setStatus(modelStatus);
  setState("ready");
}

/** Makes a model the page's (a training run's, or a file given): the views start afresh. */
function adopt(model: Model, kernels: Kernels, name: string, bytes?: Uint8Array): void {
  if (bytes !== undefined) weightsBytes = bytes; // a change of kernels reloads these
  modelName = name;
  if (page.loaded?.model !== model && !page.running) {
    page.text = [];
    page.steps = [];
    page.spans = [];
    page.hovered = page.pinned = null;
    ui.output.replaceChildren();
    clearViews();
  }
  describe(page.loaded = { model, ...kernels });
  ui.generate.disabled = page.running;
}

/** Streams a sample of the page's model (from `hint` when the prompt has unknown characters). */
async function sample(hint: string): Promise<boolean> {
  if (page.running || page.loaded === null) return false;
  try {
    page.loaded.model.tokenizer.encode(ui.prompt.value, "the prompt");
  } catch {
    ui.prompt.value = hint;
  }
  await generate();
  return true;
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
/** When the views of the last character were last drawn while streaming. */
let lastShown = 0;

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
  if (page.hovered === null && page.pinned === null && (!page.running || now - lastShown >= 100)) {
    lastShown = now;
    showPosition(page.text.length - 1);
  }
}

function requestFlush(): void {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(flush);
}

function charSpan(id: number, position: number, kind: "p" | "g"): HTMLSpanElement {
  const span = document.createElement("span");
  span.textContent = page.loaded!.model.tokenizer.vocab[id];
  span.className = kind;
  span.dataset.i = String(position);
  return span;
}

/** Generates with the form's options, streaming the text and the views of the last character. */
async function generate(): Promise<void> {
  if (page.running || page.loaded === null) return;
  const { model } = page.loaded;
  const tokenizer = model.tokenizer;
  const count = Number(ui.tokens.value);
  const temperature = Number(ui.temperature.value);
  const topK = Number(ui.topk.value) || 0;
  const seed = Math.floor(Number(ui.seed.value) || 0);
  const promptText = ui.prompt.value === "" ? "\n" : ui.prompt.value;
  const layer = Number(ui.layer.value);
  // the library checks the prompt and every option when the first step is taken; every tier
  // streams the same steps (webgpu: from the GPU's KV cache, each step's attention read back)
  const options = { tokens: count, top: TOP, layer, temperature, topK, seed };
  let prompt: number[], generator: AsyncGenerator<InspectStep>, first: IteratorResult<InspectStep>;
  page.running = true; // the first step may take a while (on webgpu it opens the GPU's cache)
  ui.generate.disabled = ui.tier.disabled = true;
  try {
    prompt = Array.from(tokenizer.encode(promptText, "the prompt"));
    generator = inspectStream(model, promptText, options);
    first = await generator.next();
  } catch (e) {
    ended();
    return showError((e as Error).message); // the status line keeps the model
  }
  clearError();
  page.text = [...prompt];
  page.promptLength = prompt.length;
  page.steps = [];
  page.sampling = { temperature, topK };
  page.hovered = page.pinned = null;
  page.spans = prompt.map((id, i) => charSpan(id, i, "p"));
  pending = [];
  ui.output.replaceChildren(...page.spans);
  resetViews();
  page.stopRequested = false;
  ui.stop.disabled = false;
  setState("running");
  const started = performance.now();
  try {
    for (let r = first; !r.done; r = await generator.next()) {
      const step = r.value;
      page.steps.push(step);
      page.text.push(step.id);
      const span = charSpan(step.id, step.position, "g");
      page.spans.push(span);
      pending.push(span);
      requestFlush(); // the page shows new characters once per frame
      if (page.stopRequested) break;
      await nextTask();
    }
    const seconds = (performance.now() - started) / 1000;
    const produced = page.steps.length;
    flush();
    // the heatmaps: one synchronous pass over the window (attentionMap), on the CPU's kernels
    // whatever the tier, webgpu too
    refreshView();
    ui.status.textContent = `${modelStatus} · ${produced} characters in ${seconds.toFixed(2)} s (${
      Math.round(produced / Math.max(seconds, 1e-6))
    }/s)${page.stopRequested ? ", stopped" : ""}`;
    setState("done");
  } catch (e) {
    showError((e as Error).message);
  } finally {
    await generator.return(undefined); // hands the model's cache back when stopped early
    ended();
  }
}

/** A generation is over: the controls are free again. */
function ended(): void {
  page.running = false;
  ui.generate.disabled = false;
  ui.tier.disabled = page.training;
  ui.stop.disabled = true;
}

// ---------------------------------------------------------------------------------------------
// Start

async function start(): Promise<void> {
  document.body.dataset.app = "1";
  document.body.dataset.best = bestKernels({ shared: crossOriginIsolated });
  setState("loading");
  try {
    setStatus(`Loading ${weightsName()}…`);
    weightsBytes = await fetchWeights();
    await setup();
    ui.generate.disabled = false;
  } catch (e) {
    ui.status.textContent = `no model loaded (${weightsName()}, kernels: ${ui.tier.value})`;
    return showError((e as Error).message);
  }
  if (AUTOSTART) await generate(); // a shared link streams at once (generate shows its errors)
}

listen({ generate, setup });
listenTraining({
  tier: () => chosenTier(ui.tier.value),
  adopt,
  load: async (bytes, name) => {
    weightsBytes = bytes;
    modelName = name;
    await setup();
    ui.generate.disabled = page.running;
    return page.loaded!.model;
  },
  sample,
  lock: (locked) => {
    page.training = locked;
    ui.tier.disabled = locked || page.running;
  },
});
start();
