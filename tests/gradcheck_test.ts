// Gradient checks in float64: every entry of every parameter and layer input, each layer alone
// and the whole model, against central finite differences.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import {
  blockBackward,
  blockForward,
  type BlockParams,
  dropoutForward,
  embeddingBackward,
  embeddingForward,
  headBackward,
  headForward,
  linearBackward,
  lossForward,
  type Pass,
} from "../lib/layers.ts";
import { backward, batchPass, forward, GPT, type ModelConfig } from "../lib/model.ts";
import { Rng } from "../lib/rng.ts";
import {
  attentionBackward,
  attentionForward,
  geluBackward,
  geluForward,
  layernormBackward,
  layernormForward,
  matmul,
  matmulNT,
} from "../lib/tensor.ts";

const H_STEP = 1e-5;
const ABS_TOL = 1e-6;
const REL_TOL = 1e-5;

/** Largest |numeric - analytic| seen over all checks (reported at the end). */
let largestError = 0;

function randn(n: number, rng: Rng, std = 1): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal(0, std));
}

/**
 * Compares `analytic` with central differences of `loss` over every entry of `x`. Returns the
 * failures (empty when every entry is within |num - ana| <= ABS_TOL + REL_TOL |num|).
 */
function gradientFailures(
  x: Float64Array,
  analytic: Float64Array,
  loss: () => number,
): { index: number; numeric: number; analytic: number }[] {
  const failures = [];
  for (let i = 0; i < x.length; i++) {
    const saved = x[i];
    x[i] = saved + H_STEP;
    const plus = loss();
    x[i] = saved - H_STEP;
    const minus = loss();
    x[i] = saved;
    const numeric = (plus - minus) / (2 * H_STEP);
    const err = Math.abs(numeric - analytic[i]);
    largestError = Math.max(largestError, err);
    if (err > ABS_TOL + REL_TOL * Math.abs(numeric)) {
      failures.push({ index: i, numeric, analytic: analytic[i] });
    }
  }
  return failures;
}

function checkGradient(name: string, x: Float64Array, analytic: Float64Array, loss: () => number) {
  const failures = gradientFailures(x, analytic, loss);
  assertEquals(
    failures.slice(0, 3),
    [],
    `${name}: ${failures.length} of ${x.length} entries differ from finite differences`,
  );
}

/** Σ out * r: a scalar loss with a random upstream gradient r. */
function dot(a: Float64Array, r: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * r[i];
  return s;
}

const B = 2, T = 5, C = 8, H = 2, V = 7;
const BT = B * T;
/** The pass over B whole sequences of T positions of these shapes. */
const pass: Pass = { B, T, C, H, V, start: 0, rows: T, cached: false, dropout: null };

Deno.test("gradient check: linear layer (matmul + bias), every input, weight and bias entry", () => {
  const rng = new Rng(1);
  const K = 6, N = 5;
  const inp = randn(BT * K, rng),
    w = randn(K * N, rng),
    bias = randn(N, rng),
    r = randn(BT * N, rng);
  const out = new Float64Array(BT * N);
  const loss = () => (matmul(out, inp, w, bias, BT, K, N), dot(out, r));
  const dInp = new Float64Array(BT * K), dW = new Float64Array(K * N), dB = new Float64Array(N);
  linearBackward(dInp, { weight: dW, bias: dB }, r, inp, { weight: w, bias }, BT, K, N);
  checkGradient("dInp", inp, dInp, loss);
  checkGradient("dW", w, dW, loss);
  checkGradient("dBias", bias, dB, loss);
});

Deno.test("gradient check: layernorm, every input, weight and bias entry", () => {
  const rng = new Rng(2);
  const inp = randn(BT * C, rng, 2), w = randn(C, rng), b = randn(C, rng), r = randn(BT * C, rng);
  const out = new Float64Array(BT * C), mean = new Float64Array(BT), rstd = new Float64Array(BT);
  const loss = () => (layernormForward(out, mean, rstd, inp, w, b, BT, C), dot(out, r));
  loss();
  const dInp = new Float64Array(BT * C), dW = new Float64Array(C), dB = new Float64Array(C);
  layernormBackward(dInp, dW, dB, r, inp, w, mean, rstd, BT, C);
  checkGradient("dInp", inp, dInp, loss);
  checkGradient("dWeight", w, dW, loss);
  checkGradient("dBias", b, dB, loss);
});

Deno.test("gradient check: GELU, every input entry", () => {
  const rng = new Rng(3);
  const n = 64;
  const inp = randn(n, rng, 3), r = randn(n, rng), out = new Float64Array(n);
  const loss = () => (geluForward(out, inp, n), dot(out, r));
  const dInp = new Float64Array(n);
  geluBackward(dInp, inp, r, n);
  checkGradient("dInp", inp, dInp, loss);
});

Deno.test("gradient check: causal attention, every q, k and v entry", () => {
  const rng = new Rng(4);
  const qkv = randn(BT * 3 * C, rng), r = randn(BT * C, rng);
  const out = new Float64Array(BT * C), probs = new Float64Array(B * H * T * T);
  const loss = () => (attentionForward(out, probs, qkv, B, T, C, H), dot(out, r));
  loss();
  const dQkv = new Float64Array(BT * 3 * C);
  attentionBackward(dQkv, new Float64Array(T), r, qkv, probs, B, T, C, H);
  checkGradient("dQkv", qkv, dQkv, loss);
  // the mask holds: a query never sees a later key
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let t = 0; t < T; t++) {
        for (let j = t + 1; j < T; j++) assertEquals(probs[((b * H + h) * T + t) * T + j], 0);
      }
    }
  }
});

Deno.test("gradient check: embedding, every wte and wpe entry", () => {
  const rng = new Rng(5);
  const tokens = Uint16Array.from({ length: BT }, () => rng.int(V));
  const wte = randn(V * C, rng), wpe = randn(T * C, rng), r = randn(BT * C, rng);
  const out = new Float64Array(BT * C);
  const loss = () => (embeddingForward(out, tokens, wte, wpe, pass), dot(out, r));
  const dWte = new Float64Array(V * C), dWpe = new Float64Array(T * C);
  embeddingBackward(dWte, dWpe, r, tokens, pass);
  checkGradient("dWte", wte, dWte, loss);
  checkGradient("dWpe", wpe, dWpe, loss);
});

Deno.test("gradient check: head (ln_f, tied logits, cross-entropy), every entry", () => {
  const rng = new Rng(6);
  const x = randn(BT * C, rng), lnfW = randn(C, rng), lnfB = randn(C, rng), wte = randn(V * C, rng);
  const targets = Uint16Array.from({ length: BT }, () => rng.int(V));
  const acts = {
    lnf: { out: new Float64Array(BT * C), mean: new Float64Array(BT), rstd: new Float64Array(BT) },
    logits: new Float64Array(BT * V),
    probs: new Float64Array(BT * V),
    losses: new Float64Array(BT),
    targets,
    dLogits: new Float64Array(BT * V),
    dLn: new Float64Array(BT * C),
  };
  const p = { wte, lnf: { weight: lnfW, bias: lnfB } };
  const loss = () => {
    headForward(acts, x, p, BT, pass);
    return lossForward(acts, BT, V) / BT;
  };
  loss();
  const dX = new Float64Array(BT * C), dWte = new Float64Array(V * C);
  const dLnfW = new Float64Array(C), dLnfB = new Float64Array(C);
  headBackward(dX, { wte: dWte, lnf: { weight: dLnfW, bias: dLnfB } }, acts, x, p, pass, 1 / BT);
  checkGradient("dX", x, dX, loss);
  checkGradient("dWte", wte, dWte, loss);
  checkGradient("dLnfWeight", lnfW, dLnfW, loss);
  checkGradient("dLnfBias", lnfB, dLnfB, loss);
});

Deno.test("gradient check: transformer block, its input and every parameter entry", () => {
  const rng = new Rng(7);
  const config: ModelConfig = { vocabSize: V, blockSize: T, dModel: C, nLayers: 1, nHeads: H };
  const model = new GPT(config, { dtype: "float64" }).init(rng);
  // random LayerNorm and bias values, so that no gradient is trivially zero
  for (const [name, t] of model.params.byName) {
    if (name.startsWith("h.0.") && !name.endsWith("c_attn.weight")) {
      for (let i = 0; i < t.length; i++) t[i] = rng.normal(0, 0.5);
    }
  }
  const acts = model.activations(B);
  const x = randn(BT * C, rng), r = randn(BT * C, rng);
  const p = model.params.blocks[0];
  const loss =
    () => (blockForward(acts.blocks[0], p, x, pass),
      dot(acts.blocks[0].residualOut as Float64Array, r));
  loss();
  model.zeroGrad();
  const dResidual = Float64Array.from(r);
  blockBackward(model.grads.blocks[0], dResidual, acts.scratch, acts.blocks[0], p, x, pass);
  checkGradient("dX", x, dResidual, loss);
  for (const key of Object.keys(p) as (keyof BlockParams)[]) {
    for (const part of ["weight", "bias"] as const) {
      checkGradient(
        `${key}.${part}`,
        p[key][part] as Float64Array,
        model.grads.blocks[0][key][part] as Float64Array,
        loss,
      );
    }
  }
});

const tiny: ModelConfig = { vocabSize: 11, blockSize: 8, dModel: 16, nLayers: 2, nHeads: 2 };

function tinyModelLoss(dropout = 0) {
  const rng = new Rng(8);
  const model = new GPT(tiny, { dtype: "float64" }).init(rng);
  for (const [name, t] of model.params.byName) {
    if (name.includes("ln_") || name.endsWith(".bias")) {
      for (let i = 0; i < t.length; i++) t[i] += rng.normal(0, 0.3);
    }
  }
  const Bm = 2, BTm = Bm * tiny.blockSize;
  const acts = model.activations(Bm, { dropout: dropout > 0 });
  const drop = dropout > 0 ? { p: dropout, seed: 3, firstRow: 0 } : null;
  const s = batchPass(tiny, Bm, drop);
  for (let i = 0; i < BTm; i++) {
    acts.inputs[i] = rng.int(tiny.vocabSize);
    acts.targets[i] = rng.int(tiny.vocabSize);
  }
  const loss = () => forward(model, acts, s) / BTm;
  loss();
  model.zeroGrad();
  backward(model, acts, s, 1 / BTm);
  return { model, loss };
}

Deno.test("gradient check: whole model loss (V=11, d=16, 2 layers, 2 heads, T=8), every parameter", () => {
  const { model, loss } = tinyModelLoss();
  for (const [name, t] of model.params.byName) {
    checkGradient(name, t as Float64Array, model.grads.byName.get(name) as Float64Array, loss);
  }
  console.log(
    `largest |numeric - analytic| over all gradient checks: ${largestError.toExponential(2)}`,
  );
});

Deno.test("gradient check: whole model with dropout 0.2 (fixed masks), every parameter", () => {
  const { model, loss } = tinyModelLoss(0.2);
  for (const [name, t] of model.params.byName) {
    checkGradient(name, t as Float64Array, model.grads.byName.get(name) as Float64Array, loss);
  }
});

Deno.test("dropout masks: rate p, scale 1/(1-p), independent of how the batch is split", () => {
  const n = 4 * 1000;
  // rows of T = 100 positions of C = 10: a mask of 4 rows, and of the same rows as 2 + 2
  const shape = (rows: number): Pass => ({ ...pass, B: rows, T: 100, C: 10 });
  const mask = (rows: number, firstRow: number) => {
    const x = new Float64Array(rows * 1000).fill(1), m = new Float64Array(rows * 1000);
    dropoutForward(x, m, { p: 0.25, seed: 9, firstRow }, 1, shape(rows));
    assertEquals([...x], [...m]); // x · mask, with x = 1
    return m;
  };
  const whole = mask(4, 0), a = mask(2, 0), b = mask(2, 2);
  assertEquals([...whole], [...a, ...b]);
  // another site gives another mask
  const other = new Float64Array(n);
  dropoutForward(
    new Float64Array(n).fill(1),
    other,
    { p: 0.25, seed: 9, firstRow: 0 },
    2,
    shape(4),
  );
  assert(other.some((x, i) => x !== whole[i]));
  const zeros = whole.filter((x) => x === 0).length;
  assert(Math.abs(zeros / n - 0.25) < 0.03);
  assert(whole.every((x) => x === 0 || x === 1 / 0.75));
});

Deno.test("gradient check catches a deliberately wrong gradient", () => {
  const { model, loss } = tinyModelLoss();
  const w = model.params.byName.get("h.1.mlp.c_fc.weight") as Float64Array;
  const g = Float64Array.from(model.grads.byName.get("h.1.mlp.c_fc.weight")!);
  g[17] += 1e-4; // one entry off by a small amount
  const failures = gradientFailures(w, g, loss);
  assertEquals(failures.map((f) => f.index), [17]);
  // and a gradient with a sign error in one layer
  const wrongSign = Float64Array.from(model.grads.byName.get("ln_f.bias")!, (x) => -x);
  assert(
    gradientFailures(model.params.byName.get("ln_f.bias") as Float64Array, wrongSign, loss).length >
      0,
  );
});

Deno.test("matmulNT equals matmul with the transposed matrix", () => {
  const rng = new Rng(9);
  const M = 4, K = 6, N = 5;
  const a = randn(M * K, rng), b = randn(N * K, rng);
  const bT = new Float64Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) bT[k * N + n] = b[n * K + k];
  const x = new Float64Array(M * N), y = new Float64Array(M * N);
  matmulNT(x, a, b, M, K, N);
  matmul(y, a, bT, null, M, K, N);
  for (let i = 0; i < M * N; i++) assert(Math.abs(x[i] - y[i]) < 1e-12);
});
