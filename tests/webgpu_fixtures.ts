// What the WebGPU tests share: the runtime folder lavapipe wants, and whether there is an adapter.

import { requestGpu } from "../lib/webgpu/device.ts";

// Vulkan's window-system layer wants a runtime folder, or lavapipe prints "XDG_RUNTIME_DIR is
// invalid" warnings: set before the process asks for its first adapter, it is taken up
if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", Deno.makeTempDirSync());

/** The environment that gives a child process the same runtime folder. */
export const RUNTIME = { XDG_RUNTIME_DIR: Deno.env.get("XDG_RUNTIME_DIR")! };

/**
 * Why there is no WebGPU adapter here ("" when there is one). Without one, the tests of `what`
 * are skipped with the reason printed, except under CI=true (CI installs lavapipe), where a
 * failing test says why.
 */
export async function missingAdapter(what: string): Promise<string> {
  const missing = await requestGpu({ timeoutMs: 30_000 })
    .then((gpu) => {
      gpu.device.destroy();
      return "";
    })
    .catch((e) => (e as Error).message);
  if (missing === "") return "";
  if (Deno.env.get("CI") === "true") {
    Deno.test("a WebGPU adapter is available (CI installs lavapipe)", () => {
      throw new Error(missing);
    });
  } else console.warn(`skipping the WebGPU ${what} tests: ${missing}`);
  return missing;
}
