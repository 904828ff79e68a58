/**
 * The machinery under the WebGPU kernels: WGSL compiled once into compute pipelines, buffers
 * bound to them, and the small parameters of every dispatch (sizes, element offsets, scalars).
 *
 * Every kernel has the same binding layout: bindings 0 .. n-1 are storage buffers (all declared
 * `read_write`, so that one buffer may be bound several times in a dispatch, as when every
 * tensor lives in one large buffer), binding n is a uniform block of at most 16 four-byte words.
 * A tensor is a {@linkcode GpuArray}: a buffer and an element offset, which goes to the kernel in
 * its uniform block, so offsets need no alignment.
 *
 * Uniform blocks are staged on the CPU, one slot per dispatch, and written to one uniform buffer
 * (bound with a dynamic offset) by {@linkcode Pipelines.submit} right before the queue submits the
 * recorded work. The slots are a ring: each submission writes the slots taken since the previous
 * one, and as queue writes and submissions run in the order they are made, a slot can be taken
 * again as soon as the ring comes round, with no waiting. Bind groups are cached by buffer, so a
 * training step recorded again and again allocates nothing.
 *
 * @module
 */

/** Words (u32 or f32) of a dispatch's uniform block: the largest kernel's parameters fit. */
const PARAM_WORDS = 16;
/** Most workgroups per dispatch dimension that every WebGPU device supports. */
export const MAX_GROUPS = 65535;

/**
 * Elements of a GPUBuffer from element `offset` on: float32 values, or u32 for token ids. The
 * buffer needs the STORAGE usage.
 */
export interface GpuArray {
  readonly buffer: GPUBuffer;
  /** Offset in 4-byte elements from the start of the buffer. */
  readonly offset: number;
}

/** A GpuArray of `buffer` from element `offset` (default 0). */
export function gpuArray(buffer: GPUBuffer, offset = 0): GpuArray {
  return { buffer, offset };
}

/** One kernel's WGSL: entry point `main`, `buffers` storage bindings, then the uniform block. */
export interface KernelSource {
  readonly name: string;
  readonly code: string;
  readonly buffers: number;
}

/** A compiled kernel. */
interface Kernel {
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  readonly buffers: number;
}

/** The workgroups of a dispatch along x and y (z is 1). */
export type Groups = readonly [number, number];

/** Workgroups for `count` independent items (rows), folded into y past {@linkcode MAX_GROUPS}. */
export function itemGroups(count: number): Groups {
  const x = Math.min(count, MAX_GROUPS);
  return [x, x === 0 ? 0 : Math.ceil(count / x)];
}

/** Compiled kernels, their cached bind groups, and the uniform slots of the next submission. */
export class Pipelines {
  /** GPU identity of buffers, for the bind-group cache keys. */
  readonly #ids = new WeakMap<GPUBuffer, number>();
  #nextId = 0;
  readonly #groups = new Map<string, GPUBindGroup>();
  readonly #uniforms: GPUBuffer;
  /** The staged uniform slots: `stride` bytes each, as words and as floats. */
  readonly #words: Uint32Array<ArrayBuffer>;
  readonly #floats: Float32Array;
  readonly #stride: number;
  /** The next slot of the ring, and how many slots before it wait for a submission. */
  #next = 0;
  #pending = 0;

  private constructor(
    readonly device: GPUDevice,
    private readonly kernels: ReadonlyMap<string, Kernel>,
    private readonly maxDispatches: number,
  ) {
    const align = device.limits.minUniformBufferOffsetAlignment;
    this.#stride = Math.ceil((PARAM_WORDS * 4) / align) * align;
    const bytes = this.#stride * maxDispatches;
    this.#uniforms = device.createBuffer({
      label: "kernel parameters",
      size: bytes,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    const staged = new ArrayBuffer(bytes);
    this.#words = new Uint32Array(staged);
    this.#floats = new Float32Array(staged);
  }

  /**
   * Compiles every kernel (in parallel); an Error naming the kernel and the WGSL's first error
   * when one does not compile. `maxDispatches` bounds the dispatches of one submission.
   */
  static async compile(
    device: GPUDevice,
    sources: readonly KernelSource[],
    maxDispatches: number,
  ): Promise<Pipelines> {
    const compiled = await Promise.all(sources.map((s) => compileKernel(device, s)));
    return new Pipelines(
      device,
      new Map(sources.map((s, i) => [s.name, compiled[i]])),
      maxDispatches,
    );
  }

  /**
   * Records one dispatch of kernel `name` into `pass`: `arrays` are its storage bindings in order,
   * each with the number of elements the kernel touches (bounds-checked here); its uniform block
   * is the element offsets of `arrays`, then `words` (u32), then `floats` (f32). Nothing is
   * recorded for an empty grid.
   */
  dispatch(
    pass: GPUComputePassEncoder,
    name: string,
    arrays: readonly (readonly [GpuArray, number])[],
    words: readonly number[],
    floats: readonly number[],
    groups: Groups,
  ): void {
    const kernel = this.kernels.get(name)!;
    if (groups[0] === 0 || groups[1] === 0) return;
    if (groups[0] > MAX_GROUPS || groups[1] > MAX_GROUPS) {
      throw new RangeError(`${name}: ${groups.join(" x ")} workgroups is too many for WebGPU`);
    }
    if (this.#pending === this.maxDispatches) {
      throw new RangeError(
        `more than ${this.maxDispatches} kernel dispatches in one submission; submit more often ` +
          "or create the kernels with a larger maxDispatches",
      );
    }
    const slot = (this.#next * this.#stride) / 4;
    this.#next = (this.#next + 1) % this.maxDispatches;
    this.#pending++;
    const keys: string[] = [name];
    const entries: GPUBindGroupEntry[] = [];
    arrays.forEach(([a, count], i) => {
      const [start, size] = this.#window(name, i, a, count);
      this.#words[slot + i] = a.offset - start / 4;
      keys.push(`${this.#id(a.buffer)}@${start}`);
      entries.push({ binding: i, resource: { buffer: a.buffer, offset: start, size } });
    });
    words.forEach((w, i) => this.#words[slot + arrays.length + i] = w);
    floats.forEach((f, i) => this.#floats[slot + arrays.length + words.length + i] = f);
    const key = keys.join(" ");
    let group = this.#groups.get(key);
    if (group === undefined) {
      entries.push({
        binding: kernel.buffers,
        resource: { buffer: this.#uniforms, offset: 0, size: PARAM_WORDS * 4 },
      });
      group = this.device.createBindGroup({ label: name, layout: kernel.layout, entries });
      // bounded: a program that keeps making buffers drops the groups of its old ones
      if (this.#groups.size >= 4096) this.#groups.clear();
      this.#groups.set(key, group);
    }
    pass.setPipeline(kernel.pipeline);
    pass.setBindGroup(0, group, [slot * 4]);
    pass.dispatchWorkgroups(groups[0], groups[1]);
  }

  /**
   * Writes the uniform blocks staged since the last submission, then submits `commands` (the
   * work recorded with {@linkcode dispatch}). Work recorded by these kernels must be submitted
   * here, not by `device.queue.submit`, or its dispatches read stale parameters. A recording may
   * be submitted after later ones while fewer than `maxDispatches` are recorded after it.
   */
  submit(...commands: GPUCommandBuffer[]): void {
    const first = (this.#next - this.#pending + this.maxDispatches) % this.maxDispatches;
    // the pending slots, in one piece or two where they wrap round the end of the ring
    const end = Math.min(first + this.#pending, this.maxDispatches);
    this.#write(first, end);
    this.#write(0, this.#pending - (end - first));
    this.#pending = 0;
    this.device.queue.submit(commands);
  }

  /** Writes the staged slots from..to-1 to the uniform buffer. */
  #write(from: number, to: number): void {
    if (to <= from) return;
    const [at, words] = [(from * this.#stride) / 4, ((to - from) * this.#stride) / 4];
    this.device.queue.writeBuffer(this.#uniforms, at * 4, this.#words, at, words);
  }

  /** Frees the uniform buffer; the kernels can no longer run. */
  destroy(): void {
    this.#uniforms.destroy();
    this.#groups.clear();
  }

  /**
   * The byte range of `a.buffer` to bind: all of it where the device can bind it whole, else a
   * window aligned as the device requires that covers the `count` elements used.
   */
  #window(name: string, index: number, a: GpuArray, count: number): [number, number] {
    const { buffer, offset } = a;
    const elements = buffer.size / 4;
    if (!Number.isInteger(offset) || offset < 0 || offset + count > elements) {
      throw new RangeError(
        `${name}: buffer argument ${index} needs elements ${offset} .. ${offset + count - 1} ` +
          `but its buffer holds ${elements}`,
      );
    }
    const limit = this.device.limits.maxStorageBufferBindingSize;
    if (buffer.size <= limit) return [0, buffer.size];
    const align = this.device.limits.minStorageBufferOffsetAlignment;
    const start = Math.floor((offset * 4) / align) * align;
    if ((offset + count) * 4 - start > limit) {
      throw new RangeError(
        `${name}: buffer argument ${index} spans ${count * 4} bytes, more than this device binds ` +
          `(${limit})`,
      );
    }
    return [start, Math.floor(Math.min(buffer.size - start, limit) / 4) * 4];
  }

  #id(buffer: GPUBuffer): number {
    let id = this.#ids.get(buffer);
    if (id === undefined) this.#ids.set(buffer, id = this.#nextId++);
    return id;
  }
}

/** One kernel's pipeline and the layout of its bindings. */
async function compileKernel(device: GPUDevice, source: KernelSource): Promise<Kernel> {
  const entries: GPUBindGroupLayoutEntry[] = [];
  for (let i = 0; i < source.buffers; i++) {
    entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } });
  }
  entries.push({
    binding: source.buffers,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: PARAM_WORDS * 4 },
  });
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label: source.name, code: source.code });
  const layout = device.createBindGroupLayout({ label: source.name, entries });
  const failed = await device.popErrorScope();
  if (failed !== null) {
    throw new Error(`the WGSL of kernel ${source.name} does not compile: ${failed.message}`);
  }
  try {
    const pipeline = await device.createComputePipelineAsync({
      label: source.name,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    return { pipeline, layout, buffers: source.buffers };
  } catch (e) {
    throw new Error(
      `the pipeline of kernel ${source.name} cannot be made: ${(e as Error).message}`,
      { cause: e },
    );
  }
}
