// No package fetch on the run path (issue 13 item 1): a user who has Deno streams from the shipped
// weights, samples, trains and uses mod.ts with no package registry and an empty Deno cache. The
// development tools (wabt, playwright-core) stay out of the run path: no import map entry, and
// deno.json sets "lock": false, since `deno task` with a discovered lockfile first downloads every
// npm package the lock lists (the development tasks pass `--lock=deno.lock --frozen` instead).
//
// Each command runs in a temporary copy of the working tree (the files git tracks, plus untracked
// files it does not ignore: what a fresh clone has, with the edits in progress), with a fresh empty
// DENO_DIR and the npm and JSR registries pointed at a closed port, so any fetch fails the command.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { copyTree, TINY } from "./cli_run.ts";

const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const decoder = new TextDecoder();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `deno ARGS` in `cwd` with an empty DENO_DIR and no reachable package registry. */
async function denoOffline(args: string[], cwd: string): Promise<Result> {
  const denoDir = await Deno.makeTempDir({ prefix: "baregpt_offline_deno_dir_" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: {
        DENO_DIR: denoDir,
        NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
        JSR_URL: "http://127.0.0.1:9/",
        DENO_NO_UPDATE_CHECK: "1",
        NO_COLOR: "1",
      },
      signal: AbortSignal.timeout(300_000),
    }).output();
    const result = {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
    const what = `deno ${args.join(" ")}`;
    assertEquals(result.code, 0, `${what} failed:\n${result.stderr}`);
    // nothing was downloaded: no package from a registry, no module from anywhere
    assert(!/\bDownload\b/.test(result.stderr), `${what} downloaded:\n${result.stderr}`);
    const npm = await Array.fromAsync(Deno.readDir(`${denoDir}/npm`)).catch(() => []);
    assertEquals(npm.map((e) => e.name).filter((n) => n !== ".deno_sync_lock"), [], what);
    return result;
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
}

/** The checkout's own output for the same command (the normal cache), to compare with. */
async function denoHere(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals(out.code, 0, decoder.decode(out.stderr));
  return decoder.decode(out.stdout);
}

Deno.test("offline: start, sample, train and mod.ts need no package registry and no cache", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "baregpt_offline_" });
  const tree = `${root}/baregpt`;
  try {
    await copyTree(tree);

    await t.step("deno task start streams text from the shipped weights", async () => {
      const r = await denoOffline(["task", "start"], tree);
      assert([...r.stdout].length >= 500, `streamed text expected, got: ${r.stdout}`);
      assertMatch(r.stdout, /[A-Z]+:\n/); // a speaker's name, as in Tiny Shakespeare
    });

    await t.step("deno task sample (a task with user flags)", async () => {
      const r = await denoOffline(["task", "sample", "--tokens", "20", "--seed", "1"], tree);
      assert([...r.stdout.trimEnd()].length >= 10, r.stdout);
    });

    await t.step("deno run cli.ts sample gives the checkout's text", async () => {
      const args = ["run", "--quiet", "--allow-read=.", "cli.ts", "sample", "--tokens", "20"];
      const r = await denoOffline([...args, "--seed", "1"], tree);
      assertEquals(r.stdout, await denoHere([...args, "--seed", "1"]));
      assert([...r.stdout].length >= 20, r.stdout);
    });

    await t.step("deno run cli.ts train (a tiny model, worker threads included)", async () => {
      const line = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n";
      await Deno.writeTextFile(`${tree}/offline_corpus.txt`, line.repeat(40));
      await denoOffline([
        "run",
        "--quiet",
        "--allow-read=.",
        "--allow-write=.",
        "cli.ts",
        "train",
        "--data",
        "offline_corpus.txt",
        "--out",
        "offline_tiny.safetensors",
        "--steps",
        "2",
        ...TINY,
        "--threads",
        "2",
        "--seed",
        "1",
      ], tree);
      const written = await Deno.stat(`${tree}/offline_tiny.safetensors`);
      assert(written.isFile && written.size > 1000);
      const s = await denoOffline(
        ["run", "--quiet", "--allow-read=.", "cli.ts", "sample", "--weights"].concat(
          ["offline_tiny.safetensors", "--tokens", "10", "--seed", "1"],
        ),
        tree,
      );
      assert(s.stdout.length > 0);
    });

    await t.step(
      "a script importing ./mod.ts loads the shipped weights and generates",
      async () => {
        await Deno.writeTextFile(
          `${tree}/offline_generate.ts`,
          `import { generate, loadWeights, shippedWeightsUrl } from "./mod.ts";

const model = await loadWeights(shippedWeightsUrl);
let text = "";
for await (const ch of generate(model, { prompt: "ROMEO:", tokens: 40, seed: 1 })) text += ch;
console.log(JSON.stringify(text));
`,
        );
        const r = await denoOffline(
          ["run", "--quiet", "--allow-read=weights", "offline_generate.ts"],
          tree,
        );
        assertMatch(r.stdout, /^".*"\n$/s);
        assert([...JSON.parse(r.stdout)].length >= 40, r.stdout);
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
