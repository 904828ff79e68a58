// AdamW, gradient clipping and the learning-rate schedule against hand-computed values.

import { deepStrictEqual as assertEquals, ok as assert } from "node:assert";
import { AdamW, clipGradNorm, learningRate } from "../lib/adam.ts";
import { type ModelConfig, parameterSpecs } from "../lib/model.ts";
import { forEachTier } from "./tiers.ts";
import { defaultArena } from "../lib/kernels/dispatch.ts";

const close = (a: number, b: number, tol = 1e-12) => Math.abs(a - b) <= tol * (1 + Math.abs(b));

Deno.test("schedule: linear warmup, then cosine or linear decay to min-lr at the last step", () => {
  const s = {
    lr: 1e-2,
    minLr: 1e-4,
    warmup: 10,
    steps: 110,
    decay: "cosine" as const,
    cooldown: 1,
  };
  assert(close(learningRate(s, 0), 1e-3)); // (step + 1) / warmup of the peak
  assert(close(learningRate(s, 9), 1e-2));
  assert(close(learningRate(s, 10), 1e-2)); // the decay starts at the peak
  assert(close(learningRate(s, 109), 1e-4)); // and ends at min-lr
  assert(close(learningRate(s, 59.5), (1e-2 + 1e-4) / 2)); // cosine: halfway at the middle
  const linear = { ...s, decay: "linear" as const };
  assert(close(learningRate(linear, 10), 1e-2));
  assert(close(learningRate(linear, 109), 1e-4));
  assert(close(learningRate(linear, 34.75), 1e-4 + 0.75 * (1e-2 - 1e-4))); // a quarter of the way
  for (let t = 10; t < 109; t++) assert(learningRate(s, t + 1) <= learningRate(s, t));
});

Deno.test("schedule: warmup-stable-decay holds the peak, then a 1-sqrt or linear cooldown", () => {
  // 110 steps, warmup 10: steps 10..109 follow it; the last 40% (40 steps of 100) decay
  const s = { lr: 1e-2, minLr: 0, warmup: 10, steps: 111, decay: "1-sqrt" as const, cooldown: 0.4 };
  assert(close(learningRate(s, 9), 1e-2));
  for (const t of [10, 40, 70]) assert(close(learningRate(s, t), 1e-2)); // the stable phase
  assert(close(learningRate(s, 80), 1e-2 * (1 - Math.sqrt(10 / 40)))); // a quarter in: 1 - √¼
  assert(close(learningRate(s, 110), 0));
  const linear = { ...s, decay: "linear" as const };
  assert(close(learningRate(linear, 90), 0.5e-2)); // halfway down
  assert(close(learningRate(linear, 110), 0));
  for (let t = 10; t < 110; t++) assert(learningRate(s, t + 1) <= learningRate(s, t));
  // cooldown 0: the peak to the end
  assert(close(learningRate({ ...s, cooldown: 0 }, 109), 1e-2));
});

Deno.test("gradient clipping scales to the global norm only when above it", () => {
  const g = Float64Array.from([3, 4]); // norm 5
  assert(close(clipGradNorm(g, 10), 5));
  assertEquals([...g], [3, 4]);
  assert(close(clipGradNorm(g, 1), 5));
  assert(close(Math.hypot(g[0], g[1]), 1, 1e-6));
  const h = Float64Array.from([30, 40]);
  clipGradNorm(h, 0); // 0: off
  assertEquals([...h], [30, 40]);
});

const config: ModelConfig = { vocabSize: 3, blockSize: 2, dModel: 2, nLayers: 1, nHeads: 1 };

forEachTier("AdamW: bias-corrected moments, decoupled weight decay on 2-D weights only", () => {
  const specs = parameterSpecs(config);
  const n = specs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
  const arena = defaultArena();
  const lease = arena.lease();
  const alloc = (k: number) => lease.f32(k);
  const opt = new AdamW(config, alloc, { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.5 });
  const params = alloc(n), grad = alloc(n);
  for (let i = 0; i < n; i++) {
    params[i] = 0.1 * ((i % 7) - 3);
    grad[i] = 0.01 * ((i % 5) - 2);
  }
  const p0 = Float64Array.from(params);
  const g = Float64Array.from(grad);
  const lr = 1e-2;
  opt.step(params, grad, lr);
  opt.step(params, grad, lr);
  // reference: two steps by hand, in float64
  let offset = 0;
  for (const { name, shape } of specs) {
    const size = shape.reduce((x, y) => x * y, 1);
    const wd = shape.length === 2 ? 0.5 : 0;
    for (let i = offset; i < offset + size; i++) {
      let p = p0[i], m = 0, v = 0;
      for (let t = 1; t <= 2; t++) {
        m = 0.9 * m + 0.1 * g[i];
        v = 0.99 * v + 0.01 * g[i] * g[i];
        const mHat = m / (1 - 0.9 ** t), vHat = v / (1 - 0.99 ** t);
        p -= lr * (mHat / (Math.sqrt(vHat) + 1e-8) + wd * p);
      }
      assert(Math.abs(params[i] - p) <= 1e-6, `${name}[${i - offset}]: ${params[i]} vs ${p}`);
    }
    offset += size;
  }
  assertEquals(opt.t, 2);
});
