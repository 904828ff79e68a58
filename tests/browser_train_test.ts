// The page's training panel end to end, in headless Chromium driven by playwright-core (in a
// separate Deno process, tests/browser/train_driver.ts): build the bundle, serve the repository,
// and drive the panel by its stable ids.
//
// Cross-origin isolated (as `deno task serve` serves it): a tiny model trains from the text area
// on 2 threads (workers started from the bundle's web/dist/worker.js) and its loss goes down; the
// downloaded file equals, byte for byte, the file `cli.ts train` writes with the command stored in
// its metadata (and the same text as --data); a page reloaded in the middle of a run offers to
// continue it from OPFS, and the continued run's file equals the CLI's too; a text file that is
// not UTF-8 gets the CLI's one-line error; the downloaded file, chosen as the model file,
// fine-tunes as `--init` does (equal bytes again); samples stream into the text pane as it
// trains; pause holds the step, and stop ends the run without saying done. Not isolated (served without COOP/COEP): the page
// trains on one thread, says so, and its file equals the CLI's with --threads 1. On WebGPU
// (?tier=webgpu, Chromium's SwiftShader adapter): a run trains on the GPU, on one thread, with
// every step's loss within 1e-3 of the library's CPU run of the same settings, says webgpu, and
// shows the command with --kernels webgpu; reloaded in the middle, it continues on webgpu from
// its checkpoint.
//
// Chromium: $CHROMIUM_PATH, else /usr/bin/chromium (Debian's `chromium` package). Without it the
// test is skipped with a printed reason, except with CI=true, where it fails.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { startServer } from "../scripts/serve.ts";
import type { Scenario, ScenarioResult, TrainJob } from "./browser/train_driver.ts";
import { playCorpus } from "./fixtures.ts";
import {
  CHROMIUM,
  CHROMIUM_ARGS,
  CHROMIUM_WEBGPU_ARGS,
  chromiumPresent,
  CI,
} from "./browser/chromium.ts";
import { bestKernels, createModel, createTrainer, selectKernels } from "../mod.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const DIR = `${ROOT}test-artifacts/train/`;
const CLI = `${ROOT}cli.ts`;
const DRIVER = `${ROOT}tests/browser/train_driver.ts`;

const present = await chromiumPresent("browser train test");

/** Runs deno with `args` in `cwd`; the exit code, stdout and stderr. */
async function deno(args: string[], cwd = ROOT) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** The panel's fields for a tiny model (the text is pasted: the command names it pasted.txt). */
function fields(steps: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    "train-size": "custom",
    "train-dmodel": "32",
    "train-layers": "1",
    "train-heads": "2",
    "train-block": "16",
    "train-steps": String(steps),
    "train-batch": "8",
    "train-lr": "0.01",
    "train-seed": "3",
    "train-checkpoint-every": "10",
    "train-sample-every": "10",
    "train-text": playCorpus(),
    ...extra,
  };
}

/** Bundles the page once, and writes the corpus under the name the page gives a pasted text. */
let prepared: Promise<void> | undefined;
function prepare(): Promise<void> {
  return prepared ??= (async () => {
    await Deno.mkdir(DIR, { recursive: true });
    await Deno.writeTextFile(`${DIR}pasted.txt`, playCorpus());
    const r = await deno([
      "run",
      "--quiet",
      "--unstable-bundle",
      "--allow-read=.",
      "--allow-write=web/dist",
      "scripts/bundle.ts",
    ]);
    if (r.code !== 0) throw new Error(`bundling failed: ${r.stderr}`);
  })();
}

/**
 * Serves the repository and runs the scenarios in one browser, at the page's URL options
 * `query` (with ?tier=webgpu, Chromium gets SwiftShader's adapter).
 */
async function drive(
  isolated: boolean,
  scenarios: Scenario[],
  query: Record<string, string> = {},
): Promise<ScenarioResult[]> {
  const webgpu = query.tier === "webgpu";
  await prepare();
  const server = startServer({ port: 0, isolated });
  try {
    const job: TrainJob = {
      chromium: CHROMIUM,
      args: webgpu ? CHROMIUM_WEBGPU_ARGS : CHROMIUM_ARGS,
      page: `http://127.0.0.1:${server.addr.port}/web/?${new URLSearchParams({
        weights: "none",
        ...query,
      })}`,
      scenarios,
    };
    const r = await deno(["run", "--quiet", "-A", DRIVER, JSON.stringify(job)]);
    if (r.code !== 0) throw new Error(`the driver failed (exit ${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as ScenarioResult[];
  } finally {
    await server.shutdown();
  }
}

/** The `command` fact of a weights file. */
async function commandOf(path: string): Promise<string> {
  const bytes = await Deno.readFile(path);
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  return header.__metadata__.command;
}

/** Runs the file's stored command with the CLI (the text as pasted.txt); checks equal bytes. */
async function sameAsCli(path: string, label: string): Promise<string> {
  const command = await commandOf(path);
  assert(command.startsWith("train --data pasted.txt "), command);
  const out = `${DIR}cli-${label}.safetensors`;
  const r = await deno(["run", "-A", CLI, ...command.split(" "), "--out", out, "--force"], DIR);
  assertEquals(r.code, 0, r.stderr);
  const [page, cli] = [await Deno.readFile(path), await Deno.readFile(out)];
  assert(page.length === cli.length && page.every((b, i) => b === cli[i]), `${label}: differs`);
  // and the CLI reads the page's file
  const info = await deno(["run", `--allow-read=${DIR}`, CLI, "info", "--weights", path]);
  assertEquals(info.code, 0, info.stderr);
  assert(info.stdout.includes(command), info.stdout);
  return command;
}

function checkRun(r: ScenarioResult, steps: number): void {
  assertEquals(r.errors, []);
  assertEquals(r.error, "");
  assertEquals(r.state, "done", r.status);
  assert(/\bdone\b/.test(r.status), r.status);
  assert(!/\bdone\b/.test(r.runningStatus ?? ""), `said done while running: ${r.runningStatus}`);
  assertEquals(r.losses!.length, steps);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(r.losses!.slice(0, 5)), last = mean(r.losses!.slice(-5));
  assert(last < first - 0.5, `the loss did not go down: ${first} -> ${last}`);
}

Deno.test({
  name:
    "training panel (cross-origin isolated): loss falls on 2 threads, the download equals the CLI's, a reload continues from OPFS, a bad file gets its error",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await prepare();
    await Deno.remove(`${DIR}pasted-30.safetensors`).catch(() => {});
    const [plain, reload, bad, tuned, paused] = await drive(true, [
      {
        kind: "train",
        fields: fields(30, { "train-threads": "2" }),
        downloadTo: `${DIR}pasted-30.safetensors`,
      },
      {
        kind: "reload",
        fields: fields(60, { "train-threads": "2" }),
        reloadAt: 20,
        downloadTo: `${DIR}b.st`,
      },
      { kind: "badfile", file: { name: "bad.txt", bytes: [0x66, 0x6f, 0xff, 0x0a] } },
      {
        kind: "train",
        weights: `${DIR}pasted-30.safetensors`,
        fields: Object.fromEntries(
          Object.entries(fields(10, { "train-threads": "2" }))
            .filter(([id]) => !/^train-(size|dmodel|layers|heads|block)$/.test(id)),
        ),
        downloadTo: `${DIR}d.st`,
      },
      { kind: "pause", fields: fields(100000, { "train-threads": "2" }) },
    ]);
    assertEquals(plain.isolated, true);
    checkRun(plain, 30);
    assert(plain.status.includes("2 threads"), plain.status);
    assertEquals(plain.downloadName, "pasted-30.safetensors");
    const command = await sameAsCli(plain.downloaded!, "isolated");
    assert(command.includes("--threads 2"), command);

    // the reload: the offer names the checkpoint, the continued run ends as the CLI's
    const at = Number(/checkpoint at step (\d+) of 60 steps/.exec(reload.offer ?? "")?.[1]);
    assert(at >= 20 && at < 60, reload.offer);
    assertEquals(reload.errors, []);
    assertEquals(reload.state, "done", reload.status + reload.error);
    await sameAsCli(reload.downloaded!, "reload");

    // a file that is not UTF-8: the CLI's one-line error for the same file
    await Deno.writeFile(`${DIR}bad.txt`, new Uint8Array([0x66, 0x6f, 0xff, 0x0a]));
    const cli = await deno(["run", "-A", CLI, "train", "--data", "bad.txt", "--out", "x.st"], DIR);
    assertEquals(cli.code, 2);
    const line = cli.stderr.trim().split("\n").at(-1)!;
    assert(line.startsWith("error: corpus bad.txt is not valid UTF-8"), line);
    assertEquals(bad.error, line);

    // the downloaded model, chosen as the model file, fine-tunes as the CLI's --init does
    assertEquals(tuned.size, "finetune");
    assertEquals(tuned.state, "done", tuned.status + tuned.error);
    const tunedCommand = await sameAsCli(tuned.downloaded!, "finetune");
    assert(tunedCommand.includes("--init pasted-30.safetensors --steps 10"), tunedCommand);

    // the samples of the model as it trains stream into the page's text pane
    assert((plain.sampled ?? 0) > 0, "no sample shown");
    // pause holds the step, resume goes on, stop keeps the run to continue
    assertEquals(paused.errors, []);
    assertEquals(paused.pausedLater, paused.pausedAt);
    assertEquals(paused.state, "stopped", paused.status + paused.error);
    assert(/^Stopped at step \d+ of 100000/.test(paused.status), paused.status);
    assert(!/\bdone\b/.test(paused.status), paused.status);
  },
});

Deno.test({
  name: "training panel (not cross-origin isolated): trains on one thread and says so",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const [r] = await drive(false, [
      { kind: "train", fields: fields(30), downloadTo: `${DIR}c.st` },
    ]);
    assertEquals(r.isolated, false);
    checkRun(r, 30);
    assert(r.status.includes("1 thread (the page is not cross-origin isolated"), r.status);
    const command = await sameAsCli(r.downloaded!, "plain");
    assert(command.includes("--threads 1"), command);
  },
});

Deno.test({
  name:
    "training panel on webgpu (SwiftShader): the CPU's losses within 1e-3, --kernels webgpu in the command, a reload continues on webgpu",
  ignore: !present && !CI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // one run, reloaded after its checkpoint at step 3 and continued (each page opens the GPU
    // and compiles its kernels: seconds on SwiftShader); samples of 20 characters at steps 4 and 8
    const steps = 9;
    const settings = fields(steps, {
      "train-threads": "2", // asked for, but the GPU trains on one thread (the command says so)
      "train-checkpoint-every": "3",
      "train-sample-every": "4",
    });
    const [r] = await drive(true, [
      { kind: "reload", fields: settings, reloadAt: 3, downloadTo: `${DIR}gpu.st` },
    ], { tier: "webgpu", tokens: "20" });
    // the library's CPU run of the page's settings (fields(): d 32, 1 layer, 2 heads, block 16)
    selectKernels(bestKernels());
    const text = playCorpus();
    const model = createModel(text, { blockSize: 16, dModel: 32, nLayers: 1, nHeads: 2, seed: 3 });
    using trainer = await createTrainer(model, text, { steps, batch: 8, lr: 0.01, seed: 3 });
    const want: number[] = [];
    for (let i = 0; i < steps; i++) want.push(await trainer.step());
    assertEquals(r.errors, []);
    assertEquals(r.state, "done", `${r.status} ${r.error}`);
    const at = Number(/checkpoint at step (\d+) of 9 steps/.exec(r.offer ?? "")?.[1]);
    assert(at >= 3 && at < steps, r.offer);
    // the continued run trains on webgpu again: the saved run remembers its kernels
    assert(/1 thread, webgpu \(.+, software adapter, subgroups\) kernels/.test(r.status), r.status);
    assertEquals(r.losses!.length, steps);
    const worst = Math.max(...r.losses!.map((loss, i) => Math.abs(loss - want[i])));
    console.log(`  training on webgpu: losses within ${worst.toExponential(2)} of the CPU's`);
    assert(worst <= 1e-3, `losses differ by ${worst}:\n${r.losses}\n${want}`);
    const command = await commandOf(r.downloaded!);
    assert(command.endsWith("--threads 1 --kernels webgpu"), command);
    assert((r.sampled ?? 0) > 0, "no sample shown");
  },
});
