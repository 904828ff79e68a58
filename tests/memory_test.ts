// The library gives back the memory it takes: the arena's free list, models given back by
// dispose() / `using` or when garbage collected, trainers and worker pools by close(), and a
// failed load that leaves the library as it was.

import assert from "node:assert/strict";
import {
  createModel,
  createTrainer,
  evaluate,
  extendVocabulary,
  generate,
  InputError,
  loadWeights,
  nextCharDistribution,
  saveWeights,
  shippedWeightsUrl,
  WeightsError,
} from "../mod.ts";
import { Arena } from "../lib/kernels/arena.ts";
import { defaultArena, kernelMemory } from "../lib/kernels/dispatch.ts";
import { encodeSafetensors } from "../lib/safetensors.ts";
import { REPO } from "./cli_run.ts";

const TEXT = "the cat sat on the mat. the dog sat on the log. ".repeat(8);
const SMALL = { blockSize: 16, dModel: 32, nLayers: 2, nHeads: 4 };
const shipped = await Deno.readFile(new URL(shippedWeightsUrl));

/** The default arena's state: bytes in use and the end of the highest range. */
function arenaState() {
  const arena = defaultArena();
  return { live: arena.liveBytes, end: arena.end };
}

Deno.test("arena: given-back ranges merge with their neighbours and are reused, zeroed", () => {
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 64, shared: true });
  const arena = new Arena(memory);
  const first = arena.lease(), second = arena.lease();
  const a = first.f32(1000), b = second.f32(1000), c = first.f32(10);
  for (const x of [a, b, c]) x.fill(7);
  assert.equal(arena.liveBytes, 2 * 4032 + 64);
  second.release();
  assert.equal(arena.liveBytes, 4032 + 64);
  const reused = arena.lease().f32(500); // fits in b's range: taken there, not above c
  assert.equal(reused.byteOffset, b.byteOffset);
  assert.ok(reused.every((x) => x === 0), "a reused range is zeroed");
  first.release();
  first.release(); // idempotent
  assert.equal(arena.liveBytes, 2048);
  assert.equal(arena.end, reused.byteOffset + 2048, "free ranges at the top lower the end");
  assert.equal(arena.lease().f32(0).length, 0);
  assert.equal(arena.liveBytes, 2048, "an empty array takes nothing");
  const lease = arena.lease();
  const big = lease.f32(3000); // larger than any free range: above the rest, zeroed
  assert.ok(big.every((x) => x === 0));
  lease.release();
  assert.equal(arena.end, reused.byteOffset + 2048, "the top range given back lowers the end");
});

Deno.test("arena: every pattern of giving back leaves no range lost", () => {
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 256, shared: true });
  const arena = new Arena(memory);
  let state = 12345;
  const rand = (n: number) => (state = (state * 1103515245 + 12345) >>> 0) % n;
  const leases = Array.from({ length: 40 }, () => arena.lease());
  for (let round = 0; round < 2000; round++) {
    const lease = leases[rand(leases.length)];
    if (rand(3) === 0) lease.release();
    else lease.f32(1 + rand(5000)).fill(1);
  }
  for (const lease of leases) lease.release();
  assert.equal(arena.liveBytes, 0);
  assert.equal(arena.end, 65536, "with nothing in use, everything is free again");
});

Deno.test("1,000 loads of the shipped weights, each disposed, leave the kernels' memory as it was", async () => {
  (await loadWeights(shipped)).dispose(); // the kernels chosen, the memory sized
  const before = arenaState();
  const bytes = kernelMemory()?.buffer.byteLength;
  for (let i = 0; i < 1000; i++) {
    const model = await loadWeights(shipped);
    model.dispose();
    if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  assert.deepEqual(arenaState(), before);
  assert.equal(kernelMemory()?.buffer.byteLength, bytes, "the memory did not grow");
});

Deno.test("1,000 loads of the shipped weights, dropped, keep a flat resident size", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--quiet", "--allow-read", `${REPO}/tests/drop_weights.ts`, "1000"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const { early, end } = JSON.parse(new TextDecoder().decode(out.stdout));
  // each load takes 6.3 MiB; without giving back, 1,000 would hold 6 GiB (and fail at ~650)
  assert.ok(end.kernelMemory <= early.kernelMemory + 64, JSON.stringify({ early, end }));
  assert.ok(end.rss <= early.rss + 128, JSON.stringify({ early, end }));
});

Deno.test("`using` gives a model back at the end of its block", () => {
  const before = arenaState();
  {
    using model = createModel(TEXT, SMALL);
    assert.ok(defaultArena().liveBytes > before.live);
    assert.equal(model.config.dModel, 32);
  }
  assert.deepEqual(arenaState(), before);
});

Deno.test("a failed load, of any kind, leaves the library as it was", async () => {
  await loadWeights(shipped).then((m) => m.dispose()); // the caches' first use out of the way
  const before = arenaState();
  const small = createModel(TEXT, SMALL);
  const good = saveWeights(small);
  small.dispose();
  const header = Number(new DataView(good.buffer).getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(good.subarray(8, 8 + header)));
  const withConfig = (config: Record<string, number>) => {
    const metadata = { ...json.__metadata__, config: JSON.stringify(config) };
    return encodeSafetensors([], metadata);
  };
  const hostile: [string, Uint8Array][] = [
    ["truncated", shipped.subarray(0, shipped.length - 1000)],
    ["not safetensors", new TextEncoder().encode("hello world, not a model at all")],
    [
      "1,024 layers of width 65,536",
      withConfig({ vocab_size: 65, block_size: 128, d_model: 65536, n_layers: 1024, n_heads: 4 }),
    ],
    [
      "block size 65,536",
      withConfig({ vocab_size: 65, block_size: 65536, d_model: 256, n_layers: 2, n_heads: 4 }),
    ],
    ["a header claiming 59 MB", Uint8Array.from([0x00, 0x00, 0x86, 0x03, 0, 0, 0, 0, 0x7b])],
  ];
  for (const [what, bytes] of hostile) {
    await assert.rejects(loadWeights(bytes), WeightsError, what);
    assert.deepEqual(arenaState(), before, `${what}: nothing kept`);
  }
  assert.throws(
    () => createModel(TEXT, { dModel: 8192, nLayers: 64, nHeads: 4 }),
    InputError,
    "too large for the kernels",
  );
  assert.deepEqual(arenaState(), before);
  // and the library works as before
  const model = await loadWeights(shipped);
  assert.equal(model.parameterCount, 1_629_440);
  model.dispose();
  assert.deepEqual(arenaState(), before);
});

Deno.test("trainers, worker pools and evaluations give back what they take", async () => {
  const model = createModel(TEXT, SMALL);
  let after = arenaState();
  for (let i = 0; i < 21; i++) {
    if (i === 1) after = arenaState(); // the model's own caches are made by the first round
    using trainer = await createTrainer(model, TEXT, { steps: 2, batch: 4, threads: 2 });
    await trainer.step();
    await evaluate(model, TEXT, { threads: 2 });
    await evaluate(model, TEXT);
    for await (const _ of generate(model, { tokens: 5, seed: i })) { /* drain */ }
    nextCharDistribution(model, "the ");
  }
  assert.deepEqual(arenaState(), after);
  const { model: grown } = extendVocabulary(model, "XYZ");
  grown.dispose();
  model.dispose();
});

Deno.test("a disposed model, or a trainer of one, is refused with a one-line error", async () => {
  const model = createModel(TEXT, SMALL);
  const trainer = await createTrainer(model, TEXT, { steps: 2, batch: 2 });
  model.dispose();
  model.dispose(); // idempotent
  const disposed = /^this model was disposed; load or make it again$/;
  assert.throws(() => saveWeights(model), { name: "InputError", message: disposed });
  assert.throws(() => nextCharDistribution(model, "the"), { message: disposed });
  await assert.rejects(evaluate(model, TEXT), { name: "InputError", message: disposed });
  await assert.rejects(createTrainer(model, TEXT), { name: "InputError", message: disposed });
  await assert.rejects(
    (async () => {
      for await (const _ of generate(model, { tokens: 3 })) { /* drain */ }
    })(),
    { name: "InputError", message: disposed },
  );
  await assert.rejects(trainer.step(), {
    name: "InputError",
    message: "this trainer's model was disposed; load or make it again",
  });
  trainer.close();
  assert.throws(() => trainer.checkpoint(), {
    name: "InputError",
    message: "this trainer is closed; its state is gone; checkpoint before closing",
  });
});
