/// <reference lib="dom" />
/**
 * The page's elements, its URL options and the state the other modules share: the loaded model,
 * the text shown (as ids, with a generation step per generated character), the selection, and
 * whether a run is going on. The URL options (?prompt=, ?tokens=, ?temperature=, ?topk=, ?seed=,
 * ?tier=, webgpu included) are copied into the form when this module is first imported;
 * ?weights= names the model (from the repository root) and ?autostart=1 generates once it is
 * loaded. The kernels are chosen here too, for the page and the training panel alike.
 *
 * @module
 */

import {
  bestKernels,
  describeAdapter,
  type InspectStep,
  type KernelChoice,
  type Model,
  selectKernels,
  type WebGpuAdapter,
  webgpuAdapter,
} from "../mod.ts";

// ---------------------------------------------------------------------------------------------
// Elements and URL options

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The page's elements, by the ids of web/index.html. */
export const ui = {
  status: $<HTMLParagraphElement>("status"),
  error: $<HTMLParagraphElement>("error"),
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

/** The page's query parameters. */
export const params = new URLSearchParams(location.search);

/**
 * The repository root as served: the folder above the page's `web/` (the site root under
 * `deno task serve`, where the page is /web/).
 */
export const ROOT_URL = new URL("../", location.href);

/**
 * Where the weights are fetched from: ?weights= resolved against the repository root, so
 * `?weights=out/x.safetensors` is the file `out/x.safetensors` of the repository (as the CLI's
 * `--weights` names it from there). A path with a leading slash is from the site root, and a full
 * URL is taken as it is.
 */
export const WEIGHTS_URL = new URL(
  params.get("weights") ?? "weights/shakespeare.safetensors",
  ROOT_URL,
);

/** Generate as soon as the model is loaded: ?autostart=1 (or the older ?autorun=1). */
export const AUTOSTART = ["autostart", "autorun"].some((key) => {
  const value = params.get(key);
  return value !== null && ["", "1", "true", "yes"].includes(value.toLowerCase());
});

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
  if (tier !== null && ["auto", "relaxed", "simd", "js", "webgpu"].includes(tier)) {
    ui.tier.value = tier;
  }
}

/** Top candidates listed. */
export const TOP = 10;

// ---------------------------------------------------------------------------------------------
// State

/** The kernels in use: a WebAssembly tier, or webgpu (over the CPU's fastest) and its adapter. */
export interface Kernels {
  tier: KernelChoice;
  adapter?: WebGpuAdapter;
}

/** A model loaded on a kernel tier. */
export interface Loaded extends Kernels {
  model: Model;
}

/**
 * Chooses the kernels afresh (the models of an earlier choice keep working, on plain
 * TypeScript): a WebAssembly tier (undefined: the fastest here, never webgpu), or webgpu, whose
 * adapter is opened now, so that a missing one is the library's one-line error before any work.
 * Without cross-origin isolation there is no SharedArrayBuffer: the kernels get a plain memory,
 * sized by the library for the first model (or `memoryBytes`).
 */
export async function chooseKernels(
  tier: KernelChoice | undefined,
  memory: { memoryBytes?: number } = {},
): Promise<Kernels> {
  const options = { shared: crossOriginIsolated, reset: true, ...memory };
  if (tier !== "webgpu") {
    return { tier: selectKernels(tier ?? bestKernels({ shared: options.shared }), options) };
  }
  selectKernels("webgpu", options);
  return { tier, adapter: await webgpuAdapter() };
}

/**
 * The kernels as the page names them: the tier, or `webgpu (<adapter>, software adapter,
 * subgroups)` (the last two where they apply), as the CLI does.
 */
export function kernelsName(k: Kernels): string {
  return k.adapter === undefined ? k.tier : `${k.tier} (${describeAdapter(k.adapter)})`;
}

/** What the page's modules share (one object, so that each of them can update it). */
export interface PageState {
  loaded: Loaded | null;
  /** The whole text (prompt + generated) as ids, the prompt's length, and a step per generated id. */
  text: number[];
  promptLength: number;
  steps: InspectStep[];
  /** The sampling options of the current text (for the candidates of prompt characters). */
  sampling: { temperature: number; topK: number };
  running: boolean;
  stopRequested: boolean;
  /** A training run is going on (the kernel menu stays locked). */
  training: boolean;
  /** Selected position: hovered, else pinned, else the last character. */
  hovered: number | null;
  pinned: number | null;
  /** A span per character of the text. */
  spans: HTMLSpanElement[];
}

/** The page's state. */
export const page: PageState = {
  loaded: null,
  text: [],
  promptLength: 0,
  steps: [],
  sampling: { temperature: 0, topK: 0 },
  running: false,
  stopRequested: false,
  training: false,
  hovered: null,
  pinned: null,
  spans: [],
};

/** Sets the page's state, as `data-state` on the body (the tests wait on it). */
export function setState(state: "loading" | "ready" | "running" | "done" | "error"): void {
  document.body.dataset.state = state;
}

/** Shows the status line (the model, or what is loading); clears any error shown. */
export function setStatus(message: string): void {
  ui.status.textContent = message;
  clearError();
}

/**
 * Shows an error in its own line, below the status line (which keeps saying which model is
 * loaded), and sets the state "error".
 */
export function showError(message: string): void {
  ui.error.textContent = message.startsWith("error: ") ? message : `error: ${message}`;
  ui.error.hidden = false;
  setState("error");
}

/** Hides the error line. */
export function clearError(): void {
  ui.error.textContent = "";
  ui.error.hidden = true;
}
