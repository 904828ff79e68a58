/**
 * The machinery under the WebGPU kernels: WGSL compiled once into compute pipelines, buffers
 * bound to them, and the small parameters of every dispatch (sizes, element offsets, scalars).
 *
 * Every kernel has the same binding layout: bindings 0 .. n-1 are storage buffers, binding n is
 * a uniform block of at most 16 four-byte words. The WGSL declares every storage binding
 * `read_write`; one the kernel never assigns to is made `read` when it is compiled (and bound as
 * read-only storage). A tensor is a {@linkcode GpuArray}: a buffer and an element offset. Each
 * argument is bound as the window of its buffer that it uses, from the aligned offset at or before
 * it, and the element offset within that window goes to the kernel in its uniform block. WebGPU
 * forbids a written binding to overlap any other binding of the same dispatch (Chromium checks;
 * Deno does not): {@linkcode Pipelines.dispatch} refuses such a dispatch everywhere, and the
 * memory plans give every written tensor a buffer of its own so that it does not arise (memory.ts).
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
  /** Per storage binding: whether the kernel writes it. */
  readonly writes: readonly boolean[];
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
    const windows = arrays.map(([a, count], i) => this.#window(name, i, a, count));
    checkAliasing(name, kernel.writes, arrays, windows);
    arrays.forEach(([a], i) => {
      const [start, size] = windows[i];
      this.#words[slot + i] = a.offset - start / 4;
      keys.push(`${this.#id(a.buffer)}@${start}+${size}`);
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
   * The byte range of `a.buffer` to bind: from the aligned offset at or before the tensor to the
   * end of the `count` elements used (at least 4 bytes), within what the device binds.
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
    const align = this.device.limits.minStorageBufferOffsetAlignment;
    const start = Math.floor((offset * 4) / align) * align;
    const size = Math.min(Math.max((offset + count) * 4, start + 4), buffer.size) - start;
    if (size > this.device.limits.maxStorageBufferBindingSize) {
      throw new RangeError(
        `${name}: buffer argument ${index} spans ${count * 4} bytes, more than this device binds ` +
          `(${this.device.limits.maxStorageBufferBindingSize})`,
      );
    }
    return [start, size];
  }

  #id(buffer: GPUBuffer): number {
    let id = this.#ids.get(buffer);
    if (id === undefined) this.#ids.set(buffer, id = this.#nextId++);
    return id;
  }
}

/** One kernel's pipeline and the layout of its bindings. */
async function compileKernel(device: GPUDevice, source: KernelSource): Promise<Kernel> {
  const { code, writes } = readOnlyBindings(source);
  const entries: GPUBindGroupLayoutEntry[] = [];
  for (let i = 0; i < source.buffers; i++) {
    const type = writes[i] ? "storage" : "read-only-storage";
    entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type } });
  }
  entries.push({
    binding: source.buffers,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: "uniform", hasDynamicOffset: true, minBindingSize: PARAM_WORDS * 4 },
  });
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label: source.name, code });
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
    return { pipeline, layout, buffers: source.buffers, writes };
  } catch (e) {
    throw new Error(
      `the pipeline of kernel ${source.name} cannot be made: ${(e as Error).message}`,
      { cause: e },
    );
  }
}

/**
 * The kernel's WGSL with every storage binding it never assigns to (`name[...] =`, `+=`, ...)
 * declared `read`, and per binding whether it is written.
 */
export function readOnlyBindings(source: KernelSource): { code: string; writes: boolean[] } {
  const writes: boolean[] = [];
  const declaration = /@binding\((\d+)\) var<storage, read_write> (\w+)/g;
  const code = source.code.replace(declaration, (whole, binding: string, name: string) => {
    const written = assigns(source.code, name);
    writes[Number(binding)] = written;
    return written ? whole : `@binding(${binding}) var<storage, read> ${name}`;
  });
  for (let i = 0; i < source.buffers; i++) {
    if (writes[i] === undefined) {
      throw new Error(`kernel ${source.name}: storage binding ${i} is not declared read_write`);
    }
  }
  return { code, writes };
}

/** True when the WGSL assigns to an element of array `name` (`name[i] = ...`, `+=`, ...). */
function assigns(code: string, name: string): boolean {
  const use = new RegExp(`\\b${name}\\[`, "g");
  for (let m = use.exec(code); m !== null; m = use.exec(code)) {
    let depth = 1, at = m.index + m[0].length;
    while (depth > 0 && at < code.length) {
      if (code[at] === "[") depth++;
      else if (code[at] === "]") depth--;
      at++;
    }
    const after = code.slice(at).match(/^\s*([-+*/]?=)(=?)/);
    if (after !== null && after[2] === "") return true;
  }
  return false;
}

/**
 * Throws a RangeError when a buffer the kernel writes through one binding is bound again in the
 * same dispatch: read-only (Deno's wgpu refuses that), or writable over the same bytes (Chromium
 * refuses a written binding that overlaps any other). Tensors in one packed buffer that a
 * kernel writes side by side must therefore be one binding (see layernorm_backward_params).
 */
function checkAliasing(
  name: string,
  writes: readonly boolean[],
  arrays: readonly (readonly [GpuArray, number])[],
  windows: readonly [number, number][],
): void {
  for (let i = 0; i < arrays.length; i++) {
    if (!writes[i]) continue;
    const [start, size] = windows[i];
    for (let j = 0; j < arrays.length; j++) {
      if (j === i || arrays[j][0].buffer !== arrays[i][0].buffer) continue;
      const [other, otherSize] = windows[j];
      if (!writes[j]) {
        throw new RangeError(
          `${name}: buffer argument ${i}, which it writes, shares its buffer with argument ${j}, ` +
            "which it reads; give them separate buffers",
        );
      }
      if (start < other + otherSize && other < start + size) {
        throw new RangeError(
          `${name}: buffer arguments ${i} and ${j}, which it writes, overlap (bytes ` +
            `${start}..${start + size} and ${other}..${other + otherSize} of one buffer)`,
        );
      }
    }
  }
}
