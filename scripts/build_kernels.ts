/**
 * Generates, assembles and writes BareGPT's WebAssembly SIMD kernels.
 *
 * The kernels are written here as WebAssembly text (WAT) built from template strings: the hot
 * matmul loops are register tiles whose unrolled bodies would be long and error-prone by hand, so
 * this script spells them out. Two tiers come from the same source:
 *
 * - `relaxed`: the multiply-accumulate of the matmul tiles is `f32x4.relaxed_madd` (a fused
 *   multiply-add on x86 with FMA; Deno's V8 accepts it, browsers may not).
 * - `simd`: the same tiles with a plain `f32x4.mul` then `f32x4.add` (WebAssembly SIMD128 only).
 *
 * Everything except the matmul tiles is identical in both tiers, so the element-wise kernels
 * (exp, GELU, softmax, layernorm, AdamW) give the same bits whichever tier runs them.
 *
 * Outputs (committed, so that users never need this script or wabt):
 * - `lib/kernels/kernels_relaxed.wat`, `lib/kernels/kernels_simd.wat`: the text, for readers;
 * - `lib/kernels/wasm_bytes.ts`: both binaries as base64 strings, loaded by `lib/kernels/mod.ts`.
 *
 * Usage: `deno task build:kernels` (see deno.json), i.e.
 * `deno run --allow-read=lib/kernels --allow-write=lib/kernels scripts/build_kernels.ts`.
 *
 * The build is deterministic: `tests/kernels_test.ts` rebuilds in memory and compares with the
 * committed base64.
 *
 * @module
 */

// wabt (WebAssembly Binary Toolkit) compiled to JS, pinned: the build must be reproducible.
// deno-lint-ignore no-import-prefix -- until deno.json maps it ("imports": { "wabt": ... })
import wabtInit from "npm:wabt@1.0.39";

/** Which instruction set a generated module may use. */
export type WasmTier = "relaxed" | "simd";

/** Result of {@linkcode buildKernels}: the text and the binary of both tiers. */
export interface BuiltKernels {
  relaxedWat: string;
  simdWat: string;
  relaxedBytes: Uint8Array;
  simdBytes: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Tuning constants of the matmul kernels (see the comment above `gemmDriver`).

/**
 * Register tile of the [rows x cols] matmul forms, per tier: `rows` rows by `vecs` f32x4 vectors
 * (4*vecs columns). The fused multiply-add of the relaxed tier needs no temporary, so it affords
 * 12 accumulators; the simd tier's mul + add needs one more register and keeps 8.
 */
const TILE: Record<WasmTier, { rows: number; vecs: number }> = {
  relaxed: { rows: 6, vecs: 2 },
  simd: { rows: 4, vecs: 2 },
};
/** Reduction-dimension block: a B panel of KC x (4*vecs) floats stays in L1. */
const KC = 256;
/** Row block: an A block of MC x KC floats stays in L2 while the column tiles sweep it. */
const MC = 96;

// ---------------------------------------------------------------------------------------------
// Small WAT text helpers.

/** Indents every line of `text` by `n` spaces. */
function indent(text: string, n: number): string {
  const pad = " ".repeat(n);
  return text.split("\n").map((l) => (l.length > 0 ? pad + l : l)).join("\n");
}

/** `0..n-1` as an array, for unrolled loops. */
function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** `acc + a * b` on f32x4 values: fused in the relaxed tier, mul then add in the simd tier. */
function madd(tier: WasmTier, a: string, b: string, acc: string): string {
  return tier === "relaxed"
    ? `(f32x4.relaxed_madd ${a} ${b} ${acc})`
    : `(f32x4.add ${acc} (f32x4.mul ${a} ${b}))`;
}

// ---------------------------------------------------------------------------------------------
// Matmul: [rows x cols] register tiles for the "NN" (out = inp . w) and "TN" (dw += inp^T . dout)
// forms. Both read A by broadcasting one float per tile row and B by rows of f32x4 vectors:
//
//   C[r, c] (+)= sum_s A(r, s) * B[s, c]   with A(r, s) at a + r*ars + s*ass (bytes)
//
// NN: A = inp [M, K] row-major, ars = 4K, ass = 4.   TN: A(r, s) = inp[s, r], ars = 4, ass = 4K.

/**
 * One register tile: C[R rows, 4V cols] over `n` reduction steps.
 * `mode`: 0 = start from zero, 1 = start from the bias row `bias[0..4V)`, 2 = accumulate into C.
 */
function gemmTile(tier: WasmTier, R: number, V: number): string {
  const rows = range(R);
  const vecs = range(V);
  const accs = rows.flatMap((r) => vecs.map((v) => `$acc${r}_${v}`));
  const lines: string[] = [];
  lines.push(
    `;; C[${R}, ${
      4 * V
    }] tile: C (+)= A . B over n steps (see gemmTile in scripts/build_kernels.ts)`,
    `(func $gemm_tile_${R}x${4 * V}`,
    `  (param $c i32) (param $a i32) (param $b i32) (param $bias i32) (param $mode i32)`,
    `  (param $ars i32) (param $ass i32) (param $bs i32) (param $cs i32) (param $n i32)`,
    `  ${accs.map((a) => `(local ${a} v128)`).join(" ")}`,
    `  ${vecs.map((v) => `(local $b${v} v128)`).join(" ")} (local $x v128)`,
    `  ${rows.map((r) => `(local $pa${r} i32) (local $pc${r} i32)`).join(" ")} (local $pb i32)`,
  );
  // Row pointers of A and C.
  lines.push(`  (local.set $pa0 (local.get $a)) (local.set $pc0 (local.get $c))`);
  for (const r of rows.slice(1)) {
    lines.push(
      `  (local.set $pa${r} (i32.add (local.get $pa${r - 1}) (local.get $ars)))` +
        ` (local.set $pc${r} (i32.add (local.get $pc${r - 1}) (local.get $cs)))`,
    );
  }
  // Initial accumulators.
  const loadC = rows.flatMap((r) =>
    vecs.map((v) => `(local.set $acc${r}_${v} (v128.load offset=${16 * v} (local.get $pc${r})))`)
  );
  const loadBias = rows.flatMap((r) =>
    vecs.map((v) => `(local.set $acc${r}_${v} (v128.load offset=${16 * v} (local.get $bias)))`)
  );
  lines.push(
    `  (if (i32.eq (local.get $mode) (i32.const 2))`,
    `    (then`,
    indent(loadC.join("\n"), 6),
    `    )`,
    `    (else (if (i32.eq (local.get $mode) (i32.const 1)) (then`,
    indent(loadBias.join("\n"), 6),
    `    ))))`,
  );
  // Inner loop over the reduction dimension.
  const body: string[] = [];
  for (const v of vecs) {
    body.push(`(local.set $b${v} (v128.load offset=${16 * v} (local.get $pb)))`);
  }
  for (const r of rows) {
    body.push(`(local.set $x (v128.load32_splat (local.get $pa${r})))`);
    for (const v of vecs) {
      body.push(
        `(local.set $acc${r}_${v} ${
          madd(tier, "(local.get $x)", `(local.get $b${v})`, `(local.get $acc${r}_${v})`)
        })`,
      );
    }
  }
  for (const r of rows) {
    body.push(`(local.set $pa${r} (i32.add (local.get $pa${r}) (local.get $ass)))`);
  }
  body.push(`(local.set $pb (i32.add (local.get $pb) (local.get $bs)))`);
  lines.push(
    `  (local.set $pb (local.get $b))`,
    `  (if (local.get $n) (then (loop $s`,
    indent(body.join("\n"), 4),
    `    (br_if $s (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))))`,
  );
  // Store.
  for (const r of rows) {
    for (const v of vecs) {
      lines.push(
        `  (v128.store offset=${16 * v} (local.get $pc${r}) (local.get $acc${r}_${v}))`,
      );
    }
  }
  lines.push(`)`);
  return lines.join("\n");
}

/** One output column that is not part of a 4-wide vector: scalar loop, rows x 1. */
function gemmColumn(): string {
  return `;; C[rows, 1] column: scalar C (+)= A . B for the last N % 4 columns
(func $gemm_col
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32) (param $mode i32)
  (param $ars i32) (param $ass i32) (param $bs i32) (param $cs i32) (param $n i32) (param $rows i32)
  (local $acc f32) (local $pa i32) (local $pb i32) (local $s i32)
  (if (local.get $rows) (then (loop $row
    (local.set $acc (f32.const 0))
    (if (i32.eq (local.get $mode) (i32.const 1)) (then (local.set $acc (f32.load (local.get $bias)))))
    (if (i32.eq (local.get $mode) (i32.const 2)) (then (local.set $acc (f32.load (local.get $c)))))
    (local.set $pa (local.get $a))
    (local.set $pb (local.get $b))
    (local.set $s (local.get $n))
    (if (local.get $s) (then (loop $k
      (local.set $acc (f32.add (local.get $acc)
        (f32.mul (f32.load (local.get $pa)) (f32.load (local.get $pb)))))
      (local.set $pa (i32.add (local.get $pa) (local.get $ass)))
      (local.set $pb (i32.add (local.get $pb) (local.get $bs)))
      (br_if $k (local.tee $s (i32.sub (local.get $s) (i32.const 1)))))))
    (f32.store (local.get $c) (local.get $acc))
    (local.set $c (i32.add (local.get $c) (local.get $cs)))
    (local.set $a (i32.add (local.get $a) (local.get $ars)))
    (br_if $row (local.tee $rows (i32.sub (local.get $rows) (i32.const 1))))))))`;
}

/**
 * The blocked driver shared by `matmul` (NN) and `matmul_backward_weight` (TN):
 *
 *   for s0 in [0, S) step KC          reduction block; the first block starts from
 *                                     zero / bias (or C when accumulating), later ones add to C
 *     for i0 in [0, M) step MC        row block of A (stays in L2)
 *       for j in [0, N) step 4V       column panel of B (KC x 4V floats, stays in L1)
 *         for i in [i0, i0+MC) step R register tile (then single-row tiles for the rest)
 *       then 4-wide tiles, then scalar columns for N % 4.
 *
 * The summation order of every output depends only on the shapes, so results are bit-exact
 * between runs.
 */
function gemmDriver(tier: WasmTier): string {
  const R = TILE[tier].rows;
  const W = 4 * TILE[tier].vecs;
  // Calls one tile kind at (i, j): pointers computed from the loop variables.
  const call = (name: string) =>
    `(call ${name}
  (i32.add (local.get $c) (i32.add (i32.mul (local.get $i) (local.get $cs)) (i32.shl (local.get $j) (i32.const 2))))
  (i32.add (local.get $ablk) (i32.mul (local.get $i) (local.get $ars)))
  (i32.add (local.get $bblk) (i32.shl (local.get $j) (i32.const 2)))
  (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2)))
  (local.get $mode) (local.get $ars) (local.get $ass) (local.get $bs) (local.get $cs) (local.get $kn))`;
  // Sweeps the rows of the current block with tiles of width `w`.
  const rowsSweep = (w: number) =>
    `(local.set $i (local.get $i0))
(block $rdone (loop $rows
  (br_if $rdone (i32.gt_u (i32.add (local.get $i) (i32.const ${R})) (local.get $iend)))
${indent(call(`$gemm_tile_${R}x${w}`), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const ${R})))
  (br $rows)))
(block $r1done (loop $rows1
  (br_if $r1done (i32.ge_u (local.get $i) (local.get $iend)))
${indent(call(`$gemm_tile_1x${w}`), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const 1)))
  (br $rows1)))`;
  return `;; C[M, N] (+)= A(M x S) . B[S, N]; see gemmDriver in scripts/build_kernels.ts.
;; accumulate = 0: the first reduction block starts from the bias (bias != 0) or zero.
(func $gemm
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32)
  (param $M i32) (param $S i32) (param $N i32) (param $ars i32) (param $ass i32)
  (param $accumulate i32)
  (local $bs i32) (local $cs i32) (local $s0 i32) (local $kn i32) (local $mode i32)
  (local $i0 i32) (local $iend i32) (local $i i32) (local $j i32) (local $ablk i32) (local $bblk i32)
  (local.set $bs (i32.shl (local.get $N) (i32.const 2)))
  (local.set $cs (local.get $bs))
  (local.set $s0 (i32.const 0))
  (loop $sblocks
    ;; kn = min(KC, S - s0); the first block initialises C, the others accumulate into it
    (local.set $kn (i32.sub (local.get $S) (local.get $s0)))
    (if (i32.gt_u (local.get $kn) (i32.const ${KC})) (then (local.set $kn (i32.const ${KC}))))
    (local.set $mode (i32.const 2))
    (if (i32.and (i32.eqz (local.get $s0)) (i32.eqz (local.get $accumulate)))
      (then (local.set $mode (select (i32.const 1) (i32.const 0) (local.get $bias)))))
    (local.set $ablk (i32.add (local.get $a) (i32.mul (local.get $s0) (local.get $ass))))
    (local.set $bblk (i32.add (local.get $b) (i32.mul (local.get $s0) (local.get $bs))))
    (local.set $i0 (i32.const 0))
    (block $idone (loop $iblocks
      (br_if $idone (i32.ge_u (local.get $i0) (local.get $M)))
      (local.set $iend (i32.add (local.get $i0) (i32.const ${MC})))
      (if (i32.gt_u (local.get $iend) (local.get $M)) (then (local.set $iend (local.get $M))))
      ;; full-width column panels
      (local.set $j (i32.const 0))
      (block $jdone (loop $cols
        (br_if $jdone (i32.gt_u (i32.add (local.get $j) (i32.const ${W})) (local.get $N)))
${indent(rowsSweep(W), 8)}
        (local.set $j (i32.add (local.get $j) (i32.const ${W})))
        (br $cols)))
      ;; 4-wide column panels
      (block $j4done (loop $cols4
        (br_if $j4done (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N)))
${indent(rowsSweep(4), 8)}
        (local.set $j (i32.add (local.get $j) (i32.const 4)))
        (br $cols4)))
      ;; the last N % 4 columns, one at a time
      (block $j1done (loop $cols1
        (br_if $j1done (i32.ge_u (local.get $j) (local.get $N)))
        (call $gemm_col
          (i32.add (local.get $c) (i32.add (i32.mul (local.get $i0) (local.get $cs)) (i32.shl (local.get $j) (i32.const 2))))
          (i32.add (local.get $ablk) (i32.mul (local.get $i0) (local.get $ars)))
          (i32.add (local.get $bblk) (i32.shl (local.get $j) (i32.const 2)))
          (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $mode) (local.get $ars) (local.get $ass) (local.get $bs) (local.get $cs)
          (local.get $kn) (i32.sub (local.get $iend) (local.get $i0)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $cols1)))
      (local.set $i0 (local.get $iend))
      (br $iblocks)))
    (local.set $s0 (i32.add (local.get $s0) (local.get $kn)))
    (br_if $sblocks (i32.lt_u (local.get $s0) (local.get $S))))
)`;
}

// ---------------------------------------------------------------------------------------------
// Matmul with a transposed right operand: C[M, N] = A[M, S] . B[N, S]^T, both read along S.
// Register tiles of 2 rows of A x 4 rows of B hold 8 f32x4 partial dot products over S in
// chunks of 4; at the end each row's 4 dot products are reduced into one f32x4 and stored.

/** Reduces four f32x4 partial sums into one f32x4 of their four horizontal sums. */
function hsum4(a: string, b: string, c: string, d: string): string {
  // [a0+a2, a1+a3, b0+b2, b1+b3] and the same for c, d; then pairwise again.
  const lo = (x: string, y: string) =>
    `(f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 ${x} ${y})` +
    ` (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 ${x} ${y}))`;
  const ab = lo(a, b);
  const cd = lo(c, d);
  return `(f32x4.add (i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 ${ab} ${cd})` +
    ` (i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 ${ab} ${cd}))`;
}

/** NT tile: C[R, Cn] = A[R rows, S] . B[Cn rows, S]^T with Cn = 4 (vector store) or 1. */
function ntTile(tier: WasmTier, R: number, Cn: number): string {
  const rows = range(R);
  const cols = range(Cn);
  const accs = rows.flatMap((r) => cols.map((c) => `$acc${r}_${c}`));
  const lines: string[] = [];
  lines.push(
    `;; C[${R}, ${Cn}] = A[${R}, S] . B[${Cn}, S]^T (see ntTile in scripts/build_kernels.ts)`,
    `(func $nt_tile_${R}x${Cn}`,
    `  (param $c i32) (param $a i32) (param $b i32) (param $as i32) (param $bs i32) (param $cs i32)`,
    `  (param $S i32)`,
    `  ${accs.map((a) => `(local ${a} v128)`).join(" ")}`,
    `  ${rows.map((r) => `(local $x${r} v128) (local $pa${r} i32)`).join(" ")}`,
    `  ${cols.map((c) => `(local $pb${c} i32)`).join(" ")} (local $y v128)`,
    `  (local $s i32) (local $t f32) (local $res v128)`,
  );
  lines.push(`  (local.set $pa0 (local.get $a))`);
  for (const r of rows.slice(1)) {
    lines.push(`  (local.set $pa${r} (i32.add (local.get $pa${r - 1}) (local.get $as)))`);
  }
  lines.push(`  (local.set $pb0 (local.get $b))`);
  for (const c of cols.slice(1)) {
    lines.push(`  (local.set $pb${c} (i32.add (local.get $pb${c - 1}) (local.get $bs)))`);
  }
  // Vector loop over S in chunks of 4 floats: all pointers advance by 16 bytes.
  const body: string[] = [];
  for (const r of rows) body.push(`(local.set $x${r} (v128.load offset=0 (local.get $pa${r})))`);
  for (const c of cols) {
    body.push(`(local.set $y (v128.load (local.get $pb${c})))`);
    for (const r of rows) {
      body.push(
        `(local.set $acc${r}_${c} ${
          madd(tier, `(local.get $x${r})`, "(local.get $y)", `(local.get $acc${r}_${c})`)
        })`,
      );
    }
  }
  for (const r of rows) {
    body.push(`(local.set $pa${r} (i32.add (local.get $pa${r}) (i32.const 16)))`);
  }
  for (const c of cols) {
    body.push(`(local.set $pb${c} (i32.add (local.get $pb${c}) (i32.const 16)))`);
  }
  lines.push(
    `  (local.set $s (i32.shr_u (local.get $S) (i32.const 2)))`,
    `  (if (local.get $s) (then (loop $k`,
    indent(body.join("\n"), 4),
    `    (br_if $k (local.tee $s (i32.sub (local.get $s) (i32.const 1)))))))`,
  );
  // Reduce, add the scalar tail S % 4 (same order every call), store.
  const tailLen = `(i32.and (local.get $S) (i32.const 3))`;
  for (const r of rows) {
    if (Cn === 4) {
      lines.push(
        `  (local.set $res ${
          hsum4(...cols.map((c) => `(local.get $acc${r}_${c})`) as [string, string, string, string])
        })`,
      );
    } else {
      lines.push(
        `  (local.set $res (f32x4.add (local.get $acc${r}_0) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $acc${r}_0) (local.get $acc${r}_0))))`,
        `  (local.set $res (f32x4.add (local.get $res) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $res) (local.get $res))))`,
      );
    }
    // Tail: for each column c, t = sum over the last S % 4 products, added to lane c.
    for (const c of cols) {
      lines.push(
        `  (local.set $t (f32.const 0))`,
        `  (local.set $s ${tailLen})`,
        `  (if (local.get $s) (then (loop $tail`,
        `    (local.set $t (f32.add (local.get $t) (f32.mul (f32.load (local.get $pa${r})) (f32.load (local.get $pb${c})))))`,
        `    (local.set $pa${r} (i32.add (local.get $pa${r}) (i32.const 4)))`,
        `    (local.set $pb${c} (i32.add (local.get $pb${c}) (i32.const 4)))`,
        `    (br_if $tail (local.tee $s (i32.sub (local.get $s) (i32.const 1)))))`,
        `    (local.set $pa${r} (i32.sub (local.get $pa${r}) (i32.shl ${tailLen} (i32.const 2))))`,
        `    (local.set $pb${c} (i32.sub (local.get $pb${c}) (i32.shl ${tailLen} (i32.const 2))))`,
        `    (local.set $res (f32x4.replace_lane ${c} (local.get $res) (f32.add (f32x4.extract_lane ${c} (local.get $res)) (local.get $t))))))`,
      );
    }
    const dst = `(i32.add (local.get $c) (i32.mul (i32.const ${r}) (local.get $cs)))`;
    lines.push(
      Cn === 4
        ? `  (v128.store ${dst} (local.get $res))`
        : `  (f32.store ${dst} (f32x4.extract_lane 0 (local.get $res)))`,
    );
  }
  lines.push(`)`);
  return lines.join("\n");
}

/** Driver for C[M, N] = A[M, S] . B[N, S]^T: 2x4 tiles, then 1-row and 1-column edges. */
function ntDriver(): string {
  const call = (name: string) =>
    `(call ${name}
  (i32.add (local.get $c) (i32.add (i32.mul (local.get $i) (local.get $cs)) (i32.shl (local.get $j) (i32.const 2))))
  (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $as)))
  (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $as)))
  (local.get $as) (local.get $as) (local.get $cs) (local.get $S))`;
  const sweep = (cn: number) =>
    `(local.set $i (i32.const 0))
(block $rdone (loop $rows
  (br_if $rdone (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $M)))
${indent(call(`$nt_tile_2x${cn}`), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const 2)))
  (br $rows)))
(if (i32.lt_u (local.get $i) (local.get $M)) (then
${indent(call(`$nt_tile_1x${cn}`), 2)}))`;
  return `;; C[M, N] = A[M, S] . B[N, S]^T, row-major, overwriting C. Row blocks of 64 keep the
;; A rows in L1/L2 while every B row streams past them.
(func $gemm_nt
  (param $c i32) (param $a i32) (param $b i32) (param $M i32) (param $S i32) (param $N i32)
  (local $as i32) (local $cs i32) (local $i i32) (local $j i32)
  (local.set $as (i32.shl (local.get $S) (i32.const 2)))
  (local.set $cs (i32.shl (local.get $N) (i32.const 2)))
  (local.set $j (i32.const 0))
  (block $jdone (loop $cols
    (br_if $jdone (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N)))
${indent(sweep(4), 4)}
    (local.set $j (i32.add (local.get $j) (i32.const 4)))
    (br $cols)))
  (block $j1done (loop $cols1
    (br_if $j1done (i32.ge_u (local.get $j) (local.get $N)))
${indent(sweep(1), 4)}
    (local.set $j (i32.add (local.get $j) (i32.const 1)))
    (br $cols1)))
)`;
}

/** The exported matmul entry points. */
function matmulExports(): string {
  return `;; out[M, N] = inp[M, K] . w[K, N] + bias[N] (bias = 0: none). Overwrites out.
(func (export "matmul")
  (param $out i32) (param $inp i32) (param $w i32) (param $bias i32)
  (param $M i32) (param $K i32) (param $N i32)
  (call $gemm (local.get $out) (local.get $inp) (local.get $w) (local.get $bias)
    (local.get $M) (local.get $K) (local.get $N)
    (i32.shl (local.get $K) (i32.const 2)) (i32.const 4) (i32.const 0)))

;; dw[K, N] += inp[M, K]^T . dout[M, N]: the "rows" of this product are the K columns of inp.
(func (export "matmul_backward_weight")
  (param $dw i32) (param $inp i32) (param $dout i32) (param $M i32) (param $K i32) (param $N i32)
  (call $gemm (local.get $dw) (local.get $inp) (local.get $dout) (i32.const 0)
    (local.get $K) (local.get $M) (local.get $N)
    (i32.const 4) (i32.shl (local.get $K) (i32.const 2)) (i32.const 1)))

;; out[M, N] = a[M, K] . b[N, K]^T. Overwrites out.
(func (export "matmul_nt")
  (param $out i32) (param $a i32) (param $b i32) (param $M i32) (param $K i32) (param $N i32)
  (call $gemm_nt (local.get $out) (local.get $a) (local.get $b)
    (local.get $M) (local.get $K) (local.get $N)))

;; dinp[M, K] = dout[M, N] . w[K, N]^T. Overwrites dinp.
(func (export "matmul_backward_input")
  (param $dinp i32) (param $dout i32) (param $w i32) (param $M i32) (param $K i32) (param $N i32)
  (call $gemm_nt (local.get $dinp) (local.get $dout) (local.get $w)
    (local.get $M) (local.get $N) (local.get $K)))`;
}

// ---------------------------------------------------------------------------------------------
// Element-wise and per-row kernels. Their bodies are written once against `Lanes` and emitted
// twice: an f32x4 loop over whole vectors, then a scalar loop over the last n % 4 elements. They
// use no fused multiply-add, so both tiers give the same bits.

/** Operations on either an f32x4 (vector loop) or an f32 (scalar tail loop). */
interface Lanes {
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
  /** Accurate exp of every lane (see `$exp_v`). */
  exp(x: string): string;
  /** `value` with the lanes where the comparison `cond` holds set to +0. */
  zeroWhere(value: string, cond: string): string;
}

/** Formats a float constant for WAT. */
function num(c: number): string {
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
  exp: (x) => `(call $exp_v ${x})`,
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
  exp: (x) => `(f32x4.extract_lane 0 (call $exp_v (f32x4.splat ${x})))`,
  zeroWhere: (value, cond) => `(select (f32.const 0) ${value} ${cond})`,
};

/** Declares `$name_v v128` and `$name_s f32` locals for every name. */
function laneLocals(...names: string[]): string {
  return names.map((n) => `(local $${n}_v v128) (local $${n}_s f32)`).join(" ");
}

/**
 * A loop over `$nbytes` bytes of float32 arrays: `body(VECTOR)` on 16-byte groups, then
 * `body(SCALAR)` on the remaining floats. The function needs locals `$off` and `$nbytes` (i32).
 */
function lanesLoop(body: (L: Lanes) => string): string {
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
function zeroLanes(...names: string[]): string {
  return names.map((n) =>
    `(local.set $${n}_v (v128.const i32x4 0 0 0 0)) (local.set $${n}_s (f32.const 0))`
  )
    .join("\n");
}

/** The reduced total of a lanes accumulator: hsum of the vector part, plus the scalar tail. */
function laneTotal(name: string): string {
  return `(f32.add (call $hsum (local.get $${name}_v)) (local.get $${name}_s))`;
}

/** Math helpers: exp (f32x4), horizontal sum, log (f64), dot product and axpy rows. */
function mathHelpers(): string {
  // exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (two-part ln 2 for accuracy),
  // p = degree-7 Taylor polynomial: truncation error < 6e-9 for |r| <= ln(2) / 2, so the result is
  // within a few float32 ulps. x is clamped to [-87.3, 88]: no overflow, no NaN for finite x.
  const horner = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1];
  let p = `(f32x4.splat (f32.const ${horner[0]}))`;
  for (const c of horner.slice(1)) {
    p = `(f32x4.add (f32x4.mul ${p} (local.get $r)) (f32x4.splat (f32.const ${num(c)})))`;
  }
  // log series in f2 = f^2, Horner from the f^14 term down to 1.
  const logSeries = [1 / 13, 1 / 11, 1 / 9, 1 / 7, 1 / 5, 1 / 3, 1].reduce(
    (acc, c) => `(f64.add (f64.mul ${acc} (local.get $f2)) (f64.const ${num(c)}))`,
    `(f64.const ${1 / 15})`,
  );
  return `;; exp of every lane, relative error ~1e-7; x clamped to [-87.3, 88].
(func $exp_v (param $x v128) (result v128) (local $n v128) (local $r v128)
  (local.set $x (f32x4.max (f32x4.min (local.get $x) (f32x4.splat (f32.const 88.0)))
    (f32x4.splat (f32.const -87.3))))
  (local.set $n (f32x4.nearest (f32x4.mul (local.get $x) (f32x4.splat (f32.const 1.4426950408889634)))))
  (local.set $r (f32x4.sub
    (f32x4.sub (local.get $x) (f32x4.mul (local.get $n) (f32x4.splat (f32.const 0.693359375))))
    (f32x4.mul (local.get $n) (f32x4.splat (f32.const -2.12194440e-4)))))
  (f32x4.mul
    ${p}
    (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get $n)) (i32x4.splat (i32.const 127)))
      (i32.const 23))))

;; (v0 + v2) + (v1 + v3): the fixed horizontal sum order of every reduction.
(func $hsum (param $v v128) (result f32)
  (f32.add
    (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 2 (local.get $v)))
    (f32.add (f32x4.extract_lane 1 (local.get $v)) (f32x4.extract_lane 3 (local.get $v)))))

;; Natural log of a positive normal float64: x = m 2^e with m in [sqrt(1/2), sqrt(2)),
;; log m = 2 atanh(f), f = (m - 1) / (m + 1), |f| < 0.172: series to f^15 (error < 1e-13).
(func $log_d (param $x f64) (result f64) (local $bits i64) (local $e f64) (local $m f64)
  (local $f f64) (local $f2 f64)
  (local.set $bits (i64.reinterpret_f64 (local.get $x)))
  (local.set $e (f64.convert_i64_s
    (i64.sub (i64.and (i64.shr_u (local.get $bits) (i64.const 52)) (i64.const 0x7ff)) (i64.const 1023))))
  (local.set $m (f64.reinterpret_i64 (i64.or
    (i64.and (local.get $bits) (i64.const 0x000fffffffffffff)) (i64.const 0x3ff0000000000000))))
  (if (f64.gt (local.get $m) (f64.const 1.4142135623730951)) (then
    (local.set $m (f64.mul (local.get $m) (f64.const 0.5)))
    (local.set $e (f64.add (local.get $e) (f64.const 1)))))
  (local.set $f (f64.div (f64.sub (local.get $m) (f64.const 1)) (f64.add (local.get $m) (f64.const 1))))
  (local.set $f2 (f64.mul (local.get $f) (local.get $f)))
  (f64.add (f64.mul (local.get $e) (f64.const 0.6931471805599453))
    (f64.mul (f64.mul (f64.const 2) (local.get $f))
      ${logSeries})))

;; sum_i a[i] b[i] over n floats (f32x4 partial sums, then the scalar tail).
(func $dot (param $a i32) (param $b i32) (param $n i32) (result f32)
  (local $off i32) (local $nbytes i32) ${laneLocals("acc")}
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
  ${zeroLanes("acc")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("acc")} ${
          L.op("add", `(local.get ${L.loc("acc")})`, L.op("mul", L.ld("$a"), L.ld("$b")))
        })`
      ),
      2,
    )
  }
  ${laneTotal("acc")})

;; y[n] += s * x[n]
(func $axpy (param $y i32) (param $x i32) (param $s f32) (param $n i32)
  (local $off i32) (local $nbytes i32)
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${
    indent(
      lanesLoop((L) =>
        L.st("$y", L.op("add", L.ld("$y"), L.op("mul", L.splat("(local.get $s)"), L.ld("$x"))))
      ),
      2,
    )
  })`;
}

/** Exported element-wise kernels: GELU, AdamW and vector utilities. */
function elementwiseExports(): string {
  const S2PI = Math.sqrt(2 / Math.PI);
  const A = 0.044715;
  // gelu(x) = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3):
  // the logistic form has no cancellation, so it is accurate in relative terms for every x.
  // u is computed from xc = clamp(x, -10, 10), which keeps every intermediate finite: beyond
  // +10, 1 / (1 + exp(-2u)) is 1 in float32; below -10, gelu(x) is under 1e-37 and set to 0.
  const geluE = (L: Lanes) => {
    const xc = `(local.get ${L.loc("xc")})`;
    return `(local.set ${L.loc("x")} ${L.ld("$inp")})
(local.set ${L.loc("xc")} ${
      L.op("min", L.op("max", `(local.get ${L.loc("x")})`, L.k(-10)), L.k(10))
    })
(local.set ${L.loc("e")} ${
      L.exp(
        L.op(
          "mul",
          L.k(-2 * S2PI),
          L.op("add", xc, L.op("mul", L.k(A), L.op("mul", xc, L.op("mul", xc, xc)))),
        ),
      )
    })`;
  };
  return `;; out[n] = gelu(inp[n]) (tanh approximation, computed as x / (1 + exp(-2u))).
(func (export "gelu_forward") (param $out i32) (param $inp i32) (param $n i32)
  (local $off i32) (local $nbytes i32) ${laneLocals("x", "xc", "e")}
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${
    indent(
      lanesLoop((L) =>
        `${geluE(L)}
${
          L.st(
            "$out",
            L.zeroWhere(
              L.op(
                "div",
                `(local.get ${L.loc("x")})`,
                L.op("add", L.k(1), `(local.get ${L.loc("e")})`),
              ),
              L.op("lt", `(local.get ${L.loc("x")})`, L.k(-10)),
            ),
          )
        }`
      ),
      2,
    )
  })

;; dinp[n] = gelu'(inp[n]) * dout[n]. With s = 1 / (1 + e), e = exp(-2u):
;; gelu' = s + 2 x u'(x) s (1 - s), 1 - s = s e, u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2);
;; x clamped to [-10, 10] (beyond, gelu' is 1 or 0 to float32 precision).
(func (export "gelu_backward") (param $dinp i32) (param $inp i32) (param $dout i32) (param $n i32)
  (local $off i32) (local $nbytes i32) ${laneLocals("x", "xc", "e", "s")}
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${
    indent(
      lanesLoop((L) => {
        const x = `(local.get ${L.loc("xc")})`;
        const s = `(local.get ${L.loc("s")})`;
        const du = L.op(
          "mul",
          L.k(S2PI),
          L.op("add", L.k(1), L.op("mul", L.k(3 * A), L.op("mul", x, x))),
        );
        const grad = L.op(
          "add",
          s,
          L.op(
            "mul",
            L.op("mul", L.k(2), L.op("mul", x, du)),
            L.op("mul", s, L.op("mul", s, `(local.get ${L.loc("e")})`)),
          ),
        );
        return `${geluE(L)}
(local.set ${L.loc("s")} ${L.op("div", L.k(1), L.op("add", L.k(1), `(local.get ${L.loc("e")})`))})
${L.st("$dinp", L.op("mul", grad, L.ld("$dout")))}`;
      }),
      2,
    )
  })

;; AdamW on n floats: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
;; param -= lr ((m / bc1) / (sqrt(v / bc2) + eps) + wd param).
(func (export "adamw")
  (param $param i32) (param $grad i32) (param $m i32) (param $v i32) (param $n i32)
  (param $lr f32) (param $beta1 f32) (param $beta2 f32) (param $eps f32) (param $wd f32)
  (param $bc1 f32) (param $bc2 f32)
  (local $off i32) (local $nbytes i32) (local $omb1 f32) (local $omb2 f32)
  ${laneLocals("g", "mt", "vt", "p")}
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
  (local.set $omb1 (f32.sub (f32.const 1) (local.get $beta1)))
  (local.set $omb2 (f32.sub (f32.const 1) (local.get $beta2)))
${
    indent(
      lanesLoop((L) => {
        const g = `(local.get ${L.loc("g")})`;
        const mt = `(local.get ${L.loc("mt")})`;
        const vt = `(local.get ${L.loc("vt")})`;
        const p = `(local.get ${L.loc("p")})`;
        const sp = (name: string) => L.splat(`(local.get $${name})`);
        return `(local.set ${L.loc("g")} ${L.ld("$grad")})
(local.set ${L.loc("p")} ${L.ld("$param")})
(local.set ${L.loc("mt")} ${
          L.op("add", L.op("mul", sp("beta1"), L.ld("$m")), L.op("mul", sp("omb1"), g))
        })
(local.set ${L.loc("vt")} ${
          L.op(
            "add",
            L.op("mul", sp("beta2"), L.ld("$v")),
            L.op("mul", sp("omb2"), L.op("mul", g, g)),
          )
        })
${L.st("$m", mt)}
${L.st("$v", vt)}
${
          L.st(
            "$param",
            L.op(
              "sub",
              p,
              L.op(
                "mul",
                sp("lr"),
                L.op(
                  "add",
                  L.op(
                    "div",
                    L.op("div", mt, sp("bc1")),
                    L.op("add", L.op("sqrt", L.op("div", vt, sp("bc2"))), sp("eps")),
                  ),
                  L.op("mul", sp("wd"), p),
                ),
              ),
            ),
          )
        }`;
      }),
      2,
    )
  })

;; x[n] *= s
(func (export "scale_inplace") (param $x i32) (param $n i32) (param $s f32)
  (local $off i32) (local $nbytes i32)
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${indent(lanesLoop((L) => L.st("$x", L.op("mul", L.ld("$x"), L.splat("(local.get $s)")))), 2)})

;; dst[n] += src[n]
(func (export "add_inplace") (param $dst i32) (param $src i32) (param $n i32)
  (local $off i32) (local $nbytes i32)
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${indent(lanesLoop((L) => L.st("$dst", L.op("add", L.ld("$dst"), L.ld("$src")))), 2)})

;; out[n] = a[n] + b[n]
(func (export "add") (param $out i32) (param $a i32) (param $b i32) (param $n i32)
  (local $off i32) (local $nbytes i32)
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
${indent(lanesLoop((L) => L.st("$out", L.op("add", L.ld("$a"), L.ld("$b")))), 2)})

;; sum of x[i]^2 over n floats, in float64: two f64x2 accumulators (even/odd float pairs of each
;; f32x4), then the scalar tail; returned rounded to float32.
(func (export "sum_squares") (param $x i32) (param $n i32) (result f32)
  (local $off i32) (local $nbytes i32) (local $lo v128) (local $hi v128) (local $v v128)
  (local $tail f64) (local $t f64)
  (local.set $nbytes (i32.shl (local.get $n) (i32.const 2)))
  (local.set $off (i32.const 0))
  (block $vdone (loop $vloop
    (br_if $vdone (i32.gt_u (i32.add (local.get $off) (i32.const 16)) (local.get $nbytes)))
    (local.set $v (v128.load (i32.add (local.get $x) (local.get $off))))
    (local.set $t (f64.const 0))
    (local.set $lo (f64x2.add (local.get $lo) (f64x2.mul
      (f64x2.promote_low_f32x4 (local.get $v)) (f64x2.promote_low_f32x4 (local.get $v)))))
    (local.set $v (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))
    (local.set $hi (f64x2.add (local.get $hi) (f64x2.mul
      (f64x2.promote_low_f32x4 (local.get $v)) (f64x2.promote_low_f32x4 (local.get $v)))))
    (local.set $off (i32.add (local.get $off) (i32.const 16)))
    (br $vloop)))
  (block $sdone (loop $sloop
    (br_if $sdone (i32.ge_u (local.get $off) (local.get $nbytes)))
    (local.set $t (f64.promote_f32 (f32.load (i32.add (local.get $x) (local.get $off)))))
    (local.set $tail (f64.add (local.get $tail) (f64.mul (local.get $t) (local.get $t))))
    (local.set $off (i32.add (local.get $off) (i32.const 4)))
    (br $sloop)))
  (local.set $lo (f64x2.add (local.get $lo) (local.get $hi)))
  (f32.demote_f64 (f64.add
    (f64.add (f64x2.extract_lane 0 (local.get $lo)) (f64x2.extract_lane 1 (local.get $lo)))
    (local.get $tail))))`;
}

/** Exported per-row kernels: bias gradient, layernorm, softmax + cross-entropy. */
function rowExports(): string {
  return `;; dbias[N] += column sums of dout[M, N]: 16 columns at a time (4 independent f32x4 sums
;; down the rows), then 4, then single columns.
(func (export "bias_backward") (param $dbias i32) (param $dout i32) (param $M i32) (param $N i32)
  (local $j i32) (local $p i32) (local $i i32) (local $rs i32) (local $s f32)
  (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
  (local.set $rs (i32.shl (local.get $N) (i32.const 2)))
  (block $d16 (loop $c16
    (br_if $d16 (i32.gt_u (i32.add (local.get $j) (i32.const 16)) (local.get $N)))
    (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
    (local.set $a2 (v128.const i32x4 0 0 0 0)) (local.set $a3 (v128.const i32x4 0 0 0 0))
    (local.set $p (i32.add (local.get $dout) (i32.shl (local.get $j) (i32.const 2))))
    (local.set $i (local.get $M))
    (if (local.get $i) (then (loop $rows
      (local.set $a0 (f32x4.add (local.get $a0) (v128.load offset=0 (local.get $p))))
      (local.set $a1 (f32x4.add (local.get $a1) (v128.load offset=16 (local.get $p))))
      (local.set $a2 (f32x4.add (local.get $a2) (v128.load offset=32 (local.get $p))))
      (local.set $a3 (f32x4.add (local.get $a3) (v128.load offset=48 (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $rs)))
      (br_if $rows (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))))
    (local.set $p (i32.add (local.get $dbias) (i32.shl (local.get $j) (i32.const 2))))
    (v128.store offset=0 (local.get $p) (f32x4.add (v128.load offset=0 (local.get $p)) (local.get $a0)))
    (v128.store offset=16 (local.get $p) (f32x4.add (v128.load offset=16 (local.get $p)) (local.get $a1)))
    (v128.store offset=32 (local.get $p) (f32x4.add (v128.load offset=32 (local.get $p)) (local.get $a2)))
    (v128.store offset=48 (local.get $p) (f32x4.add (v128.load offset=48 (local.get $p)) (local.get $a3)))
    (local.set $j (i32.add (local.get $j) (i32.const 16)))
    (br $c16)))
  (block $d4 (loop $c4
    (br_if $d4 (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N)))
    (local.set $a0 (v128.const i32x4 0 0 0 0))
    (local.set $p (i32.add (local.get $dout) (i32.shl (local.get $j) (i32.const 2))))
    (local.set $i (local.get $M))
    (if (local.get $i) (then (loop $rows
      (local.set $a0 (f32x4.add (local.get $a0) (v128.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $rs)))
      (br_if $rows (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))))
    (local.set $p (i32.add (local.get $dbias) (i32.shl (local.get $j) (i32.const 2))))
    (v128.store (local.get $p) (f32x4.add (v128.load (local.get $p)) (local.get $a0)))
    (local.set $j (i32.add (local.get $j) (i32.const 4)))
    (br $c4)))
  (block $d1 (loop $c1
    (br_if $d1 (i32.ge_u (local.get $j) (local.get $N)))
    (local.set $s (f32.const 0))
    (local.set $p (i32.add (local.get $dout) (i32.shl (local.get $j) (i32.const 2))))
    (local.set $i (local.get $M))
    (if (local.get $i) (then (loop $rows
      (local.set $s (f32.add (local.get $s) (f32.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (local.get $rs)))
      (br_if $rows (local.tee $i (i32.sub (local.get $i) (i32.const 1)))))))
    (local.set $p (i32.add (local.get $dbias) (i32.shl (local.get $j) (i32.const 2))))
    (f32.store (local.get $p) (f32.add (f32.load (local.get $p)) (local.get $s)))
    (local.set $j (i32.add (local.get $j) (i32.const 1)))
    (br $c1))))

;; out[N, C] = (inp - mean) * rstd * weight + bias per row; mean[N], rstd[N] saved (eps 1e-5,
;; two passes: mean, then the variance of the centred values).
(func (export "layernorm_forward")
  (param $out i32) (param $mean i32) (param $rstd i32) (param $inp i32) (param $weight i32)
  (param $bias i32) (param $N i32) (param $C i32)
  (local $off i32) (local $nbytes i32) (local $row i32) (local $x i32) (local $y i32)
  (local $m f32) (local $r f32) ${laneLocals("sum", "d")}
  (local.set $nbytes (i32.shl (local.get $C) (i32.const 2)))
  (local.set $x (local.get $inp))
  (local.set $y (local.get $out))
  (block $done (loop $rows
    (br_if $done (i32.ge_u (local.get $row) (local.get $N)))
    ;; mean
    ${zeroLanes("sum")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("sum")} ${L.op("add", `(local.get ${L.loc("sum")})`, L.ld("$x"))})`
      ),
      4,
    )
  }
    (local.set $m (f32.div ${laneTotal("sum")} (f32.convert_i32_u (local.get $C))))
    ;; variance and rstd
    ${zeroLanes("sum")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("d")} ${L.op("sub", L.ld("$x"), L.splat("(local.get $m)"))})
(local.set ${L.loc("sum")} ${
          L.op(
            "add",
            `(local.get ${L.loc("sum")})`,
            L.op("mul", `(local.get ${L.loc("d")})`, `(local.get ${L.loc("d")})`),
          )
        })`
      ),
      4,
    )
  }
    (local.set $r (f32.div (f32.const 1) (f32.sqrt (f32.add
      (f32.div ${laneTotal("sum")} (f32.convert_i32_u (local.get $C))) (f32.const 1e-5)))))
    ;; normalise, scale, shift
${
    indent(
      lanesLoop((L) =>
        L.st(
          "$y",
          L.op(
            "add",
            L.op(
              "mul",
              L.op(
                "mul",
                L.op("sub", L.ld("$x"), L.splat("(local.get $m)")),
                L.splat("(local.get $r)"),
              ),
              L.ld("$weight"),
            ),
            L.ld("$bias"),
          ),
        )
      ),
      4,
    )
  }
    (f32.store (i32.add (local.get $mean) (i32.shl (local.get $row) (i32.const 2))) (local.get $m))
    (f32.store (i32.add (local.get $rstd) (i32.shl (local.get $row) (i32.const 2))) (local.get $r))
    (local.set $x (i32.add (local.get $x) (local.get $nbytes)))
    (local.set $y (i32.add (local.get $y) (local.get $nbytes)))
    (local.set $row (i32.add (local.get $row) (i32.const 1)))
    (br $rows))))

;; Layernorm backward (as llm.c), per row with norm = (x - mean) rstd, g = dout * weight:
;;   dbias += dout; dweight += norm * dout;
;;   dinp += (g - mean(g) - norm * mean(g * norm)) * rstd          (all three accumulate)
(func (export "layernorm_backward")
  (param $dinp i32) (param $dweight i32) (param $dbias i32) (param $dout i32) (param $inp i32)
  (param $weight i32) (param $mean i32) (param $rstd i32) (param $N i32) (param $C i32)
  (local $off i32) (local $nbytes i32) (local $row i32) (local $x i32) (local $dy i32) (local $dx i32)
  (local $m f32) (local $r f32) (local $gm f32) (local $gnm f32)
  ${laneLocals("g", "gn", "norm", "gv")}
  (local.set $nbytes (i32.shl (local.get $C) (i32.const 2)))
  (local.set $x (local.get $inp))
  (local.set $dy (local.get $dout))
  (local.set $dx (local.get $dinp))
  (block $done (loop $rows
    (br_if $done (i32.ge_u (local.get $row) (local.get $N)))
    (local.set $m (f32.load (i32.add (local.get $mean) (i32.shl (local.get $row) (i32.const 2)))))
    (local.set $r (f32.load (i32.add (local.get $rstd) (i32.shl (local.get $row) (i32.const 2)))))
    ;; mean(g) and mean(g * norm)
    ${zeroLanes("g", "gn")}
${
    indent(
      lanesLoop((L) => {
        const norm = L.op(
          "mul",
          L.op("sub", L.ld("$x"), L.splat("(local.get $m)")),
          L.splat("(local.get $r)"),
        );
        return `(local.set ${L.loc("gv")} ${L.op("mul", L.ld("$dy"), L.ld("$weight"))})
(local.set ${L.loc("g")} ${L.op("add", `(local.get ${L.loc("g")})`, `(local.get ${L.loc("gv")})`)})
(local.set ${L.loc("gn")} ${
          L.op("add", `(local.get ${L.loc("gn")})`, L.op("mul", `(local.get ${L.loc("gv")})`, norm))
        })`;
      }),
      4,
    )
  }
    (local.set $gm (f32.div ${laneTotal("g")} (f32.convert_i32_u (local.get $C))))
    (local.set $gnm (f32.div ${laneTotal("gn")} (f32.convert_i32_u (local.get $C))))
    ;; accumulate the three gradients
${
    indent(
      lanesLoop((L) => {
        const norm = `(local.get ${L.loc("norm")})`;
        const dy = `(local.get ${L.loc("gv")})`;
        return `(local.set ${L.loc("norm")} ${
          L.op("mul", L.op("sub", L.ld("$x"), L.splat("(local.get $m)")), L.splat("(local.get $r)"))
        })
(local.set ${L.loc("gv")} ${L.ld("$dy")})
${L.st("$dbias", L.op("add", L.ld("$dbias"), dy))}
${L.st("$dweight", L.op("add", L.ld("$dweight"), L.op("mul", norm, dy)))}
${
          L.st(
            "$dx",
            L.op(
              "add",
              L.ld("$dx"),
              L.op(
                "mul",
                L.op(
                  "sub",
                  L.op("sub", L.op("mul", dy, L.ld("$weight")), L.splat("(local.get $gm)")),
                  L.op("mul", norm, L.splat("(local.get $gnm)")),
                ),
                L.splat("(local.get $r)"),
              ),
            ),
          )
        }`;
      }),
      4,
    )
  }
    (local.set $x (i32.add (local.get $x) (local.get $nbytes)))
    (local.set $dy (i32.add (local.get $dy) (local.get $nbytes)))
    (local.set $dx (i32.add (local.get $dx) (local.get $nbytes)))
    (local.set $row (i32.add (local.get $row) (i32.const 1)))
    (br $rows))))

;; Per row n: probs = softmax(logits) (max subtracted); losses[n] = log(sum) - (logit[t] - max)
;; = -log probs[t], with the log in float64. targets: Uint16 [N].
(func (export "softmax_crossentropy")
  (param $losses i32) (param $probs i32) (param $logits i32) (param $targets i32) (param $N i32)
  (param $V i32)
  (local $off i32) (local $nbytes i32) (local $row i32) (local $x i32) (local $p i32)
  (local $max f32) (local $mv v128) (local $inv f32) (local $sum f32) (local $t i32)
  ${laneLocals("sum", "e")}
  (local.set $nbytes (i32.shl (local.get $V) (i32.const 2)))
  (local.set $x (local.get $logits))
  (local.set $p (local.get $probs))
  (block $done (loop $rows
    (br_if $done (i32.ge_u (local.get $row) (local.get $N)))
    ;; row maximum (exact in any order)
    (local.set $mv (f32x4.splat (f32.const -inf)))
    (local.set $max (f32.const -inf))
    (local.set $off (i32.const 0))
    (block $vdone (loop $vloop
      (br_if $vdone (i32.gt_u (i32.add (local.get $off) (i32.const 16)) (local.get $nbytes)))
      (local.set $mv (f32x4.max (local.get $mv) (v128.load (i32.add (local.get $x) (local.get $off)))))
      (local.set $off (i32.add (local.get $off) (i32.const 16)))
      (br $vloop)))
    (block $sdone (loop $sloop
      (br_if $sdone (i32.ge_u (local.get $off) (local.get $nbytes)))
      (local.set $max (f32.max (local.get $max) (f32.load (i32.add (local.get $x) (local.get $off)))))
      (local.set $off (i32.add (local.get $off) (i32.const 4)))
      (br $sloop)))
    (local.set $max (f32.max (f32.max
      (f32.max (local.get $max) (f32x4.extract_lane 0 (local.get $mv)))
      (f32.max (f32x4.extract_lane 1 (local.get $mv)) (f32x4.extract_lane 2 (local.get $mv))))
      (f32x4.extract_lane 3 (local.get $mv))))
    ;; exp and sum
    ${zeroLanes("sum")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("e")} ${L.exp(L.op("sub", L.ld("$x"), L.splat("(local.get $max)")))})
${L.st("$p", `(local.get ${L.loc("e")})`)}
(local.set ${L.loc("sum")} ${
          L.op("add", `(local.get ${L.loc("sum")})`, `(local.get ${L.loc("e")})`)
        })`
      ),
      4,
    )
  }
    (local.set $sum ${laneTotal("sum")})
    (local.set $inv (f32.div (f32.const 1) (local.get $sum)))
${indent(lanesLoop((L) => L.st("$p", L.op("mul", L.ld("$p"), L.splat("(local.get $inv)")))), 4)}
    ;; loss
    (local.set $t (i32.load16_u (i32.add (local.get $targets) (i32.shl (local.get $row) (i32.const 1)))))
    (f32.store (i32.add (local.get $losses) (i32.shl (local.get $row) (i32.const 2)))
      (f32.demote_f64 (f64.sub (call $log_d (f64.promote_f32 (local.get $sum)))
        (f64.promote_f32 (f32.sub
          (f32.load (i32.add (local.get $x) (i32.shl (local.get $t) (i32.const 2))))
          (local.get $max))))))
    (local.set $x (i32.add (local.get $x) (local.get $nbytes)))
    (local.set $p (i32.add (local.get $p) (local.get $nbytes)))
    (local.set $row (i32.add (local.get $row) (i32.const 1)))
    (br $rows))))

;; dlogits[N, V] = (probs - onehot(targets)) * scale (dlogits may alias probs).
(func (export "crossentropy_softmax_backward")
  (param $dlogits i32) (param $probs i32) (param $targets i32) (param $N i32) (param $V i32)
  (param $scale f32)
  (local $off i32) (local $nbytes i32) (local $row i32) (local $p i32) (local $d i32) (local $t i32)
  (local $pt f32)
  (local.set $nbytes (i32.shl (local.get $V) (i32.const 2)))
  (local.set $p (local.get $probs))
  (local.set $d (local.get $dlogits))
  (block $done (loop $rows
    (br_if $done (i32.ge_u (local.get $row) (local.get $N)))
    (local.set $t (i32.shl (i32.load16_u (i32.add (local.get $targets)
      (i32.shl (local.get $row) (i32.const 1)))) (i32.const 2)))
    (local.set $pt (f32.load (i32.add (local.get $p) (local.get $t))))
${indent(lanesLoop((L) => L.st("$d", L.op("mul", L.ld("$p"), L.splat("(local.get $scale)")))), 4)}
    (f32.store (i32.add (local.get $d) (local.get $t))
      (f32.mul (f32.sub (local.get $pt) (f32.const 1)) (local.get $scale)))
    (local.set $p (i32.add (local.get $p) (local.get $nbytes)))
    (local.set $d (i32.add (local.get $d) (local.get $nbytes)))
    (local.set $row (i32.add (local.get $row) (i32.const 1)))
    (br $rows))))`;
}

/**
 * Causal self-attention forward and backward. Loops run over (b, t, h) and only over keys
 * j <= t; a probability row is written whole (zeros after t).
 */
function attentionExports(): string {
  // Shared prologue: strides in bytes. rs = 3C floats per qkv row; hs = C / H.
  const strides = `(local.set $hs (i32.div_u (local.get $C) (local.get $H)))
(local.set $hsb (i32.shl (local.get $hs) (i32.const 2)))
(local.set $cb (i32.shl (local.get $C) (i32.const 2)))
(local.set $rs (i32.mul (local.get $cb) (i32.const 3)))
(local.set $scale (f32.div (f32.const 1) (f32.sqrt (f32.convert_i32_u (local.get $hs)))))`;
  const locals = `(local $b i32) (local $t i32) (local $h i32) (local $j i32) (local $hs i32)
(local $hsb i32) (local $cb i32) (local $rs i32) (local $scale f32) (local $off i32)
(local $nbytes i32) (local $base i32) (local $q i32) (local $prow i32) (local $o i32) (local $kv i32)
(local $s f32) (local $max f32)`;
  // Sets $base (qkv row of (b, 0)), $q (head h of row (b, t)), $prow (probs[b, h, t, :]),
  // $nbytes ((t + 1) floats of that row).
  const rowPointers = () =>
    `(local.set $base (i32.add (local.get $qkv) (i32.mul (i32.mul (local.get $b) (local.get $T)) (local.get $rs))))
(local.set $q (i32.add (i32.add (local.get $base) (i32.mul (local.get $t) (local.get $rs)))
  (i32.mul (local.get $h) (local.get $hsb))))
(local.set $prow (i32.add (local.get $probs) (i32.shl
  (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $H)) (local.get $h))
    (local.get $T)) (local.get $t)) (local.get $T)) (i32.const 2))))
(local.set $nbytes (i32.shl (i32.add (local.get $t) (i32.const 1)) (i32.const 2)))`;
  // for b in [0, B), t in [0, T), h in [0, H): body
  const loops = (body: string) =>
    `(local.set $b (i32.const 0))
(block $bdone (loop $bl
  (br_if $bdone (i32.ge_u (local.get $b) (local.get $B)))
  (local.set $t (i32.const 0))
  (block $tdone (loop $tl
    (br_if $tdone (i32.ge_u (local.get $t) (local.get $T)))
    (local.set $h (i32.const 0))
    (block $hdone (loop $hl
      (br_if $hdone (i32.ge_u (local.get $h) (local.get $H)))
${indent(body, 6)}
      (local.set $h (i32.add (local.get $h) (i32.const 1)))
      (br $hl)))
    (local.set $t (i32.add (local.get $t) (i32.const 1)))
    (br $tl)))
  (local.set $b (i32.add (local.get $b) (i32.const 1)))
  (br $bl)))`;
  // for j in [0, t]: body, with $kv = byte offset of row (b, j), head h, from the start of qkv
  // (or dqkv): k_j is at qkv + kv + 4C, v_j at qkv + kv + 8C.
  const keys = (body: string) =>
    `(local.set $j (i32.const 0))
(local.set $kv (i32.add (i32.sub (local.get $base) (local.get $qkv))
  (i32.mul (local.get $h) (local.get $hsb))))
(loop $jl
${indent(body, 2)}
  (local.set $kv (i32.add (local.get $kv) (local.get $rs)))
  (local.set $j (i32.add (local.get $j) (i32.const 1)))
  (br_if $jl (i32.le_u (local.get $j) (local.get $t))))`;
  const pj = `(f32.load (i32.add (local.get $prow) (i32.shl (local.get $j) (i32.const 2))))`;

  const forward = loops(`${rowPointers()}
;; scores s_j = q . k_j / sqrt(hs) for j <= t, and their maximum
(local.set $max (f32.const -inf))
${
    keys(
      `(local.set $s (f32.mul (call $dot (local.get $q)
  (i32.add (i32.add (local.get $qkv) (local.get $kv)) (local.get $cb)) (local.get $hs)) (local.get $scale)))
(f32.store (i32.add (local.get $prow) (i32.shl (local.get $j) (i32.const 2))) (local.get $s))
(local.set $max (f32.max (local.get $max) (local.get $s)))`,
    )
  }
;; softmax over j <= t; zeros after
${zeroLanes("sum")}
${
    lanesLoop((L) =>
      `(local.set ${L.loc("e")} ${L.exp(L.op("sub", L.ld("$prow"), L.splat("(local.get $max)")))})
${L.st("$prow", `(local.get ${L.loc("e")})`)}
(local.set ${L.loc("sum")} ${
        L.op("add", `(local.get ${L.loc("sum")})`, `(local.get ${L.loc("e")})`)
      })`
    )
  }
(local.set $s (f32.div (f32.const 1) ${laneTotal("sum")}))
${lanesLoop((L) => L.st("$prow", L.op("mul", L.ld("$prow"), L.splat("(local.get $s)"))))}
(memory.fill (i32.add (local.get $prow) (local.get $nbytes)) (i32.const 0)
  (i32.sub (i32.shl (local.get $T) (i32.const 2)) (local.get $nbytes)))
;; out[b, t, head h] = sum_j p_j v_j
(local.set $o (i32.add (local.get $out) (i32.add
  (i32.mul (i32.add (i32.mul (local.get $b) (local.get $T)) (local.get $t)) (local.get $cb))
  (i32.mul (local.get $h) (local.get $hsb)))))
(memory.fill (local.get $o) (i32.const 0) (local.get $hsb))
${
    keys(
      `(call $axpy (local.get $o) (i32.add (i32.add (local.get $qkv) (local.get $kv)) (i32.shl (local.get $cb) (i32.const 1)))
  ${pj} (local.get $hs))`,
    )
  }`);

  const backward = loops(`${rowPointers()}
(local.set $o (i32.add (local.get $dout) (i32.add
  (i32.mul (i32.add (i32.mul (local.get $b) (local.get $T)) (local.get $t)) (local.get $cb))
  (i32.mul (local.get $h) (local.get $hsb)))))
;; dprobs_j = dout_t . v_j; dv_j += p_j dout_t
${
    keys(
      `(f32.store (i32.add (local.get $dprobs) (i32.shl (local.get $j) (i32.const 2)))
  (call $dot (local.get $o) (i32.add (i32.add (local.get $qkv) (local.get $kv)) (i32.shl (local.get $cb) (i32.const 1)))
    (local.get $hs)))
(call $axpy (i32.add (i32.add (local.get $dqkv) (local.get $kv)) (i32.shl (local.get $cb) (i32.const 1)))
  (local.get $o) ${pj} (local.get $hs))`,
    )
  }
;; softmax backward: dpre_j = p_j (dprobs_j - sum_k p_k dprobs_k), times 1/sqrt(hs)
${zeroLanes("sum")}
${
    lanesLoop((L) =>
      `(local.set ${L.loc("sum")} ${
        L.op("add", `(local.get ${L.loc("sum")})`, L.op("mul", L.ld("$prow"), L.ld("$dprobs")))
      })`
    )
  }
(local.set $s ${laneTotal("sum")})
${
    lanesLoop((L) =>
      L.st(
        "$dprobs",
        L.op(
          "mul",
          L.op("mul", L.ld("$prow"), L.op("sub", L.ld("$dprobs"), L.splat("(local.get $s)"))),
          L.splat("(local.get $scale)"),
        ),
      )
    )
  }
;; dq_t += dpre_j k_j; dk_j += dpre_j q_t
${
    keys(
      `(local.set $s (f32.load (i32.add (local.get $dprobs) (i32.shl (local.get $j) (i32.const 2)))))
(call $axpy (i32.add (local.get $dqkv) (i32.sub (local.get $q) (local.get $qkv)))
  (i32.add (i32.add (local.get $qkv) (local.get $kv)) (local.get $cb)) (local.get $s) (local.get $hs))
(call $axpy (i32.add (i32.add (local.get $dqkv) (local.get $kv)) (local.get $cb))
  (local.get $q) (local.get $s) (local.get $hs))`,
    )
  }`);

  return `;; Causal attention forward. qkv [B, T, 3C] (q | k | v, head h at columns h*hs.. of each),
;; probs [B, H, T, T] (softmax of q.k / sqrt(hs) over j <= t, zeros after), out [B, T, C].
(func (export "attention_forward")
  (param $out i32) (param $probs i32) (param $qkv i32) (param $B i32) (param $T i32) (param $C i32)
  (param $H i32)
  ${locals}
  ${laneLocals("sum", "e")}
${indent(strides, 2)}
${indent(forward, 2)})

;; Causal attention backward: dqkv [B, T, 3C] is overwritten; dprobs is a scratch of T floats.
(func (export "attention_backward")
  (param $dqkv i32) (param $dprobs i32) (param $dout i32) (param $qkv i32) (param $probs i32)
  (param $B i32) (param $T i32) (param $C i32) (param $H i32)
  ${locals}
  ${laneLocals("sum")}
${indent(strides, 2)}
  (memory.fill (local.get $dqkv) (i32.const 0)
    (i32.mul (i32.mul (local.get $B) (local.get $T)) (local.get $rs)))
${indent(backward, 2)})`;
}

// ---------------------------------------------------------------------------------------------
// The whole module.

/** Returns the WAT text of the kernel module for `tier`. */
export function generateWat(tier: WasmTier): string {
  const parts: string[] = [];
  parts.push(
    `;; BareGPT WebAssembly kernels, tier "${tier}". GENERATED by scripts/build_kernels.ts: do not edit.`,
    `;; All pointers are byte offsets into the imported memory; float32, row-major.`,
    `(module`,
    `(import "env" "memory" (memory 1 65536 shared))`,
    "",
  );
  for (const r of [TILE[tier].rows, 1]) {
    for (const v of [TILE[tier].vecs, 1]) parts.push(gemmTile(tier, r, v), "");
  }
  parts.push(gemmColumn(), "", gemmDriver(tier), "");
  for (const r of [2, 1]) for (const c of [4, 1]) parts.push(ntTile(tier, r, c), "");
  parts.push(ntDriver(), "", matmulExports(), "");
  parts.push(mathHelpers(), "", attentionExports(), "", rowExports(), "", elementwiseExports(), "");
  parts.push(`)`, "");
  return parts.join("\n");
}

/** wabt features needed by the kernels. */
const FEATURES = { simd: true, relaxed_simd: true, threads: true, bulk_memory: true };

/** Assembles WAT text to a binary with wabt (no names section: deterministic, small). */
async function assemble(wat: string, name: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const module = wabt.parseWat(name, wat, FEATURES);
  try {
    // wabt's typings omit validate's feature argument; the features must be passed again here.
    (module as unknown as { validate(features: object): void }).validate(FEATURES);
    const { buffer } = module.toBinary({ log: false, write_debug_names: false });
    return new Uint8Array(buffer);
  } finally {
    module.destroy();
  }
}

/** Generates and assembles both tiers in memory. */
export async function buildKernels(): Promise<BuiltKernels> {
  const relaxedWat = generateWat("relaxed");
  const simdWat = generateWat("simd");
  const relaxedBytes = await assemble(relaxedWat, "kernels_relaxed.wat");
  const simdBytes = await assemble(simdWat, "kernels_simd.wat");
  return { relaxedWat, simdWat, relaxedBytes, simdBytes };
}

/** Base64 of bytes, using only web APIs. */
export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** The text of `lib/kernels/wasm_bytes.ts` for a build. */
export function wasmBytesModule(built: BuiltKernels): string {
  const wrap = (b64: string) => {
    const lines: string[] = [];
    for (let i = 0; i < b64.length; i += 96) lines.push(`  "${b64.slice(i, i + 96)}"`);
    return lines.join(" +\n");
  };
  return `// GENERATED by scripts/build_kernels.ts from the WAT in this folder: do not edit.
// The two kernel modules as base64, so that they load the same way from a checkout, an https
// import or a browser bundle.

/** The "relaxed" tier (relaxed SIMD fused multiply-add), ${built.relaxedBytes.length} bytes. */
export const RELAXED_WASM_BASE64: string =
${wrap(toBase64(built.relaxedBytes))};

/** The "simd" tier (SIMD128 only), ${built.simdBytes.length} bytes. */
export const SIMD_WASM_BASE64: string =
${wrap(toBase64(built.simdBytes))};
`;
}

if (import.meta.main) {
  const built = await buildKernels();
  const dir = new URL("../lib/kernels/", import.meta.url);
  await Deno.writeTextFile(new URL("kernels_relaxed.wat", dir), built.relaxedWat);
  await Deno.writeTextFile(new URL("kernels_simd.wat", dir), built.simdWat);
  await Deno.writeTextFile(new URL("wasm_bytes.ts", dir), wasmBytesModule(built));
  console.log(
    `wrote lib/kernels/{kernels_relaxed.wat, kernels_simd.wat, wasm_bytes.ts}: ` +
      `${built.relaxedBytes.length} + ${built.simdBytes.length} bytes`,
  );
}
