/**
 * The reference math of the model: every operation as plain TypeScript loops, each forward beside
 * its backward. They accept Float32Array or Float64Array storage (the gradient checks run them in
 * float64). The fast WebAssembly kernels compute the same functions; `lib/kernels/dispatch.ts`
 * routes each call to one or the other, and `--kernels js` runs exactly these loops.
 *
 * Conventions: row-major storage, `out` arguments first, shapes in comments. A matrix product's
 * weight is stored [in, out] (GPT-2's Conv1D layout). Backward functions that say "accumulates"
 * add (+=) into their gradients; the others overwrite.
 *
 * @module
 */

/** Storage of a tensor: float32 for real work, float64 for the gradient checks. */
export type FloatArray = Float32Array | Float64Array;
type F = FloatArray;

// ---------------------------------------------------------------------------------------------
// Matrix products

/** out[M,N] = inp[M,K] · w[K,N] + bias[N] (bias may be null). */
export function matmul(out: F, inp: F, w: F, bias: F | null, M: number, K: number, N: number) {
  for (let i = 0; i < M; i++) {
    const o = i * N;
    for (let j = 0; j < N; j++) out[o + j] = bias === null ? 0 : bias[j];
    for (let k = 0; k < K; k++) {
      const a = inp[i * K + k];
      for (let j = 0; j < N; j++) out[o + j] += a * w[k * N + j];
    }
  }
}

/** out[M,N] = a[M,K] · b[N,K]ᵀ: the output head, logits = x · wteᵀ. */
export function matmulNT(out: F, a: F, b: F, M: number, K: number, N: number) {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += a[i * K + k] * b[j * K + k];
      out[i * N + j] = sum;
    }
  }
}

/** Backward of matmul for its weight: dW[K,N] += inp[M,K]ᵀ · dOut[M,N] (accumulates). */
export function matmulBackwardWeight(dW: F, inp: F, dOut: F, M: number, K: number, N: number) {
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      const a = inp[i * K + k];
      for (let j = 0; j < N; j++) dW[k * N + j] += a * dOut[i * N + j];
    }
  }
}

/** Backward of the bias: dBias[N] += column sums of dOut[M,N] (accumulates). */
export function biasBackward(dBias: F, dOut: F, M: number, N: number): void {
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) dBias[j] += dOut[i * N + j];
  }
}

// ---------------------------------------------------------------------------------------------
// Causal self-attention over a fused qkv tensor. Row t of qkv holds q | k | v, each C wide; head
// h uses columns h*hs .. (h+1)*hs of each, hs = C / H. Position t attends to positions 0..t.

/**
 * out = softmax(q·kᵀ / √hs, causal) · v for the rows t = start .. start+rows-1 of each of B
 * sequences (training: every row, start 0 and rows T; the KV cache: the new rows of one sequence,
 * whose earlier rows of qkv are its cache). qkv [B, T, 3C] · probs [B, H, T, T], rows (h, t) are
 * written (zero after t) · out [B, rows, C], heads concatenated.
 */
export function attentionForward(
  out: F,
  probs: F,
  qkv: F,
  B: number,
  T: number,
  C: number,
  H: number,
  start = 0,
  rows = T,
): void {
  const hs = C / H, scale = 1 / Math.sqrt(hs);
  for (let b = 0; b < B; b++) {
    for (let t = start; t < start + rows; t++) {
      for (let h = 0; h < H; h++) {
        const q = (b * T + t) * 3 * C + h * hs;
        const p = ((b * H + h) * T + t) * T;
        // scores S_j = q_t · k_j / √hs for j <= t, then a stable softmax
        let max = -Infinity;
        for (let j = 0; j <= t; j++) {
          const k = (b * T + j) * 3 * C + C + h * hs;
          let dot = 0;
          for (let i = 0; i < hs; i++) dot += qkv[q + i] * qkv[k + i];
          probs[p + j] = dot * scale;
          if (probs[p + j] > max) max = probs[p + j];
        }
        let sum = 0;
        for (let j = 0; j <= t; j++) {
          const e = Math.exp(probs[p + j] - max);
          probs[p + j] = e;
          sum += e;
        }
        for (let j = 0; j <= t; j++) probs[p + j] /= sum;
        for (let j = t + 1; j < T; j++) probs[p + j] = 0;
        // out_t = Σ_j P_j v_j
        const o = (b * rows + t - start) * C + h * hs;
        for (let i = 0; i < hs; i++) out[o + i] = 0;
        for (let j = 0; j <= t; j++) {
          const v = (b * T + j) * 3 * C + 2 * C + h * hs;
          for (let i = 0; i < hs; i++) out[o + i] += probs[p + j] * qkv[v + i];
        }
      }
    }
  }
}

/**
 * Backward of {@link attentionForward} over whole sequences: dQkv[B,T,3C] (overwrites) from
 * dOut[B,T,C]. `scratch` holds at least T floats (the WebAssembly kernel wants
 * `attentionScratchSize(T, C, H)`).
 */
export function attentionBackward(
  dQkv: F,
  scratch: F,
  dOut: F,
  qkv: F,
  probs: F,
  B: number,
  T: number,
  C: number,
  H: number,
): void {
  const hs = C / H, C3 = 3 * C, scale = 1 / Math.sqrt(hs);
  const dProbs = scratch;
  dQkv.fill(0, 0, B * T * C3);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        const q = (b * T + t) * C3 + h * hs;
        const p = ((b * H + h) * T + t) * T;
        const o = (b * T + t) * C + h * hs;
        // out_t = Σ_j P_j v_j  →  dP_j = dout_t · v_j,  dv_j += P_j dout_t
        let dot = 0; // Σ_j P_j dP_j
        for (let j = 0; j <= t; j++) {
          const v = (b * T + j) * C3 + 2 * C + h * hs;
          let dp = 0;
          for (let i = 0; i < hs; i++) {
            dp += dOut[o + i] * qkv[v + i];
            dQkv[v + i] += probs[p + j] * dOut[o + i];
          }
          dProbs[j] = dp;
          dot += probs[p + j] * dp;
        }
        // softmax: dS_j = P_j (dP_j - Σ P dP);  S_j = scale q_t·k_j
        for (let j = 0; j <= t; j++) {
          const k = (b * T + j) * C3 + C + h * hs;
          const dS = probs[p + j] * (dProbs[j] - dot) * scale;
          for (let i = 0; i < hs; i++) {
            dQkv[q + i] += dS * qkv[k + i];
            dQkv[k + i] += dS * qkv[q + i];
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension, eps 1e-5

/** out[N,C] = (inp - mean) · rstd · weight + bias; keeps mean[N] and rstd[N] for the backward. */
export function layernormForward(
  out: F,
  mean: F,
  rstd: F,
  inp: F,
  weight: F,
  bias: F,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const x = n * C;
    let m = 0;
    for (let i = 0; i < C; i++) m += inp[x + i];
    m /= C;
    let variance = 0;
    for (let i = 0; i < C; i++) variance += (inp[x + i] - m) ** 2;
    variance /= C;
    const s = 1 / Math.sqrt(variance + 1e-5);
    for (let i = 0; i < C; i++) out[x + i] = (inp[x + i] - m) * s * weight[i] + bias[i];
    mean[n] = m;
    rstd[n] = s;
  }
}

/** Backward of {@link layernormForward}: dInp, dWeight and dBias all accumulate. */
export function layernormBackward(
  dInp: F,
  dWeight: F,
  dBias: F,
  dOut: F,
  inp: F,
  weight: F,
  mean: F,
  rstd: F,
  N: number,
  C: number,
): void {
  for (let n = 0; n < N; n++) {
    const x = n * C, m = mean[n], s = rstd[n];
    // xhat = (x - mean) · rstd;  dxhat = dout · weight
    let dNormMean = 0; // mean of dxhat
    let dNormNormMean = 0; // mean of dxhat · xhat
    for (let i = 0; i < C; i++) {
      const xhat = (inp[x + i] - m) * s;
      const dxhat = dOut[x + i] * weight[i];
      dNormMean += dxhat;
      dNormNormMean += dxhat * xhat;
    }
    dNormMean /= C;
    dNormNormMean /= C;
    for (let i = 0; i < C; i++) {
      const xhat = (inp[x + i] - m) * s;
      const dxhat = dOut[x + i] * weight[i];
      dBias[i] += dOut[x + i];
      dWeight[i] += xhat * dOut[x + i];
      dInp[x + i] += (dxhat - dNormMean - xhat * dNormNormMean) * s;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// GELU, tanh approximation: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))

const GELU_SCALE = Math.sqrt(2 / Math.PI);

/** out[n] = gelu(inp[n]). */
export function geluForward(out: F, inp: F, n: number): void {
  for (let i = 0; i < n; i++) {
    const x = inp[i];
    out[i] = 0.5 * x * (1 + Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)));
  }
}

/** dInp[n] = gelu'(inp[n]) · dOut[n] (overwrites). */
export function geluBackward(dInp: F, inp: F, dOut: F, n: number): void {
  for (let i = 0; i < n; i++) {
    const x = inp[i];
    const th = Math.tanh(GELU_SCALE * (x + 0.044715 * x * x * x));
    const dU = GELU_SCALE * (1 + 3 * 0.044715 * x * x);
    dInp[i] = (0.5 * (1 + th) + 0.5 * x * (1 - th * th) * dU) * dOut[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Softmax and cross-entropy over the vocabulary

/** probs[N,V] = softmax(logits[N,V]); losses[N] = -log probs[n, targets[n]]. */
export function softmaxCrossEntropy(
  losses: F,
  probs: F,
  logits: F,
  targets: Uint16Array,
  N: number,
  V: number,
): void {
  for (let n = 0; n < N; n++) {
    const row = n * V;
    let max = -Infinity;
    for (let v = 0; v < V; v++) if (logits[row + v] > max) max = logits[row + v];
    let sum = 0;
    for (let v = 0; v < V; v++) {
      const e = Math.exp(logits[row + v] - max);
      probs[row + v] = e;
      sum += e;
    }
    for (let v = 0; v < V; v++) probs[row + v] /= sum;
    losses[n] = -Math.log(probs[row + targets[n]]);
  }
}

/** dLogits[N,V] = (probs - onehot(targets)) · scale (overwrites); scale 1/N for a mean loss. */
export function softmaxCrossEntropyBackward(
  dLogits: F,
  probs: F,
  targets: Uint16Array,
  N: number,
  V: number,
  scale: number,
): void {
  for (let n = 0; n < N; n++) {
    for (let v = 0; v < V; v++) dLogits[n * V + v] = probs[n * V + v] * scale;
    dLogits[n * V + targets[n]] -= scale;
  }
}

// ---------------------------------------------------------------------------------------------
// Elementwise helpers and the optimizer's update

/** out[n] = a[n] + b[n] (out may alias a). */
export function add(out: F, a: F, b: F, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/** out[n] = a[n] · b[n] (out may alias a). */
export function mul(out: F, a: F, b: F, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] * b[i];
}

/** dst[n] += src[n]. */
export function addInPlace(dst: F, src: F, n: number): void {
  for (let i = 0; i < n; i++) dst[i] += src[i];
}

/** x[n] *= s. */
export function scaleInPlace(x: F, n: number, s: number): void {
  for (let i = 0; i < n; i++) x[i] *= s;
}

/** Σ x[i]², accumulated in float64. */
export function sumSquares(x: F, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += x[i] * x[i];
  return sum;
}

/** AdamW's settings for one update; bc1 = 1 - beta1^t and bc2 = 1 - beta2^t. */
export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  bc1: number;
  bc2: number;
}

/**
 * One AdamW update of n parameters: m and v are the moment estimates, bias-corrected by bc1 and
 * bc2; the weight decay is decoupled (applied to the parameter, not the gradient).
 */
export function adamwUpdate(param: F, grad: F, m: F, v: F, n: number, s: AdamWStep): void {
  for (let i = 0; i < n; i++) {
    const g = grad[i];
    m[i] = s.beta1 * m[i] + (1 - s.beta1) * g;
    v[i] = s.beta2 * v[i] + (1 - s.beta2) * g * g;
    const mHat = m[i] / s.bc1;
    const vHat = v[i] / s.bc2;
    param[i] -= s.lr * (mHat / (Math.sqrt(vHat) + s.eps) + s.weightDecay * param[i]);
  }
}
