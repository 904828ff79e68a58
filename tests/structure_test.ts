// The shape of the project: faces (CLI, web page, examples, notebooks) reach lib/ only through
// the package's exports; lib/ runs outside Deno (no `Deno` in its code); no hand-written source
// file grows past 500 lines; and the reference and fast kernel tiers train alike.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { kernelTier, setupKernels } from "../lib/kernels/dispatch.ts";
import { GPT, type ModelConfig } from "../lib/model.ts";
import { Tokenizer } from "../lib/tokenizer.ts";
import { Trainer } from "../lib/trainer.ts";
import { smallCorpus } from "./fixtures.ts";
import { availableTiers } from "./tiers.ts";

const ROOT = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Every .ts file under dir (relative to the root), skipping the folders given; [] if absent. */
function tsFiles(dir: string, skip: string[] = []): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(`${ROOT}/${rel}`)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const e of entries) {
      const path = rel === "" ? e.name : `${rel}/${e.name}`;
      if (skip.some((s) => path === s || path.startsWith(`${s}/`))) continue;
      if (e.isDirectory) walk(path);
      else if (e.isFile && path.endsWith(".ts")) out.push(path);
    }
  };
  walk(dir);
  return out.sort();
}

/** The module specifiers a source file imports or re-exports (static and dynamic). */
export function importSpecifiers(source: string): string[] {
  const code = stripComments(source);
  const found: string[] = [];
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^"'`;]*?\bfrom\s*["']([^"']+)["']/g, // import x from "y"
    /\bimport\s*["']([^"']+)["']/g, // import "y"
    /\bimport\s*\(\s*["']([^"']+)["']/g, // import("y")
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) found.push(m[1]);
  return found;
}

/** The source without comments (strings kept). */
function stripComments(source: string): string {
  return blank(source, false);
}

/** The source without comments and without string and template literals. */
function stripCommentsAndStrings(source: string): string {
  return blank(source, true);
}

/** Replaces comments (and, with `strings`, string literals) by spaces, keeping line breaks. */
function blank(s: string, strings: boolean): string {
  let out = "";
  let i = 0;
  const keep = (from: number, to: number, drop: boolean) => {
    out += drop ? s.slice(from, to).replace(/[^\n]/g, " ") : s.slice(from, to);
  };
  while (i < s.length) {
    const c = s[i], next = s[i + 1];
    if (c === "/" && next === "/") {
      const end = s.indexOf("\n", i);
      const to = end < 0 ? s.length : end;
      keep(i, to, true);
      i = to;
    } else if (c === "/" && next === "*") {
      const end = s.indexOf("*/", i + 2);
      const to = end < 0 ? s.length : end + 2;
      keep(i, to, true);
      i = to;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < s.length && s[j] !== c) {
        if (s[j] === "\\") j++;
        else if (c !== "`" && s[j] === "\n") break;
        j++;
      }
      const to = Math.min(j + 1, s.length);
      keep(i, to, strings);
      i = to;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Joins a relative specifier to the importing file's folder (both relative to the root). */
function resolveRelative(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const p of spec.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== ".") parts.push(p);
  }
  return parts.join("/");
}

const denoJson = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
const exported = new Set(
  Object.values(denoJson.exports as Record<string, string>).map((p) => p.replace(/^\.\//, "")),
);

Deno.test("the exports of deno.json are mod.ts and lib/draw.ts", () => {
  assert(exported.has("mod.ts") && exported.has("lib/draw.ts"), [...exported].join(", "));
});

Deno.test("a face never imports lib/ directly, only the package's exports", () => {
  const faces = [
    ...["cli.ts"].filter((f) => {
      try {
        return Deno.statSync(`${ROOT}/${f}`).isFile;
      } catch {
        return false;
      }
    }),
    ...tsFiles("cli"),
    ...tsFiles("web", ["web/dist"]),
    ...tsFiles("examples"),
    ...tsFiles("notebooks"),
  ];
  assert(faces.includes("cli.ts"), "cli.ts was not found");
  const bad: string[] = [];
  for (const file of faces) {
    for (const spec of importSpecifiers(Deno.readTextFileSync(`${ROOT}/${file}`))) {
      if (!spec.startsWith(".")) continue; // npm:, jsr:, the import map: not lib/
      const target = resolveRelative(file, spec);
      if (target.startsWith("lib/") && !exported.has(target)) bad.push(`${file}: ${spec}`);
    }
  }
  assertEquals(bad, [], `faces importing lib/ past the exports:\n  ${bad.join("\n  ")}`);
});

/** The notebooks under notebooks/ (relative to the root); [] if none. */
function notebookFiles(): string[] {
  try {
    return [...Deno.readDirSync(`${ROOT}/notebooks`)]
      .filter((e) => e.isFile && e.name.endsWith(".ipynb"))
      .map((e) => `notebooks/${e.name}`)
      .sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

Deno.test("a notebook's code cells import the library through mod.ts only", () => {
  const notebooks = notebookFiles();
  assert(notebooks.includes("notebooks/tour.ipynb"), "notebooks/tour.ipynb was not found");
  const bad: string[] = [];
  for (const file of notebooks) {
    const nb = JSON.parse(Deno.readTextFileSync(`${ROOT}/${file}`));
    const cells = (nb.cells as { cell_type: string; source: string | string[] }[])
      .filter((c) => c.cell_type === "code")
      .map((c) => (Array.isArray(c.source) ? c.source.join("") : c.source));
    const specs = cells.flatMap(importSpecifiers);
    assert(specs.some((s) => resolveRelative(file, s) === "mod.ts"), `${file} imports no mod.ts`);
    for (const spec of specs) {
      if (!spec.startsWith(".")) continue; // npm:, jsr:, a URL: not lib/
      const target = resolveRelative(file, spec);
      if (target !== "mod.ts") bad.push(`${file}: ${spec}`);
    }
  }
  assertEquals(bad, [], `notebook cells importing past mod.ts:\n  ${bad.join("\n  ")}`);
});

Deno.test("the import parser finds static, type, re-export and dynamic imports", () => {
  const src = `import { a } from "./lib/a.ts";
import type { B } from '../lib/b.ts';
export { c } from "./lib/c.ts";
export * from "./lib/d.ts";
import "./lib/e.ts";
const f = await import("./lib/f.ts");
// import { g } from "./lib/g.ts";
/* import { h } from "./lib/h.ts"; */
import {
  i,
  j,
} from "./lib/ij.ts";`;
  assertEquals(importSpecifiers(src).sort(), [
    "../lib/b.ts",
    "./lib/a.ts",
    "./lib/c.ts",
    "./lib/d.ts",
    "./lib/e.ts",
    "./lib/f.ts",
    "./lib/ij.ts",
  ]);
  assertEquals(resolveRelative("web/app.ts", "../lib/draw.ts"), "lib/draw.ts");
  assertEquals(resolveRelative("cli/inspect.ts", "../mod.ts"), "mod.ts");
  assertEquals(resolveRelative("cli.ts", "./lib/model.ts"), "lib/model.ts");
});

Deno.test("lib/ never uses Deno (comments and strings aside)", () => {
  const files = tsFiles("lib");
  assert(files.length > 10);
  const uses: string[] = [];
  for (const file of files) {
    const lines = stripCommentsAndStrings(Deno.readTextFileSync(`${ROOT}/${file}`)).split("\n");
    lines.forEach((line, i) => {
      if (/\bDeno\b/.test(line)) uses.push(`${file}:${i + 1}: ${line.trim()}`);
    });
    // a name spelled as a string, as in globalThis["Deno"], counts too
    const code = stripComments(Deno.readTextFileSync(`${ROOT}/${file}`)).split("\n");
    code.forEach((line, i) => {
      if (/["'`]Deno["'`]/.test(line)) uses.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assertEquals(uses, [], `Deno in lib/:\n  ${uses.join("\n  ")}`);
  // the stripping keeps code and drops what only talks about Deno
  const probe = stripCommentsAndStrings(`// Deno\nconst a = "Deno"; /* Deno */ Deno.exit();`);
  assertEquals(probe.match(/\bDeno\b/g)?.length, 1);
});

Deno.test("no hand-written source file is over 500 lines", () => {
  const skip = ["tests", "node_modules", "web/dist", "lib/kernels/wasm_bytes.ts", ".git"];
  const files = tsFiles("", skip);
  assert(files.includes("lib/model.ts"));
  const long: string[] = [];
  for (const file of files) {
    const text = Deno.readTextFileSync(`${ROOT}/${file}`);
    const lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    if (lines > 500) long.push(`${file}: ${lines} lines`);
  }
  assertEquals(long, [], `files over 500 lines:\n  ${long.join("\n  ")}`);
});

// ---------------------------------------------------------------------------------------------
// The reference tier and the fastest tier take the same training step

/** One training step of a small model on the current tier: its loss and parameters after. */
async function oneStep(
  text: string,
): Promise<{ loss: number; init: Float64Array; params: Float64Array }> {
  const tokenizer = Tokenizer.fromText(text);
  const config: ModelConfig = {
    vocabSize: tokenizer.size,
    blockSize: 16,
    dModel: 32,
    nLayers: 2,
    nHeads: 2,
  };
  const model = new GPT(config, { tokenizer }).init(1);
  const init = Float64Array.from(model.flat);
  const trainer = await Trainer.create(model, text, {
    batch: 4,
    steps: 10,
    seed: 3,
    lr: 1e-2,
    warmup: 1,
    beta1: 0.9,
    beta2: 0.95,
    weightDecay: 0.1,
  });
  try {
    const loss = await trainer.step();
    return { loss, init, params: Float64Array.from(model.flat) };
  } finally {
    trainer.close();
  }
}

Deno.test("the README's reading path lists its files with their true line counts, 1,300 in all at most", () => {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const section = readme.slice(readme.indexOf("## Read the code"), readme.indexOf("## Layout"));
  const rows = [...section.matchAll(/^\| \[`(lib\/[\w.]+)`\]\([^)]+\) +\| +(\d+) \|/gm)];
  assert(rows.length >= 6, "the reading path table lists the files");
  let total = 0;
  for (const [, file, stated] of rows) {
    const lines = Deno.readTextFileSync(`${ROOT}/${file}`).split("\n").length - 1;
    assertEquals(Number(stated), lines, `${file}: the README says ${stated} lines`);
    total += lines;
  }
  assert(total <= 1300, `the reading path is ${total} lines`);
  assert(
    section.includes(`${total.toLocaleString("en-US")} lines in all`),
    `total ${total} stated`,
  );
});

Deno.test("one training step on the js tier and on the fastest tier agree within 1e-4", async () => {
  const best = availableTiers().at(-1)!;
  const text = smallCorpus();
  try {
    assertEquals(setupKernels("js"), "js");
    const ref = await oneStep(text);
    assertEquals(setupKernels(best), best);
    assertEquals(kernelTier(), best);
    const fast = await oneStep(text);
    assert(Number.isFinite(ref.loss) && ref.loss > 0);
    assert(Math.abs(fast.loss - ref.loss) <= 1e-4, `loss: ${fast.loss} (${best}) vs ${ref.loss}`);
    assertEquals(fast.params.length, ref.params.length);
    let worst = 0, at = 0;
    for (let i = 0; i < ref.params.length; i++) {
      const d = Math.abs(fast.params[i] - ref.params[i]);
      if (d > worst) [worst, at] = [d, i];
    }
    assert(worst <= 1e-4, `parameter ${at}: ${fast.params[at]} (${best}) vs ${ref.params[at]}`);
    // the step moved the parameters (the comparison is not of two untouched inits)
    assertEquals(fast.init, ref.init);
    assert(ref.init.some((x, i) => Math.abs(x - ref.params[i]) > 1e-3));
  } finally {
    setupKernels("js");
  }
});
