/// <reference lib="dom" />
/**
 * The training panel's event handlers: the text (typed, a file, Tiny Shakespeare), the model
 * file, the size presets, the threads, and the run's buttons (train, pause, stop, download, and
 * continue or discard an interrupted run). The actions are `train.ts`'s.
 *
 * @module
 */

import {
  chooseFile,
  chooseWeights,
  continueSaved,
  discardSaved,
  download,
  offerSaved,
  startFromForm,
  stopRun,
  textEdited,
  togglePause,
  type TrainHooks,
  useText,
} from "./train.ts";
import {
  applyPreset,
  setTrainState,
  shapeFieldsEnabled,
  trainError,
  trainStatus,
  tui,
} from "./train_ui.ts";
import { decodeCorpus } from "../mod.ts";

/** Tiny Shakespeare, where the page is served from a checkout that has it (`deno task data`). */
const SHAKESPEARE = "data/tinyshakespeare.txt";
const SHAKESPEARE_URL = new URL(`../${SHAKESPEARE}`, location.href);

/** Adds the panel's listeners and fills its defaults. */
export function listenTraining(hooks: TrainHooks): void {
  applyPreset(tui.size.value);
  tui.size.addEventListener("change", () => {
    applyPreset(tui.size.value);
    shapeFieldsEnabled(tui.size.value !== "finetune");
  });
  for (const f of [tui.dModel, tui.layers, tui.heads, tui.block]) {
    f.addEventListener("input", () => (tui.size.value = "custom"));
  }
  const cores = navigator.hardwareConcurrency || 1;
  if (crossOriginIsolated) {
    tui.threads.value = String(cores);
    tui.threads.max = String(cores);
    tui.threadsNote.textContent = `of ${cores} cores`;
  } else {
    tui.threads.value = "1";
    tui.threads.disabled = true;
    tui.threadsNote.textContent = "one: not cross-origin isolated";
    tui.threads.title =
      "This page is not cross-origin isolated (served without COOP/COEP headers), so it has no shared memory for worker threads: it trains on one thread. deno task serve sends the headers.";
  }

  tui.text.addEventListener("input", textEdited);
  tui.file.addEventListener("change", () => {
    const file = tui.file.files?.[0];
    if (file !== undefined) chooseFile(file);
  });
  tui.weights.addEventListener("change", () => {
    const file = tui.weights.files?.[0];
    if (file !== undefined) chooseWeights(file, hooks);
  });
  tui.shakespeare.addEventListener("click", async () => {
    trainError(null);
    try {
      const response = await fetch(SHAKESPEARE_URL);
      if (!response.ok) throw new Error(`could not fetch ${SHAKESPEARE} (HTTP ${response.status})`);
      const bytes = new Uint8Array(await response.arrayBuffer());
      useText(SHAKESPEARE, decodeCorpus(bytes, SHAKESPEARE));
    } catch (e) {
      trainError((e as Error).message);
    }
  });
  fetch(SHAKESPEARE_URL, { method: "HEAD" })
    .then((r) => (tui.shakespeare.hidden = !r.ok))
    .catch(() => {});

  tui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    startFromForm(hooks);
  });
  tui.pause.addEventListener("click", togglePause);
  tui.stop.addEventListener("click", stopRun);
  tui.download.addEventListener("click", download);
  tui.continue.addEventListener("click", () => continueSaved(hooks));
  tui.discard.addEventListener("click", () => {
    discardSaved();
    trainStatus("The interrupted run was discarded.");
  });
  offerSaved();
  setTrainState("idle");
}
