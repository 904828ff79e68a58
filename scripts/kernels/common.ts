/**
 * Shared pieces of the kernel generators: the tier type, the matmul tuning constants, small WAT
 * text helpers, and the `Lanes` machinery (vector loop + scalar tail) with the inlined exp.
 *
 * @module
 */

/** Which instruction set a generated module may use. */
export type WasmTier = "relaxed" | "simd";

// ---------------------------------------------------------------------------------------------
// Tuning constants of the matmul kernels (see the comment above `gemmDriver` in gemm.ts).

/**
 * Register tile of the [rows x cols] matmul forms, per tier: `rows` rows by `vecs` f32x4 vectors
 * (4*vecs columns). The fused multiply-add of the relaxed tier needs no temporary, so it affords
 * 12 accumulators; the simd tier's mul + add needs one more register and keeps 8.
 */
export const TILE: Record<WasmTier, { rows: number; vecs: number }> = {
  relaxed: { rows: 6, vecs: 2 },
  simd: { rows: 4, vecs: 2 },
};
/**
 * The register tiles of the variants of the matmul forms (NN and TN), per tier; the first is
 * `TILE`. Every variant sums each output over k in the same order (from zero, the bias or C, one
 * product at a time), so they give the same bits and differ only in speed, which depends on the
 * CPU (how many registers V8 leaves free, the cache sizes): the library times them at first use.
 * A packed variant copies each panel of B (and, in the transposed-left form, each block of A)
 * into a scratch first: a wide operand's rows are 4 KiB apart, and a panel read in place falls
 * into a few cache sets.
 */
export const TILE_VARIANTS: Record<WasmTier, { rows: number; vecs: number; pack: boolean }[]> = {
  relaxed: [
    { ...TILE.relaxed, pack: false },
    { ...TILE.relaxed, pack: true },
    { rows: 4, vecs: 2, pack: false },
    { rows: 4, vecs: 2, pack: true },
    { rows: 3, vecs: 3, pack: true },
    { rows: 5, vecs: 2, pack: true },
  ],
  simd: [
    { ...TILE.simd, pack: false },
    { ...TILE.simd, pack: true },
    { rows: 3, vecs: 2, pack: true },
    { rows: 2, vecs: 3, pack: true },
  ],
};
/**
 * The scratch a packed variant is given (lib/kernels/mod.ts's PACK_BYTES) holds a B panel (KC
 * rows of up to 16 floats, these bytes), then, for the transposed-left form, an A block (KC_TN
 * rows of MC floats).
 */
export const PACK_B_BYTES = 256 * 16 * 4;
/**
 * Row blocks of the variants of the dot-product form (NT): A's rows are swept in blocks of this
 * many (0: all of them), each block against every row of B. The block only orders the tiles; each
 * output's sum is the same.
 */
export const NT_ROW_BLOCKS = [0, 16, 64, 256];

/**
 * Width of the single-row tiles (floats): 8 independent accumulators, so that one row is not
 * bound by the latency of its chains of multiply-adds.
 */
export const WIDE = 32;
/** Reduction-dimension block: a B panel of KC x (4*vecs) floats stays in L1. */
export const KC = 256;
/**
 * Reduction block of the transposed-left form (`matmul_backward_weight`): both operands are read
 * across rows (strides 4K and 4N bytes, 4 KiB for the model's widths, so the lines of a panel
 * share few cache sets); a shorter panel keeps more of it cached (measured: ~3% faster than 256).
 */
export const KC_TN = 128;
/** Row block: an A block of MC x KC floats stays in L2 while the column tiles sweep it. */
export const MC = 96;

// ---------------------------------------------------------------------------------------------
// Small WAT text helpers.

/** Indents every line of `text` by `n` spaces. */
export function indent(text: string, n: number): string {
  const pad = " ".repeat(n);
  return text.split("\n").map((l) => (l.length > 0 ? pad + l : l)).join("\n");
}

/** `0..n-1` as an array, for unrolled loops. */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** `acc + a * b` on f32x4 values: fused in the relaxed tier, mul then add in the simd tier. */
export function madd(tier: WasmTier, a: string, b: string, acc: string): string {
  return tier === "relaxed"
    ? `(f32x4.relaxed_madd ${a} ${b} ${acc})`
    : `(f32x4.add ${acc} (f32x4.mul ${a} ${b}))`;
}

// ---------------------------------------------------------------------------------------------
// Element-wise and per-row kernels. Their bodies are written once against `Lanes` and emitted
// twice: an f32x4 loop over whole vectors, then a scalar loop over the last n % 4 elements. They
// use no fused multiply-add, so both tiers give the same bits.

/**
 * exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (two-part ln 2 for accuracy),
 * p = degree-7 Taylor polynomial: truncation error < 6e-9 for |r| <= ln(2) / 2, so the result is
 * within a few float32 ulps. x is clamped to [-87.3, 88]: no overflow, no NaN for finite x.
 *
 * Written for x86 code generation: the clamp uses pmin / pmax (one instruction each; they give
 * the same lanes as min / max here, NaN included); n = round(x / ln 2) comes from adding
 * 1.5 * 2^23, which rounds to an integer (to nearest, ties to even, as f32x4.nearest) and leaves
 * n + 0x400000 in the low mantissa bits, so 2^n = (bits - 0x4b400000 + 127) << 23 needs no
 * float-to-int conversion; and the constants live in locals set once per call of the enclosing
 * function (`expInit`), not rebuilt for every vector.
 */
const EXP_CONSTS: [name: string, value: number][] = [
  ["hi", 88],
  ["lo", -87.3],
  ["log2e", 1.4426950408889634],
  ["magic", 12582912], // 1.5 * 2^23
  ["ln2hi", 0.693359375],
  ["ln2lo", -2.12194440e-4],
  ...[1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1].map((c, i): [string, number] => [
    `c${7 - i}`, // coefficient of r^(7 - i)
    c,
  ]),
];

/** Locals of an inlined exp: temporaries and the constants (declare once per function). */
export function expLocals(): string {
  const names = ["x", "t", "n", "r", "bias", ...EXP_CONSTS.map(([n]) => n)];
  return names.map((n) => `(local $ex_${n} v128)`).join(" ");
}

/** Sets the constant locals of an inlined exp (once, before the loops). */
export function expInit(): string {
  return EXP_CONSTS.map(([n, c]) => `(local.set $ex_${n} (f32x4.splat (f32.const ${num(c)})))`)
    .concat(`(local.set $ex_bias (i32x4.splat (i32.const ${127 - 0x4b400000})))`)
    .join("\n");
}

/** exp of every lane of the v128 expression `x`, inline (needs expLocals and expInit). */
function expInline(x: string): string {
  const k = (n: string) => `(local.get $ex_${n})`;
  let p = k("c7");
  for (let i = 6; i >= 0; i--) p = `(f32x4.add (f32x4.mul ${p} (local.get $ex_r)) ${k(`c${i}`)})`;
  return `(block (result v128)
  (local.set $ex_x (f32x4.pmax (f32x4.pmin ${x} ${k("hi")}) ${k("lo")}))
  ;; t = x / ln 2 + 1.5 * 2^23, n = t - 1.5 * 2^23 = round(x / ln 2), r = x - n ln 2
  (local.set $ex_t (f32x4.add (f32x4.mul (local.get $ex_x) ${k("log2e")}) ${k("magic")}))
  (local.set $ex_n (f32x4.sub (local.get $ex_t) ${k("magic")}))
  (local.set $ex_r (f32x4.sub (f32x4.sub (local.get $ex_x) (f32x4.mul (local.get $ex_n) ${
    k("ln2hi")
  }))
    (f32x4.mul (local.get $ex_n) ${k("ln2lo")})))
  ;; p(r) * 2^n
  (f32x4.mul ${p}
    (i32x4.shl (i32x4.add (local.get $ex_t) (local.get $ex_bias)) (i32.const 23))))`;
}

/** Operations on either an f32x4 (vector loop) or an f32 (scalar tail loop). */
export interface Lanes {
  /** The WAT value type of one element group: `v128` or `f32`. */
  type: "v128" | "f32";
  /** Binary or unary float op by its short name (`add`, `mul`, `sqrt`, ...). */
  op(name: string, ...args: string[]): string;
  /** Loads the current element group of array `$ptr` (byte offset `$off` added). */
  ld(ptr: string): string;
  /** Stores `value` to the current element group of array `$ptr`. */
  st(ptr: string, value: string): string;
  /** A float constant. */
  k(c: number): string;
  /** An f32 expression broadcast to all lanes. */
  splat(f32: string): string;
  /** The name of a local of this lane width: `$name_v` (v128) or `$name_s` (f32). */
  loc(name: string): string;
  /** Accurate exp of every lane, inline (see `expInline`; the function needs expLocals / expInit). */
  exp(x: string): string;
  /** `value` with the lanes where the comparison `cond` holds set to +0. */
  zeroWhere(value: string, cond: string): string;
}

/** Formats a float constant for WAT. */
export function num(c: number): string {
  return Number.isInteger(c) ? c.toFixed(1) : String(c);
}

const VECTOR: Lanes = {
  type: "v128",
  op: (name, ...args) => `(f32x4.${name} ${args.join(" ")})`,
  ld: (ptr) => `(v128.load (i32.add (local.get ${ptr}) (local.get $off)))`,
  st: (ptr, value) => `(v128.store (i32.add (local.get ${ptr}) (local.get $off)) ${value})`,
  k: (c) => `(f32x4.splat (f32.const ${num(c)}))`,
  splat: (f32) => `(f32x4.splat ${f32})`,
  loc: (name) => `$${name}_v`,
  exp: (x) => expInline(x),
  zeroWhere: (value, cond) => `(v128.andnot ${value} ${cond})`,
};

const SCALAR: Lanes = {
  type: "f32",
  op: (name, ...args) => `(f32.${name} ${args.join(" ")})`,
  ld: (ptr) => `(f32.load (i32.add (local.get ${ptr}) (local.get $off)))`,
  st: (ptr, value) => `(f32.store (i32.add (local.get ${ptr}) (local.get $off)) ${value})`,
  k: (c) => `(f32.const ${num(c)})`,
  splat: (f32) => f32,
  loc: (name) => `$${name}_s`,
  // The scalar exp runs the vector code on one lane: the same bits as the vector loop.
  exp: (x) => `(f32x4.extract_lane 0 ${expInline(`(f32x4.splat ${x})`)})`,
  zeroWhere: (value, cond) => `(select (f32.const 0) ${value} ${cond})`,
};

/** Declares `$name_v v128` and `$name_s f32` locals for every name. */
export function laneLocals(...names: string[]): string {
  return names.map((n) => `(local $${n}_v v128) (local $${n}_s f32)`).join(" ");
}

/**
 * A loop over `$nbytes` bytes of float32 arrays: `body(VECTOR)` on 16-byte groups, then
 * `body(SCALAR)` on the remaining floats. The function needs locals `$off` and `$nbytes` (i32).
 */
export function lanesLoop(body: (L: Lanes) => string): string {
  return `(local.set $off (i32.const 0))
(block $vdone (loop $vloop
  (br_if $vdone (i32.gt_u (i32.add (local.get $off) (i32.const 16)) (local.get $nbytes)))
${indent(body(VECTOR), 2)}
  (local.set $off (i32.add (local.get $off) (i32.const 16)))
  (br $vloop)))
(block $sdone (loop $sloop
  (br_if $sdone (i32.ge_u (local.get $off) (local.get $nbytes)))
${indent(body(SCALAR), 2)}
  (local.set $off (i32.add (local.get $off) (i32.const 4)))
  (br $sloop)))`;
}

/** Sets `$name_v` and `$name_s` to zero (before a reducing lanesLoop). */
export function zeroLanes(...names: string[]): string {
  return names.map((n) =>
    `(local.set $${n}_v (v128.const i32x4 0 0 0 0)) (local.set $${n}_s (f32.const 0))`
  )
    .join("\n");
}

/** The reduced total of a lanes accumulator: hsum of the vector part, plus the scalar tail. */
export function laneTotal(name: string): string {
  return `(f32.add (call $hsum (local.get $${name}_v)) (local.get $${name}_s))`;
}
