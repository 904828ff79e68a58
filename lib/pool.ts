/**
 * Data parallelism over a batch: workers that share the kernels' WebAssembly memory, each running
 * forward and backward on its rows of the batch into its own gradient buffer. The calling thread
 * takes the first share itself, then sums the gradients in a fixed order, so results depend only
 * on the seed, the thread count and the kernel tier. One message round trip per step.
 *
 * @module
 */

import { BareGPTError, InputError } from "./errors.ts";
import { isShared } from "./kernels/arena.ts";
import {
  addInPlace,
  forcedVariants,
  kernelMemory,
  kernelTier,
  type KernelVariants,
  type Lease,
} from "./kernels/dispatch.ts";
import type { Dropout } from "./layers.ts";
import { activationBytes, type Activations } from "./activations.ts";
import { PACK_BYTES } from "./kernels/mod.ts";
import { batchPass, forward, type GPT, type ModelConfig } from "./model.ts";
import type { HiddenMatrix, Muon, Orthogonalize } from "./muon.ts";
import { gradients } from "./train.ts";

/** What the main thread tells a worker. */
export type WorkerRequest =
  | {
    kind: "init";
    tier: "relaxed" | "simd";
    memory: WebAssembly.Memory;
    config: ModelConfig;
    rows: number;
    paramsOffset: number;
    gradsOffset: number;
    actsOffset: number;
    dropout: boolean;
    variants: KernelVariants;
    /** Floats of Newton–Schulz scratch (Muon; 0: none). */
    scratchFloats: number;
  }
  | { kind: "step"; rows: number; lossScale: number; drop: Dropout | null }
  | { kind: "forward"; rows: number }
  | { kind: "orthogonalize"; updateOffset: number; matrices: HiddenMatrix[]; steps: number };

/** What a worker answers. */
export type WorkerReply =
  | { kind: "ready"; inputsOffset: number; targetsOffset: number }
  | { kind: "done"; lossSum: number }
  | { kind: "error"; message: string };

/**
 * The worker module, next to this one: `worker.ts`, or `worker.js` where this code runs bundled
 * into a script (the browser page's `web/dist/app.js`, beside which its bundle puts `worker.js`).
 */
const WORKER_URL = new URL(
  import.meta.url.endsWith(".ts") ? "./worker.ts" : "./worker.js",
  import.meta.url,
);

/**
 * The error for a worker that did not start: an InputError naming the permission when the
 * runtime refused to load the module (Deno: "Requires read access to ..."), else a BareGPTError.
 */
export function workerStartError(url: URL, threads: number, reply: WorkerReply): BareGPTError {
  const why = reply.kind === "error" ? reply.message.split("\n")[0] : `it answered ${reply.kind}`;
  const kind = why.match(/Requires (\w+) access/)?.[1] ??
    (/NotCapable|PermissionDenied|permission/i.test(why) ? "read" : null);
  if (kind === null) return new BareGPTError(`a worker thread did not start (${why})`);
  const folder = new URL(".", url);
  const what = kind === "read" && folder.protocol === "file:"
    ? decodeURIComponent(folder.pathname).replace(/(.)\/$/, "$1")
    : folder.host;
  return new InputError(
    `running on ${threads} threads starts workers from ${url.href}; allow ${
      kind === "read" ? "reading" : kind === "import" ? "importing" : "loading"
    } it (--allow-${kind}=${what}) or use threads: 1`,
  );
}

/** The rows of a batch of B sequences handled by each of n threads (first shares larger). */
export function shares(B: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(B / n) + (i < B % n ? 1 : 0));
}

interface WorkerHandle {
  worker: Worker;
  grads: Float32Array;
  inputs: Uint16Array;
  targets: Uint16Array;
  pending: ((reply: WorkerReply) => void) | null;
}

/**
 * A pool of threads - 1 workers plus the calling thread, over a model whose parameters live in a
 * shared kernel memory.
 */
export class WorkerPool {
  readonly model: GPT;
  readonly rows: number[];
  /** The calling thread's activations (its share of the batch). */
  readonly acts: Activations;
  readonly #workers: WorkerHandle[];

  /** The pool's buffers: this thread's activations, each worker's gradients and activations. */
  readonly #lease: Lease;

  private constructor(
    model: GPT,
    rows: number[],
    acts: Activations,
    workers: WorkerHandle[],
    lease: Lease,
  ) {
    this.model = model;
    this.rows = rows;
    this.acts = acts;
    this.#workers = workers;
    this.#lease = lease;
  }

  /**
   * Starts threads - 1 workers for batches of B sequences, each with scratchFloats of
   * Newton–Schulz scratch (Muon's; 0 for AdamW).
   */
  static async start(
    model: GPT,
    B: number,
    threads: number,
    dropout = false,
    scratchFloats = 0,
  ): Promise<WorkerPool> {
    const tier = kernelTier();
    const memory = kernelMemory();
    const arena = model.arena;
    if (tier === "js" || memory === null || arena === undefined || arena.memory !== memory) {
      throw new Error("a worker pool needs a float32 model in the WebAssembly kernels' memory");
    }
    if (!isShared(memory)) {
      throw new Error("a worker pool needs a shared WebAssembly memory");
    }
    const rows = shares(B, Math.min(threads, B));
    // every buffer of the pool is its own, given back when it closes
    const lease = arena.lease();
    const acts = model.activations(rows[0], { dropout, lease });
    const c = model.config;
    const workers: WorkerHandle[] = [];
    try {
      for (let i = 1; i < rows.length; i++) {
        const grads = lease.f32(model.parameterCount);
        const actsOffset = lease.reserve(
          activationBytes(c, rows[i], dropout) + PACK_BYTES + 4 * scratchFloats + 64,
        );
        let worker: Worker;
        try {
          worker = new Worker(WORKER_URL, { type: "module" });
        } catch (e) {
          throw workerStartError(WORKER_URL, rows.length, {
            kind: "error",
            message: `${(e as Error).name}: ${(e as Error).message}`,
          });
        }
        const handle: WorkerHandle = {
          worker,
          grads,
          inputs: new Uint16Array(0),
          targets: new Uint16Array(0),
          pending: null,
        };
        worker.onmessage = (e: MessageEvent<WorkerReply>) => {
          const resolve = handle.pending;
          handle.pending = null;
          resolve?.(e.data);
        };
        worker.onerror = (e: ErrorEvent) => {
          e.preventDefault();
          const resolve = handle.pending;
          handle.pending = null;
          resolve?.({ kind: "error", message: e.message });
        };
        workers.push(handle);
        const init: WorkerRequest = {
          kind: "init",
          tier,
          memory,
          config: c,
          rows: rows[i],
          paramsOffset: model.flat.byteOffset,
          gradsOffset: grads.byteOffset,
          actsOffset,
          dropout,
          variants: forcedVariants(),
          scratchFloats,
        };
        const ready = await request(handle, init);
        if (ready.kind !== "ready") {
          throw workerStartError(WORKER_URL, rows.length, ready);
        }
        const T = c.blockSize;
        handle.inputs = new Uint16Array(memory.buffer, ready.inputsOffset, rows[i] * T);
        handle.targets = new Uint16Array(memory.buffer, ready.targetsOffset, rows[i] * T);
      }
    } catch (e) {
      for (const w of workers) w.worker.terminate();
      lease.release();
      throw e;
    }
    return new WorkerPool(model, rows, acts, workers, lease);
  }

  /** Number of threads, the calling one included. */
  get threads(): number {
    return this.rows.length;
  }

  /**
   * Forward and backward of a batch (inputs/targets [B, T]) over every thread; the model's
   * gradient becomes the sum of all shares' gradients of lossScale * loss. Returns the loss sum.
   * `drop` (its firstRow ignored) applies dropout with masks that depend on the global row.
   */
  async forwardBackward(
    inputs: Uint16Array,
    targets: Uint16Array,
    lossScale: number,
    drop: Dropout | null = null,
  ): Promise<number> {
    const { model, acts, rows } = this;
    const c = model.config;
    const T = c.blockSize;
    const replies = this.#dispatch(
      inputs,
      targets,
      (r, firstRow) => ({
        kind: "step",
        rows: r,
        lossScale,
        drop: drop === null ? null : { ...drop, firstRow },
      }),
    );
    // this thread's share
    acts.inputs.set(inputs.subarray(0, rows[0] * T));
    acts.targets.set(targets.subarray(0, rows[0] * T));
    const ownDrop = drop === null ? null : { ...drop, firstRow: 0 };
    let lossSum = gradients(model, acts, batchPass(c, rows[0], ownDrop), lossScale);
    // then the workers', in a fixed order
    const done = await Promise.all(replies);
    for (let i = 0; i < done.length; i++) {
      lossSum += done[i];
      addInPlace(model.gradFlat, this.#workers[i].grads, model.parameterCount);
    }
    return lossSum;
  }

  /** The loss sum of a forward pass over up to B sequences, spread over the threads. */
  async forwardLoss(inputs: Uint16Array, targets: Uint16Array, count: number): Promise<number> {
    const { model, acts } = this;
    const c = model.config;
    const T = c.blockSize;
    const split = shares(count, this.threads).map((r, i) => Math.min(r, this.rows[i]));
    const replies = this.#dispatch(inputs, targets, (r) => ({ kind: "forward", rows: r }), split);
    acts.inputs.set(inputs.subarray(0, split[0] * T));
    acts.targets.set(targets.subarray(0, split[0] * T));
    let lossSum = split[0] > 0 ? forward(model, acts, batchPass(c, split[0])) : 0;
    for (const loss of await Promise.all(replies)) lossSum += loss;
    return lossSum;
  }

  /**
   * Muon's orthogonalisation over every thread: the matrices are dealt out by cost (largest
   * first, to the least loaded thread; this thread is the first), each done whole by one thread.
   */
  orthogonalizer(muon: Muon): Orthogonalize {
    return async (matrices, steps) => {
      const shares: HiddenMatrix[][] = Array.from({ length: this.threads }, () => []);
      const load = new Array(this.threads).fill(0);
      const cost = (m: HiddenMatrix) => m.rows * m.cols * Math.min(m.rows, m.cols);
      for (const m of [...matrices].sort((a, b) => cost(b) - cost(a))) {
        const least = load.indexOf(Math.min(...load));
        shares[least].push(m);
        load[least] += cost(m);
      }
      const replies = this.#workers.map((w, i) =>
        shares[i + 1].length === 0 ? Promise.resolve() : request(w, {
          kind: "orthogonalize",
          updateOffset: muon.update.byteOffset,
          matrices: shares[i + 1],
          steps,
        }).then((reply) => checkReply(reply))
      );
      await muon.orthogonalizeHere(shares[0], steps);
      await Promise.all(replies);
    };
  }

  /** Copies each worker's rows of the batch and sends it a request; resolves to loss sums. */
  #dispatch(
    inputs: Uint16Array,
    targets: Uint16Array,
    message: (rows: number, firstRow: number) => WorkerRequest,
    split = this.rows,
  ): Promise<number>[] {
    const T = this.model.config.blockSize;
    let first = split[0];
    return this.#workers.map((w, i) => {
      const r = split[i + 1];
      if (r === 0) return Promise.resolve(0);
      w.inputs.set(inputs.subarray(first * T, (first + r) * T));
      w.targets.set(targets.subarray(first * T, (first + r) * T));
      const msg = message(r, first);
      first += r;
      return request(w, msg).then(checkReply);
    });
  }

  /** Stops the workers. */
  close(): void {
    for (const w of this.#workers) w.worker.terminate();
    this.#workers.length = 0;
    this.#lease.release();
  }
}

/** A worker's loss sum, or the BareGPTError of a failed or out-of-turn reply. */
function checkReply(reply: WorkerReply): number {
  if (reply.kind === "error") throw new BareGPTError(`a training worker failed: ${reply.message}`);
  if (reply.kind !== "done") throw new BareGPTError("a training worker answered out of turn");
  return reply.lossSum;
}

function request(w: WorkerHandle, message: WorkerRequest): Promise<WorkerReply> {
  return new Promise((resolve) => {
    w.pending = resolve;
    w.worker.postMessage(message);
  });
}
