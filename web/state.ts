/// <reference lib="dom" />
/**
 * The page's elements, its URL options and the state the other modules share: the loaded model,
 * the text shown (as ids, with a generation step per generated character), the selection, and
 * whether a run is going on. The URL options (?prompt=, ?tokens=, ?temperature=, ?topk=, ?seed=,
 * ?tier=) are copied into the form when this module is first imported.
 *
 * @module
 */

import type { InspectStep, KernelTier, Model } from "../mod.ts";

// ---------------------------------------------------------------------------------------------
// Elements and URL options

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The page's elements, by the ids of web/index.html. */
export const ui = {
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

/** The page's query parameters. */
export const params = new URLSearchParams(location.search);

/** Where the weights are fetched from (?weights=, relative to the page). */
export const WEIGHTS_URL = new URL(
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
export const TOP = 10;

// ---------------------------------------------------------------------------------------------
// State

/** A model loaded on a kernel tier. */
export interface Loaded {
  model: Model;
  tier: KernelTier;
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
  hovered: null,
  pinned: null,
  spans: [],
};

/** Sets the page's state, as `data-state` on the body (the tests wait on it). */
export function setState(state: "loading" | "ready" | "running" | "done" | "error"): void {
  document.body.dataset.state = state;
}

/** Shows a status line; an error also sets the state "error". */
export function setStatus(message: string, error = false): void {
  ui.status.textContent = message;
  if (error) setState("error");
}
