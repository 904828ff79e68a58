// Muon (lib/muon.ts): the Newton–Schulz orthogonalisation against a float64 reference and against
// the exact polar factor, the whole optimizer step against a float64 reference of Muon and AdamW,
// and a Muon run that is the same bits on one thread and two, and after a checkpoint and restore.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { hiddenMatrices, isHiddenMatrix, Muon, newtonSchulz } from "../lib/muon.ts";
import { type ModelConfig, parameterSpecs } from "../lib/model.ts";
import { defaultArena } from "../lib/kernels/dispatch.ts";
import { detectTier } from "../lib/kernels/mod.ts";
import { createModel, createTrainer, saveWeights, selectKernels } from "../mod.ts";
import { Rng } from "../lib/rng.ts";
import { forEachTier } from "./tiers.ts";
import { playCorpus } from "./fixtures.ts";

type Matrix = Float64Array;

/** c[M,N] = a[M,K]·b[K,N] in float64. */
function mul(a: Matrix, b: Matrix, M: number, K: number, N: number): Matrix {
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let k = 0; k < K; k++) {
      for (let j = 0; j < N; j++) c[i * N + j] += a[i * K + k] * b[k * N + j];
    }
  }
  return c;
}

/** aᵀ of a [R, C]. */
function transpose(a: Matrix, R: number, C: number): Matrix {
  const t = new Float64Array(R * C);
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) t[j * R + i] = a[i * C + j];
  return t;
}

/** The quintic Newton–Schulz in float64, written from the formula (wide form, X·Xᵀ). */
function newtonSchulz64(g: Matrix, R: number, C: number, steps: number): Matrix {
  const tall = R > C;
  let x = tall ? transpose(g, R, C) : Float64Array.from(g);
  const [n, m] = tall ? [C, R] : [R, C];
  const norm = Math.hypot(...x) + 1e-7;
  x = x.map((v) => v / norm);
  for (let s = 0; s < steps; s++) {
    const a = mul(x, transpose(x, n, m), n, m, n);
    const a2 = mul(a, a, n, n, n);
    const p = a.map((v, i) => -4.775 * v + 2.0315 * a2[i] + (i % (n + 1) === 0 ? 3.4445 : 0));
    x = mul(p, x, n, n, m);
  }
  return tall ? transpose(x, n, m) : x;
}

/** The exact polar factor U·Vᵀ of g (wide R ≤ C): the cubic Newton–Schulz iterated to its limit. */
function polar64(g: Matrix, R: number, C: number): Matrix {
  const norm = Math.hypot(...g);
  let x = g.map((v) => v / norm); // every singular value in (0, 1]: the iteration converges
  for (let s = 0; s < 200; s++) {
    const xxtx = mul(mul(x, transpose(x, R, C), R, C, R), x, R, R, C);
    x = x.map((v, i) => 1.5 * v - 0.5 * xxtx[i]);
  }
  return x;
}

function randomMatrix(n: number, rng: Rng): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal(0, 1));
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

forEachTier("Newton–Schulz matches a float64 reference, wide and tall, on the kernels", () => {
  const rng = new Rng(7);
  const lease = defaultArena().lease();
  try {
    for (const [R, C] of [[24, 40], [40, 24], [16, 16], [7, 13]]) {
      const g = randomMatrix(R * C, rng);
      const u = lease.f32(R * C), n = Math.min(R, C);
      u.set(g);
      newtonSchulz(u, R, C, 5, lease.f32(R * C + 2 * n * n));
      const want = newtonSchulz64(g, R, C, 5);
      // float32 through five iterations of entries of size ~1/√C: 2e-5 is about 100 ulps
      const diff = maxDiff(u, want);
      assert(diff < 2e-5, `${R}x${C}: max difference ${diff}`);
    }
  } finally {
    lease.release();
  }
});

Deno.test("Newton–Schulz orthogonalises: its output is the polar factor with singular values in [0.6, 1.25]", () => {
  const rng = new Rng(11);
  const [R, C] = [12, 30];
  const g = randomMatrix(R * C, rng);
  const o = newtonSchulz64(g, R, C, 5);
  const p = polar64(g, R, C);
  // the reference is orthogonal: P·Pᵀ = I
  const ppt = mul(p, transpose(p, R, C), R, C, R);
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < R; j++) {
      assert(Math.abs(ppt[i * R + j] - (i === j ? 1 : 0)) < 1e-9, "the polar factor is orthogonal");
    }
  }
  // O = U·f(Σ)·Vᵀ and P = U·Vᵀ: O·Pᵀ = U·f(Σ)·Uᵀ is symmetric with eigenvalues f(σ) ∈ [0.6, 1.25]
  const s = mul(o, transpose(p, R, C), R, C, R);
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < R; j++) assert(Math.abs(s[i * R + j] - s[j * R + i]) < 1e-6, "symmetric");
  }
  for (let trial = 0; trial < 200; trial++) {
    const v = randomMatrix(R, rng);
    const sv = mul(s, v, R, R, 1);
    const q = v.reduce((a, x, i) => a + x * sv[i], 0) / v.reduce((a, x) => a + x * x, 0);
    assert(q > 0.6 && q < 1.25, `Rayleigh quotient ${q} outside [0.6, 1.25]`);
  }
  // and without the iteration the gradient is far from orthogonal
  const raw = mul(g.map((v) => v / Math.hypot(...g)), transpose(p, R, C), R, C, R);
  assert(raw[0] < 0.6, "the raw gradient's own spectrum is not flat");
});

const config: ModelConfig = { vocabSize: 5, blockSize: 4, dModel: 8, nLayers: 2, nHeads: 2 };

forEachTier(
  "Muon's whole step (momentum, Newton–Schulz, scale, decay; AdamW for the rest) matches float64",
  async () => {
    const specs = parameterSpecs(config);
    const n = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
    const lease = defaultArena().lease();
    try {
      const alloc = (k: number) => lease.f32(k);
      const [mu, wd, lr, hiddenLr, beta1, beta2] = [0.9, 0.1, 1e-2, 2e-2, 0.8, 0.95];
      const opt = new Muon(config, alloc, {
        beta1,
        beta2,
        weightDecay: wd,
        momentum: mu,
        steps: 5,
      });
      const params = alloc(n), grad = alloc(n);
      const rng = new Rng(3);
      for (let i = 0; i < n; i++) params[i] = rng.normal(0, 0.1);
      const p64 = Float64Array.from(params);
      const m64 = new Float64Array(n), v64 = new Float64Array(n);
      for (let t = 1; t <= 3; t++) {
        for (let i = 0; i < n; i++) grad[i] = rng.normal(0, 0.01);
        const g = Float64Array.from(grad);
        await opt.step(params, grad, lr, hiddenLr);
        // the reference, tensor by tensor
        let at = 0;
        for (const { name, shape } of specs) {
          const size = shape.reduce((x, y) => x * y, 1);
          if (isHiddenMatrix(name)) {
            const [R, C] = shape;
            const u = new Float64Array(size);
            for (let i = 0; i < size; i++) {
              m64[at + i] = mu * m64[at + i] + g[at + i];
              u[i] = g[at + i] + mu * m64[at + i];
            }
            const o = newtonSchulz64(u, R, C, 5);
            const scale = 0.2 * Math.sqrt(Math.max(R, C));
            for (let i = 0; i < size; i++) {
              p64[at + i] = p64[at + i] * (1 - hiddenLr * wd) - hiddenLr * scale * o[i];
            }
          } else {
            const decay = shape.length === 2 ? wd : 0;
            for (let i = at; i < at + size; i++) {
              m64[i] = beta1 * m64[i] + (1 - beta1) * g[i];
              v64[i] = beta2 * v64[i] + (1 - beta2) * g[i] * g[i];
              const mHat = m64[i] / (1 - beta1 ** t), vHat = v64[i] / (1 - beta2 ** t);
              p64[i] -= lr * (mHat / (Math.sqrt(vHat) + 1e-8) + decay * p64[i]);
            }
          }
          at += size;
        }
      }
      const diff = maxDiff(params, p64);
      assert(diff < 1e-5, `params differ from the float64 reference by ${diff}`);
      assert(maxDiff(opt.m, m64) < 1e-6, "the momentum and first moments match");
      assertEquals(opt.t, 3);
      // the hidden matrices' second moment stays zero: Muon keeps no v
      for (const { at, rows, cols } of hiddenMatrices(config)) {
        assert(opt.v.subarray(at, at + rows * cols).every((x) => x === 0));
      }
    } finally {
      lease.release();
    }
  },
);

Deno.test("Muon's hidden matrices are each block's four projections, and nothing else", () => {
  const hidden = parameterSpecs(config).filter((s) => isHiddenMatrix(s.name)).map((s) => s.name);
  assertEquals(hidden, [
    "h.0.attn.c_attn.weight",
    "h.0.attn.c_proj.weight",
    "h.0.mlp.c_fc.weight",
    "h.0.mlp.c_proj.weight",
    "h.1.attn.c_attn.weight",
    "h.1.attn.c_proj.weight",
    "h.1.mlp.c_fc.weight",
    "h.1.mlp.c_proj.weight",
  ]);
});

const THREADS = detectTier() === "js" ? [1] : [1, 2];

Deno.test("a Muon run resumed from a checkpoint is the same bits as one never stopped, on 1 and 2 threads", async () => {
  // the fastest tier (threads share its memory), as the CLI runs
  selectKernels();
  {
    const text = playCorpus();
    const shape = { blockSize: 16, dModel: 32, nHeads: 2, nLayers: 2, seed: 1 };
    const options = { steps: 24, batch: 4, optimizer: "muon" as const, muonLr: 0.02, seed: 3 };
    for (const threads of THREADS) {
      using straight = createModel(text, shape);
      {
        using trainer = await createTrainer(straight, text, { ...options, threads });
        await trainer.run();
      }
      using resumed = createModel(text, shape);
      let bytes: Uint8Array;
      {
        using first = await createTrainer(resumed, text, { ...options, threads });
        await first.run({ steps: 10 });
        bytes = first.checkpoint();
      }
      using again = createModel(text, shape);
      {
        using second = await createTrainer(again, text, { ...options, threads });
        assertEquals(second.restore(bytes).step, 10);
        await second.run();
      }
      const a = saveWeights(straight), b = saveWeights(again);
      assert(a.every((x, i) => x === b[i]), `the resumed run differs on ${threads} thread(s)`);
    }
  }
});
