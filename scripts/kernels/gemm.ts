/**
 * Generates the blocked matmul: the [rows x cols] register tiles (`gemmTile`, `gemmColumn`), their
 * driver `$gemm` (`gemmDriver`) and the exported matmul entry points (`matmulExports`).
 *
 * @module
 */

import {
  indent,
  KC,
  KC_TN,
  madd,
  MC,
  NT_ROW_BLOCKS,
  PACK_B_BYTES,
  range,
  TILE_VARIANTS,
  type WasmTier,
  WIDE,
} from "./common.ts";

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
export function gemmTile(tier: WasmTier, R: number, V: number): string {
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
export function gemmColumn(): string {
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
export function gemmDriver(tile: { rows: number; vecs: number }): string {
  const R = tile.rows;
  const V = tile.vecs;
  const W = 4 * V;
  // Calls one tile kind at (i, j): pointers computed from the loop variables; B from the panel
  // $pb with row stride $pbs (the packed copy, or B itself) when `panel`.
  const call = (name: string, panel = false) =>
    `(call ${name}
  (i32.add (local.get $c) (i32.add (i32.mul (local.get $i) (local.get $cs)) (i32.shl (local.get $j) (i32.const 2))))
  (i32.add (local.get $ab) (i32.mul (i32.sub (local.get $i) (local.get $i0)) (local.get $ar)))
  ${
      panel
        ? "(local.get $pb)"
        : "(i32.add (local.get $bblk) (i32.shl (local.get $j) (i32.const 2)))"
    }
  (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2)))
  (local.get $mode) (local.get $ar) (local.get $as) ${
      panel ? "(local.get $pbs)" : "(local.get $bs)"
    } (local.get $cs) (local.get $kn))`;
  // Sweeps the rows [i0, iR) of the current block with R-row tiles of width `w`.
  const rowsSweep = (w: number, panel = false) =>
    `(local.set $i (local.get $i0))
(block $rdone (loop $rows
  (br_if $rdone (i32.ge_u (local.get $i) (local.get $iR)))
${indent(call(`$gemm_tile_${R}x${w}`, panel), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const ${R})))
  (br $rows)))`;
  // The B panel [kn, W] of column j: packed into $pack (rows of W floats, one after the other, so
  // that a panel of a wide B does not fall into a few cache sets), or read in place.
  const panel = `(local.set $pb (i32.add (local.get $bblk) (i32.shl (local.get $j) (i32.const 2))))
(local.set $pbs (local.get $bs))
(if (i32.and (i32.ne (local.get $pack) (i32.const 0)) (i32.ne (local.get $kn) (i32.const 0)))
  (then
    (local.set $src (local.get $pb))
    (local.set $dst (local.get $pack))
    (local.set $q (local.get $kn))
    (loop $copy
${
    range(V).map((v) =>
      `      (v128.store offset=${16 * v} (local.get $dst) (v128.load offset=${
        16 * v
      } (local.get $src)))`
    ).join("\n")
  }
      (local.set $src (i32.add (local.get $src) (local.get $bs)))
      (local.set $dst (i32.add (local.get $dst) (i32.const ${16 * V})))
      (br_if $copy (local.tee $q (i32.sub (local.get $q) (i32.const 1)))))
    (local.set $pb (local.get $pack))
    (local.set $pbs (i32.const ${16 * V}))))`;
  // Sweeps the columns [j, N - N % 4) of row $i with single-row tiles of width `w`.
  const colsSweep = (w: number) =>
    `(block $done${w} (loop $cols${w}
  (br_if $done${w} (i32.gt_u (i32.add (local.get $j) (i32.const ${w})) (local.get $N)))
${indent(call(`$gemm_tile_1x${w}`), 2)}
  (local.set $j (i32.add (local.get $j) (i32.const ${w})))
  (br $cols${w})))`;
  return `;; C[M, N] (+)= A(M x S) . B[S, N] by ${R}x${W} tiles; see gemmDriver in scripts/kernels/gemm.ts.
;; accumulate = 0: the first reduction block starts from the bias (bias != 0) or zero.
(func $gemm_${R}x${W}
  (param $c i32) (param $a i32) (param $b i32) (param $bias i32)
  (param $M i32) (param $S i32) (param $N i32) (param $ars i32) (param $ass i32)
  (param $accumulate i32) (param $kc i32) (param $pack i32) (param $packA i32)
  (local $bs i32) (local $cs i32) (local $s0 i32) (local $kn i32) (local $mode i32)
  (local $i0 i32) (local $iend i32) (local $iR i32) (local $i i32) (local $j i32) (local $ablk i32)
  (local $bblk i32) (local $pb i32) (local $pbs i32) (local $src i32) (local $dst i32) (local $q i32)
  (local $ab i32) (local $ar i32) (local $as i32) (local $n4 i32) (local $t i32)
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
      ;; the A block of rows [i0, iend): in place, or (packA, for A = inp^T whose rows are
      ;; adjacent floats, ars = 4) copied to packA as kn rows of MC floats, so that its reads
      ;; along s do not fall into a few cache sets (a stride of 4K bytes)
      (local.set $ab (i32.add (local.get $ablk) (i32.mul (local.get $i0) (local.get $ars))))
      (local.set $ar (local.get $ars))
      (local.set $as (local.get $ass))
      (if (i32.and (i32.ne (local.get $packA) (i32.const 0)) (i32.ne (local.get $kn) (i32.const 0)))
        (then
          (local.set $n4 (i32.shr_u (i32.sub (local.get $iend) (local.get $i0)) (i32.const 2)))
          (local.set $q (i32.const 0))
          (loop $copyA
            (local.set $src (i32.add (local.get $ab) (i32.mul (local.get $q) (local.get $ass))))
            (local.set $dst (i32.add (local.get $packA) (i32.mul (local.get $q) (i32.const ${
    4 * MC
  }))))
            (local.set $t (i32.const 0))
            (block $vdone (loop $vecs
              (br_if $vdone (i32.ge_u (local.get $t) (local.get $n4)))
              (v128.store (i32.add (local.get $dst) (i32.shl (local.get $t) (i32.const 4)))
                (v128.load (i32.add (local.get $src) (i32.shl (local.get $t) (i32.const 4)))))
              (local.set $t (i32.add (local.get $t) (i32.const 1)))
              (br $vecs)))
            (local.set $t (i32.shl (local.get $n4) (i32.const 2)))
            (block $sdone (loop $scalars
              (br_if $sdone (i32.ge_u (local.get $t) (i32.sub (local.get $iend) (local.get $i0))))
              (f32.store (i32.add (local.get $dst) (i32.shl (local.get $t) (i32.const 2)))
                (f32.load (i32.add (local.get $src) (i32.shl (local.get $t) (i32.const 2)))))
              (local.set $t (i32.add (local.get $t) (i32.const 1)))
              (br $scalars)))
            (br_if $copyA (i32.lt_u (local.tee $q (i32.add (local.get $q) (i32.const 1))) (local.get $kn))))
          (local.set $ab (local.get $packA))
          (local.set $ar (i32.const 4))
          (local.set $as (i32.const ${4 * MC}))))
      ;; full-width column panels
      (local.set $j (i32.const 0))
      (block $jdone (loop $cols
        (br_if $jdone (i32.gt_u (i32.add (local.get $j) (i32.const ${W})) (local.get $N)))
${indent(panel, 8)}
${indent(rowsSweep(W, true), 8)}
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
          (local.get $ab)
          (i32.add (local.get $bblk) (i32.shl (local.get $j) (i32.const 2)))
          (i32.add (local.get $bias) (i32.shl (local.get $j) (i32.const 2)))
          (local.get $mode) (local.get $ar) (local.get $as) (local.get $bs) (local.get $cs)
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

/** The tiles and drivers of every NN/TN variant of a tier (each tile once). */
export function gemmVariants(tier: WasmTier): string {
  const names = new Set<string>();
  const parts: string[] = [];
  for (const { rows, vecs } of TILE_VARIANTS[tier]) {
    for (const [r, v] of [[rows, vecs], [rows, 1], [1, vecs], [1, 1], [1, WIDE / 4]]) {
      if (names.has(`${r}x${v}`)) continue;
      names.add(`${r}x${v}`);
      parts.push(gemmTile(tier, r, v), "");
    }
  }
  const drivers = new Set<string>();
  for (const t of TILE_VARIANTS[tier]) {
    if (drivers.has(`${t.rows}x${t.vecs}`)) continue;
    drivers.add(`${t.rows}x${t.vecs}`);
    parts.push(gemmDriver(t), "");
  }
  return parts.join("\n");
}

/**
 * Calls the variant `$variant` of a form: `body(R, W)` is the call for R x W tiles (variants past
 * the last run the first).
 */
function byVariant(
  tier: WasmTier,
  body: (R: number, W: number, pack: string) => string,
): string {
  const variants = TILE_VARIANTS[tier];
  const pack = (p: boolean) => p ? "(local.get $scratch)" : "(i32.const 0)";
  let code = body(variants[0].rows, 4 * variants[0].vecs, pack(variants[0].pack));
  for (let v = variants.length - 1; v >= 1; v--) {
    const { rows, vecs } = variants[v];
    code = `(if (i32.eq (local.get $variant) (i32.const ${v}))
  (then
${indent(body(rows, 4 * vecs, pack(variants[v].pack)), 4)})
  (else
${indent(code, 4)}))`;
  }
  return code;
}

/**
 * The exported matmul entry points; `variant` picks the tiles (see TILE_VARIANTS), and a packed
 * variant copies B's panels into `scratch` (PACK_BYTES; 0: read in place).
 */
export function matmulExports(tier: WasmTier): string {
  const nn = (R: number, W: number, pack: string) =>
    `;; the first M - M % ${R} rows by register tiles, the rest by the few-rows kernel
(local.set $m0 (i32.sub (local.get $M) (i32.rem_u (local.get $M) (i32.const ${R}))))
(if (local.get $m0) (then
  (call $gemm_${R}x${W} (local.get $out) (local.get $inp) (local.get $w) (local.get $bias)
    (local.get $m0) (local.get $K) (local.get $N)
    (i32.shl (local.get $K) (i32.const 2)) (i32.const 4) (i32.const 0) (i32.const ${KC}) ${pack}
    (i32.const 0))))`;
  const tn = (R: number, W: number, pack: string) =>
    `(call $gemm_${R}x${W} (local.get $dw) (local.get $inp) (local.get $dout) (i32.const 0)
  (local.get $K) (local.get $M) (local.get $N)
  (i32.const 4) (i32.shl (local.get $K) (i32.const 2)) (i32.const 1) (i32.const ${KC_TN}) ${pack}
  ${pack === "(i32.const 0)" ? pack : `(i32.add ${pack} (i32.const ${PACK_B_BYTES}))`})`;
  const blocks = NT_ROW_BLOCKS.map((b) => `(i32.const ${b})`);
  const ntBlock = blocks.slice(1).reduceRight(
    (rest, b, i) => `(select ${b} ${rest} (i32.eq (local.get $variant) (i32.const ${i + 1})))`,
    blocks[0],
  );
  return `;; out[M, N] = inp[M, K] . w[K, N] + bias[N] (bias = 0: none). Overwrites out.
(func (export "matmul")
  (param $out i32) (param $inp i32) (param $w i32) (param $bias i32)
  (param $M i32) (param $K i32) (param $N i32) (param $variant i32) (param $scratch i32)
  (local $m0 i32)
${indent(byVariant(tier, nn), 2)}
  (if (i32.lt_u (local.get $m0) (local.get $M)) (then
    (call $gemm_small
      (i32.add (local.get $out) (i32.mul (local.get $m0) (i32.shl (local.get $N) (i32.const 2))))
      (i32.add (local.get $inp) (i32.mul (local.get $m0) (i32.shl (local.get $K) (i32.const 2))))
      (local.get $w) (local.get $bias) (i32.sub (local.get $M) (local.get $m0)) (local.get $K)
      (local.get $N)))))

;; dw[K, N] += inp[M, K]^T . dout[M, N]: the "rows" of this product are the K columns of inp.
(func (export "matmul_backward_weight")
  (param $dw i32) (param $inp i32) (param $dout i32) (param $M i32) (param $K i32) (param $N i32)
  (param $variant i32) (param $scratch i32)
${indent(byVariant(tier, tn), 2)})

;; out[M, N] = a[M, K] . b[N, K]^T. Overwrites out.
(func (export "matmul_nt")
  (param $out i32) (param $a i32) (param $b i32) (param $M i32) (param $K i32) (param $N i32)
  (param $variant i32)
  (call $gemm_nt (local.get $out) (local.get $a) (local.get $b)
    (local.get $M) (local.get $K) (local.get $N) ${ntBlock}))

;; dinp[M, K] = dout[M, N] . w[K, N]^T. Overwrites dinp.
(func (export "matmul_backward_input")
  (param $dinp i32) (param $dout i32) (param $w i32) (param $M i32) (param $K i32) (param $N i32)
  (param $variant i32)
  (call $gemm_nt (local.get $dinp) (local.get $dout) (local.get $w)
    (local.get $M) (local.get $N) (local.get $K) ${ntBlock}))

;; How many variants a form has: 0 = matmul and matmul_backward_weight (register tiles), 1 =
;; matmul_nt and matmul_backward_input (row blocks).
(func (export "variant_count") (param $form i32) (result i32)
  (select (i32.const ${TILE_VARIANTS[tier].length}) (i32.const ${NT_ROW_BLOCKS.length})
    (i32.eqz (local.get $form))))

;; The machine's peak: n rounds of 12 independent multiply-add chains of f32x4 (96 flops a
;; round), the same instruction the matmul tiles use. Returns a lane, so nothing is left out.
(func (export "madd_peak") (param $n i32) (result f32)
  ${range(12).map((i) => `(local $a${i} v128)`).join(" ")} (local $x v128) (local $y v128)
  (local.set $x (f32x4.splat (f32.const 0.999)))
  (local.set $y (f32x4.splat (f32.const 0.001)))
  (if (local.get $n) (then (loop $round
${
    range(12).map((i) =>
      `    (local.set $a${i} ${
        madd(tier, `(local.get $a${i})`, "(local.get $x)", "(local.get $y)")
      })`
    ).join("\n")
  }
    (br_if $round (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))))
  (f32x4.extract_lane 0 ${
    range(12).map((i) => `(local.get $a${i})`).reduce((a, b) => `(f32x4.add ${a} ${b})`)
  }))`;
}
