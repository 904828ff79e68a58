/**
 * `inspect`: generates step by step (greedy, or sampled with --temperature), prints
 * the top candidates of every step as an aligned table, then the text, and draws the attention
 * of one layer as an SVG file (--out) or as a heatmap in the terminal.
 *
 * @module
 */

import {
  formatCandidateTable,
  InputError,
  inspect,
  INSPECT_OPTIONS,
  renderAttentionSvg,
  renderAttentionTerminal,
  SAMPLING_OPTIONS,
  selectKernels,
} from "../mod.ts";
import { kernelsFlag, numberFlag, range, stringFlag, textFlag, type Values } from "./flags.ts";
import { checkOutput, loadWeightsFile, writeFileAtomic } from "./files.ts";
import { log, writeStdout } from "./output.ts";

/**
 * `inspect [--weights W] --prompt TEXT [--tokens N] [--top N] [--layer L] [--out FILE.svg]
 * [--temperature T [--seed S]] [--kernels TIER]`.
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
  const tier = selectKernels(kernelsFlag(v));
  // before any work: the SVG's folder must be readable and writable (created if missing)
  if (out !== undefined) await checkOutput(out, { createFolder: true });

  const model = await loadWeightsFile(stringFlag(v, "weights"));
  const c = model.config, vocab = model.tokenizer.vocab;
  const top = numberFlag(v, "top", { ...o.top, max: c.vocabSize }) ??
    Math.min(o.top.default!, c.vocabSize);
  const layer = numberFlag(v, "layer", range(0, c.nLayers - 1)) ?? c.nLayers - 1;
  const result = inspect(model, prompt, { tokens, top, layer, temperature, seed: seed ?? 0 });
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
  if (out !== undefined) {
    const svg = renderAttentionSvg(map, vocab);
    await writeFileAtomic(out, new TextEncoder().encode(svg));
    log(
      `wrote ${out}: ${c.nHeads} attention heatmap${
        c.nHeads === 1 ? "" : "s"
      } of ${n} x ${n} characters (layer ${layer}), ${n * (n + 1) / 2} cells each`,
    );
  }
  const tty = Deno.stdout.isTerminal();
  const color = tty && !Deno.noColor;
  if (result.steps.length > 0) {
    writeStdout(formatCandidateTable(result.steps, vocab, { top, bars: tty }) + "\n");
  }
  writeStdout(model.tokenizer.decode([...result.prompt, ...result.generated]) + "\n");
  if (out === undefined) {
    writeStdout("\n" + renderAttentionTerminal(map, vocab, { color }));
  }
}
