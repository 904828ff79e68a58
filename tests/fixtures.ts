// Shared test helpers: running the CLI, a small corpus, asserting one-line user errors.

import { deepStrictEqual as assertEquals, match as assertMatch } from "node:assert";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

/** Runs the CLI with all permissions; returns exit code, stdout and stderr. */
export async function runCli(args: string[], permissions = ["-A"], stdin?: string) {
  const cmd = new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", ...permissions, CLI, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  });
  const child = cmd.spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const { code, stdout, stderr } = await child.output();
  return {
    code,
    stdout: new TextDecoder().decode(stdout),
    stderr: new TextDecoder().decode(stderr),
  };
}

/** A small corpus: a few thousand characters of play-like text. */
export function smallCorpus(): string {
  const lines = [];
  const names = ["ROMEO", "JULIET", "NURSE"];
  const words = ["love", "night", "the", "moon", "sweet", "good", "my", "lord", "fair", "is"];
  let s = 7;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (let i = 0; i < 120; i++) {
    lines.push(`${names[Math.floor(next() * 3)]}:`);
    lines.push(
      Array.from({ length: 6 }, () => words[Math.floor(next() * words.length)]).join(" ") + ".",
    );
    lines.push("");
  }
  return lines.join("\n");
}

/** Asserts a one-line `error:` message on stderr, exit code 2, nothing on stdout. */
export function assertUserError(
  r: { code: number; stdout: string; stderr: string },
  pattern: RegExp,
) {
  assertEquals(r.code, 2, r.stderr);
  assertEquals(r.stdout, "");
  const lines = r.stderr.trimEnd().split("\n");
  assertEquals(lines.length, 1, `one line expected, got: ${r.stderr}`);
  assertMatch(lines[0], /^error: /);
  assertMatch(lines[0], pattern);
}

/** The path of Tiny Shakespeare, or null (after saying why) when a test may skip. */
export async function findCorpus(): Promise<string | null> {
  const candidates = [
    new URL("../../shared/data/tinyshakespeare.txt", import.meta.url).pathname,
    new URL("../data/tinyshakespeare.txt", import.meta.url).pathname,
  ];
  for (const path of candidates) {
    try {
      await Deno.stat(path);
      return path;
    } catch { /* next */ }
  }
  if (Deno.env.get("CI") === "true") {
    throw new Error(`CI=true but the corpus is in none of ${candidates.join(", ")}`);
  }
  console.log(`skipped: Tiny Shakespeare not found in ${candidates.join(" or ")}`);
  return null;
}

/** A small play-like corpus (about 5 KB), so a tiny model learns enough to have clear choices. */
export function playCorpus(): string {
  const names = ["ROMEO", "JULIET", "NURSE"];
  const words = ["love", "night", "the", "moon", "sweet", "good", "my", "lord", "fair", "is", "O"];
  let s = 11;
  const next = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const lines = [];
  for (let i = 0; i < 150; i++) {
    lines.push(`${names[Math.floor(next() * names.length)]}:`);
    lines.push(
      Array.from({ length: 6 }, () => words[Math.floor(next() * words.length)]).join(" ") + ".",
      "",
    );
  }
  return lines.join("\n");
}
