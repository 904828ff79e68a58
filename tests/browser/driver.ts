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
// JSON line on stdout (see Report). Screenshots go where the job says.

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
   * "js+best" only js and the best one.
   */
  tiers: string[] | "best" | "js+best";
  /** Character position to hover after generating. */
  hover: number;
  /** Folder for the screenshots (<name>-<tier>.png). */
  screenshots: string;
  /** Screenshot file name prefix (default "browser"). */
  name?: string;
  /** Viewport (default 1280 x 900) and whether to capture the full page (default true). */
  viewport?: { width: number; height: number };
  fullPage?: boolean;
}

/** What the page showed, per tier. */
export interface TierResult {
  tier: string;
  errors: string[];
  ready: { state?: string; tier?: string; status?: string; isolated?: boolean };
  state?: string;
  status?: string;
  text?: string;
  window?: number;
  heads?: number[];
  rects?: number;
  candidates?: number;
  marked?: number;
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
      : job.tiers;
    const results: TierResult[] = [];
    for (const tier of tiers) {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on("pageerror", (e: Error) => errors.push(e.message));
      const query = new URLSearchParams({ ...job.query, tier });
      await page.goto(`${job.page}?${query}`);
      await page.waitForFunction(`["ready", "error"].includes(document.body.dataset.state)`, null, {
        timeout: 20000,
      });
      const ready = await page.evaluate(`({
        state: document.body.dataset.state,
        tier: document.body.dataset.tier,
        status: document.getElementById("status").textContent,
        isolated: crossOriginIsolated,
      })`) as TierResult["ready"];
      const screenshot = `${job.screenshots}/${job.name ?? "browser"}-${tier}.png`;
      if (ready.state !== "ready") {
        results.push({ tier, errors, ready, screenshot });
        await page.close();
        continue;
      }
      await page.click("#generate");
      await page.waitForFunction(`["done", "error"].includes(document.body.dataset.state)`, null, {
        timeout: 30000,
      });
      const shown = await page.evaluate(`({
        state: document.body.dataset.state,
        status: document.getElementById("status").textContent,
        text: document.getElementById("output").textContent,
        window: Number(document.getElementById("heatmaps").dataset.window),
        heads: [...document.querySelectorAll("#heatmaps svg g.head")]
          .map((g) => g.querySelectorAll("g.cells rect").length),
        rects: document.querySelectorAll("#heatmaps svg rect").length,
        candidates: document.querySelectorAll("#candidates tbody tr").length,
      })`) as Omit<TierResult, "tier" | "errors" | "ready" | "screenshot">;
      // hovering a character shows its candidates and marks its query's row in every heatmap
      let marked = 0;
      const span = page.locator(`#output span[data-i="${job.hover}"]`);
      if (await span.count() === 1) {
        await span.hover();
        marked = await page.evaluate(
          `[...document.querySelectorAll("#heatmaps .row-mark")].filter((m) => m.getAttribute("d")).length`,
        );
      }
      await page.screenshot({ path: screenshot, fullPage: job.fullPage ?? true });
      results.push({ tier, errors, ready, ...shown, marked, screenshot });
      await page.close();
    }
    return { best, isolated, sharedArrayBuffer, results };
  } finally {
    await browser.close();
  }
}

if (import.meta.main) {
  const job = JSON.parse(Deno.args[0]) as Job;
  const report = await drive(job);
  console.log(JSON.stringify(report));
}
