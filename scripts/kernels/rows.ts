/**
 * Generates the exported per-row kernels: bias gradient, layernorm, softmax + cross-entropy.
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

/** Exported per-row kernels: bias gradient, layernorm, softmax + cross-entropy. */
export function rowExports(): string {
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
