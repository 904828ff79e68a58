// Drives the browser page in headless Chromium with playwright-core, for tests/browser_test.ts,
// and for the README's screenshot: with `deno task serve` running,
//   deno run -A tests/browser/driver.ts '{"chromium": "/usr/bin/chromium", "args": ["--headless",
//     "--no-sandbox"], "page": "http://127.0.0.1:8000/web/", "query": {"prompt": "ROMEO:\nBut
//     soft, what light", "tokens": "110", "temperature": "0.8", "seed": "3", "layer": "0"},
//     "tiers": ["simd"], "hover": 120, "screenshots": "docs", "name": "page",
//     "viewport": {"width": 1280, "height": 1180}, "fullPage": false}'
// writes docs/page-simd.png.
// It runs as its own process with -A: playwright reads /proc paths that Deno grants only with
// --allow-all, which the test task does not give. Input: one JSON argument (see Job); output: one
// JSON line on stdout (see Report). Screenshots go where the job says. A job may also list
// variants of the query (see Variant): each runs at every tier, for the page's URL options.

// deno-lint-ignore no-import-prefix
import { chromium } from "npm:playwright-core@1.65.1";

/** What to do. */
export interface Job {
  chromium: string;
  args: string[];
  /** The page's URL without a query, e.g. http://127.0.0.1:8123/web/ */
  page: string;
  /** Query parameters common to every run (weights, prompt, tokens, temperature). */
  query: Record<string, string>;
  /**
   * Kernel tiers to run: "best" runs every tier the browser supports (js up to the best one),
   * "js+best" only js and the best one; in a list, "best" names the best one.
   */
  tiers: string[] | "best" | "js+best";
  /** Character position to hover after generating. */
  hover: number;
  /**
   * A position to hover then too, for its attention strip (one before the heatmaps' window shows
   * the attention recorded at generation time).
   */
  hoverStrip?: number;
  /** Folder for the screenshots (<name>-<tier>.png, or <name>-<variant>-<tier>.png). */
  screenshots: string;
  /** Screenshot file name prefix (default "browser"). */
  name?: string;
  /** Viewport (default 1280 x 900) and whether to capture the full page (default true). */
  viewport?: { width: number; height: number };
  fullPage?: boolean;
  /** Runs with other queries (default: one run with `query` alone). */
  variants?: Variant[];
}

/** One run's query, added to the job's. */
export interface Variant {
  /** Names the run in its results and its screenshot. */
  label: string;
  /** Query parameters added to (or replacing) the job's. */
  query: Record<string, string>;
  /**
   * The page generates by itself (?autostart=1): the driver never clicks Generate, and waits for
   * the run to end (a page that does not start is reported in the state it stays in).
   */
  autostart?: boolean;
  /** A tier to choose in the menu when the page fails to load at the job's (then go on). */
  fallback?: string;
}

/** What the page showed, per tier. */
export interface TierResult {
  tier: string;
  /** The variant's label (absent without variants). */
  label?: string;
  errors: string[];
  ready: {
    state?: string;
    tier?: string;
    status?: string;
    isolated?: boolean;
    /** The error line (#error), "" when hidden. */
    error?: string;
  };
  /** Whether the driver clicked Generate (never for an autostart variant). */
  clicked?: boolean;
  state?: string;
  status?: string;
  /** The error line (#error) after the run, "" when hidden. */
  error?: string;
  text?: string;
  window?: number;
  heads?: number[];
  rects?: number;
  candidates?: number;
  marked?: number;
  /** The smallest font-size attribute of the heatmaps' axis labels (SVG pixels). */
  labelFont?: number;
  /** The heatmap SVG's drawn width over its own width (1: drawn at its size, not shrunk). */
  svgScale?: number;
  /** The attention strip at `hoverStrip`: its caption and the canvas's width. */
  strip?: { caption: string; width: number };
  /** With a fallback: the page's state, status and error line when it failed to load. */
  failed?: TierResult["ready"];
  screenshot: string;
}

/** The driver's answer. */
export interface Report {
  /** The best tier the page offers (with shared memory only when it is cross-origin isolated). */
  best: string;
  /** The page's `crossOriginIsolated`, and whether it has SharedArrayBuffer. */
  isolated: boolean;
  sharedArrayBuffer: boolean;
  results: TierResult[];
}

const RANKS = ["js", "simd", "relaxed"];

/** The error line's text ("" when hidden), as an expression for page.evaluate. */
const SHOWN_ERROR = `(document.getElementById("error")?.hidden === false
  ? document.getElementById("error").textContent : "")`;

async function drive(job: Job): Promise<Report> {
  const browser = await chromium.launch({
    executablePath: job.chromium,
    args: job.args,
    headless: true,
    timeout: 30000,
  });
  try {
    const context = await browser.newContext({
      viewport: job.viewport ?? { width: 1280, height: 900 },
    });
    const probe = await context.newPage();
    await probe.goto(`${job.page}?weights=none`);
    // the page reports the best tier this browser runs (with shared memory when the page is
    // cross-origin isolated, as scripts/serve.ts makes it unless told not to)
    await probe.waitForFunction("document.body.dataset.best !== undefined");
    const { best, isolated, sharedArrayBuffer } = await probe.evaluate(`({
      best: document.body.dataset.best,
      isolated: crossOriginIsolated,
      sharedArrayBuffer: typeof SharedArrayBuffer !== "undefined",
    })`) as Omit<Report, "results">;
    await probe.close();
    const tiers = job.tiers === "best"
      ? RANKS.slice(0, RANKS.indexOf(best) + 1)
      : job.tiers === "js+best"
      ? [...new Set(["js", best])]
      : [...new Set(job.tiers.map((t) => t === "best" ? best : t))];
    const results: TierResult[] = [];
    for (const variant of job.variants ?? [undefined]) {
      for (const tier of tiers) results.push(await runPage(job, context, tier, variant));
    }
    return { best, isolated, sharedArrayBuffer, results };
  } finally {
    await browser.close();
  }
}

type Context = Awaited<ReturnType<Awaited<ReturnType<typeof chromium.launch>>["newContext"]>>;

/** Waits until the page's state is one of `states`; false when it timed out. */
async function waitState(
  page: Awaited<ReturnType<Context["newPage"]>>,
  states: string[],
  timeout: number,
): Promise<boolean> {
  try {
    await page.waitForFunction(
      `${JSON.stringify(states)}.includes(document.body.dataset.state)`,
      null,
      { timeout },
    );
    return true;
  } catch (e) {
    if ((e as Error).name === "TimeoutError") return false;
    throw e;
  }
}

/** Loads the page at a tier (with a variant's query), generates, and reports what it showed. */
async function runPage(
  job: Job,
  context: Context,
  tier: string,
  variant: Variant | undefined,
): Promise<TierResult> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e: Error) => errors.push(e.message));
  const query = new URLSearchParams({ ...job.query, ...variant?.query, tier });
  const label = variant?.label;
  const autostart = variant?.autostart ?? false;
  await page.goto(`${job.page}?${query}`);
  // an autostarted page may be running (or done) by the time the driver looks
  await waitState(
    page,
    autostart ? ["ready", "running", "done", "error"] : ["ready", "error"],
    20000,
  );
  const ready = await page.evaluate(`({
    state: document.body.dataset.state,
    tier: document.body.dataset.tier,
    status: document.getElementById("status").textContent,
    isolated: crossOriginIsolated,
    error: ${SHOWN_ERROR},
  })`) as TierResult["ready"];
  const screenshot = `${job.screenshots}/${job.name ?? "browser"}-${
    label === undefined ? "" : `${label}-`
  }${tier}.png`;
  const loaded = ready.state === "ready" ||
    (autostart && (ready.state === "running" || ready.state === "done"));
  if (!loaded && variant?.fallback === undefined) {
    await page.screenshot({ path: screenshot, fullPage: job.fullPage ?? true });
    await page.close();
    return { tier, label, errors, ready, screenshot };
  }
  let failed: TierResult["ready"] | undefined;
  if (!loaded) {
    // the page stays usable: another tier from the menu loads, and generates
    failed = { ...ready };
    await page.selectOption("#tier", variant!.fallback!);
    await page.waitForFunction(
      `document.body.dataset.tier === ${JSON.stringify(variant!.fallback)}
      && document.body.dataset.state === "ready"`,
      null,
      { timeout: 20000 },
    ).catch(() => {});
    Object.assign(
      ready,
      await page.evaluate(`({
      state: document.body.dataset.state,
      tier: document.body.dataset.tier,
      status: document.getElementById("status").textContent,
      error: ${SHOWN_ERROR},
    })`),
    );
  }
  if (!autostart) await page.click("#generate");
  await waitState(page, ["done", "error"], 60000);
  const shown = await page.evaluate(`({
    state: document.body.dataset.state,
    status: document.getElementById("status").textContent,
    error: ${SHOWN_ERROR},
    text: document.getElementById("output").textContent,
    window: Number(document.getElementById("heatmaps").dataset.window),
    heads: [...document.querySelectorAll("#heatmaps svg g.head")]
      .map((g) => g.querySelectorAll("g.cells rect").length),
    rects: document.querySelectorAll("#heatmaps svg rect").length,
    candidates: document.querySelectorAll("#candidates tbody tr").length,
    labelFont: Math.min(...[...document.querySelectorAll("#heatmaps svg g.head g[font-size]")]
      .filter((g) => g.querySelector("text") !== null)
      .map((g) => Number(g.getAttribute("font-size")))),
    svgScale: (() => {
      const svg = document.querySelector("#heatmaps svg");
      return svg ? svg.getBoundingClientRect().width / svg.width.baseVal.value : 0;
    })(),
  })`) as Omit<TierResult, "tier" | "errors" | "ready" | "screenshot">;
  if (shown.labelFont === Infinity) delete shown.labelFont;
  // hovering a character shows its candidates and marks its query's row in every heatmap
  let marked = 0;
  const span = page.locator(`#output span[data-i="${job.hover}"]`);
  if (await span.count() === 1) {
    await span.hover();
    marked = await page.evaluate(
      `[...document.querySelectorAll("#heatmaps .row-mark")].filter((m) => m.getAttribute("d")).length`,
    );
  }
  let strip: TierResult["strip"];
  const early = page.locator(`#output span[data-i="${job.hoverStrip}"]`);
  if (job.hoverStrip !== undefined && await early.count() === 1) {
    await early.hover();
    strip = await page.evaluate(`({
      caption: document.getElementById("strip-caption").textContent,
      width: document.getElementById("strip").width,
    })`) as TierResult["strip"];
  }
  await page.screenshot({ path: screenshot, fullPage: job.fullPage ?? true });
  await page.close();
  return {
    tier,
    label,
    errors,
    ready,
    ...(failed === undefined ? {} : { failed }),
    clicked: !autostart,
    ...shown,
    marked,
    strip,
    screenshot,
  };
}

if (import.meta.main) {
  const job = JSON.parse(Deno.args[0]) as Job;
  const report = await drive(job);
  console.log(JSON.stringify(report));
}
