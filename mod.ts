/**
 * BareGPT for Deno: a character-level GPT written from scratch in TypeScript, with
 * hand-written backpropagation, AdamW, KV-cache sampling and safetensors weights. The same code
 * runs in Deno and in browsers (it uses only web-standard APIs).
 *
 * @example Stream text from a weights file
 * ```ts ignore
 * import { generateTokens, loadModel } from "./mod.ts";
 *
 * const { model, tokenizer } = loadModel(await Deno.readFile("weights/shakespeare.safetensors"));
 * for (const id of generateTokens(model, tokenizer.encode("ROMEO:"), 0, { tokens: 200, seed: 1 })) {
 *   console.log(tokenizer.vocab[id]);
 * }
 * ```
 *
 * @module
 */

export { BareGPTError, InputError, isBareGPTError, WeightsError } from "./lib/errors.ts";
export { type Corpus, decodeText, makeCorpus, splitIndex } from "./lib/data.ts";
export {
  DEFAULT_CONFIG,
  forward,
  GPT,
  type GPTConfig,
  type GPTOptions,
  KVCache,
  parameterCount,
  parameterSpecs,
} from "./lib/model.ts";
export { Rng } from "./lib/rng.ts";
export {
  drawIndex,
  type GenerateOptions,
  generateTokens,
  nextDistribution,
  type SamplingOptions,
} from "./lib/sample.ts";
export { Tokenizer } from "./lib/tokenizer.ts";
export {
  type EvalResult,
  evaluate,
  type StepResult,
  TRAIN_DEFAULTS,
  Trainer,
  type TrainOptions,
} from "./lib/train.ts";
export { loadModel, type ModelFile, saveModel } from "./lib/weights.ts";
export { kernelTier, setupKernels } from "./lib/tensor.ts";
export type { KernelTier } from "./lib/kernels/mod.ts";
