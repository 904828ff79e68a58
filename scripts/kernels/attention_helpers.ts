/**
 * Generates the helpers of causal attention: the transposed block copy (`transposeHelper`) and the
 * row-wise causal softmax and its backward (`causalSoftmaxHelpers`).
 *
 * @module
 */

import {
  expInit,
  expLocals,
  indent,
  laneLocals,
  lanesLoop,
  laneTotal,
  zeroLanes,
} from "./common.ts";

/** An i8x16.shuffle picking four f32 lanes: 0..3 are the lanes of `x`, 4..7 those of `y`. */
function shuffle4(lanes: number[], x: string, y: string): string {
  const bytes = lanes.flatMap((l) => [0, 1, 2, 3].map((b) => 4 * l + b));
  return `(i8x16.shuffle ${bytes.join(" ")} ${x} ${y})`;
}

/** Transposed copy of a strided [rows, cols] block: 4 x 4 blocks by shuffles, scalar edges. */
export function transposeHelper(): string {
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
export function causalSoftmaxHelpers(): string {
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
