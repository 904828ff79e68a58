/**
 * The `inspect` command of the CLI: generates step by step (greedy, or sampled with --temperature
 * and --seed), prints the top candidates of every step as an aligned table, then the text, and
 * draws the attention of one layer as an SVG file (--out) or as a heatmap in the terminal.
 *
 * I/O goes through the functions the CLI passes in, so this module keeps to web-standard APIs
 * (it only peeks at `Deno.stdout.isTerminal()` and `Deno.noColor` when they exist).
 *
 * @module
 */

import { InputError } from "./errors.ts";
import { type FlagValues as Values, kernelsFlag, numberFlag, stringFlag } from "./flags.ts";
import {
  formatCandidateTable,
  inspectText,
  renderAttentionSvg,
  renderAttentionTerminal,
} from "./inspect.ts";
import { setupKernels } from "./tensor.ts";
import type { ModelFile } from "./weights.ts";

/** What the CLI lends the command. */
export interface InspectIO {
  readInput(path: string | URL, what: string): Promise<Uint8Array>;
  writeStdout(text: string): void;
  writeFileAtomic(path: string, bytes: Uint8Array): Promise<void>;
  log(line: string): void;
  /** Loads a weights file (undefined: the shipped weights). */
  loadWeightsFile(path: string | undefined): Promise<ModelFile>;
  /** Whether stdout is a terminal (default: asks Deno when present, else false). */
  isTerminal?: () => boolean;
  /** Whether colour is off (default: Deno.noColor when present, else false). */
  noColor?: boolean;
}

/** Default characters generated, candidates shown. */
export const INSPECT_DEFAULTS = { tokens: 20, top: 5 } as const;

/** Most characters `inspect` generates (its output is a row per character). */
export const MAX_INSPECT_TOKENS = 10000;

interface DenoLike {
  stdout?: { isTerminal?: () => boolean };
  noColor?: boolean;
}

function denoGlobal(): DenoLike | undefined {
  return (globalThis as { Deno?: DenoLike }).Deno;
}

/**
 * `inspect --weights W --prompt TEXT [--tokens N] [--top N] [--layer L] [--out FILE.svg]
 * [--temperature T --seed S] [--kernels TIER]`.
 *
 * stdout: the candidate table, a blank line, the whole text (prompt + generated), and without
 * --out the terminal heatmaps. stderr: what was run and where the SVG went.
 */
export async function inspectCommand(v: Values, io: InspectIO): Promise<void> {
  const prompt = stringFlag(v, "prompt");
  if (prompt === undefined) {
    throw new InputError("inspect needs --prompt TEXT; see `inspect --help`");
  }
  const tokens = numberFlag(v, "tokens", 0, MAX_INSPECT_TOKENS, true) ?? INSPECT_DEFAULTS.tokens;
  const temperature = numberFlag(v, "temperature", 0, 100, false) ?? 0;
  const seed = numberFlag(v, "seed", 0, 2 ** 32 - 1, true);
  if (temperature > 0 && seed === undefined) {
    throw new InputError(
      `--temperature ${temperature} needs --seed S (an integer) so that the run can be repeated; add --seed 1, or drop --temperature for greedy decoding`,
    );
  }
  const out = stringFlag(v, "out");
  const tier = setupKernels(kernelsFlag(v));

  const { model, tokenizer } = await io.loadWeightsFile(stringFlag(v, "weights"));
  const c = model.config;
  const top = numberFlag(v, "top", 1, c.vocabSize, true) ??
    Math.min(INSPECT_DEFAULTS.top, c.vocabSize);
  const layer = numberFlag(v, "layer", 0, c.nLayers - 1, true) ?? c.nLayers - 1;
  const promptIds = tokenizer.encode(prompt); // InputError naming unknown characters

  const newlineId = tokenizer.has("\n") ? tokenizer.encode("\n")[0] : 0;
  const result = inspectText(model, promptIds, {
    tokens,
    top,
    layer,
    temperature,
    seed: seed ?? 0,
    newlineId,
  });
  const map = result.attention;
  const n = map.tokens.length;
  io.log(
    `inspect: ${tokens} step${tokens === 1 ? "" : "s"}, ${
      temperature > 0 ? `temperature ${temperature}, seed ${seed}` : "greedy"
    }, ${top} candidate${top === 1 ? "" : "s"}; attention of layer ${layer} (layers 0..${
      c.nLayers - 1
    }), ${c.nHeads} heads, characters ${map.start}..${map.start + n - 1}; kernels ${tier}`,
  );

  // the SVG first: a file that cannot be written fails the command before anything is printed
  if (out !== undefined) {
    const svg = renderAttentionSvg(map, tokenizer.vocab);
    await io.writeFileAtomic(out, new TextEncoder().encode(svg));
    io.log(
      `wrote ${out}: ${c.nHeads} attention heatmap${
        c.nHeads === 1 ? "" : "s"
      } of ${n} x ${n} characters (layer ${layer}), ${n * (n + 1) / 2} cells each`,
    );
  }
  const deno = denoGlobal();
  const tty = io.isTerminal ? io.isTerminal() : deno?.stdout?.isTerminal?.() ?? false;
  const color = tty && !(io.noColor ?? deno?.noColor ?? false);
  if (result.steps.length > 0) {
    io.writeStdout(formatCandidateTable(result.steps, tokenizer.vocab, { top, bars: tty }) + "\n");
  }
  io.writeStdout(tokenizer.decode([...result.prompt, ...result.generated]) + "\n");
  if (out === undefined) {
    io.writeStdout("\n" + renderAttentionTerminal(map, tokenizer.vocab, { color }));
  }
}
