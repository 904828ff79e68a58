/**
 * A training worker (see `pool.ts`): runs forward and backward on its rows of each batch, over
 * the parameters in the shared kernel memory, into its own gradient buffer.
 *
 * @module
 */

import {
  Activations,
  backward,
  forward,
  type GPTConfig,
  parameterCount,
  type Params,
  paramViews,
} from "./model.ts";
import type { WorkerReply, WorkerRequest } from "./pool.ts";
import { Arena, useKernels } from "./tensor.ts";

let config: GPTConfig;
let params: Params;
let grads: Params;
let gradFlat: Float32Array;
let acts: Activations;

function handle(msg: WorkerRequest): WorkerReply {
  switch (msg.kind) {
    case "init": {
      useKernels(msg.tier, msg.memory);
      config = msg.config;
      const buffer = msg.memory.buffer;
      const n = parameterCount(config);
      params = paramViews(config, new Float32Array(buffer, msg.paramsOffset, n));
      gradFlat = new Float32Array(buffer, msg.gradsOffset, n);
      grads = paramViews(config, gradFlat);
      const arena = new Arena(msg.memory, msg.actsOffset);
      acts = new Activations(
        config,
        msg.rows,
        (k) => arena.f32(k),
        (k) => arena.u16(k),
        msg.dropout,
      );
      return {
        kind: "ready",
        inputsOffset: acts.inputs.byteOffset,
        targetsOffset: acts.targets.byteOffset,
      };
    }
    case "step": {
      const T = config.blockSize;
      gradFlat.fill(0);
      const lossSum = forward(config, params, acts, msg.rows, T, true, msg.drop);
      backward(config, params, grads, acts, msg.rows, T, msg.lossScale);
      return { kind: "done", lossSum };
    }
    case "forward":
      return { kind: "done", lossSum: forward(config, params, acts, msg.rows, config.blockSize) };
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
