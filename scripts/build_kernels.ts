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
 * (exp, GELU, softmax, layernorm, AdamW) give the same bits whichever tier runs them. Attention
 * runs its products on the matmul tiles, so its bits differ between tiers (each is deterministic).
 *
 * Layout of this file: matmul register tiles and their blocked driver; the few-rows matmul
 * (sampling); the dot-product ("NT") tiles; the element-wise machinery (`Lanes`), math helpers
 * (exp, log) and the element-wise / per-row exports; causal attention (its driver over the
 * triangle, helpers, exports); the whole module and the build.
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
/**
 * Width of the single-row tiles (floats): 8 independent accumulators, so that one row is not
 * bound by the latency of its chains of multiply-adds.
 */
const WIDE = 32;
/** Reduction-dimension block: a B panel of KC x (4*vecs) floats stays in L1. */
const KC = 256;
/**
 * Reduction block of the transposed-left form (`matmul_backward_weight`): both operands are read
 * across rows (strides 4K and 4N bytes, 4 KiB for the model's widths, so the lines of a panel
 * share few cache sets); a shorter panel keeps more of it cached (measured: ~3% faster than 256).
 */
const KC_TN = 128;
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
    `  ${R > 1 ? vecs.map((v) => `(local $b${v} v128)`).join(" ") : ""} (local $x v128)`,
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
  // Inner loop over the reduction dimension. One row uses each B vector once: loaded in place
  // (a wide 1-row tile would run out of registers holding them).
  const body: string[] = [];
  const bv = (v: number) =>
    R === 1 ? `(v128.load offset=${16 * v} (local.get $pb))` : `(local.get $b${v})`;
  if (R > 1) {
    for (const v of vecs) {
      body.push(`(local.set $b${v} (v128.load offset=${16 * v} (local.get $pb)))`);
    }
  }
  for (const r of rows) {
    body.push(`(local.set $x (v128.load32_splat (local.get $pa${r})))`);
    for (const v of vecs) {
      body.push(
        `(local.set $acc${r}_${v} ${
          madd(tier, "(local.get $x)", bv(v), `(local.get $acc${r}_${v})`)
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
 *         for i in [i0, iR) step R    register tile (iR: the block's rows less MC % R)
 *       then 4-wide tiles, then scalar columns for N % 4 (all rows of the block);
 *       then the last (iend - i0) % R rows one at a time, with WIDE-wide single-row tiles.
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
  // Sweeps the rows [i0, iR) of the current block with R-row tiles of width `w`.
  const rowsSweep = (w: number) =>
    `(local.set $i (local.get $i0))
(block $rdone (loop $rows
  (br_if $rdone (i32.ge_u (local.get $i) (local.get $iR)))
${indent(call(`$gemm_tile_${R}x${w}`), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const ${R})))
  (br $rows)))`;
  // Sweeps the columns [j, N - N % 4) of row $i with single-row tiles of width `w`.
  const colsSweep = (w: number) =>
    `(block $done${w} (loop $cols${w}
  (br_if $done${w} (i32.gt_u (i32.add (local.get $j) (i32.const ${w})) (local.get $N)))
${indent(call(`$gemm_tile_1x${w}`), 2)}
  (local.set $j (i32.add (local.get $j) (i32.const ${w})))
  (br $cols${w})))`;
  return `;; C[M, N] (+)= A(M x S) . B[S, N]; see gemmDriver in scripts/build_kernels.ts.
;; accumulate = 0: the first reduction block starts from the bias (bias != 0) or zero.
(func $gemm
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32)
  (param $M i32) (param $S i32) (param $N i32) (param $ars i32) (param $ass i32)
  (param $accumulate i32) (param $kc i32)
  (local $bs i32) (local $cs i32) (local $s0 i32) (local $kn i32) (local $mode i32)
  (local $i0 i32) (local $iend i32) (local $iR i32) (local $i i32) (local $j i32) (local $ablk i32)
  (local $bblk i32)
  (local.set $bs (i32.shl (local.get $N) (i32.const 2)))
  (local.set $cs (local.get $bs))
  (local.set $s0 (i32.const 0))
  (loop $sblocks
    ;; kn = min(kc, S - s0); the first block initialises C, the others accumulate into it
    (local.set $kn (i32.sub (local.get $S) (local.get $s0)))
    (if (i32.gt_u (local.get $kn) (local.get $kc)) (then (local.set $kn (local.get $kc))))
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
      ;; rows [i0, iR) by R-row tiles, the rest [iR, iend) by single rows
      (local.set $iR (i32.sub (local.get $iend)
        (i32.rem_u (i32.sub (local.get $iend) (local.get $i0)) (i32.const ${R}))))
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
      ;; the single rows: ${WIDE}-wide tiles (independent chains), then ${W}, then 4
      (local.set $i (local.get $iR))
      (block $r1done (loop $rows1
        (br_if $r1done (i32.ge_u (local.get $i) (local.get $iend)))
        (local.set $j (i32.const 0))
${indent(colsSweep(WIDE), 8)}
${indent(colsSweep(W), 8)}
${indent(colsSweep(4), 8)}
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $rows1)))
      (local.set $i0 (local.get $iend))
      (br $iblocks)))
    (local.set $s0 (i32.add (local.get $s0) (local.get $kn)))
    (br_if $sblocks (i32.lt_u (local.get $s0) (local.get $S))))
)`;
}

// ---------------------------------------------------------------------------------------------
// Matmul with few rows (M <= 3: sampling feeds one token at a time). Each weight is used only M
// times, so the product is bound by reading B once: B is streamed row by row, G rows at a time
// (G sequential streams the hardware prefetchers follow), into C rows that stay in L1:
//
//   C[m, :] = bias (or 0);  for k in [0, S) step G:  C[m, :] += sum_g A[m, k+g] B[k+g, :]
//
// Every C vector is an independent chain, so the multiply-adds are not latency-bound (the 1-row
// tiles of `gemm` are: one chain per accumulator over all of S). The columns are processed in
// chunks of SMALL_NC floats, so that the C rows of a chunk stay in L1 for any N.

/** Rows of B per pass of the few-rows kernel, by M: M * G broadcast values stay in registers. */
const SMALL_G: Record<number, number> = { 1: 8, 2: 4, 3: 3 };
/** Column chunk of the few-rows kernel (floats): 3 C rows of it are 12 KiB. */
const SMALL_NC = 1024;

/** C[M, nc] (+)= A[M, S] . B[S, nc] for one column chunk; M rows, G rows of B per pass. */
function smallGemm(tier: WasmTier, M: number): string {
  const G = SMALL_G[M];
  const rows = range(M);
  /** One pass over the chunk with g rows of B (g = G, then 1 for the last S % G). */
  const pass = (g: number) => {
    const gs = range(g);
    const splats = rows.flatMap((m) =>
      gs.map((q) =>
        `(local.set $x${m}_${q} (v128.load32_splat (i32.add (local.get $pa${m}) (i32.const ${
          4 * q
        }))))`
      )
    );
    const ptrs = gs.map((q) =>
      q === 0
        ? `(local.set $pb0 (local.get $pb))`
        : `(local.set $pb${q} (i32.add (local.get $pb${q - 1}) (local.get $bs)))`
    );
    const vec: string[] = [];
    for (const m of rows) {
      vec.push(`(local.set $acc${m} (v128.load (i32.add (local.get $pc${m}) (local.get $j))))`);
    }
    for (const q of gs) {
      vec.push(`(local.set $w (v128.load (i32.add (local.get $pb${q}) (local.get $j))))`);
      for (const m of rows) {
        vec.push(
          `(local.set $acc${m} ${
            madd(tier, `(local.get $x${m}_${q})`, "(local.get $w)", `(local.get $acc${m})`)
          })`,
        );
      }
    }
    for (const m of rows) {
      vec.push(`(v128.store (i32.add (local.get $pc${m}) (local.get $j)) (local.get $acc${m}))`);
    }
    // The last nc % 4 columns: scalar, mul then add.
    const sca: string[] = [];
    for (const m of rows) {
      sca.push(`(local.set $s${m} (f32.load (i32.add (local.get $pc${m}) (local.get $j))))`);
    }
    for (const q of gs) {
      for (const m of rows) {
        sca.push(
          `(local.set $s${m} (f32.add (local.get $s${m}) (f32.mul (f32x4.extract_lane 0 (local.get $x${m}_${q}))
  (f32.load (i32.add (local.get $pb${q}) (local.get $j))))))`,
        );
      }
    }
    for (const m of rows) {
      sca.push(`(f32.store (i32.add (local.get $pc${m}) (local.get $j)) (local.get $s${m}))`);
    }
    const advance = rows.map((m) =>
      `(local.set $pa${m} (i32.add (local.get $pa${m}) (i32.const ${4 * g})))`
    );
    return `;; passes of ${g} row(s) of B
(block $kdone${g} (loop $k${g}
  (br_if $kdone${g} (i32.gt_u (i32.add (local.get $k) (i32.const ${g})) (local.get $S)))
${indent([...splats, ...ptrs].join("\n"), 2)}
  (local.set $j (i32.const 0))
  (block $vdone (loop $vloop
    (br_if $vdone (i32.ge_u (local.get $j) (local.get $nv)))
${indent(vec.join("\n"), 4)}
    (local.set $j (i32.add (local.get $j) (i32.const 16)))
    (br $vloop)))
  (block $sdone (loop $sloop
    (br_if $sdone (i32.ge_u (local.get $j) (local.get $nb)))
${indent(sca.join("\n"), 4)}
    (local.set $j (i32.add (local.get $j) (i32.const 4)))
    (br $sloop)))
${indent(advance.join("\n"), 2)}
  (local.set $pb (i32.add (local.get $pb) (i32.mul (local.get $bs) (i32.const ${g}))))
  (local.set $k (i32.add (local.get $k) (i32.const ${g})))
  (br $k${g})))`;
  };
  const init = rows.map((m) =>
    `(if (local.get $bias)
  (then (memory.copy (local.get $pc${m}) (local.get $bias) (local.get $nb)))
  (else (memory.fill (local.get $pc${m}) (i32.const 0) (local.get $nb))))`
  );
  return `;; C[${M}, nc] = A[${M}, S] . B[S, nc] (+ bias) for one column chunk: B streamed ${G} rows
;; at a time (see smallGemm in scripts/build_kernels.ts). ars: row stride of A, bs = cs: row
;; stride of B and C (bytes).
(func $gemm_small_${M}
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32) (param $S i32) (param $nc i32)
  (param $ars i32) (param $bs i32)
  (local $nb i32) (local $nv i32) (local $k i32) (local $j i32) (local $pb i32) (local $w v128)
  ${
    rows.map((m) =>
      `(local $pa${m} i32) (local $pc${m} i32) (local $acc${m} v128) (local $s${m} f32)`
    ).join(" ")
  }
  ${range(G).map((q) => `(local $pb${q} i32)`).join(" ")}
  ${rows.flatMap((m) => range(G).map((q) => `(local $x${m}_${q} v128)`)).join(" ")}
  ;; nb: bytes of a chunk row; nv: those in whole vectors
  (local.set $nb (i32.shl (local.get $nc) (i32.const 2)))
  (local.set $nv (i32.and (local.get $nb) (i32.const -16)))
  (local.set $pa0 (local.get $a)) (local.set $pc0 (local.get $c))
${
    rows.slice(1).map((m) =>
      `  (local.set $pa${m} (i32.add (local.get $pa${m - 1}) (local.get $ars)))` +
      ` (local.set $pc${m} (i32.add (local.get $pc${m - 1}) (local.get $bs)))`
    ).join("\n")
  }
  ;; C = bias or 0
${indent(init.join("\n"), 2)}
  (local.set $pb (local.get $b))
${indent(pass(G), 2)}
${G > 1 ? indent(pass(1), 2) : ""})`;
}

/**
 * The few-rows driver: C[M, N] = A[M, S] . B[S, N] (+ bias) for any M, three rows at a time,
 * column chunk by column chunk. Used by `matmul` below the row count of one register tile.
 */
function smallDriver(): string {
  return `;; C[M, N] = A[M, S] . B[S, N] (+ bias), rows three at a time (see smallGemm).
(func $gemm_small
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32) (param $M i32) (param $S i32)
  (param $N i32)
  (local $i i32) (local $m i32) (local $j0 i32) (local $nc i32) (local $ars i32) (local $bs i32)
  (local $pa i32) (local $pc i32) (local $off i32)
  (local.set $ars (i32.shl (local.get $S) (i32.const 2)))
  (local.set $bs (i32.shl (local.get $N) (i32.const 2)))
  (block $idone (loop $rows
    (br_if $idone (i32.ge_u (local.get $i) (local.get $M)))
    (local.set $m (i32.sub (local.get $M) (local.get $i)))
    (if (i32.gt_u (local.get $m) (i32.const 3)) (then (local.set $m (i32.const 3))))
    (local.set $pa (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $ars))))
    (local.set $pc (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $bs))))
    (local.set $j0 (i32.const 0))
    (block $jdone (loop $chunks
      (br_if $jdone (i32.ge_u (local.get $j0) (local.get $N)))
      (local.set $nc (i32.sub (local.get $N) (local.get $j0)))
      (if (i32.gt_u (local.get $nc) (i32.const ${SMALL_NC})) (then (local.set $nc (i32.const ${SMALL_NC}))))
      (local.set $off (i32.shl (local.get $j0) (i32.const 2)))
      (if (i32.eq (local.get $m) (i32.const 3))
        (then (call $gemm_small_3 (i32.add (local.get $pc) (local.get $off)) (local.get $pa)
          (i32.add (local.get $b) (local.get $off))
          (select (i32.add (local.get $bias) (local.get $off)) (i32.const 0) (local.get $bias))
          (local.get $S) (local.get $nc) (local.get $ars) (local.get $bs)))
        (else (if (i32.eq (local.get $m) (i32.const 2))
          (then (call $gemm_small_2 (i32.add (local.get $pc) (local.get $off)) (local.get $pa)
            (i32.add (local.get $b) (local.get $off))
            (select (i32.add (local.get $bias) (local.get $off)) (i32.const 0) (local.get $bias))
            (local.get $S) (local.get $nc) (local.get $ars) (local.get $bs)))
          (else (call $gemm_small_1 (i32.add (local.get $pc) (local.get $off)) (local.get $pa)
            (i32.add (local.get $b) (local.get $off))
            (select (i32.add (local.get $bias) (local.get $off)) (i32.const 0) (local.get $bias))
            (local.get $S) (local.get $nc) (local.get $ars) (local.get $bs))))))
      (local.set $j0 (i32.add (local.get $j0) (local.get $nc)))
      (br $chunks)))
    (local.set $i (i32.add (local.get $i) (local.get $m)))
    (br $rows)))
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

/**
 * NT tile: C[R, Cn] = A[R rows, S] . B[Cn rows, S]^T with Cn = 4 (vector store) or 1. U = 2 keeps
 * two partial sums per output (alternate chunks of 4 along S, added at the end): single rows
 * then have 2 Cn independent chains of multiply-adds instead of Cn, which hides their latency.
 */
function ntTile(tier: WasmTier, R: number, Cn: number, U = 1): string {
  const rows = range(R);
  const cols = range(Cn);
  const name = `$nt_tile_${R}x${Cn}${U > 1 ? `u${U}` : ""}`;
  // acc r_c (U = 1), or U partial sums r_c_u (summed in order u = 0, 1, .. at the end)
  const acc = (r: number, c: number, u: number) => `$acc${r}_${c}${U > 1 ? `_${u}` : ""}`;
  const accs = rows.flatMap((r) => cols.flatMap((c) => range(U).map((u) => acc(r, c, u))));
  const lines: string[] = [];
  lines.push(
    `;; C[${R}, ${Cn}] = A[${R}, S] . B[${Cn}, S]^T (see ntTile in scripts/build_kernels.ts)` +
      (U > 1 ? `, ${U} partial sums per output` : ""),
    `(func ${name}`,
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
  // Vector loop over S in chunks of 4U floats (partial sum u takes the u-th 4 of each chunk): all
  // pointers advance by 16U bytes. With U > 1, a last chunk of 4 goes to partial sum 0.
  const step = (us: number[]) => {
    const body: string[] = [];
    for (const u of us) {
      for (const r of rows) {
        body.push(`(local.set $x${r} (v128.load offset=${16 * u} (local.get $pa${r})))`);
      }
      for (const c of cols) {
        body.push(`(local.set $y (v128.load offset=${16 * u} (local.get $pb${c})))`);
        for (const r of rows) {
          body.push(
            `(local.set ${acc(r, c, u)} ${
              madd(tier, `(local.get $x${r})`, "(local.get $y)", `(local.get ${acc(r, c, u)})`)
            })`,
          );
        }
      }
    }
    const n = 16 * us.length;
    for (const r of rows) {
      body.push(`(local.set $pa${r} (i32.add (local.get $pa${r}) (i32.const ${n})))`);
    }
    for (const c of cols) {
      body.push(`(local.set $pb${c} (i32.add (local.get $pb${c}) (i32.const ${n})))`);
    }
    return body.join("\n");
  };
  const shift = 2 + Math.log2(U);
  lines.push(
    `  (local.set $s (i32.shr_u (local.get $S) (i32.const ${shift})))`,
    `  (if (local.get $s) (then (loop $k`,
    indent(step(range(U)), 4),
    `    (br_if $k (local.tee $s (i32.sub (local.get $s) (i32.const 1)))))))`,
  );
  if (U > 1) {
    if (U !== 2) throw new Error("ntTile: U must be 1 or 2");
    lines.push(
      `  (if (i32.and (local.get $S) (i32.const 4)) (then`,
      indent(step([0]), 4),
      `  ))`,
    );
    for (const r of rows) {
      for (const c of cols) {
        lines.push(
          `  (local.set ${acc(r, c, 0)} (f32x4.add (local.get ${acc(r, c, 0)}) (local.get ${
            acc(r, c, 1)
          })))`,
        );
      }
    }
  }
  // Reduce, add the scalar tail S % 4 (same order every call), store: per group of 4 columns
  // (or the single column of Cn = 1).
  const tailLen = `(i32.and (local.get $S) (i32.const 3))`;
  const groups = Cn === 1 ? [[0]] : range(Cn / 4).map((g) => range(4).map((l) => 4 * g + l));
  for (const r of rows) {
    for (const [gi, group] of groups.entries()) {
      if (Cn === 1) {
        lines.push(
          `  (local.set $res (f32x4.add (local.get ${
            acc(r, 0, 0)
          }) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get ${
            acc(r, 0, 0)
          }) (local.get ${acc(r, 0, 0)}))))`,
          `  (local.set $res (f32x4.add (local.get $res) (i8x16.shuffle 4 5 6 7 0 1 2 3 4 5 6 7 0 1 2 3 (local.get $res) (local.get $res))))`,
        );
      } else {
        lines.push(
          `  (local.set $res ${
            hsum4(
              ...group.map((c) => `(local.get ${acc(r, c, 0)})`) as [
                string,
                string,
                string,
                string,
              ],
            )
          })`,
        );
      }
      // Tail: for each column c, t = sum over the last S % 4 products, added to lane c % 4.
      for (const c of group) {
        const lane = c % 4;
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
          `    (local.set $res (f32x4.replace_lane ${lane} (local.get $res) (f32.add (f32x4.extract_lane ${lane} (local.get $res)) (local.get $t))))))`,
        );
      }
      const dst = `(i32.add (local.get $c) (i32.mul (i32.const ${r}) (local.get $cs)))`;
      lines.push(
        Cn === 1
          ? `  (f32.store ${dst} (f32x4.extract_lane 0 (local.get $res)))`
          : `  (v128.store offset=${16 * gi} ${dst} (local.get $res))`,
      );
    }
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
${indent(call(`$nt_tile_1x${cn}u2`), 2)}))`;
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
function matmulExports(tier: WasmTier): string {
  return `;; out[M, N] = inp[M, K] . w[K, N] + bias[N] (bias = 0: none). Overwrites out.
(func (export "matmul")
  (param $out i32) (param $inp i32) (param $w i32) (param $bias i32)
  (param $M i32) (param $K i32) (param $N i32)
  (local $m0 i32)
  ;; the first M - M % ${TILE[tier].rows} rows by register tiles, the rest by the few-rows kernel
  (local.set $m0 (i32.sub (local.get $M) (i32.rem_u (local.get $M) (i32.const ${TILE[tier].rows}))))
  (if (local.get $m0) (then
    (call $gemm (local.get $out) (local.get $inp) (local.get $w) (local.get $bias)
      (local.get $m0) (local.get $K) (local.get $N)
      (i32.shl (local.get $K) (i32.const 2)) (i32.const 4) (i32.const 0) (i32.const ${KC}))))
  (if (i32.lt_u (local.get $m0) (local.get $M)) (then
    (call $gemm_small
      (i32.add (local.get $out) (i32.mul (local.get $m0) (i32.shl (local.get $N) (i32.const 2))))
      (i32.add (local.get $inp) (i32.mul (local.get $m0) (i32.shl (local.get $K) (i32.const 2))))
      (local.get $w) (local.get $bias) (i32.sub (local.get $M) (local.get $m0)) (local.get $K)
      (local.get $N)))))

;; dw[K, N] += inp[M, K]^T . dout[M, N]: the "rows" of this product are the K columns of inp.
(func (export "matmul_backward_weight")
  (param $dw i32) (param $inp i32) (param $dout i32) (param $M i32) (param $K i32) (param $N i32)
  (call $gemm (local.get $dw) (local.get $inp) (local.get $dout) (i32.const 0)
    (local.get $K) (local.get $M) (local.get $N)
    (i32.const 4) (i32.shl (local.get $K) (i32.const 2)) (i32.const 1) (i32.const ${KC_TN})))

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
function expLocals(): string {
  const names = ["x", "t", "n", "r", "bias", ...EXP_CONSTS.map(([n]) => n)];
  return names.map((n) => `(local $ex_${n} v128)`).join(" ");
}

/** Sets the constant locals of an inlined exp (once, before the loops). */
function expInit(): string {
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
  /** Accurate exp of every lane, inline (see `expInline`; the function needs expLocals / expInit). */
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

/** Math helpers: horizontal sum, log (f64). (exp is inlined where used: see expInline.) */
function mathHelpers(): string {
  // log series in f2 = f^2, Horner from the f^14 term down to 1.
  const logSeries = [1 / 13, 1 / 11, 1 / 9, 1 / 7, 1 / 5, 1 / 3, 1].reduce(
    (acc, c) => `(f64.add (f64.mul ${acc} (local.get $f2)) (f64.const ${num(c)}))`,
    `(f64.const ${1 / 15})`,
  );
  return `;; (v0 + v2) + (v1 + v3): the fixed horizontal sum order of every reduction.
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
      ${logSeries})))`;
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
  ${expLocals()}
${indent(expInit(), 2)}
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
  ${expLocals()}
${indent(expInit(), 2)}
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
  ${expLocals()}
${indent(expInit(), 2)}
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

// ---------------------------------------------------------------------------------------------
// Causal self-attention. Per (batch b, head h) the work is five small matrix products over the
// T x T triangle, run on the matmul register tiles above by `gemm_causal`, which skips the tiles
// the causal mask makes zero:
//
//   forward:  S = Q K^T (lower)   P = softmax(S / sqrt(hs))   O = P V (prefix)
//   backward: dV = P^T dO (suffix)   dP = dO V^T (lower)   dS = P (dP - rowsum(P dP)) / sqrt(hs)
//             dQ = dS K (prefix)   dK = dS^T Q (suffix)
//
// Q, K, V, dO of a head are [T, hs] slices of the qkv / dout rows (row strides 3C and C floats).
// The "lower" products read the right operand transposed: K^T and V^T [hs, T] are copied first
// (4 x 4 shuffles), K^T into the out rows of the batch (written only after every head's P), V^T
// into the backward's scratch after dS [T, T]: T (T + hs) floats. `attention_rows` (one
// sequence, a few query rows: the KV cache) has no scratch: its scores use the dot-product tiles
// of matmul_nt. FLOPs: each product is B H T (T + 1) / 2 hs multiply-adds; the tiles compute up
// to a tile past the diagonal (about +10% for T = 128).

/** An i8x16.shuffle picking four f32 lanes: 0..3 are the lanes of `x`, 4..7 those of `y`. */
function shuffle4(lanes: number[], x: string, y: string): string {
  const bytes = lanes.flatMap((l) => [0, 1, 2, 3].map((b) => 4 * l + b));
  return `(i8x16.shuffle ${bytes.join(" ")} ${x} ${y})`;
}

/**
 * The driver of the causal products of one (batch, head): the `gemm` register tiles over row
 * tiles of R rows (then single rows) from i = 0, each over the range the causal mask leaves.
 * lim = off + i + r is one past the diagonal of the tile's last row (off: the position of row 0,
 * nonzero only for `attention_rows`). Every output is overwritten (tile mode 0).
 *
 *   kind 0, lower:  C[i, j] = A(i, :) . B[:, j] for the column panels that start before lim;
 *                   entries right of the diagonal inside a panel are junk the caller overwrites.
 *   kind 1, prefix: C[i, :] = sum over s < lim of A(i, s) B[s, :]; A(i, s) is 0 for s > i
 *                   (a probability row), so the extra terms of the tile's upper rows are exact 0s.
 *   kind 2, suffix: C[i, :] = sum over s >= off + i of A(i, s) B[s, :]; A(i, s) = X[s, i] of a
 *                   lower-triangular X (zero at s < i).
 */
function causalDriver(tier: WasmTier): string {
  const R = TILE[tier].rows;
  const W = 4 * TILE[tier].vecs;
  const args = `(i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2))) (local.get $pa)
    (i32.add (local.get $pb) (i32.shl (local.get $j) (i32.const 2))) (i32.const 0) (i32.const 0)
    (local.get $ars) (local.get $ass) (local.get $bs) (local.get $cs) (local.get $kn)`;
  const panels = (w: number) =>
    `;; ${w}-wide column panels
(block $done${w} (loop $cols${w}
  (br_if $done${w} (i32.or (i32.gt_u (i32.add (local.get $j) (i32.const ${w})) (local.get $N))
    (i32.ge_u (local.get $j) (local.get $jlim))))
  (if (i32.eq (local.get $r) (i32.const ${R}))
    (then (call $gemm_tile_${R}x${w} ${args}))
    (else (call $gemm_tile_1x${w} ${args})))
  (local.set $j (i32.add (local.get $j) (i32.const ${w})))
  (br $cols${w})))`;
  return `;; C (=) A . B over one (batch, head), causal; see causalDriver in scripts/build_kernels.ts.
;; kind 0: lower-triangular output; 1: reduction over s < off + i + r; 2: over s >= off + i.
(func $gemm_causal
  (param $c i32) (param $a i32) (param $b i32) (param $M i32) (param $S i32) (param $N i32)
  (param $ars i32) (param $ass i32) (param $bs i32) (param $cs i32) (param $kind i32)
  (param $off i32)
  (local $i i32) (local $r i32) (local $lim i32) (local $s0 i32) (local $kn i32) (local $jlim i32)
  (local $j i32) (local $pa i32) (local $pb i32) (local $pc i32)
  (block $done (loop $tiles
    (br_if $done (i32.ge_u (local.get $i) (local.get $M)))
    (local.set $r (select (i32.const ${R}) (i32.const 1)
      (i32.le_u (i32.add (local.get $i) (i32.const ${R})) (local.get $M))))
    (local.set $lim (i32.add (i32.add (local.get $off) (local.get $i)) (local.get $r)))
    ;; the reduction [s0, s0 + kn) and the columns [0, jlim) of this row tile
    (local.set $s0 (i32.const 0))
    (local.set $kn (local.get $S))
    (local.set $jlim (local.get $N))
    (if (i32.eqz (local.get $kind)) (then
      (if (i32.lt_u (local.get $lim) (local.get $N)) (then (local.set $jlim (local.get $lim))))))
    (if (i32.eq (local.get $kind) (i32.const 1)) (then
      (if (i32.lt_u (local.get $lim) (local.get $S)) (then (local.set $kn (local.get $lim))))))
    (if (i32.eq (local.get $kind) (i32.const 2)) (then
      (local.set $s0 (i32.add (local.get $off) (local.get $i)))
      (if (i32.gt_u (local.get $s0) (local.get $S)) (then (local.set $s0 (local.get $S))))
      (local.set $kn (i32.sub (local.get $S) (local.get $s0)))))
    (local.set $pa (i32.add (local.get $a) (i32.add (i32.mul (local.get $i) (local.get $ars))
      (i32.mul (local.get $s0) (local.get $ass)))))
    (local.set $pb (i32.add (local.get $b) (i32.mul (local.get $s0) (local.get $bs))))
    (local.set $pc (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $cs))))
    (local.set $j (i32.const 0))
    ;; single rows: ${WIDE}-wide panels first
    (if (i32.eq (local.get $r) (i32.const 1)) (then
      (block $doneW (loop $colsW
        (br_if $doneW (i32.or (i32.gt_u (i32.add (local.get $j) (i32.const ${WIDE})) (local.get $N))
          (i32.ge_u (local.get $j) (local.get $jlim))))
        (call $gemm_tile_1x${WIDE} ${args})
        (local.set $j (i32.add (local.get $j) (i32.const ${WIDE})))
        (br $colsW)))))
${indent(panels(W), 4)}
${W === 4 ? "" : indent(panels(4), 4)}
    ;; the last columns one at a time
    (block $done1 (loop $cols1
      (br_if $done1 (i32.ge_u (local.get $j) (local.get $jlim)))
      (call $gemm_col (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2)))
        (local.get $pa) (i32.add (local.get $pb) (i32.shl (local.get $j) (i32.const 2)))
        (i32.const 0) (i32.const 0) (local.get $ars) (local.get $ass) (local.get $bs)
        (local.get $cs) (local.get $kn) (local.get $r))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $cols1)))
    (local.set $i (i32.add (local.get $i) (local.get $r)))
    (br $tiles)))
)

;; C[M, N] (=) A[M, S] . B[N, S]^T, lower-triangular output as gemm_causal kind 0 (row i's
;; diagonal at column off + i), with the dot-product tiles of matmul_nt (no transposed copy).
(func $nt_causal
  (param $c i32) (param $a i32) (param $b i32) (param $M i32) (param $S i32) (param $N i32)
  (param $as i32) (param $bs i32) (param $cs i32) (param $off i32)
  (local $i i32) (local $r i32) (local $jlim i32) (local $j i32) (local $pa i32) (local $pc i32)
  (block $done (loop $tiles
    (br_if $done (i32.ge_u (local.get $i) (local.get $M)))
    (local.set $r (select (i32.const 2) (i32.const 1)
      (i32.le_u (i32.add (local.get $i) (i32.const 2)) (local.get $M))))
    (local.set $jlim (i32.add (i32.add (local.get $off) (local.get $i)) (local.get $r)))
    (if (i32.gt_u (local.get $jlim) (local.get $N)) (then (local.set $jlim (local.get $N))))
    (local.set $pa (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $as))))
    (local.set $pc (i32.add (local.get $c) (i32.mul (local.get $i) (local.get $cs))))
    (local.set $j (i32.const 0))
    (block $done4 (loop $cols4
      (br_if $done4 (i32.or (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N))
        (i32.ge_u (local.get $j) (local.get $jlim))))
      (if (i32.eq (local.get $r) (i32.const 2))
        (then (call $nt_tile_2x4 (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $pa) (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $bs)))
          (local.get $as) (local.get $bs) (local.get $cs) (local.get $S)))
        (else (call $nt_tile_1x4u2 (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $pa) (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $bs)))
          (local.get $as) (local.get $bs) (local.get $cs) (local.get $S))))
      (local.set $j (i32.add (local.get $j) (i32.const 4)))
      (br $cols4)))
    (block $done1 (loop $cols1
      (br_if $done1 (i32.ge_u (local.get $j) (local.get $jlim)))
      (if (i32.eq (local.get $r) (i32.const 2))
        (then (call $nt_tile_2x1 (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $pa) (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $bs)))
          (local.get $as) (local.get $bs) (local.get $cs) (local.get $S)))
        (else (call $nt_tile_1x1u2 (i32.add (local.get $pc) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $pa) (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $bs)))
          (local.get $as) (local.get $bs) (local.get $cs) (local.get $S))))
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $cols1)))
    (local.set $i (i32.add (local.get $i) (local.get $r)))
    (br $tiles)))
)`;
}

/** Transposed copy of a strided [rows, cols] block: 4 x 4 blocks by shuffles, scalar edges. */
function transposeHelper(): string {
  const ld = (k: number) =>
    `(local.set $a${k} (v128.load (i32.add (local.get $ps) (i32.mul (local.get $ss) (i32.const ${k})))))`;
  const st = (k: number, v: string) =>
    `(v128.store (i32.add (local.get $pd) (i32.mul (local.get $ds) (i32.const ${k}))) ${v})`;
  const g = (n: string) => `(local.get $${n})`;
  return `;; dst[c, r] = src[r, c] for a [rows, cols] block; ss, ds: row strides of src and dst (bytes).
(func $transpose
  (param $dst i32) (param $src i32) (param $rows i32) (param $cols i32) (param $ss i32)
  (param $ds i32)
  (local $r i32) (local $c i32) (local $ps i32) (local $pd i32) (local $k i32)
  (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
  (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
  (block $rdone (loop $rows4
    (br_if $rdone (i32.gt_u (i32.add (local.get $r) (i32.const 4)) (local.get $rows)))
    (local.set $c (i32.const 0))
    (block $cdone (loop $cols4
      (br_if $cdone (i32.gt_u (i32.add (local.get $c) (i32.const 4)) (local.get $cols)))
      ;; rows a0..a3 of a 4 x 4 block -> columns
      (local.set $ps (i32.add (i32.add (local.get $src) (i32.mul (local.get $r) (local.get $ss)))
        (i32.shl (local.get $c) (i32.const 2))))
      (local.set $pd (i32.add (i32.add (local.get $dst) (i32.mul (local.get $c) (local.get $ds)))
        (i32.shl (local.get $r) (i32.const 2))))
      ${ld(0)}
      ${ld(1)}
      ${ld(2)}
      ${ld(3)}
      (local.set $t0 ${shuffle4([0, 4, 1, 5], g("a0"), g("a1"))})
      (local.set $t1 ${shuffle4([2, 6, 3, 7], g("a0"), g("a1"))})
      (local.set $t2 ${shuffle4([0, 4, 1, 5], g("a2"), g("a3"))})
      (local.set $t3 ${shuffle4([2, 6, 3, 7], g("a2"), g("a3"))})
      ${st(0, shuffle4([0, 1, 4, 5], g("t0"), g("t2")))}
      ${st(1, shuffle4([2, 3, 6, 7], g("t0"), g("t2")))}
      ${st(2, shuffle4([0, 1, 4, 5], g("t1"), g("t3")))}
      ${st(3, shuffle4([2, 3, 6, 7], g("t1"), g("t3")))}
      (local.set $c (i32.add (local.get $c) (i32.const 4)))
      (br $cols4)))
    ;; the last cols % 4 columns of these 4 rows
    (block $c1done (loop $cols1
      (br_if $c1done (i32.ge_u (local.get $c) (local.get $cols)))
      (local.set $k (i32.const 0))
      (loop $four
        (f32.store (i32.add (i32.add (local.get $dst) (i32.mul (local.get $c) (local.get $ds)))
            (i32.shl (i32.add (local.get $r) (local.get $k)) (i32.const 2)))
          (f32.load (i32.add (i32.add (local.get $src)
            (i32.mul (i32.add (local.get $r) (local.get $k)) (local.get $ss)))
            (i32.shl (local.get $c) (i32.const 2)))))
        (br_if $four (i32.lt_u (local.tee $k (i32.add (local.get $k) (i32.const 1))) (i32.const 4))))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $cols1)))
    (local.set $r (i32.add (local.get $r) (i32.const 4)))
    (br $rows4)))
  ;; the last rows % 4 rows, element by element
  (block $r1done (loop $rows1
    (br_if $r1done (i32.ge_u (local.get $r) (local.get $rows)))
    (local.set $c (i32.const 0))
    (block $e1done (loop $elems
      (br_if $e1done (i32.ge_u (local.get $c) (local.get $cols)))
      (f32.store (i32.add (i32.add (local.get $dst) (i32.mul (local.get $c) (local.get $ds)))
          (i32.shl (local.get $r) (i32.const 2)))
        (f32.load (i32.add (i32.add (local.get $src) (i32.mul (local.get $r) (local.get $ss)))
          (i32.shl (local.get $c) (i32.const 2)))))
      (local.set $c (i32.add (local.get $c) (i32.const 1)))
      (br $elems)))
    (local.set $r (i32.add (local.get $r) (i32.const 1)))
    (br $rows1)))
)`;
}

/** Row-wise causal softmax and its backward, over rows of raw scores. */
function causalSoftmaxHelpers(): string {
  return `;; Causal softmax of rows of raw scores s (row r at p + r * 4 ld, its diagonal at t = t0 + r):
;; p_j = exp(scale s_j - scale max_k s_k) / sum for j <= t, then zeros up to ld.
(func $causal_softmax (param $p i32) (param $ld i32) (param $t0 i32) (param $rows i32)
  (param $scale f32)
  (local $off i32) (local $nbytes i32) (local $mv v128) (local $max f32) (local $inv f32)
  ${laneLocals("sum", "e")}
  ${expLocals()}
${indent(expInit(), 2)}
  (block $done (loop $row
    (br_if $done (i32.eqz (local.get $rows)))
    (local.set $nbytes (i32.shl (i32.add (local.get $t0) (i32.const 1)) (i32.const 2)))
    ;; the maximum (exact in any order; pmax: a NaN score gives a NaN row all the same), scaled
    (local.set $mv (f32x4.splat (f32.const -inf)))
    (local.set $max (f32.const -inf))
    (local.set $off (i32.const 0))
    (block $vdone (loop $vloop
      (br_if $vdone (i32.gt_u (i32.add (local.get $off) (i32.const 16)) (local.get $nbytes)))
      (local.set $mv (f32x4.pmax (local.get $mv) (v128.load (i32.add (local.get $p) (local.get $off)))))
      (local.set $off (i32.add (local.get $off) (i32.const 16)))
      (br $vloop)))
    (block $sdone (loop $sloop
      (br_if $sdone (i32.ge_u (local.get $off) (local.get $nbytes)))
      (local.set $max (f32.max (local.get $max) (f32.load (i32.add (local.get $p) (local.get $off)))))
      (local.set $off (i32.add (local.get $off) (i32.const 4)))
      (br $sloop)))
    (local.set $max (f32.mul (local.get $scale) (f32.max (f32.max
      (f32.max (local.get $max) (f32x4.extract_lane 0 (local.get $mv)))
      (f32.max (f32x4.extract_lane 1 (local.get $mv)) (f32x4.extract_lane 2 (local.get $mv))))
      (f32x4.extract_lane 3 (local.get $mv)))))
    ;; exp and sum
    ${zeroLanes("sum")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("e")} ${
          L.exp(
            L.op(
              "sub",
              L.op("mul", L.ld("$p"), L.splat("(local.get $scale)")),
              L.splat("(local.get $max)"),
            ),
          )
        })
${L.st("$p", `(local.get ${L.loc("e")})`)}
(local.set ${L.loc("sum")} ${
          L.op("add", `(local.get ${L.loc("sum")})`, `(local.get ${L.loc("e")})`)
        })`
      ),
      4,
    )
  }
    (local.set $inv (f32.div (f32.const 1) ${laneTotal("sum")}))
${indent(lanesLoop((L) => L.st("$p", L.op("mul", L.ld("$p"), L.splat("(local.get $inv)")))), 4)}
    (memory.fill (i32.add (local.get $p) (local.get $nbytes)) (i32.const 0)
      (i32.sub (i32.shl (local.get $ld) (i32.const 2)) (local.get $nbytes)))
    (local.set $p (i32.add (local.get $p) (i32.shl (local.get $ld) (i32.const 2))))
    (local.set $t0 (i32.add (local.get $t0) (i32.const 1)))
    (local.set $rows (i32.sub (local.get $rows) (i32.const 1)))
    (br $row)))
)

;; Softmax backward in place, rows t = 0 .. rows-1 (row t at ds + t * 4 ld, probabilities p alike):
;; ds_j = p_j (dp_j - sum_{k <= t} p_k dp_k) scale for j <= t, then zeros up to ld.
(func $causal_softmax_backward (param $ds i32) (param $p i32) (param $ld i32) (param $rows i32)
  (param $scale f32)
  (local $off i32) (local $nbytes i32) (local $t i32) (local $s f32) ${laneLocals("sum")}
  (block $done (loop $row
    (br_if $done (i32.ge_u (local.get $t) (local.get $rows)))
    (local.set $nbytes (i32.shl (i32.add (local.get $t) (i32.const 1)) (i32.const 2)))
    ${zeroLanes("sum")}
${
    indent(
      lanesLoop((L) =>
        `(local.set ${L.loc("sum")} ${
          L.op("add", `(local.get ${L.loc("sum")})`, L.op("mul", L.ld("$p"), L.ld("$ds")))
        })`
      ),
      4,
    )
  }
    (local.set $s ${laneTotal("sum")})
${
    indent(
      lanesLoop((L) =>
        L.st(
          "$ds",
          L.op(
            "mul",
            L.op("mul", L.ld("$p"), L.op("sub", L.ld("$ds"), L.splat("(local.get $s)"))),
            L.splat("(local.get $scale)"),
          ),
        )
      ),
      4,
    )
  }
    (memory.fill (i32.add (local.get $ds) (local.get $nbytes)) (i32.const 0)
      (i32.sub (i32.shl (local.get $ld) (i32.const 2)) (local.get $nbytes)))
    (local.set $ds (i32.add (local.get $ds) (i32.shl (local.get $ld) (i32.const 2))))
    (local.set $p (i32.add (local.get $p) (i32.shl (local.get $ld) (i32.const 2))))
    (local.set $t (i32.add (local.get $t) (i32.const 1)))
    (br $row)))
)`;
}

/** The exported attention kernels: forward, backward, and rows of one sequence (KV cache). */
function attentionExports(): string {
  // Strides in bytes: hsb one head, cb one C-wide row, rs one qkv row (3C floats).
  const strides = `(local.set $hs (i32.div_u (local.get $C) (local.get $H)))
  (local.set $hsb (i32.shl (local.get $hs) (i32.const 2)))
  (local.set $cb (i32.shl (local.get $C) (i32.const 2)))
  (local.set $rs (i32.mul (local.get $cb) (i32.const 3)))
  (local.set $tb (i32.shl (local.get $T) (i32.const 2)))
  (local.set $scale (f32.div (f32.const 1) (f32.sqrt (f32.convert_i32_u (local.get $hs)))))`;
  const locals = `(local $hs i32) (local $hsb i32) (local $cb i32) (local $rs i32) (local $tb i32)
  (local $scale f32) (local $b i32) (local $h i32) (local $base i32) (local $ob i32) (local $pbh i32)`;
  // for h in [0, H): body, with $pbh = probs[b, h] ([T, T], b from the enclosing loop)
  const heads = (body: string) =>
    `(local.set $h (i32.const 0))
(block $hdone (loop $hl
  (br_if $hdone (i32.ge_u (local.get $h) (local.get $H)))
  (local.set $pbh (i32.add (local.get $probs) (i32.mul (i32.mul
    (i32.add (i32.mul (local.get $b) (local.get $H)) (local.get $h)) (local.get $T)) (local.get $tb))))
${indent(body, 2)}
  (local.set $h (i32.add (local.get $h) (i32.const 1)))
  (br $hl)))`;
  // for b in [0, B): body, with $base = qkv rows of b, $ob = the C-wide rows of b in `rows`
  const batches = (rows: string, body: string) =>
    `(local.set $b (i32.const 0))
(block $bdone (loop $bl
  (br_if $bdone (i32.ge_u (local.get $b) (local.get $B)))
  (local.set $base (i32.add (local.get $qkv)
    (i32.mul (i32.mul (local.get $b) (local.get $T)) (local.get $rs))))
  (local.set $ob (i32.add (local.get ${rows})
    (i32.mul (i32.mul (local.get $b) (local.get $T)) (local.get $cb))))
${indent(body, 2)}
  (local.set $b (i32.add (local.get $b) (i32.const 1)))
  (br $bl)))`;
  // head h of the q (part 0), k (1) or v (2) columns of the rows starting at `rows`
  const head = (rows: string, part: number) =>
    `(i32.add (local.get ${rows}) (i32.add (i32.mul (local.get $h) (local.get $hsb))
    (i32.mul (local.get $cb) (i32.const ${part}))))`;
  const q = head("$base", 0), k = head("$base", 1), v = head("$base", 2);
  const forward = batches(
    "$out",
    `${
      heads(`;; K^T [hs, T] into the out rows of batch b (free until the P V products below)
(call $transpose (local.get $ob) ${k} (local.get $T) (local.get $hs) (local.get $rs) (local.get $tb))
;; raw scores S = Q K^T (lower triangle), then the causal softmax, in probs[b, h]
(call $gemm_causal (local.get $pbh) ${q} (local.get $ob) (local.get $T) (local.get $hs) (local.get $T)
  (local.get $rs) (i32.const 4) (local.get $tb) (local.get $tb) (i32.const 0) (i32.const 0))
(call $causal_softmax (local.get $pbh) (local.get $T) (i32.const 0) (local.get $T) (local.get $scale))`)
    }
${
      heads(`;; out[b, :, head h] = P V
(call $gemm_causal (i32.add (local.get $ob) (i32.mul (local.get $h) (local.get $hsb))) (local.get $pbh) ${v}
  (local.get $T) (local.get $T) (local.get $hs) (local.get $tb) (i32.const 4) (local.get $rs)
  (local.get $cb) (i32.const 1) (i32.const 0))`)
    }`,
  );
  const dq = head("$dbase", 0), dk = head("$dbase", 1), dv = head("$dbase", 2);
  const dO = `(i32.add (local.get $ob) (i32.mul (local.get $h) (local.get $hsb)))`;
  const backward = batches(
    "$dout",
    `(local.set $dbase (i32.add (local.get $dqkv)
  (i32.mul (i32.mul (local.get $b) (local.get $T)) (local.get $rs))))
${
      heads(`;; dV = P^T dO (row j sums over t >= j)
(call $gemm_causal ${dv} (local.get $pbh) ${dO} (local.get $T) (local.get $T) (local.get $hs)
  (i32.const 4) (local.get $tb) (local.get $cb) (local.get $rs) (i32.const 2) (i32.const 0))
;; dP = dO V^T (lower triangle) into dS, with V^T [hs, T] after it in the scratch
(call $transpose (local.get $vt) ${v} (local.get $T) (local.get $hs) (local.get $rs) (local.get $tb))
(call $gemm_causal (local.get $dscores) ${dO} (local.get $vt) (local.get $T) (local.get $hs) (local.get $T)
  (local.get $cb) (i32.const 4) (local.get $tb) (local.get $tb) (i32.const 0) (i32.const 0))
(call $causal_softmax_backward (local.get $dscores) (local.get $pbh) (local.get $T) (local.get $T)
  (local.get $scale))
;; dQ = dS K (row t sums over j <= t); dK = dS^T Q (row j sums over t >= j)
(call $gemm_causal ${dq} (local.get $dscores) ${k} (local.get $T) (local.get $T) (local.get $hs)
  (local.get $tb) (i32.const 4) (local.get $rs) (local.get $rs) (i32.const 1) (i32.const 0))
(call $gemm_causal ${dk} (local.get $dscores) ${q} (local.get $T) (local.get $T) (local.get $hs)
  (i32.const 4) (local.get $tb) (local.get $rs) (local.get $rs) (i32.const 2) (i32.const 0))`)
    }`,
  );
  // attention_rows: one sequence, query rows p0 .. p0 + n - 1; $base = qkv.
  const rowsBody = `(local.set $base (local.get $qkv))
(local.set $h (i32.const 0))
(block $hdone (loop $hl
  (br_if $hdone (i32.ge_u (local.get $h) (local.get $H)))
  ;; probs rows (h, p0 ..) and q rows p0 ..
  (local.set $pbh (i32.add (local.get $probs) (i32.mul (i32.add (i32.mul (local.get $h)
    (local.get $T)) (local.get $p0)) (local.get $tb))))
  (local.set $ob (i32.add ${q} (i32.mul (local.get $p0) (local.get $rs))))
  ;; raw scores q_t . k_j (j <= t, dot-product tiles; no key row after p0 + n - 1 is read),
  ;; then the causal softmax
  (call $nt_causal (local.get $pbh) (local.get $ob) ${k} (local.get $n) (local.get $hs)
    (i32.add (local.get $p0) (local.get $n)) (local.get $rs) (local.get $rs) (local.get $tb)
    (local.get $p0))
  (call $causal_softmax (local.get $pbh) (local.get $T) (local.get $p0) (local.get $n) (local.get $scale))
  ;; out rows, head h = P V (row t sums over j <= t)
  (call $gemm_causal (i32.add (local.get $out) (i32.mul (local.get $h) (local.get $hsb)))
    (local.get $pbh) ${v} (local.get $n) (local.get $T) (local.get $hs) (local.get $tb) (i32.const 4)
    (local.get $rs) (local.get $cb) (i32.const 1) (local.get $p0))
  (local.set $h (i32.add (local.get $h) (i32.const 1)))
  (br $hl)))`;

  return `;; Causal attention forward. qkv [B, T, 3C] (q | k | v, head h at columns h*hs.. of each),
;; probs [B, H, T, T] (softmax of q.k / sqrt(hs) over j <= t, zeros after), out [B, T, C].
(func (export "attention_forward")
  (param $out i32) (param $probs i32) (param $qkv i32) (param $B i32) (param $T i32) (param $C i32)
  (param $H i32)
  ${locals}
  ${strides}
${indent(forward, 2)})

;; Causal attention backward: dqkv [B, T, 3C] is overwritten; scratch holds T * (T + hs) floats:
;; dS [T, T], then V^T [hs, T].
(func (export "attention_backward")
  (param $dqkv i32) (param $scratch i32) (param $dout i32) (param $qkv i32) (param $probs i32)
  (param $B i32) (param $T i32) (param $C i32) (param $H i32)
  ${locals}
  (local $dbase i32) (local $dscores i32) (local $vt i32)
  ${strides}
  (local.set $dscores (local.get $scratch))
  (local.set $vt (i32.add (local.get $scratch) (i32.mul (local.get $T) (local.get $tb))))
${indent(backward, 2)})

;; Attention of query rows t = p0 .. p0 + n - 1 of one sequence (the KV-cache path): qkv [T, 3C]
;; (rows 0 .. p0 + n - 1 used), probs [H, T, T] (rows (h, t) written, zeros after t), out [n, C].
(func (export "attention_rows")
  (param $out i32) (param $probs i32) (param $qkv i32) (param $T i32) (param $p0 i32) (param $n i32)
  (param $C i32) (param $H i32)
  ${locals}
  ${strides}
${indent(rowsBody, 2)})`;
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
  parts.push(gemmTile(tier, 1, WIDE / 4), "");
  parts.push(gemmColumn(), "", gemmDriver(tier), "");
  // 2-row tiles, and single rows with two partial sums per output (twice the independent chains)
  for (const c of [4, 1]) parts.push(ntTile(tier, 2, c), "", ntTile(tier, 1, c, 2), "");
  for (const m of [1, 2, 3]) parts.push(smallGemm(tier, m), "");
  parts.push(smallDriver(), "", ntDriver(), "", matmulExports(tier), "");
  parts.push(causalDriver(tier), "", transposeHelper(), "", mathHelpers(), "");
  parts.push(causalSoftmaxHelpers(), "", attentionExports(), "");
  parts.push(rowExports(), "", elementwiseExports(), "");
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
