// Run from a URL (DESIGN.md "Permissions", issue 6 item 6): the repository served on a loopback
// port (.ts as application/typescript) runs with `--allow-net` for that host alone: the served
// cli.ts streams text from the weights fetched from beside it, and a script importing the served
// mod.ts generates text. Each run uses a fresh DENO_DIR, so no cached module hides a problem, and
// every served module must load without an import map or a package registry (no npm:, jsr: or bare
// specifiers).

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";
import { assertUserError, REPO, runCli, type RunResult } from "./cli_run.ts";

const decoder = new TextDecoder();

/** Serves REPO on 127.0.0.1 (a free port); records what was asked for. */
function serveRepo() {
  const served = new Set<string>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      if (path.split("/").includes("..")) return new Response("forbidden", { status: 403 });
      let body: Uint8Array;
      try {
        body = await Deno.readFile(REPO + path);
      } catch {
        return new Response("not found", { status: 404 });
      }
      served.add(path);
      const ts = path.endsWith(".ts");
      return new Response(body as Uint8Array<ArrayBuffer>, {
        headers: {
          "content-type": ts ? "application/typescript" : "application/octet-stream",
        },
      });
    },
  );
  const host = `127.0.0.1:${server.addr.port}`;
  return { server, served, host, base: `http://${host}` };
}

/** Runs `deno run` (or another subcommand) with a fresh DENO_DIR and no package registry. */
async function denoRun(args: string[], command = "run"): Promise<RunResult> {
  const denoDir = await Deno.makeTempDir({ prefix: "baregpt_deno_dir_" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [command, "--quiet", ...(command === "run" ? ["--no-prompt"] : []), ...args],
      cwd: denoDir, // outside the repository: no deno.json, lockfile or import map applies
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: {
        DENO_DIR: `${denoDir}/cache`,
        NO_COLOR: "1",
        NPM_CONFIG_REGISTRY: "http://127.0.0.1:9/",
        JSR_URL: "http://127.0.0.1:9/",
      },
    }).output();
    return {
      code: out.code,
      signal: out.signal,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    await Deno.remove(denoDir, { recursive: true });
  }
}

/** The served module's import graph loads from the server alone: no npm:, jsr: or bare imports. */
async function assertSelfContained(url: string, base: string, host: string): Promise<void> {
  const r = await denoRun([`--allow-import=${host}`, "--json", url], "info");
  assertEquals(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  const specifiers: string[] = info.modules.map((m: { specifier: string }) => m.specifier);
  assert(specifiers.length > 5, r.stdout);
  assertEquals(specifiers.filter((s) => !s.startsWith(`${base}/`) && !s.startsWith("node:")), []);
  assertEquals(info.modules.filter((m: { error?: string }) => m.error), []);
  assertEquals(Object.keys(info.npmPackages ?? {}), []);
}

Deno.test("URL: the served cli.ts streams text from the weights beside it, with --allow-net for that host", async () => {
  const { server, served, host, base } = serveRepo();
  try {
    const args = ["sample", "--tokens", "50", "--seed", "1"];
    const r = await denoRun([`--allow-net=${host}`, `${base}/cli.ts`, ...args]);
    assertEquals(r.code, 0, r.stderr);
    assertEquals(r.stderr, "");
    assertEquals([...r.stdout].length, 51);
    assert(served.has("/weights/shakespeare.safetensors"), "weights fetched from beside cli.ts");
    assert(served.has("/cli.ts") && served.has("/lib/model.ts"));
    // the same text as the local CLI gives with the same weights and seed
    const local = await runCli(args, { permissions: [`--allow-read=${REPO}/weights`] });
    assertEquals(local.code, 0, local.stderr);
    assertEquals(r.stdout, local.stdout);

    // one permission less: the clear error naming the flag
    assertUserError(
      await denoRun([`${base}/cli.ts`, ...args]),
      new RegExp(`no net permission for ${host}; run again with --allow-net=${host}$`),
    );
    await assertSelfContained(`${base}/cli.ts`, base, host);
  } finally {
    await server.shutdown();
  }
});

Deno.test("URL: a script importing the served mod.ts generates text", async () => {
  const { server, host, base } = serveRepo();
  const dir = await Deno.makeTempDir({ prefix: "baregpt_url_" });
  try {
    const weights = `${base}/weights/shakespeare.safetensors`;
    // written against both API shapes of mod.ts: loadWeights + generate, or loadModel + generateTokens
    const script = `
import * as baregpt from "${base}/mod.ts";
// deno-lint-ignore no-explicit-any
const m: any = baregpt;
let text = "";
if (typeof m.loadWeights === "function" && typeof m.generate === "function") {
  const model = await m.loadWeights(new URL("${weights}"));
  for await (const ch of m.generate(model, { prompt: "ROMEO:", tokens: 40, seed: 1 })) text += ch;
} else {
  const bytes = new Uint8Array(await (await fetch("${weights}")).arrayBuffer());
  const { model, tokenizer } = m.loadModel(bytes);
  const ids = m.generateTokens(model, tokenizer.encode("ROMEO:"), 0, { tokens: 40, seed: 1 });
  for (const id of ids) text += tokenizer.vocab[id];
}
console.log(JSON.stringify(text));
`;
    await Deno.writeTextFile(`${dir}/generate.ts`, script);
    const r = await denoRun([
      `--allow-import=${host}`,
      `--allow-net=${host}`,
      `${dir}/generate.ts`,
    ]);
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /^".*"\n$/s);
    const text: string = JSON.parse(r.stdout);
    assertEquals([...text].length, 40);
    await assertSelfContained(`${base}/mod.ts`, base, host);
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
