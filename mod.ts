/**
 * BareGPT for Deno: a character-level GPT written from scratch in TypeScript, with hand-written
 * backpropagation, AdamW, KV-cache sampling and safetensors weights. The same code runs in Deno
 * and in browsers (it uses only web-standard APIs; the fast WebAssembly kernels are set up on
 * first use).
 *
 * - Load and save: {@linkcode loadWeights} (bytes, a URL or an absolute path; a weights file
 *   or a training checkpoint), {@linkcode saveWeights}, {@linkcode shippedWeightsUrl} (the
 *   weights trained on Tiny Shakespeare), {@linkcode decodeCorpus} (a text file's bytes, checked
 *   as the CLI does).
 * - Build and train: {@linkcode createModel}, {@linkcode createTrainer} (step it, run it with a
 *   progress callback and an `AbortSignal`, checkpoint and restore it), {@linkcode evaluate}
 *   (`unknown: "drop"` for real text), {@linkcode extendVocabulary} (fine-tune on a text with
 *   new characters). The trainer trains on a text's first 90% and validates on the rest, as the
 *   CLI's `train`.
 * - Generate and look inside: {@linkcode generate} (an async iterable of characters),
 *   {@linkcode nextCharDistribution}, {@linkcode attention}, {@linkcode attentionMap},
 *   {@linkcode inspect}, {@linkcode inspectSteps} and {@linkcode inspectStream} (candidates and
 *   attention step by step; the stream runs on the GPU after `selectKernels("webgpu")`),
 *   {@linkcode forwardActivations} (every activation of one forward pass, named and shaped),
 *   {@linkcode layerNorm} and {@linkcode layerNormBackward} (a layer of the reference math, to
 *   check its gradient by finite differences). Pictures of them (SVG heatmaps, terminal views,
 *   tables) are the `./draw` export; {@linkcode barChartSvg}, {@linkcode lineChartSvg},
 *   {@linkcode textColumnsHtml} and {@linkcode picture} (an SVG or HTML document that shows
 *   itself in a Jupyter notebook) are here too, for notebooks (`notebooks/tour.ipynb`).
 * - Kernels: {@linkcode selectKernels} (a tier, shared or plain memory, or "webgpu": training,
 *   evaluation and generation on the GPU), {@linkcode bestKernels}, {@linkcode webgpuAdapter},
 *   {@linkcode describeAdapter}.
 * - Options: {@linkcode MODEL_OPTIONS}, {@linkcode TRAIN_OPTIONS}, {@linkcode SAMPLING_OPTIONS}
 *   (every range and default, from which the CLI's flags take theirs).
 * - Errors: {@linkcode InputError} (bad input), {@linkcode WeightsError} (a bad weights file),
 *   both {@linkcode BareGPTError}s; `error.options` names the options a message is about.
 *
 * @example Stream text from the shipped weights (needs `--allow-read`)
 * ```ts
 * import { generate, loadWeights, shippedWeightsUrl } from "@baregpt/baregpt";
 *
 * const model = await loadWeights(shippedWeightsUrl);
 * const out = new TextEncoder();
 * for await (const ch of generate(model, { prompt: "ROMEO:", tokens: 200, temperature: 0.8 })) {
 *   await Deno.stdout.write(out.encode(ch));
 * }
 * ```
 *
 * @example Train a small model on your own text and save it
 * ```ts
 * import { createModel, createTrainer, generate, saveWeights } from "@baregpt/baregpt";
 *
 * const text = "the quick brown fox jumps over the lazy dog. ".repeat(20); // or Deno.readTextFile
 * const model = createModel(text, { blockSize: 32, dModel: 32, nLayers: 1, nHeads: 2 });
 * using trainer = await createTrainer(model, text, { steps: 50, batch: 8, lr: 5e-3, warmup: 5 });
 * await trainer.run({
 *   onProgress: ({ step, loss }) => {
 *     if (step % 10 === 0) console.log(`step ${step}: loss ${loss.toFixed(3)}`);
 *   },
 * });
 * const bytes = saveWeights(model, { steps: trainer.stepsDone }); // Deno.writeFile(path, bytes)
 * console.log((await Array.fromAsync(generate(model, { prompt: "the ", tokens: 40 }))).join(""));
 * ```
 *
 * @module
 */

export {
  bestKernels,
  createModel,
  createTrainer,
  describeAdapter,
  evaluate,
  type KernelChoice,
  type KernelOptions,
  type KernelTier,
  type Model,
  type ModelOptions,
  selectKernels,
  type WebGpuAdapter,
  webgpuAdapter,
} from "./lib/api.ts";
export {
  decodeCorpus,
  type DecodeCorpusOptions,
  type LoadOptions,
  loadWeights,
  saveWeights,
  shippedWeightsUrl,
} from "./lib/load.ts";
export type {
  EvaluateOptions,
  Evaluation,
  RunOptions,
  RunResult,
  StepInfo,
  Trainer,
  TrainerOptions,
} from "./lib/api.ts";
export {
  type AttentionMap,
  type Candidate,
  type CharProbability,
  type DistributionOptions,
  generate,
  type GenerateOptions,
  inspect,
  type InspectOptions,
  type InspectResult,
  type InspectStep,
  inspectSteps,
  inspectStream,
  nextCharDistribution,
  type SamplingOptions,
  topCandidates,
} from "./lib/generate.ts";
export {
  type Attention,
  attention,
  attentionMap,
  forwardActivations,
  type NamedActivation,
} from "./lib/forward.ts";
export type { ModelConfig } from "./lib/model.ts";
export { type ExtendOptions, extendVocabulary, type Extension } from "./lib/vocab.ts";
export {
  DECAYS,
  describeRange,
  INSPECT_OPTIONS,
  MODEL_OPTIONS,
  OPTIMIZERS,
  type OptionSpec,
  SAMPLING_OPTIONS,
  TRAIN_OPTIONS,
  type TrainSettings,
} from "./lib/options.ts";
export { BareGPTError, InputError, isBareGPTError, WeightsError } from "./lib/errors.ts";
export {
  attentionColor,
  attentionSvg,
  clipAttention,
  displayChar,
  formatCandidateTable,
  renderAttentionSvg,
  renderAttentionTerminal,
  scalePosition,
} from "./lib/draw.ts";
export {
  type Bar,
  type BarChartOptions,
  barChartSvg,
  type LineChartOptions,
  lineChartSvg,
  type LinePoint,
  type LineSeries,
  Picture,
  picture,
  type PictureType,
  type TextColumn,
  textColumnsHtml,
} from "./lib/charts.ts";
export {
  layerNorm,
  layerNormBackward,
  type LayerNormGradients,
  type LayerNormResult,
} from "./lib/reference.ts";
export { Tokenizer } from "./lib/tokenizer.ts";
export { type TrainCommand, trainCommand } from "./lib/command.ts";
export { trainingMemoryBytes } from "./lib/api.ts";
