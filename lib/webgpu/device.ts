/**
 * Opening a WebGPU device for the kernels: asks `navigator.gpu` for an adapter and a device with
 * the adapter's highest limits for what the kernels use (buffer and binding sizes, workgroup
 * memory, storage buffers per stage) and the "subgroups" feature when offered, and says what was
 * found: the adapter's vendor, architecture and description, and whether it is a fallback
 * (software) adapter such as Mesa's lavapipe or Chromium's SwiftShader.
 *
 * Web-standard WebGPU only, so the same code runs in Deno and in a browser. Every failure is one
 * line: no `navigator.gpu`, no adapter, a device request that is refused or does not answer in
 * time (a timeout guards both requests, so nothing hangs), and a device lost later.
 *
 * @example
 * ```ts
 * import { requestGpu } from "./device.ts";
 *
 * try {
 *   const gpu = await requestGpu();
 *   console.log(gpu.description, gpu.software ? "(software)" : "");
 *   gpu.device.destroy();
 * } catch (e) {
 *   console.log((e as Error).message); // e.g. "no WebGPU adapter was found; ..."
 * }
 * ```
 *
 * @module
 */

import { BareGPTError, InputError } from "../errors.ts";

/** The limits asked for at the adapter's value (the kernels bind large buffers). */
const RAISED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxStorageBuffersPerShaderStage",
] as const;

/** What to do instead, appended to the messages of a missing WebGPU. */
const USE_CPU = "use --kernels relaxed (the WebAssembly kernels) instead";

/** An open device and what is known about its adapter. */
export interface GpuContext {
  /** The device the kernels run on. */
  readonly device: GPUDevice;
  /** The adapter's vendor, architecture and description (empty strings where not reported). */
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  /** The adapter is a fallback one: software rendering on the CPU (lavapipe, SwiftShader). */
  readonly software: boolean;
  /** The device has the "subgroups" feature (subgroup operations in WGSL). */
  readonly subgroups: boolean;
  /**
   * Settles when the device is lost, with an error saying why (a call of `device.destroy()`
   * included); later work on the device does nothing.
   */
  readonly lost: Promise<BareGPTError>;
}

/** Options of {@linkcode requestGpu}. */
export interface GpuOptions {
  /** Milliseconds to wait for the adapter, then for the device (default 10,000). */
  timeoutMs?: number;
  /** Which adapter to prefer where there are several. */
  powerPreference?: GPUPowerPreference;
}

/**
 * Opens a device on the best adapter `navigator.gpu` offers. Throws an InputError when WebGPU or
 * an adapter is missing here (the user asked for something this machine cannot do) and a
 * BareGPTError when the device request fails or times out.
 */
export async function requestGpu(options: GpuOptions = {}): Promise<GpuContext> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  // a window's navigator or a worker's (whose type has no Navigator)
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (gpu === undefined) {
    throw new InputError(`WebGPU is not available here (navigator.gpu is missing); ${USE_CPU}`);
  }
  const adapter = await withTimeout(
    gpu.requestAdapter({ powerPreference: options.powerPreference }),
    timeoutMs,
    "requesting a WebGPU adapter",
  );
  if (adapter === null) {
    throw new InputError(
      `no WebGPU adapter was found (no GPU driver, or none that WebGPU supports); ${USE_CPU} ` +
        "or install a driver (Mesa's lavapipe gives a software one)",
    );
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of RAISED_LIMITS) requiredLimits[name] = adapter.limits[name];
  const subgroups = adapter.features.has("subgroups");
  const requiredFeatures: GPUFeatureName[] = subgroups ? ["subgroups" as GPUFeatureName] : [];
  const info = adapter.info;
  // Chromium leaves description and device empty (SwiftShader: vendor google, architecture
  // swiftshader): the vendor and architecture name it then
  const description = info.description || info.device ||
    [info.vendor, info.architecture].filter((s) => s).join(" ") || "unknown adapter";
  let device: GPUDevice;
  try {
    device = await withTimeout(
      adapter.requestDevice({ requiredLimits, requiredFeatures }),
      timeoutMs,
      `requesting a device of the WebGPU adapter ${description}`,
    );
  } catch (e) {
    if (e instanceof BareGPTError) throw e;
    throw new BareGPTError(
      `the WebGPU adapter ${description} refused a device: ${firstLine(e)}; ${USE_CPU}`,
      { cause: e },
    );
  }
  const lost = device.lost.then((why) =>
    new BareGPTError(
      why.reason === "destroyed"
        ? `the WebGPU device of ${description} was closed (destroyed); open a new one`
        : `the WebGPU device of ${description} was lost (${firstLine(why.message)}); ` +
          "restart the run, or use --kernels relaxed",
    )
  );
  // Deno reports fallback adapters in adapter.info; the earlier spec put it on the adapter.
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ??
    (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false;
  return {
    device,
    vendor: info.vendor,
    architecture: info.architecture,
    description,
    software: fallback || /llvmpipe|lavapipe|swiftshader|warp/i.test(description),
    subgroups,
    lost,
  };
}

/** `promise`, or a BareGPTError once `ms` have passed without an answer. */
async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new BareGPTError(
            `${what} did not answer within ${ms} ms; check the GPU driver, or ${USE_CPU}`,
          ),
        ),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first line of an error's message (or of any thrown value). */
function firstLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.split("\n")[0].trim() || "no reason given";
}
