/**
 * WGSL of the matrix products, one tiled kernel written once for every form:
 *
 *   C[R, S] (= or +=) init + Σ_r A(i, r) · B(r, j),   r = 0 .. depth-1
 *
 * where each operand is read either as stored or transposed:
 * - matmul:               C = inp[M,K] · w[K,N] + bias[N]   A as stored, B as stored, bias
 * - matmulNT:             C = a[M,K] · b[N,K]ᵀ              A as stored, B transposed
 * - matmulBackwardInput:  dInp[M,K] = dOut[M,N] · w[K,N]ᵀ   matmulNT with K and N swapped
 * - matmulBackwardWeight: dW[K,N] += inp[M,K]ᵀ · dOut[M,N]  A transposed, B as stored, +=
 *
 * Tiling: a workgroup of 16 x 16 threads computes a 64 x 64 tile of C. It walks the depth in
 * steps of 16: the threads copy a 64 x 16 panel of A and a 16 x 64 panel of B into workgroup
 * memory (zeros past the edges, so any R, S and depth work), then each thread multiplies them
 * into its 4 x 4 register block of accumulators, rows `ty + 16a` and columns `tx + 16b` (a, b
 * = 0..3: threads side by side read neighbouring words of workgroup memory and write
 * neighbouring words of C). Per step a thread loads 8 values from workgroup memory for 16
 * multiply-adds.
 *
 * Products with a few rows (a KV cache's one new token: R <= {@linkcode SKINNY_ROWS}) would
 * leave most of a 64-row tile idle, so they have a second kernel per form: one thread per
 * element of C, its dot product read straight from memory (threads side by side take
 * neighbouring columns j, so a stored B is read in whole rows).
 *
 * @module
 */

import type { KernelSource } from "./pipelines.ts";

/** Rows and columns of C per workgroup, and the depth of one step of the panels. */
export const TILE = 64;
const DEPTH = 16;

/** Most rows of C for which a product runs the thread-per-element kernel. */
export const SKINNY_ROWS = 4;
/** Threads per workgroup of the thread-per-element kernel. */
export const SKINNY_THREADS = 64;

/** How a product reads an operand: as stored (row-major, r fastest for A) or transposed. */
export type Layout = "stored" | "transposed";

/** One form of the product: its operands' layouts, and what C starts from. */
export interface MatmulForm {
  readonly name: string;
  readonly a: Layout;
  readonly b: Layout;
  /** "zero": C = A·B, "bias": C = bias + A·B, "accumulate": C += A·B. */
  readonly init: "zero" | "bias" | "accumulate";
}

/** The forms the kernels use (matmulBackwardInput runs matmul_nt). */
export const MATMUL_FORMS: readonly MatmulForm[] = [
  { name: "matmul", a: "stored", b: "stored", init: "zero" },
  { name: "matmul_bias", a: "stored", b: "stored", init: "bias" },
  { name: "matmul_nt", a: "stored", b: "transposed", init: "zero" },
  { name: "matmul_backward_weight", a: "transposed", b: "stored", init: "accumulate" },
];

/**
 * The WGSL of one form. Bindings: c, a, b (and bias); uniform: their element offsets, then R
 * (rows of C), S (columns of C), depth. The grid is (⌈S/64⌉, ⌈R/64⌉).
 */
export function matmulSource(form: MatmulForm): KernelSource {
  const bias = form.init === "bias";
  // A(i, r) with i < R, r < depth; B(r, j) with j < S
  const aIndex = form.a === "stored" ? "i * p.depth + r" : "r * p.rows + i";
  const bIndex = form.b === "stored" ? "r * p.cols + j" : "j * p.depth + r";
  // panel copies: consecutive threads take consecutive addresses of the operand in memory
  const aCopy = form.a === "stored"
    ? "let r = f % DEPTH; let i = f / DEPTH;"
    : "let i = f % TILE; let r = f / TILE;";
  const bCopy = form.b === "stored"
    ? "let j = f % TILE; let r = f / TILE;"
    : "let r = f % DEPTH; let j = f / DEPTH;";
  const start = { zero: "", bias: "bias[p.o_bias + col] + ", accumulate: "c[at] + " }[form.init];
  const code = /* wgsl */ `
struct Params { o_c: u32, o_a: u32, o_b: u32, ${bias ? "o_bias: u32," : ""}
                rows: u32, cols: u32, depth: u32 }
@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
${bias ? "@group(0) @binding(3) var<storage, read_write> bias: array<f32>;" : ""}
@group(0) @binding(${bias ? 4 : 3}) var<uniform> p: Params;

const TILE = ${TILE}u;
const DEPTH = ${DEPTH}u;
// Panels in workgroup memory, [DEPTH][TILE] with rows padded to 65 words so that the copies of
// a stored A (r fastest) fall in different banks: panelA[r][i] = A(i0 + i, r0 + r),
// panelB[r][j] = B(r0 + r, j0 + j).
const STRIDE = TILE + 1u;
var<workgroup> panelA: array<f32, ${DEPTH * (TILE + 1)}>;
var<workgroup> panelB: array<f32, ${DEPTH * (TILE + 1)}>;

fn loadA(i: u32, r: u32) -> f32 {
  if (i >= p.rows || r >= p.depth) { return 0.0; }
  return a[p.o_a + ${aIndex}];
}

fn loadB(r: u32, j: u32) -> f32 {
  if (r >= p.depth || j >= p.cols) { return 0.0; }
  return b[p.o_b + ${bIndex}];
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i0 = wg.y * TILE;
  let j0 = wg.x * TILE;
  // acc[y][x] = Σ_r A(i0 + l.y + 16y, r) · B(r, j0 + l.x + 16x)
  var acc: array<vec4f, 4>;
  for (var r0 = 0u; r0 < p.depth; r0 += DEPTH) {
    for (var q = 0u; q < 4u; q++) {
      let f = lid + 256u * q;
      {
        ${aCopy}
        panelA[r * STRIDE + i] = loadA(i0 + i, r0 + r);
      }
      {
        ${bCopy}
        panelB[r * STRIDE + j] = loadB(r0 + r, j0 + j);
      }
    }
    workgroupBarrier();
    for (var r = 0u; r < DEPTH; r++) {
      let row = r * STRIDE;
      let bs = vec4f(panelB[row + l.x], panelB[row + l.x + 16u], panelB[row + l.x + 32u],
                     panelB[row + l.x + 48u]);
      for (var y = 0u; y < 4u; y++) {
        acc[y] = fma(vec4f(panelA[row + l.y + 16u * y]), bs, acc[y]);
      }
    }
    workgroupBarrier();
  }
  for (var y = 0u; y < 4u; y++) {
    let i = i0 + l.y + 16u * y;
    if (i >= p.rows) { break; }
    for (var x = 0u; x < 4u; x++) {
      let col = j0 + l.x + 16u * x;
      if (col >= p.cols) { break; }
      let at = p.o_c + i * p.cols + col;
      c[at] = ${start}acc[y][x];
    }
  }
}
`;
  return { name: form.name, code, buffers: bias ? 4 : 3 };
}

/**
 * The WGSL of one form's thread-per-element kernel, `${name}_skinny`: the bindings and uniform
 * of {@linkcode matmulSource}; thread g computes elements g, g + threads, ... of C [R, S] (row-
 * major): C[i, j] = init + Σ_r A(i, r) · B(r, j), r in order. A 1-D grid.
 */
export function skinnySource(form: MatmulForm): KernelSource {
  const bias = form.init === "bias";
  const aIndex = form.a === "stored" ? "i * p.depth + r" : "r * p.rows + i";
  const bIndex = form.b === "stored" ? "r * p.cols + j" : "j * p.depth + r";
  const start = { zero: "0.0", bias: "bias[p.o_bias + j]", accumulate: "c[at]" }[form.init];
  const code = /* wgsl */ `
struct Params { o_c: u32, o_a: u32, o_b: u32, ${bias ? "o_bias: u32," : ""}
                rows: u32, cols: u32, depth: u32 }
@group(0) @binding(0) var<storage, read_write> c: array<f32>;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
${bias ? "@group(0) @binding(3) var<storage, read_write> bias: array<f32>;" : ""}
@group(0) @binding(${bias ? 4 : 3}) var<uniform> p: Params;

@compute @workgroup_size(${SKINNY_THREADS})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  for (var e = g.x; e < p.rows * p.cols; e += nwg.x * ${SKINNY_THREADS}u) {
    let i = e / p.cols;
    let j = e % p.cols;
    let at = p.o_c + e;
    var acc = 0.0;
    for (var r = 0u; r < p.depth; r++) {
      acc = fma(a[p.o_a + ${aIndex}], b[p.o_b + ${bIndex}], acc);
    }
    c[at] = ${start} + acc;
  }
}
`;
  return { name: `${form.name}_skinny`, code, buffers: bias ? 4 : 3 };
}
