// Runs a test once per kernel tier this runtime supports (plain TypeScript, SIMD, relaxed SIMD).

import type { KernelTier } from "../lib/kernels/mod.ts";
import { detectTier } from "../lib/kernels/mod.ts";
import { setupKernels } from "../lib/kernels/dispatch.ts";

/** The kernel tiers this runtime can run, slowest first. */
export function availableTiers(): KernelTier[] {
  const best = detectTier();
  return best === "relaxed" ? ["js", "simd", "relaxed"] : best === "simd" ? ["js", "simd"] : ["js"];
}

/** Registers `name [tier]` for every available tier, with the kernels of that tier in use. */
export function forEachTier(name: string, fn: (tier: KernelTier) => void | Promise<void>): void {
  for (const tier of availableTiers()) {
    Deno.test(`${name} [${tier}]`, async () => {
      setupKernels(tier);
      try {
        await fn(tier);
      } finally {
        setupKernels("js");
      }
    });
  }
}
