/**
 * `inspect`: generates step by step (greedy, or sampled with --temperature), prints
 * the top candidates of every step as an aligned table, then the text, and draws the attention
 * of one layer as an SVG file (--out) or as a heatmap in the terminal.
 *
 * @module
 */

import {
  clipAttention,
  formatCandidateTable,
  InputError,
  inspect,
  INSPECT_OPTIONS,
  renderAttentionSvg,
  renderAttentionTerminal,
  SAMPLING_OPTIONS,
  selectKernels,
  WeightsError,
} from "../mod.ts";
import { kernelsFlag, numberFlag, range, stringFlag, textFlag, type Values } from "./flags.ts";
import {
  checkOutput,
  displayPath,
  exists,
  loadWeightsFile,
  SHIPPED_WEIGHTS,
  writeFileAtomic,
} from "./files.ts";
import { escapeControls, log, writeStdout } from "./output.ts";

/**
 * `inspect [--weights W] --prompt TEXT [--tokens N] [--top N] [--layer L] [--out FILE.svg]
 * [--temperature T [--seed S]] [--force] [--kernels TIER]`; `--out -` writes the SVG to stdout.
 */
export async function inspectCommand(v: Values): Promise<void> {
  const prompt = textFlag(v, "prompt"); // "": start from a newline
  if (prompt === undefined) {
    throw new InputError(
      'inspect needs --prompt TEXT (--prompt "" starts from a newline); see `inspect --help`',
    );
  }
  const o = INSPECT_OPTIONS;
  const tokens = numberFlag(v, "tokens", o.tokens) ?? o.tokens.default!;
  const temperature = numberFlag(v, "temperature", SAMPLING_OPTIONS.temperature) ?? 0;
  let seed = numberFlag(v, "seed", SAMPLING_OPTIONS.seed);
  // sampling without --seed draws one and prints it, as `sample` does, so the run can be repeated
  const drawn = temperature > 0 && seed === undefined;
  if (drawn) seed = crypto.getRandomValues(new Uint32Array(1))[0];
  const out = stringFlag(v, "out");
  const toStdout = out === "-"; // the SVG on stdout; the table and the text then go to stderr
  const weights = stringFlag(v, "weights");
  const choice = kernelsFlag(v);
  if (choice === "webgpu") {
    log(
      "note: inspect runs on the CPU's WebAssembly kernels (it reads the attention of every step); --kernels webgpu applies to train, sample and eval",
    );
  }
  const tier = selectKernels(choice === "webgpu" ? undefined : choice);
  // before any work: the SVG's folder must be readable and writable (created if missing), the
  // SVG (and its temporary file) absent or a regular file and not the weights read, and an
  // existing SVG is replaced only with --force
  if (out !== undefined && !toStdout) {
    await checkOutput(out, {
      createFolder: true,
      inputs: [
        weights === undefined
          ? ["the shipped weights (the default --weights)", SHIPPED_WEIGHTS]
          : ["--weights", weights],
      ],
    });
    if (v.force !== true && (await exists(out))) {
      throw new InputError(
        `${out} already exists; pass --force to overwrite it or choose another --out`,
      );
    }
  }

  const model = await loadWeightsFile(weights);
  const c = model.config, vocab = model.tokenizer.vocab;
  const top = numberFlag(v, "top", { ...o.top, max: c.vocabSize }) ??
    Math.min(o.top.default!, c.vocabSize);
  const layer = numberFlag(v, "layer", range(0, c.nLayers - 1)) ?? c.nLayers - 1;
  let result;
  try {
    result = inspect(model, prompt, { tokens, top, layer, temperature, seed: seed ?? 0 });
  } catch (e) {
    if (!(e instanceof WeightsError) || !e.message.includes("the weights of this model")) throw e;
    const shown = weights ?? displayPath(SHIPPED_WEIGHTS);
    throw new WeightsError(
      e.message.replace("the weights of this model", `the weights of ${shown}`),
    );
  }
  const map = result.attention;
  const n = map.tokens.length;
  log(
    `inspect: ${tokens} step${tokens === 1 ? "" : "s"}, ${
      temperature > 0
        ? `temperature ${temperature}, seed ${seed}${drawn ? " (drawn)" : ""}`
        : "greedy"
    }, ${top} candidate${top === 1 ? "" : "s"}; attention of layer ${layer} (layers 0..${
      c.nLayers - 1
    }), ${c.nHeads} heads, characters ${map.start}..${map.start + n - 1}; kernels ${tier}`,
  );

  // the SVG first: a file that cannot be written fails the command before anything is printed
  // with `--out -` stdout holds the SVG only: the table and the text, as they are, go to stderr
  const tty = (toStdout ? Deno.stderr : Deno.stdout).isTerminal();
  // text from a file's vocabulary reaches a terminal with its control characters escaped
  const shownText = (text: string) => tty ? escapeControls(text, "\n\t") : text;
  const product = (text: string) =>
    toStdout ? writeStderr(shownText(text) + "\n") : writeStdout(shownText(text) + "\n");
  // what is drawn is bounded (the last 256 characters, the first 16 heads): a long window's
  // picture grows with its square; the SVG's title and a note say what was left out
  const clip = clipAttention(map);
  if (clip.note !== "") {
    const { start, tokens } = clip.map;
    log(
      `note: the attention is too large to draw whole: drawing ${clip.note} (characters ${start}..${
        start + tokens.length - 1
      })`,
    );
  }
  if (out !== undefined) {
    const svg = renderAttentionSvg(map, vocab);
    if (toStdout) writeStdout(svg.endsWith("\n") ? svg : svg + "\n");
    else await writeFileAtomic(out, new TextEncoder().encode(svg));
    const d = clip.map.tokens.length, heads = clip.map.nHeads;
    log(
      `wrote ${toStdout ? "the SVG to standard output" : out}: ${heads} attention heatmap${
        heads === 1 ? "" : "s"
      } of ${d} x ${d} characters (layer ${layer}), ${d * (d + 1) / 2} cells each`,
    );
  }
  const color = tty && !Deno.noColor;
  if (result.steps.length > 0) {
    product(formatCandidateTable(result.steps, vocab, { top, bars: tty }));
  }
  product(model.tokenizer.decode([...result.prompt, ...result.generated]));
  if (out === undefined) {
    writeStdout("\n" + renderAttentionTerminal(map, vocab, { color }));
  }
}

/** Text on stderr as it is (the product, when stdout holds the SVG). */
function writeStderr(text: string): void {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(Deno.stderr.writeSync(bytes));
}
