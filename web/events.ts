/// <reference lib="dom" />
/**
 * The page's event handlers: the form (generate, stop, the layer shown, the kernel tier), the
 * selection in the text (hover, click to pin, the arrow keys), and the tooltips of the heatmaps
 * and the attention strip. The actions that load and generate come from `app.ts`, which calls
 * {@linkcode listen} once.
 *
 * @module
 */

import { page, showError, ui } from "./state.ts";
import {
  clearViews,
  heatmapTooltip,
  hideTooltip,
  refreshView,
  selected,
  showPosition,
  stripTooltip,
} from "./views.ts";

/** What the events start: a generation, and loading the model on the chosen tier. */
export interface Actions {
  generate(): Promise<void>;
  setup(): Promise<void>;
}

function positionOf(target: EventTarget | null): number | null {
  const el = target as HTMLElement | null;
  if (el === null || el.tagName !== "SPAN" || el.dataset.i === undefined) return null;
  return Number(el.dataset.i);
}

/** Adds the page's event listeners. */
export function listen(actions: Actions): void {
  ui.temperature.addEventListener("input", () => {
    ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
  });
  ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    actions.generate();
  });
  ui.stop.addEventListener("click", () => {
    page.stopRequested = true;
  });
  ui.layer.addEventListener("change", () => {
    if (!page.running) refreshView();
  });
  ui.tier.addEventListener("change", async () => {
    ui.generate.disabled = ui.tier.disabled = true;
    try {
      await actions.setup();
      page.text = [];
      page.steps = [];
      page.spans = [];
      ui.output.replaceChildren();
      clearViews();
      ui.generate.disabled = false;
    } catch (e) {
      ui.status.textContent = `no model loaded (kernels: ${ui.tier.value})`;
      showError((e as Error).message);
      ui.generate.disabled = true;
    } finally {
      ui.tier.disabled = false;
    }
  });

  ui.output.addEventListener("mouseover", (event) => {
    const p = positionOf(event.target);
    if (p === null) return;
    page.hovered = p;
    showPosition(p);
  });
  ui.output.addEventListener("mouseleave", () => {
    page.hovered = null;
    showPosition(selected());
  });
  ui.output.addEventListener("click", (event) => {
    const p = positionOf(event.target);
    page.pinned = p === null || p === page.pinned ? null : p;
    showPosition(selected());
  });
  ui.output.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    event.preventDefault();
    const p = selected() + (event.key === "ArrowLeft" ? -1 : 1);
    if (p < 0 || p >= page.text.length) return;
    page.pinned = p;
    page.hovered = null;
    showPosition(p);
    page.spans[p]?.scrollIntoView({ block: "nearest" });
  });

  ui.heatmaps.addEventListener("mousemove", heatmapTooltip);
  ui.heatmaps.addEventListener("mouseleave", hideTooltip);
  ui.strip.addEventListener("mousemove", stripTooltip);
  ui.strip.addEventListener("mouseleave", hideTooltip);
}
