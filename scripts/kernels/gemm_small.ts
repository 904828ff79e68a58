/**
 * Generates the few-rows matmul (M <= 3, sampling): `smallGemm` and its driver `smallDriver`.
 *
 * @module
 */

import { indent, madd, range, type WasmTier } from "./common.ts";

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
export function smallGemm(tier: WasmTier, M: number): string {
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
export function smallDriver(): string {
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
