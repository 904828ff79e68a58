// Every command in the README runs (issue 13 item 3), so that no README command can rot again.
//
// Each `sh` code block of README.md is split into commands (one a line, `\` continuations joined,
// comments and blank lines dropped). Each block runs in a fresh temporary copy of the working tree
// (the files git tracks plus untracked files it does not ignore: what a clone has), its commands in
// order (a block is a sequence a user types: train, then sample what it wrote), through `sh` with
// the permissions printed in the README, and each must exit 0, with a cheap check of its output.
//
// The exceptions, each handled as the issue says:
// - `npx -y deno@2.9.6 ...` runs as `deno ...` with this Deno (the same version, no npm fetch);
// - `deno task test` (the test command itself) is not run;
// - training runs are shortened: `--steps N` becomes `--steps 3`, or `--steps 3` is appended (the
//   shipped recipe takes 14 minutes, the README's own-text example as long);
// - `deno task serve` is started on a free port (`--port N`, which the README documents), the page
//   fetched with fetch() and the server stopped;
// - `deno task data` runs with a copy of ../shared/data beside the copy (without ../shared it would
//   download; then the block is skipped with a printed reason, or fails when CI=true);
// - `deno task compile` is skipped with a printed reason: it downloads Deno's base runtime from
//   dl.deno.land, which needs the network;
// - files a user brings (`my.txt`) are written into the copy first: a few thousand characters.
//
// Commands the README shows and the program does not yet honour are asserted all the same (they are
// expected to pass); KNOWN names them, with the issue item that fixes them, for the failure message.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { copyTree } from "./cli_run.ts";

const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const SHARED = `${REPO}/../shared`;
const CORPUS = "data/tinyshakespeare.txt";
const decoder = new TextDecoder();

/** README commands that fail because the program is wrong (not the README), and who fixes them. */
const KNOWN: Record<string, string> = {};

/** The `sh` code blocks of a Markdown text, each as its list of commands. */
function shBlocks(markdown: string): string[][] {
  const blocks: string[][] = [];
  const re = /^```sh[ \t]*\n([\s\S]*?)^```[ \t]*$/gm;
  for (const m of markdown.matchAll(re)) blocks.push(commandsOf(m[1]));
  return blocks;
}

/** Splits a shell snippet into commands: `\` continuations joined, comments and blanks dropped. */
function commandsOf(snippet: string): string[] {
  const joined = snippet.replace(/\\\n/g, " ");
  return joined.split("\n").map(stripComment).map((l) => l.trim()).filter((l) => l !== "");
}

/** A line without its `# comment` (a `#` at the start or after a blank, outside quotes). */
function stripComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(line[i - 1]))) return line.slice(0, i);
  }
  return line;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** A few thousand characters of play-like text, for the README's `my.txt`. */
function myText(): string {
  const names = ["ROMEO", "JULIET", "NURSE"];
  const words = ["To", "be", "love", "night", "the", "moon", "sweet", "good", "my", "lord", "or"];
  let s = 5;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const out = [];
  for (let i = 0; i < 200; i++) {
    const line = Array.from({ length: 7 }, () => words[Math.floor(next() * words.length)]);
    out.push(`${names[Math.floor(next() * 3)]}:\n${line.join(" ")}.\n`);
  }
  return out.join("\n");
}

/** What the test does with a README command. */
type Plan =
  | { kind: "skip"; reason: string }
  | { kind: "run"; command: string; note?: string }
  | { kind: "serve"; command: string; port: number };

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** How a README command is run here (see the exceptions at the top). */
function plan(readmeCommand: string): Plan {
  const command = readmeCommand.replace(/^npx -y deno@[\w.]+ /, "deno ");
  if (/^deno task test\b/.test(command)) {
    return { kind: "skip", reason: "the test command itself (this test is part of it)" };
  }
  if (/^deno task compile\b/.test(command)) {
    return {
      kind: "skip",
      reason: "deno compile downloads Deno's base runtime from dl.deno.land: it needs the network",
    };
  }
  if (/^deno task serve\b/.test(command)) {
    const port = freePort();
    return { kind: "serve", command: `${command} --port ${port}`, port };
  }
  if (/^deno task train\b/.test(command) || /^deno run .*\bcli\.ts train\b/.test(command)) {
    const short = /--steps[ =]\d+/.test(command)
      ? command.replace(/--steps[ =]\d+/, "--steps 3")
      : `${command} --steps 3`;
    return { kind: "run", command: short, note: "a training run, shortened to --steps 3" };
  }
  return { kind: "run", command };
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

const ENV = {
  NO_COLOR: "1",
  PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${Deno.env.get("PATH") ?? ""}`,
};

async function sh(command: string, cwd: string): Promise<Result> {
  const out = await new Deno.Command("sh", {
    args: ["-c", command],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: ENV,
    signal: AbortSignal.timeout(300_000),
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The output check of a command that ran: cheap facts about what it printed or wrote. */
async function checkOutput(command: string, r: Result, tree: string): Promise<void> {
  const out = / --out[ =](\S+)/.exec(command)?.[1];
  if (/\b(task start|task sample|cli\.ts sample)\b/.test(command)) {
    const prompt = /--prompt "([^"]*)"/.exec(command)?.[1];
    if (prompt) assert(r.stdout.startsWith(prompt), `the text starts with the prompt: ${r.stdout}`);
    assert([...r.stdout].length >= 20, `streamed text expected, got: ${JSON.stringify(r.stdout)}`);
  }
  if (/\btask data\b/.test(command)) {
    assertEquals((await Deno.stat(`${tree}/${CORPUS}`)).size, 1115394);
  }
  if (/\btask train\b/.test(command)) {
    assert((await Deno.stat(`${tree}/weights/shakespeare.safetensors`)).size > 1000);
  }
  if (/\bcli\.ts train\b/.test(command) && out) {
    assert((await Deno.stat(`${tree}/${out}`)).size > 1000, `${out} written`);
  }
  if (/\bcli\.ts inspect\b/.test(command)) {
    if (out) assert((await Deno.readTextFile(`${tree}/${out}`)).includes("<svg"), `${out}: SVG`);
    assert(r.stdout.length > 0, "inspect prints its steps");
  }
}

/** Starts the server, fetches the page and its script, stops the server. */
async function serveAndFetch(command: string, port: number, cwd: string): Promise<void> {
  // its own process group, so that stopping it stops deno task's child (the server) too
  const child = new Deno.Command("setsid", {
    args: ["sh", "-c", `exec ${command}`],
    cwd,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: ENV,
  }).spawn();
  let stderr = "";
  const reading = (async () => {
    for await (const chunk of child.stderr) stderr += decoder.decode(chunk, { stream: true });
  })();
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  try {
    const page = `http://127.0.0.1:${port}/web/`;
    const deadline = Date.now() + 180_000;
    let html = "";
    while (!exited && Date.now() < deadline) {
      try {
        const res = await fetch(page);
        html = await res.text();
        assertEquals(res.status, 200, html);
        break;
      } catch (e) {
        if (e instanceof TypeError) { // not listening yet (the bundle builds first)
          await new Promise((r) => setTimeout(r, 250));
          continue;
        }
        throw e;
      }
    }
    assert(!exited, `the server exited: ${stderr}`);
    assert(/<html/i.test(html), `the page: ${html.slice(0, 200)}`);
    const script = await fetch(`http://127.0.0.1:${port}/web/dist/app.js`);
    assertEquals(script.status, 200, "the bundle was built and is served");
    assert((await script.text()).length > 1000);
  } finally {
    if (!exited) Deno.kill(-child.pid, "SIGTERM");
    await status;
    await reading;
  }
}

const README = await Deno.readTextFile(`${REPO}/README.md`);
const BLOCKS = shBlocks(README);

Deno.test("README: its sh blocks are found and split into commands", () => {
  assert(BLOCKS.length >= 4, `sh blocks: ${BLOCKS.length}`);
  assert(BLOCKS.flat().some((c) => c.includes("task start")));
  assertEquals(commandsOf("a \\\n  b # c\n# d\n\ne '#f'\n"), ["a    b", "e '#f'"]);
});

for (const [i, block] of BLOCKS.entries()) {
  Deno.test(`README sh block ${i + 1}: ${block.join(" && ")}`, async (t) => {
    const needsShared = block.some((c) => /\btask (data|train)\b/.test(c));
    const hasShared = await exists(`${SHARED}/${CORPUS}`);
    if (needsShared && !hasShared) {
      const reason = `no ${SHARED}/${CORPUS}: deno task data would download the corpus`;
      if (Deno.env.get("CI") === "true") throw new Error(`${reason} (CI=true: it must run)`);
      console.log(`skipped: ${reason}`);
      return;
    }
    const root = await Deno.makeTempDir({ prefix: "baregpt_readme_" });
    const tree = `${root}/baregpt`;
    try {
      await copyTree(tree);
      if (needsShared) {
        await Deno.mkdir(`${root}/shared/data`, { recursive: true });
        await Deno.copyFile(`${SHARED}/${CORPUS}`, `${root}/shared/${CORPUS}`);
      }
      if (block.some((c) => /\bmy\.txt\b/.test(c))) {
        await Deno.writeTextFile(`${tree}/my.txt`, myText());
      }
      for (const readmeCommand of block) {
        const p = plan(readmeCommand);
        if (p.kind === "skip") {
          console.log(`not run: ${readmeCommand}: ${p.reason}`);
          await t.step({ name: readmeCommand, ignore: true, fn: () => {} });
          continue;
        }
        await t.step(readmeCommand, async () => {
          if (p.kind === "serve") return await serveAndFetch(p.command, p.port, tree);
          if (p.note) console.log(`${readmeCommand}: ${p.note}: ${p.command}`);
          const r = await sh(p.command, tree);
          const known = Object.entries(KNOWN).find(([k]) => p.command.includes(k))?.[1];
          assertEquals(
            r.code,
            0,
            `${p.command} exited ${r.code}${known ? ` (known: ${known})` : ""}:\n${r.stderr}`,
          );
          await checkOutput(p.command, r, tree);
        });
      }
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  });
}
