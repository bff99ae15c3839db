"""Compiled integer kernels (optional: needs ``numba``, the ``fast`` extra; importing this module without it raises
ImportError and the callers keep the numpy path of ``ops_integer``): QLinearConv / QGemm / QLinearMatMul with the
patch extraction, the exact accumulation and MLAS's requantisation fused in one call, no intermediate arrays.

The numbers are those of the numpy path by construction: the products and every partial sum are exact integers of
the accumulation type (float32 below 2^24, float64 below 2^53: the callers pass the type ``arith.exact_dtype``
proved from the operand ranges), so summation order and fused multiply-adds cannot change them; the bias is added
in float64 (exact below 2^53), and the requantisation is ``numerics.requantize_mlas`` written out per element:
``v = f32(f32(acc) * mult)``, clamped to [qmin - zp, qmax - zp], rounded half to even, plus zp.
tests/test_int15_jit.py compares both paths (``QPASS_NO_JIT=1``) on constructed worst cases.
Compiled code is cached by numba next to this module (``__pycache__``).
"""
from __future__ import annotations

import os

import numpy as np
from numba import njit

F32 = np.float32
# no NaN, infinity or signed zero among exact integer accumulators: lets LLVM vectorise the min / max and clamps
# (no reassociation: the float32 rounding steps stay as written)
_NO_NAN = {"nnan", "ninf", "nsz"}


def enabled() -> bool:
    """Whether the fused kernels call this module (``QPASS_NO_JIT=1``: the numpy path), read at every call."""
    return os.environ.get("QPASS_NO_JIT") != "1"


@njit(nogil=True, cache=True, fastmath=_NO_NAN)
def _requant_store(acc, bias, mult, zy, bl, bh, out, stats):
    """out[r, n] = requantised (acc[r, n] + bias[n]) for a block of accumulators (exact integers in acc's float
    type): f32(f32(t) * mult[n]) clamped to [bl, bh], rounded half to even by adding and subtracting 1.5 * 2^23
    in float32 (exact for |v| < 2^22), plus zy. stats: [acc_min, acc_max, clipped] updated (the range kept in
    integers, whose min / max vectorise)."""
    rr, nn = acc.shape
    lo, hi, cl = stats[0], stats[1], 0
    for r in range(rr):
        a = acc[r]
        o = out[r]
        for n in range(nn):
            ti = np.int64(a[n]) + bias[n]
            lo = min(lo, ti)
            hi = max(hi, ti)
            v = np.float32(np.float64(a[n]) + np.float64(bias[n])) * mult[n]  # the sum exact: |t| < 2^53
            cl += np.int32(v < bl) + np.int32(v > bh)
            v = min(max(v, bl), bh)
            o[n] = np.int32((v + np.float32(12582912.0)) - np.float32(12582912.0)) + zy
    stats[0], stats[1], stats[2] = lo, hi, stats[2] + cl


@njit(nogil=True, cache=True, fastmath=_NO_NAN)
def _requant_rows(acc, bias, mult, zy, bl, bh, out, stats):
    """:func:`_requant_store` with the parameters per row (output channel) instead of per column."""
    rr, nn = acc.shape
    lo, hi, cl = stats[0], stats[1], 0
    for r in range(rr):
        a = acc[r]
        o = out[r]
        b, m = np.float64(bias[r]), mult[r]
        mn, mx = np.int64(2 ** 62), np.int64(-2 ** 62)
        for n in range(nn):
            ai = np.int64(a[n])
            mn = min(mn, ai)
            mx = max(mx, ai)
            v = np.float32(np.float64(a[n]) + b) * m
            cl += np.int32(v < bl) + np.int32(v > bh)
            v = min(max(v, bl), bh)
            o[n] = np.int32((v + np.float32(12582912.0)) - np.float32(12582912.0)) + zy
        if nn:
            lo = min(lo, mn + bias[r])
            hi = max(hi, mx + bias[r])
    stats[0], stats[1], stats[2] = lo, hi, stats[2] + cl


@njit(nogil=True, cache=True)
def _float_store(acc, bias, mult, out):
    """out[r, n] = f32(f32(acc + bias) * mult) (a QGemm / MatMulIntegerToFloat with a float output)."""
    rr, nn = acc.shape
    for r in range(rr):
        for n in range(nn):
            out[r, n] = np.float32(np.float64(acc[r, n]) + np.float64(bias[n])) * mult[n]


@njit(nogil=True, cache=True)
def _block_dot(a, b, acc):
    """acc = a @ b by BLAS (numba's np.dot: scipy's sgemm / dgemm), exact: integers of proven range."""
    np.dot(a, b, acc)


@njit(nogil=True, cache=True)
def _gemm_block(a, b, acc):
    """acc = a @ b: BLAS from 4 rows on (its call costs more than a few rows' loop)."""
    if a.shape[0] >= 4 and a.shape[1] > 0:
        _block_dot(a, b, acc)
    else:
        _block_gemm(a, b, acc)


@njit(nogil=True, cache=True, fastmath={"contract"})
def _block_gemm(a, b, acc):
    """acc (R, N) = a (R, K) @ b (K, N), exact integers in a's float type (rows 4 at a time: each row of b read
    once for four)."""
    rr, kk = a.shape
    nn = b.shape[1]
    acc[:, :] = 0
    for r0 in range(0, rr, 4):
        r1 = min(rr, r0 + 4)
        if r1 - r0 == 4:
            for k in range(kk):
                a0, a1, a2, a3 = a[r0, k], a[r0 + 1, k], a[r0 + 2, k], a[r0 + 3, k]
                for n in range(nn):
                    bv = b[k, n]
                    acc[r0, n] += a0 * bv
                    acc[r0 + 1, n] += a1 * bv
                    acc[r0 + 2, n] += a2 * bv
                    acc[r0 + 3, n] += a3 * bv
        else:
            for r in range(r0, r1):
                for k in range(kk):
                    av = a[r, k]
                    if av != 0:
                        for n in range(nn):
                            acc[r, n] += av * b[k, n]


@njit(nogil=True, cache=True)
def gemm_q(a, za, b, bias, mult, zy, bl, bh, out, stats, fout):
    """QGemm / QLinearMatMul: a (D, R, K) codes, b (D or 1, K, N) exact integers (zero point removed) of the
    accumulation type, bias (N,) int64, mult (N,) float32; out (D, R, N) codes (``fout`` False) or float32
    (``fout``: no requantisation)."""
    dd, rr, kk = a.shape
    nn = b.shape[2]
    blk = max(64, min(rr, 262144 // max(kk, 1)))  # rows per block: one GEMM up to ~1 MiB of float32 rows
    ab = np.empty((blk, kk), b.dtype)
    acc = np.empty((blk, nn), b.dtype)
    for d in range(dd):
        bd = b[d if b.shape[0] > 1 else 0]
        for r0 in range(0, rr, blk):
            r1 = min(rr, r0 + blk)
            m = r1 - r0
            for r in range(m):
                src, dst = a[d, r0 + r], ab[r]
                for k in range(kk):
                    dst[k] = np.float64(src[k]) - za
            _gemm_block(ab[:m], bd, acc[:m])
            if fout:
                _float_store(acc[:m], bias, mult, out[d, r0:r1])
            else:
                _requant_store(acc[:m], bias, mult, zy, bl, bh, out[d, r0:r1], stats)


@njit(nogil=True, cache=True)
def requant_q(acc, bias, mult, zy, bl, bh, out, stats, fout):
    """The requantisation of ``gemm_q`` alone, for accumulators (R, N) computed elsewhere (exact integers, e.g.
    int32 from an integer GEMM): codes (``fout`` False) or float32 into ``out`` (R, N)."""
    if fout:
        _float_store(acc, bias, mult, out)
    else:
        _requant_store(acc, bias, mult, zy, bl, bh, out, stats)


@njit(nogil=True, cache=True)
def patch8(x, c, zx, g, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, s0, out):
    """The int8 patch matrix of group ``g`` for samples s0, s0 + 1, ...: out[(ch, i, j), t * oh * ow + r * ow + q]
    = x[s0 + t, g * cg + ch, r * sh + i * dh - ph, q * sw + j * dw - pw] - c, padding zx - c (so that minus
    zx - c it is 0); cg = out rows / (kh * kw)."""
    hh, ww = x.shape[2], x.shape[3]
    cg = out.shape[0] // (kh * kw)
    p = oh * ow
    pad = np.int8(zx - c)
    for t in range(out.shape[1] // p):
        for ch in range(cg):
            for i in range(kh):
                for j in range(kw):
                    dst = out[(ch * kh + i) * kw + j, t * p:(t + 1) * p]
                    # output columns q whose input column q * sw + j * dw - pw lies inside [0, ww)
                    off = j * dw - pw
                    qa = min(ow, max(0, (-off + sw - 1) // sw))
                    qb = max(qa, min(ow, (ww - 1 - off) // sw + 1)) if ww - 1 - off >= 0 else qa
                    for r in range(oh):
                        ih = r * sh + i * dh - ph
                        d = dst[r * ow:(r + 1) * ow]
                        if ih < 0 or ih >= hh:
                            d[:] = pad
                            continue
                        src = x[s0 + t, g * cg + ch, ih]
                        for q in range(qa):
                            d[q] = pad
                        if sw == 1:  # contiguous: a view indexed by the loop counter vectorises
                            sv = src[qa + off:qb + off]
                            dv = d[qa:qb]
                            for q in range(qb - qa):
                                dv[q] = np.int8(np.int32(sv[q]) - c)
                        else:
                            for q in range(qa, qb):
                                d[q] = np.int8(np.int32(src[q * sw + off]) - c)
                        for q in range(qb, ow):
                            d[q] = pad


@njit(nogil=True, cache=True)
def patch8_gather(x, c, zx, g, span, index, s0, out):
    """:func:`patch8` by a flat gather: ``index`` (``im2col.gather_index`` of one group's channels: out rows *
    oh * ow entries into a sample's group of ``span`` = C/G * H * W codes, ``span`` marking the padding)
    instead of the geometry."""
    kg = out.shape[0]
    p = index.shape[0] // kg
    pad = np.int8(zx - c)
    xs = x.reshape(x.shape[0], x.shape[1] * x.shape[2] * x.shape[3])
    for k in range(kg):
        row = out[k]
        ik = index[k * p:(k + 1) * p]
        for t in range(out.shape[1] // p):
            a = xs[s0 + t, g * span:(g + 1) * span]
            d = row[t * p:(t + 1) * p]
            for q in range(p):
                v = ik[q]
                d[q] = np.int8(np.int32(a[v]) - c) if v < span else pad


@njit(nogil=True, cache=True, fastmath=_NO_NAN)
def requant_samples(acc, bias, mult, zy, bl, bh, out, s0, m0, stats):
    """acc (Mg, T * P) of T samples side by side -> out[s0 + t, m0:m0 + Mg, :] (per output channel parameters;
    ``_requant_rows``' arithmetic, rows read contiguously)."""
    mg = acc.shape[0]
    p = out.shape[2]
    lo, hi, cl = stats[0], stats[1], 0
    for m in range(mg):
        a = acc[m]
        b, mu = np.float64(bias[m]), mult[m]
        mn, mx = np.int64(2 ** 62), np.int64(-2 ** 62)
        for t in range(acc.shape[1] // p):
            o = out[s0 + t, m0 + m]
            for q in range(p):
                v0 = a[t * p + q]
                ai = np.int64(v0)
                mn = min(mn, ai)
                mx = max(mx, ai)
                v = np.float32(np.float64(v0) + b) * mu
                cl += np.int32(v < bl) + np.int32(v > bh)
                v = min(max(v, bl), bh)
                o[q] = np.int32((v + np.float32(12582912.0)) - np.float32(12582912.0)) + zy
        if acc.shape[1]:
            lo = min(lo, mn + bias[m])
            hi = max(hi, mx + bias[m])
    stats[0], stats[1], stats[2] = lo, hi, stats[2] + cl


@njit(nogil=True, cache=True)
def _plane(x, s, c0, c1, zx, ph, pw, planes):
    """planes[c - c0] = the padded image of channel c of sample s minus zx (0 in the padding)."""
    hh, ww = x.shape[2], x.shape[3]
    planes[:, :, :] = 0
    for c in range(c0, c1):
        for i in range(hh):
            src = x[s, c, i]
            dst = planes[c - c0, i + ph, pw:]
            for j in range(ww):
                dst[j] = np.float64(src[j]) - zx


@njit(nogil=True, cache=True)
def conv_q(x, zx, w, bias, mult, zy, bl, bh, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out, stats, index):
    """QLinearConv, 2-D: x (N, C, H, W) codes; w (G, M/G, C/G * kh * kw) exact weights (zero point removed) of
    the accumulation type, columns ordered (c, i, j) like ONNX weights; bias (M,) int64; mult (M,) float32; ph / pw
    the begin pads; out (N, M, oh * ow) codes. Per sample and group: the padded planes of x - zx, then per block
    of output rows the patch matrix (C/G * kh * kw, rows * ow) copied from them, one GEMM, requantised into
    ``out``. A non-empty ``index`` (a small conv: ``im2col.gather_index`` of one group's channels): the whole
    patch matrix of a sample and group as one block, by that flat gather (:func:`_conv_gather`)."""
    if index.size:
        _conv_gather(x, zx, w, bias, mult, zy, bl, bh, index, out, stats)
        return
    nb, cc, hh, ww = x.shape
    gg, mg, kg = w.shape
    cg = cc // gg
    hp = max(hh + ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(ww + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    planes = np.empty((cg, hp, wp), w.dtype)
    cols = max(256, 131072 // max(kg, 1))  # patch columns per block (~512 KiB)
    rb = max(1, min(oh, cols // max(ow, 1)))  # output rows per block
    patch = np.empty((kg, rb * ow), w.dtype)
    acc = np.empty((mg, rb * ow), w.dtype)
    for s in range(nb):
        for g in range(gg):
            _plane(x, s, g * cg, (g + 1) * cg, zx, ph, pw, planes)
            for r0 in range(0, oh, rb):
                r1 = min(oh, r0 + rb)
                np_ = (r1 - r0) * ow
                pv = patch if np_ == patch.shape[1] else np.empty((kg, np_), w.dtype)
                av = acc if np_ == acc.shape[1] else np.empty((mg, np_), w.dtype)
                k = 0
                for c in range(cg):
                    for i in range(kh):
                        for j in range(kw):
                            for r in range(r0, r1):
                                src = planes[c, r * sh + i * dh, j * dw::sw]
                                dst = pv[k, (r - r0) * ow:(r - r0 + 1) * ow]
                                for q in range(ow):
                                    dst[q] = src[q]
                            k += 1
                _gemm_block(w[g], pv, av)
                _requant_rows(av, bias[g * mg:(g + 1) * mg], mult[g * mg:(g + 1) * mg], zy, bl, bh,
                              out[s, g * mg:(g + 1) * mg, r0 * ow:r1 * ow], stats)


@njit(nogil=True, cache=True)
def _conv_gather(x, zx, w, bias, mult, zy, bl, bh, index, out, stats):
    """:func:`conv_q` of a small conv whose whole patch matrix (C/G * kh * kw, oh * ow) is one block, built by a
    flat gather: patch[k] = x[s, g * C/G:, ...].flat[index[k]] - zx, 0 where index[k] is C/G * H * W (padding)
    (``im2col.gather_index`` of one group's channels); the same exact accumulators and requantisation."""
    nb = x.shape[0]
    gg, mg, kg = w.shape
    span = x.shape[1] // gg * x.shape[2] * x.shape[3]
    p = out.shape[2]
    patch = np.empty((kg, p), w.dtype)
    acc = np.empty((mg, p), w.dtype)
    pf = patch.reshape(kg * p)
    plane = np.zeros(span + 1, w.dtype)  # one group's codes minus zx, then the padding's 0
    for s in range(nb):
        a = x[s].reshape(x.shape[1] * x.shape[2] * x.shape[3])
        for g in range(gg):
            av = a[g * span:(g + 1) * span]
            for i in range(span):
                plane[i] = np.float64(av[i]) - zx
            for k in range(index.shape[0]):
                pf[k] = plane[index[k]]
            _gemm_block(w[g], patch, acc)
            _requant_rows(acc, bias[g * mg:(g + 1) * mg], mult[g * mg:(g + 1) * mg], zy, bl, bh,
                          out[s, g * mg:(g + 1) * mg], stats)


@njit(nogil=True, cache=True, fastmath={"contract"})
def depthwise_q(x, zx, w, bias, mult, zy, bl, bh, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, out, stats):
    """QLinearConv with one input and one output channel per group: x (N, C, H, W) codes; w (C, kh * kw) exact
    weights of the accumulation type; out (N, C, oh * ow) codes. Per sample and channel: the padded plane of
    x - zx, then one multiply-add per tap over each output row."""
    nb, cc, hh, ww = x.shape
    hp = max(hh + ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(ww + pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    plane = np.zeros((1, hp, wp), w.dtype)
    acc = np.empty((1, oh * ow), w.dtype)
    span = (oh - 1) * wp + ow
    accf = np.empty(span, w.dtype)
    for s in range(nb):
        for c in range(cc):
            _plane(x, s, c, c + 1, zx, ph, pw, plane)
            if sh == 1 and sw == 1:  # taps as long contiguous runs over the flat plane (wrapped columns dropped)
                accf[:] = 0
                pf = plane.reshape(hp * wp)
                for i in range(kh):
                    for j in range(kw):
                        wv = w[c, i * kw + j]
                        src = pf[i * dh * wp + j * dw:]  # a view: indexed by the loop counter, it vectorises
                        for f in range(span):
                            accf[f] += wv * src[f]
                for r in range(oh):
                    acc[0, r * ow:(r + 1) * ow] = accf[r * wp:r * wp + ow]
            else:
                acc[:, :] = 0
                for i in range(kh):
                    for j in range(kw):
                        wv = w[c, i * kw + j]
                        for r in range(oh):
                            row = plane[0, r * sh + i * dh, j * dw::sw]
                            dst = acc[0, r * ow:(r + 1) * ow]
                            for q in range(ow):
                                dst[q] += wv * row[q]
            _requant_rows(acc, bias[c:c + 1], mult[c:c + 1], zy, bl, bh, out[s, c:c + 1], stats)


@njit(nogil=True, cache=True)
def quantize_q(x, s, zy, bl, bh, out):
    """QuantizeLinear, one scale, codes of up to 16 bits (``numerics.quantize_linear``): v = f32(x / s) (a float32
    division), clamped to [bl, bh] = [qmin - zp, qmax - zp] (NaN to the lower bound, as MAXPS sends it), rounded
    half to even by 1.5 * 2^23 (clamping before or after rounding is the same: integer bounds), plus zp; flat."""
    for i in range(x.size):
        v = x[i] / s
        v = v if v >= bl else bl
        v = v if v <= bh else bh
        out[i] = np.int32((v + np.float32(12582912.0)) - np.float32(12582912.0)) + zy


@njit(nogil=True, cache=True)
def lookup2(a, b, oa, ob, table, out):
    """out[i] = table[a[i] + oa, b[i] + ob] of two flat 8-bit code arrays of the output's size or of one element
    (broadcast) (a fused Add / Mul's table of every code pair, (256, 256) flat; ``oa`` / ``ob``: minus the lowest
    code, 128 for int8)."""
    sa = 1 if a.size > 1 else 0
    sb = 1 if b.size > 1 else 0
    for i in range(out.size):
        out[i] = table[(np.int32(a[i * sa]) + oa) * 256 + np.int32(b[i * sb]) + ob]


@njit(nogil=True, cache=True)
def lookup1(c, table, out):
    """out[i] = table[c[i]] of a flat array of 8-bit codes read as uint8 (a fused unary chain's 256 codes)."""
    for i in range(out.size):
        out[i] = table[c[i]]


@njit(nogil=True, cache=True)
def dequantize_q(x, z, s, out):
    """DequantizeLinear, one scale, codes of up to 16 bits (``numerics.dequantize_linear``): f32(x - z) * s (the
    difference exact in float32, one rounding); flat."""
    for i in range(x.size):
        out[i] = np.float32(np.int32(x[i]) - z) * s
