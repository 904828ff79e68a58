/**
 * GPU memory, planned before anything is allocated: a {@linkcode Layout} is a list of regions,
 * each one future GPUBuffer, and a region hands out its tensors ({@linkcode GpuArray}s at
 * element offsets) while it is being laid out. So the bytes a configuration and batch need are
 * known, and checked against the adapter's limits (the largest buffer, the largest binding), by
 * the same code that later allocates them: {@linkcode Layout.check} throws a one-line
 * InputError, then {@linkcode Layout.allocate} makes the buffers and the tensors become usable.
 *
 * @module
 */

import { InputError } from "../errors.ts";
import type { GpuArray } from "./pipelines.ts";

/** The options a memory error names: what makes a model's buffers smaller. */
const SIZE_OPTIONS = ["batch", "dModel", "nLayers", "blockSize"];

/** What a layout is checked against: a device's (or adapter's) limits. */
export type MemoryLimits = Pick<
  GPUSupportedLimits,
  "maxBufferSize" | "maxStorageBufferBindingSize" | "minStorageBufferOffsetAlignment"
>;

/** A tensor handed out before its buffer exists; `buffer` is set by {@linkcode Region.allocate}. */
interface PlannedArray {
  buffer: GPUBuffer;
  readonly offset: number;
}

/**
 * The tensors of a part of GPU memory. A `packed` region is one GPUBuffer holding its tensors one
 * after the other, without gaps (the parameters and their gradients: the flat order of
 * lib/model.ts, which uploads, downloads and the optimizer's work over the whole use). Any other
 * region gives each tensor a GPUBuffer of its own. WebGPU's rules for a dispatch ask it: a
 * binding that is written may not overlap another binding (Chromium), and a buffer may not be
 * bound both for writing and read-only (Deno's wgpu), so two tensors of one buffer that a kernel
 * reads and writes would be refused.
 */
export class Region {
  readonly name: string;
  readonly packed: boolean;
  #floats = 0;
  #largest = { name: "", floats: 0 };
  readonly #arrays: (PlannedArray & { floats: number; label: string })[] = [];
  #buffers: GPUBuffer[] | null = null;

  constructor(name: string, packed = false) {
    this.name = name;
    this.packed = packed;
  }

  /** Elements laid out so far. */
  get floats(): number {
    return this.#floats;
  }

  /** The largest tensor, which one binding must hold. */
  get largest(): { readonly name: string; readonly floats: number } {
    return this.#largest;
  }

  /** The largest buffer the region makes: all of it when packed, else its largest tensor. */
  get largestBuffer(): number {
    return this.packed ? this.#floats : this.#largest.floats;
  }

  /** The next `floats` elements, as the tensor `name` (usable once the region is allocated). */
  take(name: string, floats: number): GpuArray {
    if (this.#buffers !== null) throw new Error(`region ${this.name} is allocated already`);
    const array = {
      buffer: undefined as unknown as GPUBuffer,
      offset: this.packed ? this.#floats : 0,
      floats,
      label: `${this.name}: ${name}`,
    };
    this.#arrays.push(array);
    this.#floats += floats;
    if (floats > this.#largest.floats) this.#largest = { name, floats };
    return array;
  }

  /** Makes the buffers (storage, copy source and destination, zeroed) and binds the tensors. */
  allocate(device: GPUDevice): GPUBuffer[] {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    const make = (label: string, floats: number) =>
      device.createBuffer({ label, size: Math.max(4, floats * 4), usage });
    if (this.packed) {
      const buffer = make(this.name, this.#floats);
      for (const array of this.#arrays) array.buffer = buffer;
      return this.#buffers = [buffer];
    }
    return this.#buffers = this.#arrays.map((a) => a.buffer = make(a.label, a.floats));
  }
}

/**
 * The regions of a GPU model (or of a KV cache): what they take, checked, then allocated. The
 * staging buffers that results are read back through are made apart (MAP_READ, see
 * {@linkcode StagingRing}), but counted and checked here too.
 */
export class Layout {
  readonly regions: Region[] = [];
  /** Staging buffers, one packed region each: counted and checked, not allocated here. */
  readonly staged: Region[] = [];

  /** A new region of this layout (`packed`: tensors without gaps, see {@linkcode Region}). */
  region(name: string, packed = false): Region {
    const region = new Region(name, packed);
    this.regions.push(region);
    return region;
  }

  /** Counts `count` staging buffers of `floats` elements each, made apart from the regions. */
  stage(name: string, floats: number, count = 1): void {
    for (let i = 0; i < count; i++) {
      const r = new Region(name, true);
      r.take(name, floats);
      this.staged.push(r);
    }
  }

  /** Bytes of all the regions and staging buffers. */
  get bytes(): number {
    return [...this.regions, ...this.staged].reduce((sum, r) => sum + r.floats * 4, 0);
  }

  /**
   * Throws an InputError (one line, starting with `what`, e.g. "this model (…)") when a region is
   * larger than the largest buffer the adapter makes, or else when a tensor is larger than one
   * binding holds.
   */
  check(limits: MemoryLimits, what: string): void {
    const needs = `${what} needs ${formatBytes(this.bytes)} on the GPU`;
    const advice = { text: "use a smaller batch or model", options: SIZE_OPTIONS };
    const all = [...this.regions, ...this.staged];
    const largest = all.reduce((a, b) => (b.largestBuffer > a.largestBuffer ? b : a));
    if (largest.largestBuffer * 4 > limits.maxBufferSize) {
      throw new InputError(
        `${needs}, ${formatBytes(largest.largestBuffer * 4)} of it in one buffer (${
          largest.packed ? largest.name : `${largest.largest.name} of ${largest.name}`
        }), ` +
          `more than the adapter's ${formatBytes(limits.maxBufferSize)} (maxBufferSize); ` +
          advice.text,
        { options: advice.options },
      );
    }
    const limit = limits.maxStorageBufferBindingSize;
    for (const r of this.regions) {
      // a buffer larger than a binding is bound in windows from aligned offsets at or before
      // each tensor
      const window = r.largest.floats * 4 + limits.minStorageBufferOffsetAlignment;
      if (r.floats * 4 > limit && window > limit) {
        throw new InputError(
          `${needs}, with ${formatBytes(r.largest.floats * 4)} in one tensor (${r.largest.name} ` +
            `of ${r.name}), more than the adapter's ${formatBytes(limit)} per binding ` +
            `(maxStorageBufferBindingSize); ${advice.text}`,
          { options: advice.options },
        );
      }
    }
  }

  /** Makes every region's buffer. */
  allocate(device: GPUDevice): GPUBuffer[] {
    return this.regions.flatMap((r) => r.allocate(device));
  }
}

/** Most elements one binding of a device holds from any offset (for work over whole buffers). */
export function bindableFloats(limits: MemoryLimits): number {
  return Math.floor(
    (limits.maxStorageBufferBindingSize - limits.minStorageBufferOffsetAlignment) / 4,
  );
}

/** The n elements of `a` in consecutive stretches of at most `most` (one binding each). */
export function stretches(a: GpuArray, n: number, most: number): [GpuArray, number][] {
  const out: [GpuArray, number][] = [];
  for (let at = 0; at < n; at += most) out.push([shifted(a, at), Math.min(most, n - at)]);
  return out;
}

/** The elements of `a` from its element `by` on. */
export function shifted(a: GpuArray, by: number): GpuArray {
  return { buffer: a.buffer, offset: a.offset + by };
}

/** Bytes for messages: "3.1 GiB", "128 MiB", "12 KiB". */
export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  if (bytes >= 2 ** 20) return `${Math.round(bytes / 2 ** 20)} MiB`;
  return `${Math.max(1, Math.round(bytes / 1024))} KiB`;
}

/**
 * MAP_READ staging buffers used in turn, so that readbacks can be in flight while later steps are
 * recorded: a slot still mapping when its turn comes again is replaced by a new buffer (the old
 * one is destroyed once it is read).
 */
export class StagingRing {
  readonly #slots: { buffer: GPUBuffer; busy: boolean }[] = [];
  #next = 0;

  constructor(
    readonly device: GPUDevice,
    readonly label: string,
    readonly size: number,
    readonly length: number,
  ) {}

  /** The next slot's buffer, marked busy (made on first use, or anew when still busy). */
  take(): GPUBuffer {
    const at = this.#next;
    this.#next = (at + 1) % this.length;
    let slot = this.#slots[at];
    if (slot === undefined || slot.busy) {
      const usage = GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
      const buffer = this.device.createBuffer({ label: this.label, size: this.size, usage });
      slot = this.#slots[at] = { buffer, busy: false };
    }
    slot.busy = true;
    return slot.buffer;
  }

  /** Unmaps a buffer of {@linkcode StagingRing.take} for its next turn. */
  release(buffer: GPUBuffer): void {
    if (buffer.mapState === "mapped") buffer.unmap();
    const slot = this.#slots.find((s) => s.buffer === buffer);
    if (slot) slot.busy = false;
    else buffer.destroy(); // replaced while it was mapping
  }

  destroy(): void {
    for (const s of this.#slots) s.buffer.destroy();
  }
}
