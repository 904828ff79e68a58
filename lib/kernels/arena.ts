/**
 * The arena: the allocator of float32 and uint16 arrays in the kernels' WebAssembly memory (or on
 * the JavaScript heap for the plain TypeScript tier). Buffers are allocated once, up front, and
 * reused by every step. The first 64 KiB of the memory stay free: offset 0 means "none" to the
 * kernels.
 *
 * Memory is handed out in {@linkcode Lease}s: a model, a trainer or a worker pool takes one and
 * gives all of it back at once, when it is disposed or (for a model or trainer) garbage
 * collected. Freed ranges go to a free list, merged with their neighbours, and are handed out
 * again (zeroed) before the memory grows; a WebAssembly memory never shrinks, so the resident size
 * stays that of the most ever alive at once.
 *
 * A shared memory grows as needed (views of a SharedArrayBuffer survive a grow). A plain memory
 * (a page without cross-origin isolation) cannot grow under live views, so it is sized up front
 * with {@linkcode Arena.ensure}, and an allocation past its end is an error.
 *
 * @module
 */

import { BareGPTError } from "../errors.ts";

/** The memory of each buffer seen (a shared memory gives a new buffer object after a grow). */
const bufferMemory = new WeakMap<ArrayBufferLike, WebAssembly.Memory>();

/** Records the current buffer of a kernel memory, so its views are recognised. */
export function registerMemory(memory: WebAssembly.Memory): void {
  bufferMemory.set(memory.buffer, memory);
}

/** The kernel memory `a` is a view of, or undefined for an array on the heap. */
export function memoryOf(a: { buffer: ArrayBufferLike }): WebAssembly.Memory | undefined {
  return bufferMemory.get(a.buffer);
}

/** True when a memory is backed by a SharedArrayBuffer. */
export function isShared(memory: WebAssembly.Memory): boolean {
  return typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer;
}

/** Gives a lease back when its owner is garbage collected without being disposed. */
const unreleased = new FinalizationRegistry<Lease>((lease) => lease.release());

/** Allocation of arrays in one kernel memory (or on the heap when `memory` is null). */
export class Arena {
  readonly memory: WebAssembly.Memory | null;
  /** The end of the highest range in use: everything above is free. */
  #offset: number;
  /** Free ranges below #offset, [start, bytes] in address order, never adjacent. */
  readonly #free: [number, number][] = [];
  /** Below this, memory may hold old data (it was handed out before): it is zeroed when reused. */
  #used: number;

  constructor(memory: WebAssembly.Memory | null, offset = 65536) {
    this.memory = memory;
    this.#offset = offset;
    this.#used = offset;
    if (memory !== null) registerMemory(memory);
  }

  /** The end of the highest range in use (the memory's first free byte above which all is free). */
  get end(): number {
    return this.#offset;
  }

  /** Bytes in use: handed out and not given back. */
  get liveBytes(): number {
    return this.#offset - 65536 - this.#free.reduce((sum, [, bytes]) => sum + bytes, 0);
  }

  /**
   * A new lease of this arena's memory; with an `owner`, the lease is given back when the owner is
   * garbage collected (the owner must keep every array it allocates to itself).
   */
  lease(owner?: object): Lease {
    const lease = new Lease(this);
    if (owner !== undefined) unreleased.register(owner, lease, lease);
    return lease;
  }

  /** Bytes an allocation of `bytes` takes (64-byte aligned, like a cache line). */
  static size(bytes: number): number {
    return Math.ceil(bytes / 64) * 64;
  }

  /**
   * Grows the memory now so that `bytes` more can be allocated without growing it later (a plain
   * memory must be sized before any array lives in it).
   */
  ensure(bytes: number): void {
    const memory = this.memory;
    const need = this.#offset + Arena.size(bytes) - (memory?.buffer.byteLength ?? Infinity);
    if (memory === null || need <= 0) return;
    if (!isShared(memory) && this.#offset > 65536) {
      throw new BareGPTError(
        "the kernels' plain memory cannot grow once arrays live in it; size it up front",
      );
    }
    memory.grow(Math.ceil(need / 65536));
    registerMemory(memory);
  }

  /**
   * Reserves `bytes` of the memory, zeroed: the first free range that fits, or above the rest
   * (growing a shared memory if needed). Returns the byte offset.
   */
  reserve(bytes: number): number {
    const size = Arena.size(bytes);
    const memory = this.memory!;
    if (size === 0) return this.#offset; // an empty array takes nothing
    const i = this.#free.findIndex(([, free]) => free >= size);
    if (i >= 0) {
      const [start, free] = this.#free[i];
      if (free === size) this.#free.splice(i, 1);
      else this.#free[i] = [start + size, free - size];
      new Uint8Array(memory.buffer, start, size).fill(0);
      return start;
    }
    const start = this.#offset;
    const end = start + size;
    if (end > memory.buffer.byteLength) {
      if (!isShared(memory) && start > 65536) {
        throw new BareGPTError(
          `the kernels' plain memory (${memory.buffer.byteLength >> 20} MiB) is full; ` +
            "choose the kernels again with a larger memoryBytes, or use a cross-origin isolated page",
        );
      }
      memory.grow(Math.ceil((end - memory.buffer.byteLength) / 65536));
      registerMemory(memory);
    }
    if (start < this.#used) {
      new Uint8Array(memory.buffer, start, Math.min(end, this.#used) - start).fill(0);
    }
    this.#offset = end;
    this.#used = Math.max(this.#used, end);
    return start;
  }

  /** Gives back `bytes` at `start` (a range {@linkcode Arena.reserve} returned). */
  release(start: number, bytes: number): void {
    const free = this.#free;
    let range: [number, number] = [start, Arena.size(bytes)];
    if (range[1] === 0) return;
    let i = free.findIndex(([s]) => s > start);
    if (i < 0) i = free.length;
    const next = free[i];
    if (next !== undefined && range[0] + range[1] === next[0]) {
      range = [range[0], range[1] + next[1]];
      free.splice(i, 1);
    }
    const before = free[i - 1];
    if (before !== undefined && before[0] + before[1] === range[0]) {
      range = [before[0], before[1] + range[1]];
      free.splice(--i, 1);
    }
    if (range[0] + range[1] === this.#offset) this.#offset = range[0];
    else free.splice(i, 0, range);
  }
}

/**
 * A group of arrays from one arena, given back together: a model's parameters, gradients and
 * caches, or a trainer's optimizer state and activations. On the heap (no kernel memory) its
 * arrays are ordinary ones and release only forgets them.
 */
export class Lease {
  readonly arena: Arena;
  /** The ranges handed out, [start, bytes]. */
  #ranges: [number, number][] = [];

  constructor(arena: Arena) {
    this.arena = arena;
  }

  /** Reserves `bytes` of the arena's memory for this lease; returns the byte offset. */
  reserve(bytes: number): number {
    const start = this.arena.reserve(bytes);
    this.#ranges.push([start, bytes]);
    return start;
  }

  /** A zeroed float32 array of n elements. */
  f32(n: number): Float32Array {
    const memory = this.arena.memory;
    if (memory === null) return new Float32Array(n);
    const start = this.reserve(n * 4); // may grow the memory: take its buffer after
    return new Float32Array(memory.buffer, start, n);
  }

  /** A zeroed uint16 array of n elements (token ids). */
  u16(n: number): Uint16Array {
    const memory = this.arena.memory;
    if (memory === null) return new Uint16Array(n);
    const start = this.reserve(n * 2);
    return new Uint16Array(memory.buffer, start, n);
  }

  /** Gives every range back to the arena (the arrays must not be used after). Idempotent. */
  release(): void {
    unreleased.unregister(this);
    for (const [start, bytes] of this.#ranges.reverse()) this.arena.release(start, bytes);
    this.#ranges = [];
  }
}
