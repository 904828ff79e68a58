// The WebGPU kernels in headless Chromium, on SwiftShader (--enable-unsafe-webgpu): the gradients
// of three small models (one with dropout) through the GPU path (every kernel of the forward and
// backward, the dropout masks' too) against
// the float64 CPU backward, with the row reductions on subgroup operations where the adapter
// offers "subgroups" (SwiftShader does), and on the workgroup-memory tree (lavapipe, in
// tests/webgpu_*.ts, has no subgroups). Chromium also enforces WebGPU's rules on bindings that
// Deno's wgpu does not (a written binding overlapping another), so this is where a breach shows.
// The bundle of tests/browser/gpu_kernels_entry.ts is built with `deno bundle` into
// test-artifacts/, and run by tests/browser/gpu_kernels_driver.ts.
//
// Chromium: as tests/browser_test.ts (skipped without it, except with CI=true, where it fails).

import { ok as assert } from "node:assert";
import type { GpuKernelsReport } from "./browser/gpu_kernels_entry.ts";
import type { Job } from "./browser/gpu_kernels_driver.ts";
import { CHROMIUM, CHROMIUM_WEBGPU_ARGS, chromiumPresent, runDeno } from "./browser/chromium.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const present = await chromiumPresent("browser WebGPU kernels test");

Deno.test({
  name: "WebGPU in Chromium (SwiftShader): gradients with subgroup and tree reductions",
  ignore: !present,
  fn: async () => {
    const dir = `${ROOT}test-artifacts/gpu_kernels/`;
    await Deno.mkdir(dir, { recursive: true });
    const script = `${dir}entry.js`;
    const entry = `${ROOT}tests/browser/gpu_kernels_entry.ts`;
    await runDeno(["bundle", "--quiet", "--platform=browser", "-o", script, entry], "bundling");
    const job: Job = {
      chromium: CHROMIUM,
      args: CHROMIUM_WEBGPU_ARGS,
      script,
    };
    const out = await runDeno([
      "run",
      "--quiet",
      "-A",
      "tests/browser/gpu_kernels_driver.ts",
      JSON.stringify(job),
    ], "the driver");
    const report: GpuKernelsReport = JSON.parse(out.trim().split("\n").at(-1)!);
    assert(report.error === undefined, `the page failed: ${report.error}`);
    console.log(
      `  adapter: ${report.adapter}, subgroups ${
        report.subgroupsOffered ? "offered" : "not offered"
      }`,
    );
    assert(/swiftshader/i.test(report.adapter), `not SwiftShader: ${report.adapter}`);
    // with subgroups offered, both reductions are checked; the two sum in different orders
    const kinds = report.subgroupsOffered ? [true, false] : [false];
    assert(report.cases.length === 3 * kinds.length, `${report.cases.length} cases`);
    for (const c of report.cases) {
      console.log(
        `  ${c.config}, ${c.subgroups ? "subgroups" : "tree"}: gradients within ${
          c.worst.toExponential(2)
        } of the float64 CPU's, loss ${c.loss.toFixed(7)} (CPU ${c.cpuLoss.toFixed(7)})`,
      );
      assert(kinds.includes(c.subgroups));
      assert(c.worst <= 1e-5, `${c.config}: gradients differ by ${c.worst}`);
      assert(Math.abs(c.loss - c.cpuLoss) <= 1e-5, `${c.config}: loss ${c.loss} vs ${c.cpuLoss}`);
    }
  },
});
