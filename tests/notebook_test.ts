// notebooks/tour.ipynb runs top to bottom in Deno's Jupyter kernel, and its committed outputs are
// current (issue 18). The notebook is executed headless by tests/run_notebook.py with Debian's
// nbclient (python3-nbclient; python3-nbconvert brings the rest) into a temporary folder, with a
// kernelspec made there for this very Deno (`deno jupyter --kernel`, as `deno jupyter --install`
// registers it), and the training cell shortened through TOUR_TRAIN_SECONDS. The run must have no
// error output and nothing on stderr, draw its pictures (SVG or HTML, at least four), and give
// every code cell the output types the committed notebook holds. Without nbclient the run is
// skipped with a printed reason (with CI=true it fails: `.ci/run` installs the packages). The
// code cells also type-check as one module, and `deno task notebook` says how to open the file.
//
// To refresh the committed outputs after editing the notebook (a real run, training for 60 s):
//   /usr/bin/python3 tests/run_notebook.py notebooks/tour.ipynb notebooks/tour.ipynb

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { HOW_TO_OPEN } from "../scripts/notebook.ts";

const REPO = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const NOTEBOOK = `${REPO}/notebooks/tour.ipynb`;
const PYTHON = "/usr/bin/python3"; // Debian's, where apt puts nbclient (not a pyenv one)
const TRAIN_SECONDS = 20; // the committed run trains for 60
const decoder = new TextDecoder();

interface Output {
  output_type: "stream" | "display_data" | "execute_result" | "error" | "update_display_data";
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}
interface Cell {
  cell_type: "code" | "markdown" | "raw";
  source: string | string[];
  execution_count?: number | null;
  outputs?: Output[];
}
interface Notebook {
  cells: Cell[];
  metadata: { kernelspec?: { name: string; language?: string } };
}

const text = (s: string | string[] | undefined) => (Array.isArray(s) ? s.join("") : s ?? "");
const codeCells = (nb: Notebook) => nb.cells.filter((c) => c.cell_type === "code");
const ANSI = new RegExp("\u001b\\[[0-9;]*m", "g"); // the colours of a traceback
const PICTURE_TYPES = ["image/svg+xml", "text/html"];
const isPicture = (o: Output) => PICTURE_TYPES.some((t) => o.data?.[t] !== undefined);

/** What a cell showed, as types: `display_data:image/svg+xml`, `stream:stdout` (pieces joined). */
function outputTypes(cell: Cell): string[] {
  const types: string[] = [];
  for (const o of cell.outputs ?? []) {
    const type = o.output_type === "stream"
      ? `stream:${o.name}`
      : `${o.output_type}:${Object.keys(o.data ?? {}).sort().join(",")}`;
    if (o.output_type === "stream" && types.at(-1) === type) continue; // one stream, in pieces
    types.push(type);
  }
  return types;
}

/** Every error output and every stderr stream of a notebook, one line each. */
function problems(nb: Notebook): string[] {
  const found: string[] = [];
  for (const [i, cell] of codeCells(nb).entries()) {
    for (const o of cell.outputs ?? []) {
      if (o.output_type === "error") {
        const trace = (o.traceback ?? []).join("\n").replace(ANSI, "");
        found.push(`code cell ${i + 1}: ${o.ename}: ${o.evalue}\n${trace}`);
      } else if (o.output_type === "stream" && o.name === "stderr") {
        found.push(`code cell ${i + 1} wrote to stderr: ${text(o.text).slice(0, 2000)}`);
      }
    }
  }
  return found;
}

/** The picture outputs of a notebook, checked to be whole SVG documents or HTML. */
function pictures(nb: Notebook): string[] {
  const found: string[] = [];
  for (const cell of codeCells(nb)) {
    for (const o of (cell.outputs ?? []).filter(isPicture)) {
      const svg = text(o.data!["image/svg+xml"]), html = text(o.data!["text/html"]);
      if (svg) assert(/^<svg[\s>]/.test(svg) && svg.trimEnd().endsWith("</svg>"), svg.slice(0, 80));
      else assert(/^\s*</.test(html), html.slice(0, 80));
      found.push(svg || html);
    }
  }
  return found;
}

async function python(args: string[], options: Deno.CommandOptions = {}) {
  const out = await new Deno.Command(PYTHON, { args, stdout: "piped", stderr: "piped", ...options })
    .output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Why the notebook cannot be executed here, or null when it can. */
async function missingTools(): Promise<string | null> {
  try {
    const r = await python(["-c", "import nbclient, nbformat, jupyter_client"]);
    if (r.code === 0) return null;
    return `${PYTHON} lacks nbclient (apt-get install python3-nbconvert python3-nbclient)`;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return `no ${PYTHON}`;
    throw e;
  }
}

const committed: Notebook = JSON.parse(await Deno.readTextFile(NOTEBOOK));

Deno.test("deno task notebook prints how to open the notebook, with no permission", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${REPO}/deno.json`));
  assertEquals(config.tasks.notebook, "deno run scripts/notebook.ts");
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "notebook"],
    cwd: REPO,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assertEquals([out.code, decoder.decode(out.stderr)], [0, ""]);
  assertEquals(decoder.decode(out.stdout), HOW_TO_OPEN + "\n");
  for (const step of ["deno jupyter --install", "notebooks/tour.ipynb", "VS Code", "Jupyter"]) {
    assert(HOW_TO_OPEN.includes(step), step);
  }
});

Deno.test("the committed notebook carries the outputs of a whole, real run, without errors", () => {
  assertEquals(committed.metadata.kernelspec?.name, "deno");
  const cells = codeCells(committed);
  assert(cells.length >= 10, `${cells.length} code cells`);
  assertEquals(cells.map((c) => c.execution_count), cells.map((_, i) => i + 1));
  assertEquals(problems(committed), []);
  const shown = pictures(committed);
  assert(shown.length >= 4, `${shown.length} pictures`);
  // the training cell ran for its full minute (a test run trains for less)
  assert(shown.some((p) => p.includes("60 s of training")), "the committed run trained for 60 s");
  // every cell ends with a newline: `deno fmt --check` (Deno 2.9) flags a cell that does not
  for (const [i, cell] of committed.cells.entries()) {
    assert(text(cell.source).endsWith("\n"), `cell ${i + 1} does not end with a newline`);
  }
  // nothing of the machine it ran on
  const all = JSON.stringify(committed.cells.map((c) => c.outputs ?? []));
  assert(!all.includes(REPO) && !/\/(home|root|tmp)\//.test(all), "a local path in the outputs");
});

Deno.test("the notebook's code cells type-check as one module", async () => {
  const dir = await Deno.makeTempDir({ prefix: "baregpt_notebook_check_" });
  try {
    const mod = new URL("../mod.ts", import.meta.url).href;
    const source = codeCells(committed).map((c) => text(c.source)).join("\n\n")
      .replaceAll('"../mod.ts"', JSON.stringify(mod));
    await Deno.writeTextFile(`${dir}/tour.ts`, source);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", `${dir}/tour.ts`],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 0, decoder.decode(out.stderr));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the notebook runs top to bottom in Deno's kernel; its outputs are the committed ones", async () => {
  const missing = await missingTools();
  if (missing !== null) {
    if (Deno.env.get("CI") === "true") throw new Error(`${missing} (CI=true: it must run)`);
    console.log(`skipped: ${missing}`);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "baregpt_notebook_" });
  try {
    // a kernelspec for this Deno, found first on JUPYTER_PATH: the one `deno jupyter --install`
    // writes, with this executable (and named apart from a user's own "deno" kernel)
    const spec = `${dir}/jupyter/kernels/baregpt-deno`;
    await Deno.mkdir(spec, { recursive: true });
    await Deno.writeTextFile(
      `${spec}/kernel.json`,
      JSON.stringify({
        argv: [Deno.execPath(), "jupyter", "--kernel", "--conn", "{connection_file}"],
        display_name: "Deno",
        language: "typescript",
      }),
    );
    const started = performance.now();
    const r = await python([
      `${REPO}/tests/run_notebook.py`, // nbclient; errors are kept in the outputs, checked below
      NOTEBOOK, // the kernel starts in notebooks/, as in Jupyter and VS Code
      `${dir}/tour.ipynb`,
      "--kernel=baregpt-deno",
      "--timeout=240",
    ], {
      env: {
        JUPYTER_PATH: `${dir}/jupyter`,
        JUPYTER_RUNTIME_DIR: `${dir}/runtime`,
        TOUR_TRAIN_SECONDS: String(TRAIN_SECONDS),
        NO_COLOR: "1",
      },
      signal: AbortSignal.timeout(400_000),
    });
    const seconds = ((performance.now() - started) / 1000).toFixed(0);
    assertEquals(r.code, 0, `the run exited ${r.code}:\n${r.stderr}`);
    console.log(`the notebook ran in ${seconds} s`);
    const ran: Notebook = JSON.parse(await Deno.readTextFile(`${dir}/tour.ipynb`));

    assertEquals(problems(ran), [], "errors in the run");
    const cells = codeCells(ran);
    assertEquals(cells.map((c) => c.execution_count), cells.map((_, i) => i + 1));
    // the cells that draw drew: SVG or HTML, at least four pictures in all
    const shown = pictures(ran);
    assert(shown.length >= 4, `${shown.length} pictures`);
    for (const [i, cell] of codeCells(committed).entries()) {
      if (cell.outputs?.some(isPicture)) {
        assert(cells[i].outputs?.some(isPicture), `code cell ${i + 1} drew no picture`);
      }
    }
    assert(shown.some((p) => p.includes(`${TRAIN_SECONDS} s of training`)), "the loss chart");
    // the committed outputs are current: every code cell shows the same types of output
    const types = (nb: Notebook) => codeCells(nb).map((c, i) => `${i + 1}: ${outputTypes(c)}`);
    assertEquals(types(ran), types(committed), "output types of the run (left) and committed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
