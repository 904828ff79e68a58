// Helpers for the tests that run the CLI as a subprocess (robustness, resume, permissions, URL).
// Not a test file itself: importing it registers no tests.

import { deepStrictEqual as assertEquals, match as assertMatch, ok as assert } from "node:assert";

/** The repository root and the CLI, as paths. */
export const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
export const CLI = `${REPO}/cli.ts`;

/** The tiny model every CLI test trains (fast on two cores). */
export const TINY = [
  "--d-model",
  "16",
  "--layers",
  "1",
  "--heads",
  "2",
  "--block",
  "16",
  "--batch",
  "4",
];

export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode runCli}. */
export interface RunOptions {
  /** Permission flags (default `-A`). `--no-prompt` is always added. */
  permissions?: string[];
  cwd?: string;
  env?: Record<string, string>;
}

const decoder = new TextDecoder();

/** `deno run` arguments for the CLI (or another script) with the given permissions. */
export function denoRunArgs(args: string[], permissions = ["-A"], script = CLI): string[] {
  return ["run", "--quiet", "--no-prompt", ...permissions, script, ...args];
}

/** Runs the CLI to completion; returns exit code, stdout and stderr. */
export async function runCli(args: string[], options: RunOptions = {}): Promise<RunResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: denoRunArgs(args, options.permissions),
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
  }).output();
  return {
    code: out.code,
    signal: out.signal,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
  };
}

/** Starts the CLI in the background; stdout is discarded, stderr collected in `stderr()`. */
export function spawnCli(args: string[], permissions = ["-A"], env: Record<string, string> = {}) {
  const child = new Deno.Command(Deno.execPath(), {
    args: denoRunArgs(args, permissions),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let text = "";
  const reading = (async () => {
    for await (const chunk of child.stderr) text += decoder.decode(chunk, { stream: true });
  })();
  return {
    child,
    stderr: () => text,
    /** Resolves when stderr matches `pattern` (or rejects when the process ends first). */
    async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<void> {
      const start = Date.now();
      let ended = false;
      child.status.then(() => (ended = true));
      while (!pattern.test(text)) {
        if (ended) throw new Error(`process ended before ${pattern}: ${text}`);
        if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${pattern}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async done(): Promise<{ code: number; signal: string | null; stderr: string }> {
      const status = await child.status;
      await reading;
      return { code: status.code, signal: status.signal, stderr: text };
    },
  };
}

import { smallCorpus } from "./fixtures.ts";
export { smallCorpus };

/** Fails when stderr shows a stack trace or Deno's own uncaught-error report. */
export function assertNoStackTrace(stderr: string): void {
  if (/^\s+at\s/m.test(stderr) || /Uncaught|Stack backtrace|panicked/.test(stderr)) {
    throw new Error(`stack trace on stderr:\n${stderr}`);
  }
}

/** Asserts a one-line `error:` message on stderr matching pattern, exit code 2, empty stdout. */
export function assertUserError(r: RunResult, pattern: RegExp): void {
  assertNoStackTrace(r.stderr);
  assertEquals(r.code, 2, `exit code 2 expected: ${r.stderr}`);
  assertEquals(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, `one line expected, got: ${r.stderr}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
}

/** True when the process runs as root (file modes do not stop root). */
export function isRoot(): boolean {
  return Deno.uid?.() === 0;
}

/** Runs async jobs with at most `limit` at a time (two cores: keep it small). */
export async function pooled<T>(jobs: (() => Promise<T>)[], limit = 3): Promise<T[]> {
  const results: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        results[i] = await jobs[i]();
      }
    }),
  );
  return results;
}

/** Asserts two byte arrays are identical (reports the first difference, fast on large files). */
export function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what = "bytes"): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: ${actual.length} bytes, expected ${expected.length}`);
  }
  const i = actual.findIndex((b, k) => b !== expected[k]);
  if (i >= 0) throw new Error(`${what}: differ first at byte ${i} of ${actual.length}`);
}

/** A temporary folder removed when disposed: `await using tmp = await tempDir("prefix_")`. */
export async function tempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(async () => {
        // a test made a folder read-only and failed before restoring it
        const open = async (dir: string) => {
          await Deno.chmod(dir, 0o755).catch(() => {});
          for await (const e of Deno.readDir(dir)) {
            if (e.isDirectory) await open(`${dir}/${e.name}`);
          }
        };
        await open(path).catch(() => {});
        await Deno.remove(path, { recursive: true }).catch(() => {});
      });
    },
  };
}

/** A temporary folder holding the small corpus as corpus.txt, removed when disposed. */
export async function tempDirWithCorpus(
  prefix: string,
): Promise<{ path: string } & AsyncDisposable> {
  const tmp = await tempDir(prefix);
  await Deno.writeTextFile(`${tmp.path}/corpus.txt`, smallCorpus());
  return tmp;
}

/** True when something (a file, folder, link, even a dangling one) is at `path`. */
export async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** Copies what a clone of the working tree holds (tracked and untracked, not ignored) to `dest`. */
export async function copyTree(dest: string): Promise<void> {
  const out = await new Deno.Command("git", {
    args: ["ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const files = new TextDecoder().decode(out.stdout).split("\0").filter((f) => f !== "");
  assert(files.includes("cli.ts") && files.includes("weights/shakespeare.safetensors"));
  for (const file of files) {
    const to = `${dest}/${file}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
    try {
      await Deno.copyFile(`${REPO}/${file}`, to);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e; // tracked, deleted in the working tree
    }
  }
}
