/**
 * The arena: a bump allocator of float32 and uint16 arrays in the kernels' WebAssembly memory (or
 * on the JavaScript heap for the plain TypeScript tier). Buffers are allocated once, up front,
 * and reused by every step. The first 64 KiB of the memory stay free: offset 0 means "none" to
 * the kernels.
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

/** Bump allocation of arrays in one kernel memory (or on the heap when `memory` is null). */
export class Arena {
  readonly memory: WebAssembly.Memory | null;
  #offset: number;

  constructor(memory: WebAssembly.Memory | null, offset = 65536) {
    this.memory = memory;
    this.#offset = offset;
    if (memory !== null) registerMemory(memory);
  }

  /** Bytes handed out so far (the end of the last allocation). */
  get end(): number {
    return this.#offset;
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

  /** Reserves `bytes` of the memory (growing a shared one if needed); returns the byte offset. */
  reserve(bytes: number): number {
    const start = this.#offset;
    const memory = this.memory!;
    const end = start + Arena.size(bytes);
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
    this.#offset = end;
    return start;
  }

  /** A zeroed float32 array of n elements. */
  f32(n: number): Float32Array {
    if (this.memory === null) return new Float32Array(n);
    const start = this.reserve(n * 4); // may grow the memory: take its buffer after
    return new Float32Array(this.memory.buffer, start, n);
  }

  /** A zeroed uint16 array of n elements (token ids). */
  u16(n: number): Uint16Array {
    if (this.memory === null) return new Uint16Array(n);
    const start = this.reserve(n * 2);
    return new Uint16Array(this.memory.buffer, start, n);
  }
}
