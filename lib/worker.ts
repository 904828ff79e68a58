/**
 * A training worker (see `pool.ts`): runs forward and backward on its rows of each batch, over
 * the parameters in the shared kernel memory, into its own gradient buffer.
 *
 * @module
 */

import { registerMemory } from "./kernels/arena.ts";
import { Arena, forceVariants, useKernels } from "./kernels/dispatch.ts";
import { PACK_BYTES } from "./kernels/mod.ts";
import {
  Activations,
  backward,
  batchPass,
  forward,
  type ModelConfig,
  parameterCount,
  type Params,
  paramViews,
} from "./model.ts";
import { newtonSchulz } from "./muon.ts";
import type { WorkerReply, WorkerRequest } from "./pool.ts";

let config: ModelConfig;
let params: Params;
let grads: Params;
let gradFlat: Float32Array;
let acts: Activations;
let memory: WebAssembly.Memory;
/** Muon's Newton–Schulz scratch (empty for AdamW). */
let scratch: Float32Array;

function handle(msg: WorkerRequest): WorkerReply {
  switch (msg.kind) {
    case "init": {
      // this worker's activations and matmul scratch, in the range the pool reserved at actsOffset
      const lease = new Arena(msg.memory, msg.actsOffset).lease();
      forceVariants(msg.variants);
      useKernels(msg.tier, msg.memory, lease.reserve(PACK_BYTES));
      config = msg.config;
      const buffer = msg.memory.buffer;
      const n = parameterCount(config);
      params = paramViews(config, new Float32Array(buffer, msg.paramsOffset, n));
      gradFlat = new Float32Array(buffer, msg.gradsOffset, n);
      grads = paramViews(config, gradFlat);
      const [f32, u16] = [(k: number) => lease.f32(k), (k: number) => lease.u16(k)];
      acts = new Activations(config, msg.rows, f32, u16, msg.dropout, true);
      memory = msg.memory;
      scratch = lease.f32(msg.scratchFloats);
      return {
        kind: "ready",
        inputsOffset: acts.inputs.byteOffset,
        targetsOffset: acts.targets.byteOffset,
      };
    }
    case "step": {
      const pass = batchPass(config, msg.rows, msg.drop);
      gradFlat.fill(0);
      const lossSum = forward({ params }, acts, pass);
      backward({ params, grads }, acts, pass, msg.lossScale);
      return { kind: "done", lossSum };
    }
    case "forward":
      return { kind: "done", lossSum: forward({ params }, acts, batchPass(config, msg.rows)) };
    case "orthogonalize": {
      registerMemory(memory); // the memory may have grown since: its views are of a new buffer
      for (const { at, rows, cols } of msg.matrices) {
        const u = new Float32Array(memory.buffer, msg.updateOffset + 4 * at, rows * cols);
        newtonSchulz(u, rows, cols, msg.steps, scratch);
      }
      return { kind: "done", lossSum: 0 };
    }
  }
}

// deno-lint-ignore no-explicit-any
const scope = self as any;
scope.onmessage = (e: MessageEvent<WorkerRequest>) => {
  try {
    scope.postMessage(handle(e.data));
  } catch (err) {
    scope.postMessage({ kind: "error", message: (err as Error)?.message ?? String(err) });
  }
};
