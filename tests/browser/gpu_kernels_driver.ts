// Runs tests/browser/gpu_kernels_entry.ts (bundled) in headless Chromium with WebGPU (SwiftShader
// under --enable-unsafe-webgpu), for tests/browser_gpu_kernels_test.ts. Its own process with -A, as
// the page's driver (playwright reads /proc). Input: one JSON argument (see Job); output: the
// entry's GpuKernelsReport as one JSON line on stdout.

// deno-lint-ignore no-import-prefix
import { chromium } from "npm:playwright-core@1.65.1";

/** What to run. */
export interface Job {
  chromium: string;
  args: string[];
  /** The bundled entry's JavaScript. */
  script: string;
}

const job: Job = JSON.parse(Deno.args[0]);
const script = await Deno.readTextFile(job.script);
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (request) => {
  const path = new URL(request.url).pathname;
  return path === "/entry.js"
    ? new Response(script, { headers: { "content-type": "text/javascript" } })
    : new Response('<!doctype html><script type="module" src="/entry.js"></script>', {
      headers: { "content-type": "text/html" },
    });
});
const browser = await chromium.launch({ executablePath: job.chromium, args: job.args });
try {
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${server.addr.port}/`);
  await page.waitForFunction(() => "gpuKernels" in globalThis, null, { timeout: 240_000 });
  console.log(JSON.stringify(await page.evaluate(() => Reflect.get(globalThis, "gpuKernels"))));
} finally {
  await browser.close();
  await server.shutdown();
}
