/**
 * Generates the math helpers ($hsum, $log_d) and the exported element-wise kernels (GELU, AdamW,
 * vector utilities).
 *
 * @module
 */

import { expInit, expLocals, indent, laneLocals, type Lanes, lanesLoop, num } from "./common.ts";

/** Math helpers: horizontal sum, log (f64). (exp is inlined where used: see expInline.) */
export function mathHelpers(): string {
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
export function elementwiseExports(): string {
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
