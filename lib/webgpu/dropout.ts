/**
 * WGSL of dropout: the masks of a training step drawn on the GPU, bit for bit the CPU's, and
 * their use in the forward (y = x · mask) and the backward (dx = dy · mask).
 *
 * The CPU (`lib/layers.ts` dropoutForward) draws the mask of row b of a batch at site s (site 2l:
 * block l's attention output, 2l + 1: its MLP output, 2L: the embedding) from its own generator,
 * `new Rng(stepSeed · 2¹⁶ + b · 64 + s)`: xoshiro128** seeded through splitmix32, one draw per
 * element of the row's T·C, in order; the element is dropped when the draw is below
 * round(p · 2³²), else kept and scaled by 1/(1 - p). The GPU runs that same generator, one
 * thread per (site, row), in u32 arithmetic: the seed is a 53-bit number, which the thread
 * forms from two words (the low 32 bits with a carry into the high ones) and folds as the CPU's
 * constructor does, low ^ high. A mask is kept as bits, 1 for kept, ⌈T·C / 32⌉ words a row:
 * masks [sites, B, words].
 *
 * @module
 */

import { elementwise } from "./elementwise.ts";
import type { KernelSource } from "./pipelines.ts";

/** Threads of a workgroup of the mask kernel (one (site, row) each). */
export const MASK_THREADS = 64;

/** Words of bits of the mask of one row of `rowLength` elements. */
export function maskWords(rowLength: number): number {
  return Math.ceil(rowLength / 32);
}

/** k times splitmix32's increment 0x9e3779b9, mod 2³², as WGSL hex. */
function golden(k: number): string {
  return `0x${((0x9e3779b9 * k) >>> 0).toString(16)}`;
}

/**
 * masks[site, b, words] for `sites` sites of `rows` rows of `rowLen` elements: bit j of word w of
 * (site, b) is 1 when element 32w + j is kept. seedLow = (stepSeed mod 2¹⁶) · 2¹⁶ and seedHigh =
 * ⌊stepSeed / 2¹⁶⌋ are the two words of stepSeed · 2¹⁶.
 */
const dropoutMasks: KernelSource = {
  name: "dropout_masks",
  buffers: 1,
  code: /* wgsl */ `
struct Params {
  o_masks: u32, rows: u32, sites: u32, rowLen: u32, words: u32,
  seedLow: u32, seedHigh: u32, threshold: u32,
}
@group(0) @binding(0) var<storage, read_write> masks: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;

fn rotl(x: u32, k: u32) -> u32 {
  return (x << k) | (x >> (32u - k));
}

// splitmix32's output for the state s (lib/rng.ts, the Rng constructor)
fn splitmix(s: u32) -> u32 {
  var z = (s ^ (s >> 16u)) * 0x85ebca6bu;
  z = (z ^ (z >> 13u)) * 0xc2b2ae35u;
  return z ^ (z >> 16u);
}

@compute @workgroup_size(${MASK_THREADS})
fn main(@builtin(global_invocation_id) g: vec3u) {
  let id = g.x; // site · rows + b
  if (id >= p.rows * p.sites) { return; }
  let site = id / p.rows;
  let b = id % p.rows;
  // the seed stepSeed · 2^16 + b · 64 + site as two words, then folded: low ^ high
  let r = b * 64u + site;
  let low = p.seedLow + r;
  let high = p.seedHigh + select(0u, 1u, low < r);
  let s = low ^ high;
  var s0 = splitmix(s + ${golden(1)}u);
  var s1 = splitmix(s + ${golden(2)}u);
  var s2 = splitmix(s + ${golden(3)}u);
  var s3 = splitmix(s + ${golden(4)}u);
  let base = p.o_masks + id * p.words;
  for (var w = 0u; w < p.words; w++) {
    var bits = 0u;
    let n = min(32u, p.rowLen - w * 32u);
    for (var j = 0u; j < n; j++) {
      // xoshiro128**: the draw, then the state's step (Rng.nextU32)
      let draw = rotl(s1 * 5u, 7u) * 9u;
      let t = s1 << 9u;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = rotl(s3, 11u);
      bits |= select(0u, 1u << j, draw >= p.threshold);
    }
    masks[base + w] = bits;
  }
}
`,
};

/** The mask's value at element i of a [rows, rowLen] tensor: keep or 0. */
const MASK_VALUE = /* wgsl */ `
fn maskValue(i: u32) -> f32 {
  let j = i % p.rowLen;
  let word = mask[p.o_mask + (i / p.rowLen) * p.words + j / 32u];
  return select(0.0, p.keep, ((word >> (j % 32u)) & 1u) == 1u);
}
`;

/** out[n] = inp[n] · mask (n = rows · rowLen). */
const dropoutApply = elementwise(
  "dropout",
  [["out", "f32"], ["inp", "f32"], ["mask", "u32"]],
  "n: u32, rowLen: u32, words: u32, keep: f32",
  "out[p.o_out + i] = inp[p.o_inp + i] * maskValue(i);",
  MASK_VALUE,
);

/** x[n] *= mask, in place. */
const dropoutInPlace = elementwise(
  "dropout_in_place",
  [["x", "f32"], ["mask", "u32"]],
  "n: u32, rowLen: u32, words: u32, keep: f32",
  "x[p.o_x + i] *= maskValue(i);",
  MASK_VALUE,
);

/** The dropout kernels. */
export const DROPOUT_SOURCES: readonly KernelSource[] = [
  dropoutMasks,
  dropoutApply,
  dropoutInPlace,
];

/** Workgroups of the mask kernel for `items` (site, row) pairs. */
export function maskGroups(items: number): readonly [number, number] {
  return [Math.ceil(items / MASK_THREADS), 1];
}
