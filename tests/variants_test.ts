// Every variant of every matmul form gives the same bits as the first, at every tier, on shapes
// that reach every edge of the tiles (rows past the last tile, columns past the last vector,
// reductions longer than a cache block); and the chooser that picks among them by timing.

import assert from "node:assert/strict";
import {
  createKernels,
  createSharedMemory,
  type KernelExports,
  PACK_BYTES,
} from "../lib/kernels/mod.ts";
import { VariantChooser } from "../lib/kernels/tune.ts";
import { forceVariants, setupKernels, variantChoices } from "../lib/kernels/dispatch.ts";
import { createModel, createTrainer, saveWeights, selectKernels } from "../mod.ts";
import { availableTiers } from "./tiers.ts";

const memory = createSharedMemory(64 << 20);
const f32 = new Float32Array(memory.buffer);
let top = 65536;
function put(n: number, seed: number): number {
  const p = top;
  top += Math.ceil((n * 4) / 64) * 64;
  let a = seed >>> 0;
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    f32[p / 4 + i] = (a / 2 ** 32 - 0.5) * 2;
  }
  return p;
}
const bytesAt = (p: number, n: number) => new Uint8Array(memory.buffer, p, 4 * n).slice();

/** [M, K, N]: tile edges of every variant (rows 1..13 past a tile, N % 4, N % 8, K > 256). */
const SHAPES = [[1, 5, 3], [7, 9, 13], [13, 300, 37], [50, 257, 70], [97, 64, 129], [31, 520, 24]];

const wasmTiers = availableTiers().filter((t) => t !== "js") as ("relaxed" | "simd")[];
for (const tier of wasmTiers) {
  Deno.test(`every variant of every matmul form gives the same bits [${tier}]`, () => {
    const k: KernelExports = createKernels(tier, memory);
    const forms: [
      string,
      number,
      (v: number, out: number, M: number, K: number, N: number) => void,
    ][] = [];
    let x = 0, w = 0, bias = 0, dy = 0, sc = 0;
    forms.push(["matmul", 0, (v, out, M, K, N) => k.matmul(out, x, w, bias, M, K, N, v, sc)]);
    forms.push(["matmul, no bias", 0, (v, out, M, K, N) => k.matmul(out, x, w, 0, M, K, N, v, sc)]);
    forms.push(["matmul_backward_weight", 0, (v, out, M, K, N) => {
      // accumulates into dw: start every variant from the same values
      f32.set(f32.subarray(dy / 4, dy / 4 + K * N), out / 4);
      k.matmul_backward_weight(out, x, dy, M, K, N, v, sc);
    }]);
    forms.push(["matmul_nt", 1, (v, out, M, K, N) => k.matmul_nt(out, x, w, M, K, N, v)]);
    forms.push(["matmul_backward_input", 1, (v, out, M, K, N) => {
      k.matmul_backward_input(out, dy, w, M, K, N, v);
    }]);
    for (const [M, K, N] of SHAPES) {
      top = 65536;
      x = put(M * K, 1);
      w = put(K * N, 2);
      bias = put(N, 3);
      dy = put(Math.max(M * N, K * N), 4);
      sc = put(PACK_BYTES / 4, 6); // the packed variants' scratch (its contents do not matter)
      const out = put(Math.max(M * N, K * N, M * K), 5);
      for (const [name, form, run] of forms) {
        const count = k.variant_count(form);
        assert.ok(count >= (form === 0 ? 4 : 3), `${name}: ${count} variants`);
        const size = name === "matmul_backward_weight"
          ? K * N
          : name === "matmul_backward_input"
          ? M * K
          : M * N;
        run(0, out, M, K, N);
        const first = bytesAt(out, size);
        for (let v = 1; v < count; v++) {
          f32.fill(Number.NaN, out / 4, out / 4 + size); // every output must be written
          run(v, out, M, K, N);
          assert.deepEqual(bytesAt(out, size), first, `${name} ${M}x${K}x${N}: variant ${v}`);
        }
      }
    }
  });

  Deno.test(`a training run gives the same bytes whichever variants run [${tier}]`, async () => {
    const text = "the cat sat on the mat. the dog sat on the log. ".repeat(40);
    const train = async (variants: Parameters<typeof forceVariants>[0]) => {
      selectKernels(tier, { reset: true });
      forceVariants(variants);
      using model = createModel(text, {
        blockSize: 32,
        dModel: 48,
        nLayers: 1,
        nHeads: 2,
        seed: 3,
      });
      using trainer = await createTrainer(model, text, { steps: 3, batch: 8, seed: 3, threads: 2 });
      await trainer.run();
      return saveWeights(model);
    };
    try {
      const first = await train({ matmul: 0, backwardWeight: 0, nt: 0 });
      for (
        const variants of [{ matmul: 1, backwardWeight: 2, nt: 1 }, {
          matmul: 3,
          backwardWeight: 1,
          nt: 3,
        }, {}]
      ) {
        assert.deepEqual(await train(variants), first, JSON.stringify(variants));
      }
    } finally {
      forceVariants({});
      setupKernels("js");
    }
  });
}

Deno.test("the chooser times each variant (after two warm-up rounds), then keeps the fastest", () => {
  const chooser = new VariantChooser(3);
  const ran: number[] = [];
  // variant 2 is the fastest: the others spin a while
  const call = (v: number) => {
    ran.push(v);
    const until = performance.now() + (v === 2 ? 0.2 : 2);
    while (performance.now() < until) { /* spin */ }
  };
  for (let i = 0; i < 20; i++) chooser.run(256, 256, 256, call);
  const trials = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2];
  assert.deepEqual(ran.slice(0, 15), trials, "five rounds of trials");
  assert.deepEqual(ran.slice(15), new Array(5).fill(2), "then the fastest alone");
  assert.deepEqual(chooser.choices(), { "256x256x256": 2 });
  // small products are not timed; a forced variant always runs
  const small: number[] = [];
  for (let i = 0; i < 5; i++) chooser.run(2, 16, 16, (v) => small.push(v));
  assert.deepEqual(small, [0, 0, 0, 0, 0]);
  const forced = new VariantChooser(3, 1);
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) forced.run(512, 512, 512, (v) => seen.push(v));
  assert.deepEqual(seen, [1, 1, 1, 1, 1]);
});

Deno.test("a variant that does not exist is refused", () => {
  if (wasmTiers.length === 0) return;
  setupKernels(wasmTiers.at(-1));
  try {
    assert.throws(() => forceVariants({ matmul: 99 }), RangeError);
    assert.deepEqual(variantChoices().matmul, {});
  } finally {
    forceVariants({});
    setupKernels("js");
  }
});
