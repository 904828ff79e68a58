/**
 * Generates the matmul with a transposed right operand (C = A . B^T): the dot-product tiles
 * (`ntTile`) and their driver `ntDriver`.
 *
 * @module
 */

import { indent, madd, range, type WasmTier } from "./common.ts";

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
export function ntTile(tier: WasmTier, R: number, Cn: number, U = 1): string {
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

/**
 * Driver for C[M, N] = A[M, S] . B[N, S]^T: row blocks of `$mb` rows (0: all; even, so that only
 * the last row of an odd M is a single row), and in each block 2x4 tiles over every column, then
 * 1-row and 1-column edges. The blocks only order the tiles: every output's sum is the same.
 */
export function ntDriver(): string {
  const call = (name: string) =>
    `(call ${name}
  (i32.add (local.get $c) (i32.add (i32.mul (local.get $i) (local.get $cs)) (i32.shl (local.get $j) (i32.const 2))))
  (i32.add (local.get $a) (i32.mul (local.get $i) (local.get $as)))
  (i32.add (local.get $b) (i32.mul (local.get $j) (local.get $as)))
  (local.get $as) (local.get $as) (local.get $cs) (local.get $S))`;
  const sweep = (cn: number) =>
    `(local.set $i (local.get $i0))
(block $rdone (loop $rows
  (br_if $rdone (i32.gt_u (i32.add (local.get $i) (i32.const 2)) (local.get $iend)))
${indent(call(`$nt_tile_2x${cn}`), 2)}
  (local.set $i (i32.add (local.get $i) (i32.const 2)))
  (br $rows)))
(if (i32.lt_u (local.get $i) (local.get $iend)) (then
${indent(call(`$nt_tile_1x${cn}u2`), 2)}))`;
  return `;; C[M, N] = A[M, S] . B[N, S]^T, row-major, overwriting C, by row blocks of mb rows.
(func $gemm_nt
  (param $c i32) (param $a i32) (param $b i32) (param $M i32) (param $S i32) (param $N i32)
  (param $mb i32)
  (local $as i32) (local $cs i32) (local $i i32) (local $j i32) (local $i0 i32) (local $iend i32)
  (local.set $as (i32.shl (local.get $S) (i32.const 2)))
  (local.set $cs (i32.shl (local.get $N) (i32.const 2)))
  (if (i32.eqz (local.get $mb)) (then (local.set $mb (local.get $M))))
  (local.set $i0 (i32.const 0))
  (block $idone (loop $iblocks
    (br_if $idone (i32.ge_u (local.get $i0) (local.get $M)))
    (local.set $iend (i32.add (local.get $i0) (local.get $mb)))
    (if (i32.gt_u (local.get $iend) (local.get $M)) (then (local.set $iend (local.get $M))))
    (local.set $j (i32.const 0))
    (block $jdone (loop $cols
      (br_if $jdone (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $N)))
${indent(sweep(4), 6)}
      (local.set $j (i32.add (local.get $j) (i32.const 4)))
      (br $cols)))
    (block $j1done (loop $cols1
      (br_if $j1done (i32.ge_u (local.get $j) (local.get $N)))
${indent(sweep(1), 6)}
      (local.set $j (i32.add (local.get $j) (i32.const 1)))
      (br $cols1)))
    (local.set $i0 (local.get $iend))
    (br $iblocks)))
)`;
}
