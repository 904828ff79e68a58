/// <reference lib="dom" />
/**
 * The training panel's elements (stable ids, so that tests and scripts can drive it), its model
 * size presets, the form read into a run's settings, the loss chart, and the status and error
 * lines. `train.ts` runs the training; `opfs.ts` keeps its checkpoints.
 *
 * @module
 */

import { lineChartSvg, type LinePoint, MODEL_OPTIONS, TRAIN_OPTIONS } from "../mod.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** The panel's elements, by their ids in web/index.html. */
export const tui = {
  form: $<HTMLFormElement>("train-form"),
  text: $<HTMLTextAreaElement>("train-text"),
  source: $<HTMLElement>("train-source"),
  file: $<HTMLInputElement>("train-file"),
  shakespeare: $<HTMLButtonElement>("train-shakespeare"),
  weights: $<HTMLInputElement>("train-weights"),
  size: $<HTMLSelectElement>("train-size"),
  dModel: $<HTMLInputElement>("train-dmodel"),
  layers: $<HTMLInputElement>("train-layers"),
  heads: $<HTMLInputElement>("train-heads"),
  block: $<HTMLInputElement>("train-block"),
  steps: $<HTMLInputElement>("train-steps"),
  batch: $<HTMLInputElement>("train-batch"),
  lr: $<HTMLInputElement>("train-lr"),
  seed: $<HTMLInputElement>("train-seed"),
  threads: $<HTMLInputElement>("train-threads"),
  threadsNote: $<HTMLElement>("train-threads-note"),
  checkpointEvery: $<HTMLInputElement>("train-checkpoint-every"),
  sampleEvery: $<HTMLInputElement>("train-sample-every"),
  start: $<HTMLButtonElement>("train-start"),
  pause: $<HTMLButtonElement>("train-pause"),
  stop: $<HTMLButtonElement>("train-stop"),
  download: $<HTMLButtonElement>("train-download"),
  status: $<HTMLParagraphElement>("train-status"),
  error: $<HTMLParagraphElement>("train-error"),
  chart: $<HTMLDivElement>("train-chart"),
  command: $<HTMLPreElement>("train-command"),
  offer: $<HTMLParagraphElement>("train-offer"),
  offerText: $<HTMLElement>("train-offer-text"),
  continue: $<HTMLButtonElement>("train-continue"),
  discard: $<HTMLButtonElement>("train-discard"),
};

/** A model's shape. */
export interface Shape {
  blockSize: number;
  dModel: number;
  nLayers: number;
  nHeads: number;
}

const m = MODEL_OPTIONS;
/** The size presets: a tiny model that learns in about a minute, and BareGPT's default. */
export const PRESETS: Record<"tiny" | "default", { shape: Shape; steps: number }> = {
  tiny: { shape: { blockSize: 32, dModel: 64, nLayers: 2, nHeads: 4 }, steps: 500 },
  default: {
    shape: {
      blockSize: m.blockSize.default!,
      dModel: m.dModel.default!,
      nLayers: m.nLayers.default!,
      nHeads: m.nHeads.default!,
    },
    steps: TRAIN_OPTIONS.steps.default!,
  },
};

/** Fills the shape fields (and the steps) from a preset. */
export function applyPreset(name: string): void {
  const preset = PRESETS[name as keyof typeof PRESETS];
  if (preset === undefined) return;
  const s = preset.shape;
  tui.dModel.value = String(s.dModel);
  tui.layers.value = String(s.nLayers);
  tui.heads.value = String(s.nHeads);
  tui.block.value = String(s.blockSize);
  tui.steps.value = String(preset.steps);
}

/** The shape fields, disabled while fine-tuning (the shape is the model file's). */
export function shapeFieldsEnabled(enabled: boolean): void {
  for (const f of [tui.dModel, tui.layers, tui.heads, tui.block]) f.disabled = !enabled;
}

/** What the form asks for: the shape, and the settings the page sets (the rest are defaults). */
export interface FormSettings {
  shape: Shape;
  steps: number;
  batch: number;
  lr: number;
  seed: number;
  threads: number;
  checkpointEvery: number;
  sampleEvery: number;
}

/** A whole number from a field; an Error naming the field when it is not one. */
function wholeField(input: HTMLInputElement, name: string, min: number): number {
  const v = Number(input.value);
  if (input.value.trim() === "" || !Number.isInteger(v) || v < min) {
    throw new Error(
      `${name} ${JSON.stringify(input.value)} is not a whole number of ${min} or more`,
    );
  }
  return v;
}

/** Reads the form (the library checks every range when the model and trainer are made). */
export function readForm(): FormSettings {
  const lr = Number(tui.lr.value);
  if (tui.lr.value.trim() === "" || !Number.isFinite(lr)) {
    throw new Error(`learning rate ${JSON.stringify(tui.lr.value)} is not a number`);
  }
  return {
    shape: {
      dModel: wholeField(tui.dModel, "d_model", 1),
      nLayers: wholeField(tui.layers, "layers", 1),
      nHeads: wholeField(tui.heads, "heads", 1),
      blockSize: wholeField(tui.block, "block", 1),
    },
    steps: wholeField(tui.steps, "steps", 1),
    batch: wholeField(tui.batch, "batch", 1),
    lr,
    seed: wholeField(tui.seed, "seed", 0),
    threads: crossOriginIsolated ? wholeField(tui.threads, "threads", 1) : 1,
    checkpointEvery: wholeField(tui.checkpointEvery, "checkpoint every", 1),
    sampleEvery: wholeField(tui.sampleEvery, "sample every", 0),
  };
}

/** Puts settings back in the form (an interrupted run, continued). */
export function fillForm(s: FormSettings, size: string): void {
  tui.size.value = size;
  tui.dModel.value = String(s.shape.dModel);
  tui.layers.value = String(s.shape.nLayers);
  tui.heads.value = String(s.shape.nHeads);
  tui.block.value = String(s.shape.blockSize);
  tui.steps.value = String(s.steps);
  tui.batch.value = String(s.batch);
  tui.lr.value = String(s.lr);
  tui.seed.value = String(s.seed);
  tui.threads.value = String(s.threads);
  tui.checkpointEvery.value = String(s.checkpointEvery);
  tui.sampleEvery.value = String(s.sampleEvery);
}

/** The state of the panel, as `data-train` on the body (tests wait on it). */
export function setTrainState(
  state: "idle" | "running" | "paused" | "done" | "stopped" | "error",
): void {
  document.body.dataset.train = state;
}

/** Shows the status line of the run. */
export function trainStatus(message: string): void {
  tui.status.textContent = message;
}

/** Shows an error of the panel in one line (the status line keeps what it said). */
export function trainError(message: string | null): void {
  tui.error.hidden = message === null;
  tui.error.textContent = message === null
    ? ""
    : message.startsWith("error: ")
    ? message
    : `error: ${message}`;
}

/** The loss curves of the run: every step's training loss, and the validation estimates. */
export const curves = { train: [] as LinePoint[], val: [] as LinePoint[] };
let chartPending = false;
let chartSteps = 0;

/** Redraws the loss chart (at most once per frame). */
export function drawChart(steps: number): void {
  chartSteps = steps;
  if (chartPending) return;
  chartPending = true;
  requestAnimationFrame(() => {
    chartPending = false;
    tui.chart.innerHTML = lineChartSvg([
      { name: "training loss", points: curves.train },
      { name: "validation (estimate)", points: curves.val, markers: true },
    ], { title: "loss (nats per character)", width: 720, height: 260, xMax: chartSteps });
  });
}

/** Seconds as m:ss (or h:mm:ss). */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}
