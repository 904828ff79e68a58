/**
 * The operations of a training step on WebGPU: the same functions as `lib/tensor.ts`, with the
 * same argument order and semantics (row-major, weights stored [in, out], outputs first;
 * "accumulates" means +=), on {@linkcode GpuArray}s instead of typed arrays. Token ids are u32 on
 * the GPU (Uint16 in the reference).
 *
 * A method does not run anything: it records its dispatches into a compute pass, so that a whole
 * training step can be recorded in one pass and one submission. Dispatches of a pass run in order,
 * each seeing the writes of the ones before. Submit the recorded work with
 * {@linkcode GpuKernels.submit} (it first writes the dispatches' parameters), then read results
 * back with the usual copy to a MAP_READ buffer and `mapAsync`.
 *
 * @example
 * ```ts
 * import { requestGpu } from "./device.ts";
 * import { GpuKernels } from "./kernels.ts";
 * import { gpuArray } from "./pipelines.ts";
 *
 * const { device } = await requestGpu();
 * const k = await GpuKernels.create(device);
 * const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
 * const buf = device.createBuffer({ size: 12 * 4, usage });
 * device.queue.writeBuffer(buf, 0, new Float32Array([1, 2, 3, 4, 1, 1, 1, 1])); // x [1,4], w [4,1]
 * const encoder = device.createCommandEncoder();
 * const pass = encoder.beginComputePass();
 * k.matmul(pass, gpuArray(buf, 8), gpuArray(buf, 0), gpuArray(buf, 4), null, 1, 4, 1);
 * pass.end();
 * k.submit(encoder.finish()); // element 8 of buf becomes 10
 * ```
 *
 * @module
 */

import type { AdamWStep } from "../tensor.ts";
import { ATTENTION_SOURCES } from "./attention.ts";
import { DROPOUT_SOURCES, maskGroups, maskWords } from "./dropout.ts";
import { ELEMENT_THREADS, ELEMENTWISE_SOURCES, sumSquaresGroups } from "./elementwise.ts";
import {
  MATMUL_FORMS,
  matmulSource,
  SKINNY_ROWS,
  SKINNY_THREADS,
  skinnySource,
  TILE,
} from "./matmul.ts";
import { type GpuArray, type Groups, itemGroups, MAX_GROUPS, Pipelines } from "./pipelines.ts";
import { ROW_SOURCES, ROW_THREADS, withSubgroups } from "./rows.ts";
import { UPDATE_SOURCES } from "./update.ts";

type P = GPUComputePassEncoder;
type A = GpuArray;

/** Options of {@linkcode GpuKernels.create}. */
export interface GpuKernelOptions {
  /** Most dispatches recorded between two submissions (default 8192; 256 bytes each or less). */
  maxDispatches?: number;
  /**
   * Reduce rows with subgroup operations (default: when the device has the "subgroups"
   * feature); false takes the workgroup-memory tree everywhere.
   */
  subgroups?: boolean;
}

/** Floats of scratch {@linkcode GpuKernels.attentionBackward} needs: the score gradients. */
export function attentionScratchSize(B: number, T: number, H: number): number {
  return B * H * T * T;
}

/** A 1-D grid for an elementwise kernel over n elements. */
function elementGroups(n: number): Groups {
  return [Math.min(Math.ceil(n / ELEMENT_THREADS), MAX_GROUPS), 1];
}

/** The kernel and grid of a product with an R x S result: tiled, or one thread per element. */
function product(name: string, R: number, S: number): [string, Groups] {
  if (R > SKINNY_ROWS) return [name, [Math.ceil(S / TILE), Math.ceil(R / TILE)]];
  return [`${name}_skinny`, [Math.min(Math.ceil((R * S) / SKINNY_THREADS), MAX_GROUPS), 1]];
}

/** The WebGPU kernels of a device, compiled once. */
export class GpuKernels {
  private constructor(
    private readonly pipes: Pipelines,
    /** The sum of squares' partial sums (one float per workgroup of its first pass). */
    private readonly partials: A,
    /** Whether the row reductions use subgroup operations. */
    readonly subgroups: boolean,
  ) {}

  /** Compiles every kernel for `device`; an Error naming the kernel if one does not compile. */
  static async create(device: GPUDevice, options: GpuKernelOptions = {}): Promise<GpuKernels> {
    const sources = [
      ...MATMUL_FORMS.map(matmulSource),
      ...MATMUL_FORMS.map(skinnySource),
      ...ATTENTION_SOURCES,
      ...ROW_SOURCES,
      ...ELEMENTWISE_SOURCES,
      ...UPDATE_SOURCES,
      ...DROPOUT_SOURCES,
    ];
    const subgroups = options.subgroups ?? device.features.has("subgroups");
    if (subgroups && !device.features.has("subgroups")) {
      throw new RangeError("this device has no subgroups feature");
    }
    const compiled = subgroups ? sources.map(withSubgroups) : sources;
    const pipes = await Pipelines.compile(device, compiled, options.maxDispatches ?? 8192);
    const partials = device.createBuffer({
      label: "sum of squares partials",
      size: ROW_THREADS * 4,
      usage: GPUBufferUsage.STORAGE,
    });
    return new GpuKernels(pipes, { buffer: partials, offset: 0 }, subgroups);
  }

  /**
   * Writes the parameters of the dispatches recorded since the last submission, then submits
   * `commands`. Work these kernels recorded must be submitted here, not by `queue.submit`; a
   * recording may wait while fewer than `maxDispatches` dispatches are recorded after it.
   */
  submit(...commands: GPUCommandBuffer[]): void {
    this.pipes.submit(...commands);
  }

  /** The device the kernels were compiled for. */
  get device(): GPUDevice {
    return this.pipes.device;
  }

  /** Frees the kernels' own buffers. */
  destroy(): void {
    this.partials.buffer.destroy();
    this.pipes.destroy();
  }

  // -------------------------------------------------------------------------------------------
  // Matrix products (tiled 64 x 64 per workgroup, 4 x 4 per thread: see matmul.ts)

  /** out[M,N] = inp[M,K] · w[K,N] + bias[N] (bias may be null). */
  matmul(pass: P, out: A, inp: A, w: A, bias: A | null, M: number, K: number, N: number): void {
    const arrays: [A, number][] = [[out, M * N], [inp, M * K], [w, K * N]];
    if (bias !== null) arrays.push([bias, N]);
    const [name, groups] = product(bias === null ? "matmul" : "matmul_bias", M, N);
    this.pipes.dispatch(pass, name, arrays, [M, N, K], [], groups);
  }

  /** out[M,N] = a[M,K] · b[N,K]ᵀ. */
  matmulNT(pass: P, out: A, a: A, b: A, M: number, K: number, N: number): void {
    const arrays: [A, number][] = [[out, M * N], [a, M * K], [b, N * K]];
    const [name, groups] = product("matmul_nt", M, N);
    this.pipes.dispatch(pass, name, arrays, [M, N, K], [], groups);
  }

  /** dInp[M,K] = dOut[M,N] · w[K,N]ᵀ (overwrites): matmulNT with K and N swapped. */
  matmulBackwardInput(pass: P, dInp: A, dOut: A, w: A, M: number, K: number, N: number): void {
    this.matmulNT(pass, dInp, dOut, w, M, N, K);
  }

  /** dW[K,N] += inp[M,K]ᵀ · dOut[M,N] (accumulates). */
  matmulBackwardWeight(pass: P, dW: A, inp: A, dOut: A, M: number, K: number, N: number): void {
    const arrays: [A, number][] = [[dW, K * N], [inp, M * K], [dOut, M * N]];
    const [name, groups] = product("matmul_backward_weight", K, N);
    this.pipes.dispatch(pass, name, arrays, [K, N, M], [], groups);
  }

  /** dBias[N] += column sums of dOut[M,N] (accumulates). */
  biasBackward(pass: P, dBias: A, dOut: A, M: number, N: number): void {
    const arrays: [A, number][] = [[dBias, N], [dOut, M * N]];
    this.pipes.dispatch(pass, "bias_backward", arrays, [M, N], [], [Math.ceil(N / 16), 1]);
  }

  // -------------------------------------------------------------------------------------------
  // Causal self-attention over whole sequences (one workgroup per sequence, head and position)

  /**
   * out[B,rows,C] = softmax(q·kᵀ / √hs, causal) · v over qkv [B,T,3C] for the positions t =
   * start .. start+rows-1 of each sequence (training: all T; a KV cache: its new rows, the
   * earlier rows of qkv being the cache). Rows (h, t) of probs [B,H,T,T] are written (zeros after
   * the diagonal).
   */
  attentionForward(
    pass: P,
    out: A,
    probs: A,
    qkv: A,
    B: number,
    T: number,
    C: number,
    H: number,
    start = 0,
    rows = T,
  ): void {
    const scale = checkHeads(C, H);
    if (!(start >= 0 && rows >= 0 && start + rows <= T)) {
      throw new RangeError(
        `attention: positions ${start} .. ${start + rows - 1} are not in 0..${T - 1}`,
      );
    }
    const arrays: [A, number][] = [
      [out, B * rows * C],
      [probs, B * H * T * T],
      [qkv, B * T * 3 * C],
    ];
    const geometry = [B, T, C, H, start, rows];
    const groups = itemGroups(B * H * rows);
    this.pipes.dispatch(pass, "attention_forward", arrays, geometry, [scale], groups);
  }

  /**
   * Backward of {@linkcode attentionForward}: dQkv[B,T,3C] (overwrites) from dOut[B,T,C].
   * `scratch` holds {@linkcode attentionScratchSize} floats (the score gradients), more than the
   * reference's T: the GPU works on every row at once.
   */
  attentionBackward(
    pass: P,
    dQkv: A,
    scratch: A,
    dOut: A,
    qkv: A,
    probs: A,
    B: number,
    T: number,
    C: number,
    H: number,
  ): void {
    const scale = checkHeads(C, H);
    const [qkvSize, probsSize] = [B * T * 3 * C, B * H * T * T];
    const groups = itemGroups(B * H * T);
    const scores: [A, number][] = [
      [scratch, probsSize],
      [dOut, B * T * C],
      [qkv, qkvSize],
      [probs, probsSize],
    ];
    this.pipes.dispatch(pass, "attention_backward_scores", scores, [B, T, C, H], [scale], groups);
    const grads: [A, number][] = [[dQkv, qkvSize], ...scores];
    this.pipes.dispatch(pass, "attention_backward_qkv", grads, [B, T, C, H], [], groups);
  }

  // -------------------------------------------------------------------------------------------
  // LayerNorm (one workgroup per row), GELU, softmax and cross-entropy

  /** out[N,C] = (inp - mean) · rstd · weight + bias; keeps mean[N] and rstd[N]. */
  layernormForward(
    pass: P,
    out: A,
    mean: A,
    rstd: A,
    inp: A,
    weight: A,
    bias: A,
    N: number,
    C: number,
  ): void {
    const arrays: [A, number][] = [[out, N * C], [mean, N], [rstd, N], [inp, N * C]];
    arrays.push([weight, C], [bias, C]);
    this.pipes.dispatch(pass, "layernorm_forward", arrays, [N, C], [], itemGroups(N));
  }

  /** Backward of {@linkcode layernormForward}: dInp, dWeight and dBias all accumulate. */
  layernormBackward(
    pass: P,
    dInp: A,
    dWeight: A,
    dBias: A,
    dOut: A,
    inp: A,
    weight: A,
    mean: A,
    rstd: A,
    N: number,
    C: number,
  ): void {
    const [rows, stats]: [A, number][][] = [
      [[dOut, N * C], [inp, N * C]],
      [[mean, N], [rstd, N]],
    ];
    const input: [A, number][] = [[dInp, N * C], ...rows, [weight, C], ...stats];
    this.pipes.dispatch(pass, "layernorm_backward_input", input, [N, C], [], itemGroups(N));
    // dWeight and dBias as one binding over both (see the kernel)
    if (dWeight.buffer !== dBias.buffer) {
      throw new RangeError("layernormBackward: dWeight and dBias must be in one buffer");
    }
    const from = Math.min(dWeight.offset, dBias.offset);
    const span = Math.max(dWeight.offset, dBias.offset) + C - from;
    const both: [A, number] = [{ buffer: dWeight.buffer, offset: from }, span];
    const params: [A, number][] = [both, ...rows, ...stats];
    const at = [dWeight.offset - from, dBias.offset - from];
    const groups: Groups = [Math.ceil(C / 16), 1];
    this.pipes.dispatch(pass, "layernorm_backward_params", params, [...at, N, C], [], groups);
  }

  /** out[n] = gelu(inp[n]) (tanh form). */
  geluForward(pass: P, out: A, inp: A, n: number): void {
    this.pipes.dispatch(pass, "gelu_forward", [[out, n], [inp, n]], [n], [], elementGroups(n));
  }

  /** dInp[n] = gelu'(inp[n]) · dOut[n] (overwrites). */
  geluBackward(pass: P, dInp: A, inp: A, dOut: A, n: number): void {
    const arrays: [A, number][] = [[dInp, n], [inp, n], [dOut, n]];
    this.pipes.dispatch(pass, "gelu_backward", arrays, [n], [], elementGroups(n));
  }

  /** probs[N,V] = softmax(logits[N,V]); losses[N] = -log probs[n, targets[n]] (targets u32). */
  softmaxCrossEntropy(pass: P, losses: A, probs: A, logits: A, targets: A, N: number, V: number) {
    const arrays: [A, number][] = [[losses, N], [probs, N * V], [logits, N * V], [targets, N]];
    this.pipes.dispatch(pass, "softmax_cross_entropy", arrays, [N, V], [], itemGroups(N));
  }

  /** dLogits[N,V] = (probs - onehot(targets)) · scale (overwrites). */
  softmaxCrossEntropyBackward(
    pass: P,
    dLogits: A,
    probs: A,
    targets: A,
    N: number,
    V: number,
    scale: number,
  ): void {
    const arrays: [A, number][] = [[dLogits, N * V], [probs, N * V], [targets, N]];
    const groups = elementGroups(N * V);
    this.pipes.dispatch(
      pass,
      "softmax_cross_entropy_backward",
      arrays,
      [N * V, V],
      [scale],
      groups,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Embedding: x[b,t] = wte[token] + wpe[t], over whole sequences

  /** out[B,T,C] = wte[tokens[b,t]] + wpe[t] (tokens u32 [B,T] below V; wte [V,C]). */
  embeddingForward(
    pass: P,
    out: A,
    tokens: A,
    wte: A,
    wpe: A,
    B: number,
    T: number,
    C: number,
    V: number,
  ) {
    const rows = B * T;
    const arrays: [A, number][] = [[out, rows * C], [tokens, rows], [wte, V * C], [wpe, T * C]];
    this.pipes.dispatch(
      pass,
      "embedding_forward",
      arrays,
      [rows * C, T, C],
      [],
      elementGroups(rows * C),
    );
  }

  /** dWte[tokens[b,t]] += dOut[b,t]; dWpe[t] += dOut[b,t] (both accumulate; V rows of dWte). */
  embeddingBackward(
    pass: P,
    dWte: A,
    dWpe: A,
    dOut: A,
    tokens: A,
    B: number,
    T: number,
    C: number,
    V: number,
  ): void {
    if (V > MAX_GROUPS) throw new RangeError(`embedding: vocabulary ${V} is over ${MAX_GROUPS}`);
    const rows = B * T;
    const byToken: [A, number][] = [[dWte, V * C], [dOut, rows * C], [tokens, rows]];
    const groups: Groups = [Math.ceil(C / 64), V];
    this.pipes.dispatch(pass, "embedding_backward_tokens", byToken, [rows, C], [], groups);
    const byPosition: [A, number][] = [[dWpe, T * C], [dOut, rows * C]];
    this.pipes.dispatch(
      pass,
      "embedding_backward_positions",
      byPosition,
      [T * C, B],
      [],
      elementGroups(T * C),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Elementwise helpers, the sum of squares and the optimizer's update

  /** out[n] = a[n] + b[n] (out may be a). */
  add(pass: P, out: A, a: A, b: A, n: number): void {
    this.pipes.dispatch(pass, "add", [[out, n], [a, n], [b, n]], [n], [], elementGroups(n));
  }

  /** dst[n] += src[n]. */
  addInPlace(pass: P, dst: A, src: A, n: number): void {
    this.pipes.dispatch(pass, "add_in_place", [[dst, n], [src, n]], [n], [], elementGroups(n));
  }

  /** x[n] *= s. */
  scaleInPlace(pass: P, x: A, n: number, s: number): void {
    this.pipes.dispatch(pass, "scale_in_place", [[x, n]], [n], [s], elementGroups(n));
  }

  /**
   * out[0] = Σ x[i]² (overwrites one float), in two passes: partial sums per workgroup, then
   * their sum; float32 throughout (the reference sums in float64).
   */
  sumSquares(pass: P, out: A, x: A, n: number): void {
    const groups = sumSquaresGroups(n);
    const first: [A, number][] = [[this.partials, groups], [x, n]];
    this.pipes.dispatch(pass, "sum_squares_partials", first, [n], [], [groups, 1]);
    const second: [A, number][] = [[out, 1], [this.partials, groups]];
    this.pipes.dispatch(pass, "sum_squares_total", second, [groups], [], [1, 1]);
  }

  /**
   * The dropout masks of a step (lib/layers.ts dropoutForward's, as bits: see dropout.ts):
   * masks[sites, rows, ⌈rowLen/32⌉] of rows of rowLen = T·C elements, a draw below
   * `threshold` dropping its element.
   */
  dropoutMasks(
    pass: P,
    masks: A,
    rows: number,
    sites: number,
    rowLen: number,
    seed: number,
    threshold: number,
  ) {
    const seedWords = [(seed % 0x10000) * 0x10000, Math.floor(seed / 0x10000)];
    const words = [rows, sites, rowLen, maskWords(rowLen), ...seedWords, threshold];
    const n = sites * rows * maskWords(rowLen), groups = maskGroups(rows * sites);
    this.pipes.dispatch(pass, "dropout_masks", [[masks, n]], words, [], groups);
  }

  /** out[rows, rowLen] = inp · mask · keep, a mask of dropoutMasks (out may be inp). */
  dropout(pass: P, out: A, inp: A, mask: A, rows: number, rowLen: number, keep: number): void {
    const n = rows * rowLen, bits: [A, number] = [mask, rows * maskWords(rowLen)];
    const [words, groups] = [[n, rowLen, maskWords(rowLen)], elementGroups(n)];
    if (out === inp) {
      this.pipes.dispatch(pass, "dropout_in_place", [[out, n], bits], words, [keep], groups);
    } else this.pipes.dispatch(pass, "dropout", [[out, n], [inp, n], bits], words, [keep], groups);
  }

  /** x[n] = value. */
  fill(pass: P, x: A, n: number, value: number): void {
    this.pipes.dispatch(pass, "fill", [[x, n]], [n], [value], elementGroups(n));
  }

  /**
   * From the sums of squares sums[count] of the stretches of one vector: out[0] = its norm and
   * out[1] = limit / (norm + eps) where `always` or 0 < limit < norm, else 1 (see update.ts).
   */
  normScale(pass: P, out: A, sums: A, count: number, limit: number, eps: number, always: boolean) {
    const arrays: [A, number][] = [[out, 2], [sums, count]];
    const words = [count, always ? 1 : 0];
    this.pipes.dispatch(pass, "norm_scale", arrays, words, [limit, eps], [1, 1]);
  }

  /** x[n] *= s[0] (a scale on the GPU, as {@linkcode normScale} writes it). */
  scaleBy(pass: P, x: A, s: A, n: number): void {
    this.pipes.dispatch(pass, "scale_by", [[x, n], [s, 1]], [n], [], elementGroups(n));
  }

  /** Muon's momentum of n elements: m = mu·m + grad; u = grad + mu·m (Nesterov). */
  muonMomentum(pass: P, m: A, grad: A, u: A, n: number, mu: number): void {
    const arrays: [A, number][] = [[m, n], [grad, n], [u, n]];
    this.pipes.dispatch(pass, "muon_momentum", arrays, [n], [mu], elementGroups(n));
  }

  /** Newton–Schulz's quintic in place: poly[n,n] = b·gram + c·poly + a·I (poly holding gram²). */
  newtonSchulzPoly(pass: P, poly: A, gram: A, n: number, a: number, b: number, c: number): void {
    const arrays: [A, number][] = [[poly, n * n], [gram, n * n]];
    const [words, groups] = [[n * n, n], elementGroups(n * n)];
    this.pipes.dispatch(pass, "newton_schulz_poly", arrays, words, [a, b, c], groups);
  }

  /** Muon's update of n parameters: param = shrink·param - step·ortho. */
  muonUpdate(pass: P, param: A, ortho: A, n: number, shrink: number, step: number): void {
    const arrays: [A, number][] = [[param, n], [ortho, n]];
    this.pipes.dispatch(pass, "muon_update", arrays, [n], [shrink, step], elementGroups(n));
  }

  /** One AdamW update of n parameters (see lib/tensor.ts's adamwUpdate); settings in float32. */
  adamwUpdate(pass: P, param: A, grad: A, m: A, v: A, n: number, s: AdamWStep): void {
    const arrays: [A, number][] = [[param, n], [grad, n], [m, n], [v, n]];
    const settings = [s.lr, s.beta1, s.beta2, s.eps, s.weightDecay, s.bc1, s.bc2];
    this.pipes.dispatch(pass, "adamw", arrays, [n], settings, elementGroups(n));
  }
}

/** The attention's scale 1/√hs; a RangeError unless H heads divide C. */
function checkHeads(C: number, H: number): number {
  if (!(H > 0 && C % H === 0)) throw new RangeError(`attention: ${H} heads do not divide C = ${C}`);
  return 1 / Math.sqrt(C / H);
}
