// Drives the page's training panel in headless Chromium with playwright-core, for
// tests/browser_train_test.ts, the README's screenshot and `deno task bench:page`. It runs as its
// own process with -A (playwright reads /proc paths that Deno grants only with --allow-all).
// Input: one JSON argument (a TrainJob); output: one JSON line on stdout (a TrainReport).
//
// Scenarios, each on a fresh page of one browser context (OPFS is kept across a reload):
//   train    fill the panel, train, save the download where the job says
//   reload   the same, but reload the page right after the checkpoint at `reloadAt` is written,
//            then continue the interrupted run from the offer and save its download
//   badfile  choose a text file with the given bytes and report the error line
//   pause    start, pause (the step must not move), resume, then stop

// deno-lint-ignore no-import-prefix
import { chromium } from "npm:playwright-core@1.65.1";
import { Buffer } from "node:buffer";

/** One scenario. */
export interface Scenario {
  kind: "train" | "reload" | "badfile" | "pause";
  /** Field values by element id (train-text, train-steps, ...); train-size is selected first. */
  fields?: Record<string, string>;
  /** Click Tiny Shakespeare first (the page must offer it: data/ is served). */
  shakespeare?: boolean;
  /** A model file to choose first (fine-tuning it). */
  weights?: string;
  /** Where to save the downloaded weights. */
  downloadTo?: string;
  /** reload: the checkpoint step after which the page reloads. */
  reloadAt?: number;
  /** badfile: the file's name and bytes. */
  file?: { name: string; bytes: number[] };
  /** A screenshot of the page when the run is over. */
  screenshot?: string;
  /** How long a run may take, in ms (default 120 s). */
  timeout?: number;
}

/** What to do. */
export interface TrainJob {
  chromium: string;
  args: string[];
  /** The page's URL, with any query. */
  page: string;
  scenarios: Scenario[];
  viewport?: { width: number; height: number };
}

/** What a scenario showed. */
export interface ScenarioResult {
  kind: string;
  errors: string[];
  isolated: boolean;
  /** data-train at the end, the status and error lines. */
  state: string;
  status: string;
  error: string;
  /** The status line seen while running (it must not say done). */
  runningStatus?: string;
  /** Every step's training loss, and each step's time in ms. */
  losses?: number[];
  stepMs?: number[];
  /** reload: what the offer said after the reload, and the step the reload followed. */
  offer?: string;
  reloadedAfter?: number;
  downloaded?: string;
  downloadName?: string;
  /** Characters in the page's text pane (the samples of the model as it trains). */
  sampled?: number;
  /** The size menu after choosing a model file. */
  size?: string;
  /** pause: the step when paused, and a while later. */
  pausedAt?: number;
  pausedLater?: number;
}

const SHOWN_ERROR = `(document.getElementById("train-error").hidden
  ? "" : document.getElementById("train-error").textContent)`;

type Page = Awaited<
  ReturnType<
    Awaited<ReturnType<Awaited<ReturnType<typeof chromium.launch>>["newContext"]>>["newPage"]
  >
>;

/** Fills the panel: the size first (it sets the shape and steps), then every other field. */
async function fill(page: Page, fields: Record<string, string>): Promise<void> {
  if (fields["train-size"] !== undefined) {
    await page.selectOption("#train-size", fields["train-size"]);
  }
  for (const [id, value] of Object.entries(fields)) {
    if (id === "train-size") continue;
    await page.fill(`#${id}`, value);
  }
}

async function state(page: Page): Promise<Omit<ScenarioResult, "kind" | "errors">> {
  return await page.evaluate(`({
    isolated: crossOriginIsolated,
    state: document.body.dataset.train,
    status: document.getElementById("train-status").textContent,
    error: ${SHOWN_ERROR},
    losses: (globalThis.baregptTraining?.curves.train ?? []).map((p) => p.y),
    stepMs: globalThis.baregptTraining?.stepMs ?? [],
    sampled: document.getElementById("output").textContent.length,
  })`) as Omit<ScenarioResult, "kind" | "errors">;
}

/** Waits for the run to end (done, stopped or an error). */
async function runEnds(page: Page, timeout: number): Promise<void> {
  await page.waitForFunction(
    `["done", "stopped", "error"].includes(document.body.dataset.train)`,
    null,
    { timeout, polling: 100 },
  );
}

async function saveDownload(page: Page, to: string): Promise<{ path: string; name: string }> {
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click("#train-download"),
  ]);
  await download.saveAs(to);
  return { path: to, name: download.suggestedFilename() };
}

async function scenario(
  context: Awaited<ReturnType<Awaited<ReturnType<typeof chromium.launch>>["newContext"]>>,
  job: TrainJob,
  s: Scenario,
): Promise<ScenarioResult> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e: Error) => errors.push(e.message));
  const timeout = s.timeout ?? 120_000;
  await page.goto(job.page);
  await page.waitForFunction(`document.body.dataset.train === "idle"`, null, { timeout: 20000 });
  const result: ScenarioResult = { kind: s.kind, errors, ...(await state(page)) };
  if (s.kind === "badfile") {
    await page.setInputFiles("#train-file", {
      name: s.file!.name,
      mimeType: "text/plain",
      buffer: Buffer.from(s.file!.bytes),
    });
    await page.waitForFunction(`${SHOWN_ERROR} !== ""`, null, { timeout: 10000 });
    Object.assign(result, await state(page));
    await page.close();
    return result;
  }
  if (s.shakespeare) {
    await page.waitForSelector("#train-shakespeare:not([hidden])", { timeout: 10000 });
    await page.click("#train-shakespeare");
    await page.waitForFunction(`document.getElementById("train-text").value.length > 1000`);
  }
  if (s.weights !== undefined) {
    await page.setInputFiles("#train-weights", s.weights);
    await page.waitForFunction(`document.getElementById("train-size").value === "finetune"`);
    result.size = "finetune";
  }
  await fill(page, s.fields ?? {});
  if (s.kind === "pause") {
    const step = `Number(document.body.dataset.trainStep ?? 0)`;
    await page.click("#train-start");
    await page.waitForFunction(`${step} >= 5`, null, { timeout });
    await page.click("#train-pause");
    await page.waitForFunction(`document.body.dataset.train === "paused"`, null, { timeout });
    result.pausedAt = await page.evaluate(step) as number;
    await page.waitForTimeout(500);
    result.pausedLater = await page.evaluate(step) as number;
    await page.click("#train-pause");
    await page.waitForFunction(`document.body.dataset.train === "running"`, null, { timeout });
    await page.click("#train-stop");
    await runEnds(page, timeout);
    Object.assign(result, await state(page));
    await page.close();
    return result;
  }
  if (s.kind === "reload") {
    // reload as soon as the checkpoint at reloadAt is written: the run is going on
    const reloaded = page.waitForEvent("load", { timeout });
    await page.evaluate(`(() => {
      const at = ${s.reloadAt ?? 10};
      new MutationObserver(() => {
        if (Number(document.body.dataset.trainCheckpoint ?? 0) >= at) location.reload();
      }).observe(document.body, { attributes: true, attributeFilter: ["data-train-checkpoint"] });
    })()`);
    await page.click("#train-start");
    await page.waitForFunction(`document.body.dataset.train === "running"`, null, { timeout });
    result.runningStatus = (await state(page)).status;
    await reloaded;
    result.reloadedAfter = s.reloadAt;
    await page.waitForFunction(
      `document.body.dataset.train === "idle" && !document.getElementById("train-offer").hidden`,
      null,
      { timeout: 20000 },
    );
    result.offer = await page.evaluate(`document.getElementById("train-offer-text").textContent`);
    await page.click("#train-continue");
  } else {
    await page.click("#train-start");
    await page.waitForFunction(`document.body.dataset.train !== "idle"`, null, { timeout });
    result.runningStatus = (await state(page)).status;
  }
  await runEnds(page, timeout);
  Object.assign(result, await state(page));
  if (s.downloadTo !== undefined && result.state === "done") {
    const d = await saveDownload(page, s.downloadTo);
    result.downloaded = d.path;
    result.downloadName = d.name;
  }
  if (s.screenshot !== undefined) await page.screenshot({ path: s.screenshot, fullPage: false });
  await page.close();
  return result;
}

async function drive(job: TrainJob): Promise<ScenarioResult[]> {
  const browser = await chromium.launch({
    executablePath: job.chromium,
    args: job.args,
    headless: true,
    timeout: 30000,
  });
  try {
    const context = await browser.newContext({
      viewport: job.viewport ?? { width: 1280, height: 900 },
      acceptDownloads: true,
    });
    const results: ScenarioResult[] = [];
    for (const s of job.scenarios) results.push(await scenario(context, job, s));
    return results;
  } finally {
    await browser.close();
  }
}

if (import.meta.main) {
  const job = JSON.parse(Deno.args[0]) as TrainJob;
  console.log(JSON.stringify(await drive(job)));
}
