/**
 * Generates causal self-attention: the causal driver over the register tiles (`causalDriver`) and
 * the exported attention kernels (`attentionExports`). Its helpers are in attention_helpers.ts.
 *
 * @module
 */

import { indent, TILE, type WasmTier, WIDE } from "./common.ts";

// ---------------------------------------------------------------------------------------------
// Causal self-attention. Per (batch b, head h) the work is five small matrix products over the
// T x T triangle, run on the matmul register tiles of gemm.ts by `gemm_causal`, which skips the
// tiles the causal mask makes zero:
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
export function causalDriver(tier: WasmTier): string {
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

/** The exported attention kernels: forward, backward, and rows of one sequence (KV cache). */
export function attentionExports(): string {
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
