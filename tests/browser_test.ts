// The browser page end to end, in headless Chromium driven by playwright-core (in a separate
// Deno process, tests/browser/driver.ts): build the bundle,
// serve the repository, load the page with a small trained model at a forced kernel tier,
// generate greedy text, and check that it equals the CLI's greedy text for the same prompt and
// tier, and that every head's heatmap has one cell per visible position pair. A screenshot per
// tier is saved in test-artifacts/. The page is loaded twice: cross-origin isolated (as
// `deno task serve` serves it: shared WebAssembly memory, every tier the browser supports), and
// served without the COOP/COEP headers, so not isolated (no SharedArrayBuffer: the library sizes a
// plain memory for the model), at js and the best tier it offers there.
//
// A third test checks the page's URL options and errors with the shipped model (block 128):
// ?weights= from the repository root, ?autostart=1 (and the older ?autorun=1) streaming without a
// click, an unknown prompt character shown in the error line while the status line keeps the
// model, a missing model named from the root, and heatmap labels legible (>= 8 px) at a
// 128-character window.
//
// On WebGPU (Chromium's SwiftShader adapter, with --enable-unsafe-webgpu): the page at
// ?tier=webgpu generates 100 greedy characters of the small model on the GPU that agree with the
// CLI's CPU text for at least 80 of them, with candidates, the attention strip recorded on the
// GPU and the heatmaps; without the flag (no adapter) choosing webgpu shows the library's
// one-line error, and the page then loads and generates on another tier.
//
// Chromium: $CHROMIUM_PATH, else /usr/bin/chromium (Debian's `chromium` package). Without it the
// test is skipped with a printed reason, except with CI=true, where it fails.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { handle, resolvePath, startServer } from "../scripts/serve.ts";
import type { Job, Report } from "./browser/driver.ts";
import { playCorpus } from "./fixtures.ts";
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  CHROMIUM_WEBGPU_ARGS,
  chromiumPresent,
  CI,
  runDeno,
} from "./browser/chromium.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const ARTIFACTS = `${ROOT}test-artifacts/`;
const CLI = `${ROOT}cli.ts`;
const DRIVER = `${ROOT}tests/browser/driver.ts`;

const PROMPT = "ROMEO:\nO my";
const TOKENS = 60;
/** The small model's shape: block 32 < prompt + generated, so the window slides. */
const MODEL = ["--d-model", "32", "--layers", "2", "--heads", "2", "--block", "32"];
const HEADS = 2, BLOCK = 32;

const present = await chromiumPresent("browser test");

/** Bundles the page and trains the small model, once for both tests; returns the weights. */
let prepared: Promise<string> | undefined;
function prepare(): Promise<string> {
  return prepared ??= (async () => {
    const dir = `${ARTIFACTS}browser/`;
    await Deno.mkdir(dir, { recursive: true });
    const weights = `${dir}model.safetensors`;
    const data = `${dir}corpus.txt`;
    await Deno.writeTextFile(data, playCorpus());

    // the bundle (as `deno task bundle` builds it) and a small model, in parallel
    await Promise.all([
      runDeno([
        "run",
        "--quiet",
        "--unstable-bundle",
        "--allow-read=.",
        "--allow-write=web/dist",
        "scripts/bundle.ts",
      ], "bundling"),
      runDeno([
        "run",
        "--quiet",
        "-A",
        CLI,
        "train",
        "--data",
        data,
        "--out",
        weights,
        "--force",
        "--steps",
        "80",
        "--batch",
        "8",
        "--lr",
        "0.01",
        "--eval-every",
        "0",
        "--threads",
        "1",
        ...MODEL,
      ], "training"),
    ]);
    return weights;
  })();
}

/** The CLI's greedy text at a kernel tier (once per tier and length). */
const cliTexts = new Map<string, Promise<string>>();
function cliText(weights: string, tier: string, tokens = TOKENS): Promise<string> {
  let text = cliTexts.get(`${tier} ${tokens}`);
  if (text === undefined) {
    text = runDeno([
      "run",
      "--quiet",
      `--allow-read=${ROOT}`,
      CLI,
      "sample",
      "--weights",
      weights,
      "--prompt",
      PROMPT,
      "--tokens",
      String(tokens),
      "--temperature",
      "0",
      "--seed",
      "0",
      "--kernels",
      tier,
    ], `cli sample --kernels ${tier}`).then((out) => out.replace(/\n$/, ""));
    cliTexts.set(`${tier} ${tokens}`, text);
  }
  return text;
}

/** The driver's job for the small model's page on `port`: `tokens` greedy characters after PROMPT. */
function smallModelJob(port: number, tiers: Job["tiers"], name: string, tokens = TOKENS): Job {
  return {
    chromium: CHROMIUM,
    args: CHROMIUM_ARGS,
    page: `http://127.0.0.1:${port}/web/`,
    query: {
      // ?weights= is a path from the repository root (the site root under scripts/serve.ts)
      weights: "test-artifacts/browser/model.safetensors",
      prompt: PROMPT,
      tokens: String(tokens),
      temperature: "0",
    },
    tiers,
    hover: [...PROMPT].length + tokens - 5,
    screenshots: ARTIFACTS.replace(/\/$/, ""),
    name,
  };
}

/** Runs the page driver on a job; its report. */
async function driveJob(job: Job): Promise<Report> {
  // playwright reads /proc paths that Deno grants only with -A, so the driver is a process
  const out = await runDeno(["run", "--quiet", "-A", DRIVER, JSON.stringify(job)], "the driver");
  return JSON.parse(out.trim().split("\n").at(-1)!) as Report;
}

/**
 * Serves the repository (cross-origin isolated or not), drives the page at `tiers`, and checks
 * that each tier's greedy text equals the CLI's and that the heatmaps are drawn.
 */
async function checkPage(isolated: boolean, tiers: Job["tiers"], name: string): Promise<Report> {
  const weights = await prepare();
  const server = startServer({ port: 0, isolated });
  let report: Report;
  try {
    report = await driveJob(smallModelJob(server.addr.port, tiers, name));
  } finally {
    await server.shutdown();
  }
  console.log(
    `browser test (${isolated ? "" : "not "}cross-origin isolated): Chromium runs kernel tiers ${
      report.results.map((r) => r.tier).join(", ")
    } (best ${report.best})`,
  );
  assertEquals(report.isolated, isolated);
  assert(report.results.length > 0 && report.results[0].tier === "js");

  for (const r of report.results) {
    const tier = r.tier;
    const expected = await cliText(weights, tier);
    assertEquals([...expected].length, [...PROMPT].length + TOKENS);

    assertEquals(r.ready.state, "ready", r.ready.status);
    assertEquals(r.ready.tier, tier);
    assertEquals(r.ready.isolated, isolated);
    assert(
      r.ready.status?.includes(isolated ? " · cross-origin isolated" : "not cross-origin isolated"),
      r.ready.status,
    );
    assertEquals(r.state, "done", r.status);
    assertEquals(r.errors, []);
    assertEquals(r.text, expected, `page and CLI differ at tier ${tier}`);
    const n = Math.min([...expected].length, BLOCK);
    assertEquals(r.window, n);
    assertEquals(r.heads, Array(HEADS).fill(n * (n + 1) / 2));
    assertEquals(r.rects, HEADS * n * (n + 1) / 2);
    assert((r.candidates ?? 0) > 0, "no candidates shown");
    assertEquals(r.marked, HEADS);
    assert((await Deno.stat(r.screenshot)).size > 10000, `screenshot ${r.screenshot}`);
  }
  return report;
}

Deno.test({
  name: "browser page: greedy text equals the CLI's at each kernel tier; heatmaps drawn",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!present) throw new Error(`Chromium not found at ${CHROMIUM} and CI=true`);
    const report = await checkPage(true, "best", "browser");
    assert(report.sharedArrayBuffer, "a cross-origin isolated page has SharedArrayBuffer");
  },
});

Deno.test({
  name: "browser page, not cross-origin isolated (plain memory): greedy text equals the CLI's",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!present) throw new Error(`Chromium not found at ${CHROMIUM} and CI=true`);
    // without COOP/COEP there is no SharedArrayBuffer: the kernels get a plain memory that the
    // library sizes for the model (selectKernels(tier, { shared: false }))
    const report = await checkPage(false, "js+best", "browser-plain");
    assert(!report.sharedArrayBuffer, "a page that is not isolated has no SharedArrayBuffer");
    assert(report.best !== "js", `no WebAssembly tier without isolation (best: ${report.best})`);
    assertEquals(report.results.map((r) => r.tier), ["js", report.best]);
  },
});

Deno.test({
  name:
    "browser page on webgpu (SwiftShader): greedy text agrees with the CLI's, candidates, strip and heatmaps; without an adapter, one line and the page goes on",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!present) throw new Error(`Chromium not found at ${CHROMIUM} and CI=true`);
    const weights = await prepare();
    const tokens = 100, promptLength = [...PROMPT].length;
    const server = startServer({ port: 0, isolated: true });
    let gpu: Report, none: Report;
    try {
      const job: Job = {
        ...smallModelJob(server.addr.port, ["webgpu"], "browser-webgpu", tokens),
        args: CHROMIUM_WEBGPU_ARGS,
        // before the heatmaps' window: the strip shows the attention read back from the GPU
        hoverStrip: promptLength + 10,
      };
      // SwiftShader, then no adapter at all (the flag left out), falling back to js
      [gpu, none] = await Promise.all([
        driveJob(job),
        driveJob({
          ...job,
          args: CHROMIUM_ARGS,
          query: { ...job.query, tokens: "8" },
          name: "browser-noadapter",
          variants: [{ label: "fallback", query: {}, fallback: "js" }],
        }),
      ]);
    } finally {
      await server.shutdown();
    }
    const [r] = gpu.results;
    assertEquals(r.errors, []);
    assertEquals([r.ready.state, r.ready.tier], ["ready", "webgpu"], r.ready.error);
    assert(
      /kernels: webgpu \(.+, software adapter, subgroups\)/.test(r.ready.status ?? ""),
      r.ready.status,
    );
    assertEquals(r.state, "done", `${r.status} ${r.error}`);
    assert(/characters in .* s \(\d+\/s\)/.test(r.status ?? ""), r.status);
    const want = [...await cliText(weights, "relaxed", tokens)].slice(promptLength);
    const got = [...r.text!].slice(promptLength);
    assertEquals(got.length, tokens);
    let agree = 0;
    while (agree < tokens && got[agree] === want[agree]) agree++;
    console.log(`browser test on webgpu: ${agree} of ${tokens} characters agree with the CLI's`);
    assert(agree >= 80, `only ${agree} agree:\n${want.join("")}\n${got.join("")}`);
    const n = BLOCK;
    assertEquals([r.window, r.heads], [n, Array(HEADS).fill(n * (n + 1) / 2)]);
    assert((r.candidates ?? 0) > 0, "no candidates shown");
    assertEquals(r.marked, HEADS);
    // the strip of a character before the window: the attention recorded at generation time
    assert(
      /one row per head over the keys \d+\.\.\d+/.test(r.strip?.caption ?? ""),
      r.strip?.caption,
    );
    assert((r.strip?.width ?? 0) > 0, "no attention strip drawn");

    // no adapter: the library's one line, the status line says no model on webgpu, no hang
    const [f] = none.results;
    assertEquals(f.errors, []);
    assertEquals(f.failed?.state, "error");
    assert(
      f.failed?.status?.includes("no model loaded") && f.failed.status.includes("webgpu"),
      f.failed?.status,
    );
    assert(
      /^error: (no WebGPU adapter was found|WebGPU is not available here)[^\n]*$/.test(
        f.failed?.error ?? "",
      ),
      f.failed?.error,
    );
    // ... and the page goes on: js from the menu loads and generates the CLI's text
    assertEquals([f.ready.state, f.ready.tier, f.ready.error], ["ready", "js", ""]);
    assertEquals(f.state, "done", f.status);
    assertEquals(f.text, await cliText(weights, "js", 8));
  },
});

/** A safetensors file's block size (its header's config). */
async function blockSize(path: string): Promise<number> {
  const file = await Deno.open(path);
  try {
    const head = new Uint8Array(8);
    await file.read(head);
    const length = Number(new DataView(head.buffer).getBigUint64(0, true));
    const json = new Uint8Array(length);
    let got = 0;
    while (got < length) got += (await file.read(json.subarray(got))) ?? length;
    const meta = JSON.parse(new TextDecoder().decode(json)).__metadata__;
    return JSON.parse(meta.config).block_size;
  } finally {
    file.close();
  }
}

Deno.test({
  name:
    "browser page: ?weights= from the root, ?autostart=1, errors beside the status line, legible heatmap labels",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    if (!present) throw new Error(`Chromium not found at ${CHROMIUM} and CI=true`);
    // only the bundle is needed (the shipped model is served from weights/)
    await runDeno([
      "run",
      "--quiet",
      "--unstable-bundle",
      "--allow-read=.",
      "--allow-write=web/dist",
      "scripts/bundle.ts",
    ], "bundling");
    const shipped = "weights/shakespeare.safetensors";
    const block = await blockSize(`${ROOT}${shipped}`);
    assert(block >= 128, `the shipped model's block is ${block}: the label check needs 128`);
    const PROMPT_ROOT = "ROMEO:";
    const tokens = block + 2 - PROMPT_ROOT.length; // the window is full: block characters
    const server = startServer({ port: 0, isolated: true });
    let report: Report;
    try {
      const job: Job = {
        chromium: CHROMIUM,
        args: CHROMIUM_ARGS,
        page: `http://127.0.0.1:${server.addr.port}/web/`,
        query: { weights: shipped, prompt: PROMPT_ROOT, temperature: "0", seed: "0" },
        tiers: ["best"],
        hover: 3,
        screenshots: ARTIFACTS.replace(/\/$/, ""),
        name: "browser-options",
        variants: [
          // a path without a leading slash is from the repository root, not from /web/
          {
            label: "autostart",
            query: { tokens: String(tokens), autostart: "1" },
            autostart: true,
          },
          { label: "autorun", query: { tokens: "8", autorun: "1" }, autostart: true },
          { label: "unknown-char", query: { tokens: "8", prompt: "ROMEO: {7€}" } },
          { label: "missing", query: { weights: "out/none.safetensors" } },
        ],
      };
      report = await driveJob(job);
    } finally {
      await server.shutdown();
    }
    const by = new Map(report.results.map((r) => [r.label, r]));
    const model = `shakespeare.safetensors: `;

    // ?weights=weights/shakespeare.safetensors loads from the root; ?autostart=1 streams at once
    const auto = by.get("autostart")!;
    assertEquals(auto.errors, []);
    assert(auto.ready.status?.startsWith(model), `status: ${auto.ready.status}`);
    assertEquals(auto.clicked, false);
    assertEquals(auto.state, "done", `autostart: state ${auto.state}, ${auto.status}`);
    assertEquals([...auto.text!].length, PROMPT_ROOT.length + tokens);
    assertEquals(auto.error, "");
    // labels at a full window (block characters) drawn at >= 8 px: the font-size attributes,
    // and the SVG drawn at its size (the container scrolls rather than shrinking it)
    assertEquals(auto.window, block);
    assert(auto.labelFont !== undefined && auto.labelFont >= 8, `label font ${auto.labelFont}`);
    assert((auto.svgScale ?? 0) >= 0.99, `the heatmaps are shrunk to ${auto.svgScale}`);
    assert(
      auto.labelFont * auto.svgScale! >= 8,
      `labels drawn at ${auto.labelFont * auto.svgScale!} px`,
    );

    // the older ?autorun=1 still works
    const autorun = by.get("autorun")!;
    assertEquals([autorun.clicked, autorun.state], [false, "done"], autorun.status);
    assertEquals([...autorun.text!].length, PROMPT_ROOT.length + 8);

    // an unknown prompt character: its own error line; the status line still shows the model
    const unknown = by.get("unknown-char")!;
    assertEquals(unknown.errors, []);
    assertEquals(unknown.state, "error");
    assert(unknown.status?.startsWith(model), `status line lost the model: ${unknown.status}`);
    assert(unknown.error?.startsWith("error: "), `error line: ${unknown.error}`);
    for (const ch of ["{", "7", "€", "}"]) {
      assert(unknown.error?.includes(JSON.stringify(ch)), `${ch} not named: ${unknown.error}`);
    }

    // a missing model is named as given, from the root (not /web/out/...)
    const missing = by.get("missing")!;
    assertEquals(missing.ready.state, "error");
    assert(
      missing.ready.error?.includes("no weights at out/none.safetensors (HTTP 404)"),
      `error line: ${missing.ready.error}`,
    );
    assert(missing.ready.status?.includes("no model loaded"), missing.ready.status);
  },
});

Deno.test("serve: content types, isolation headers, GET only, nothing outside the repository", async () => {
  const get = (path: string, method = "GET") =>
    handle(new Request(`http://127.0.0.1:8000${path}`, { method }), ROOT);
  const page = await get("/web/");
  assertEquals(page.status, 200);
  assertEquals(page.headers.get("content-type"), "text/html; charset=utf-8");
  assertEquals(page.headers.get("cross-origin-opener-policy"), "same-origin");
  assertEquals(page.headers.get("cross-origin-embedder-policy"), "require-corp");
  assert((await page.text()).includes("<title>BareGPT"));
  const ts = await get("/mod.ts");
  assertEquals(ts.headers.get("content-type"), "application/typescript; charset=utf-8");
  await ts.body?.cancel();
  const redirect = await get("/web");
  assertEquals([redirect.status, redirect.headers.get("location")], [301, "/web/"]);
  assertEquals((await get("/")).headers.get("location"), "/web/");
  for (
    const path of [
      "/../etc/passwd",
      "/web/../../etc/passwd",
      "/%2e%2e/etc/passwd",
      "/.git/config",
      "/web/%00",
      "/nope.txt",
      "/web/..%2f..%2fetc/passwd",
    ]
  ) {
    const r = await get(path);
    assertEquals(r.status, 404, path);
    await r.body?.cancel();
  }
  const post = await get("/web/", "POST");
  assertEquals([post.status, post.headers.get("allow")], [405, "GET, HEAD"]);
  await post.body?.cancel();
  // without isolation: the same files, without COOP and COEP
  const plain = await handle(new Request("http://127.0.0.1:8000/web/"), ROOT, { isolated: false });
  assertEquals(plain.status, 200);
  assertEquals(plain.headers.get("cross-origin-opener-policy"), null);
  assertEquals(plain.headers.get("cross-origin-embedder-policy"), null);
  assertEquals(plain.headers.get("content-type"), "text/html; charset=utf-8");
  await plain.body?.cancel();
  const plainMissing = await handle(new Request("http://127.0.0.1:8000/nope.txt"), ROOT, {
    isolated: false,
  });
  assertEquals(plainMissing.status, 404);
  assertEquals(plainMissing.headers.get("cross-origin-embedder-policy"), null);
  await plainMissing.body?.cancel();
  const head = await get("/web/index.html", "HEAD");
  assertEquals(head.status, 200);
  assert(Number(head.headers.get("content-length")) > 1000);
  assertEquals(resolvePath("/repo", "/a/b.ts"), "/repo/a/b.ts");
  assertEquals(resolvePath("/repo", "/a/../b.ts"), null);
  assertEquals(resolvePath("/repo", "/a/%2E%2E/b.ts"), null);
  assertEquals(resolvePath("/repo", "/a%5Cb"), null);
});
