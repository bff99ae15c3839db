"""Compiled float32 kernels of the reference's float Conv path (optional: needs ``numba``, the ``fast`` extra;
importing this module without it raises ImportError and the callers keep their numpy paths).

The same numbers as the numpy paths they replace, only faster: every product and sum a plain float32 operation in
the same order (numba compiles without fast-math, so LLVM never contracts a multiply and an add into an FMA).
Inner loops index views with the bare loop index (a computed index carries numba's negative-index wraparound,
which stops LLVM from vectorising the loop); views are made outside the inner loops (each costs a reference
count).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, error_model="numpy", cache=True)
def _depthwise_flat(ph, w, wq, sh, sw, dh, dw, out):
    """out (N, C * mult, OH, OW) from the stride phases of the padded input along its last axis, ph (sw, N, C,
    rows * wq) (phase r: columns r, r + sw, ...), and w (C * mult, KH, KW): output (y, q) is computed at flat
    position y * sh * wq + q and tap (i, j) reads phase (j * dw) % sw from flat offset i * dh * wq + (j * dw) //
    sw, so every tap is one unit-stride run over the plane (the wrapped positions between rows computed and
    dropped). Per output, the products x * w (each rounded) summed in kernel order, as ``im2col._sum_taps``."""
    cc = ph.shape[2]
    nn, mm, oh, ow = out.shape
    kh, kw = w.shape[1], w.shape[2]
    mult = mm // cc
    pitch = sh * wq
    span = (oh - 1) * pitch + ow
    tmp = np.empty(span, np.float32)
    for n in range(nn):
        for m in range(mm):
            for i in range(kh):
                for j in range(kw):
                    st = i * dh * wq + (j * dw) // sw
                    xs = ph[(j * dw) % sw, n, m // mult, st:st + span]
                    wv = w[m, i, j]
                    if i == 0 and j == 0:
                        for p in range(span):
                            tmp[p] = xs[p] * wv
                    else:
                        for p in range(span):
                            tmp[p] = tmp[p] + xs[p] * wv
            o = out[n, m]
            for y in range(oh):
                t = tmp[y * pitch:y * pitch + ow]
                r = o[y]
                for q in range(ow):
                    r[q] = t[q]


def depthwise2d(xp: np.ndarray, w: np.ndarray, strides, dilations, out_spatial) -> np.ndarray:
    """A 2-D depthwise convolution (one input channel per group) of the padded float32 input ``xp`` (N, C, H, W),
    every window inside it, and ``w`` (C * mult, KH, KW): (N, C * mult, *out_spatial) float32, summed as
    ``im2col.depthwise`` does (see :func:`_depthwise_flat`)."""
    sh, sw = int(strides[0]), int(strides[1])
    n, c, h, wd = xp.shape
    wq = -(-wd // sw)
    ph = np.zeros((sw, n, c, h + 1, wq), np.float32)  # one spare row: the last tap's run may pass the last row
    for r in range(sw):
        v = xp[..., r::sw]
        ph[r, :, :, :h, :v.shape[-1]] = v
    out = np.empty((n, w.shape[0]) + tuple(out_spatial), np.float32)
    _depthwise_flat(ph.reshape(sw, n, c, -1), np.ascontiguousarray(w, np.float32), wq, sh, sw,
                    int(dilations[0]), int(dilations[1]), out)
    return out


@njit(nogil=True, error_model="numpy", cache=True)
def _scale_shift(x, scale, shift, out):
    """out[n, c, :] = x[n, c, :] * scale[c] + shift[c] in float32, the product rounded, then the sum (one pass)."""
    nn, cc = x.shape[:2]
    for n in range(nn):
        for c in range(cc):
            xs, o = x[n, c], out[n, c]
            a, b = scale[c], shift[c]
            for p in range(xs.shape[0]):
                o[p] = xs[p] * a + b


def scale_shift(x: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``x * scale + shift`` per channel (axis 1) of float32 ``x`` (N, C, ...), as numpy's ``y = x * scale;
    y += shift`` computes it (two roundings), in one pass."""
    xc = np.ascontiguousarray(x)
    out = np.empty(xc.shape, np.float32)
    _scale_shift(xc.reshape(xc.shape[0], xc.shape[1], -1), np.ascontiguousarray(scale, np.float32).reshape(-1),
                 np.ascontiguousarray(shift, np.float32).reshape(-1), out.reshape(xc.shape[0], xc.shape[1], -1))
    return out



@njit(nogil=True, cache=True)
def _gather(x, index, out):
    """out[t, k] = x[t, index[k]], 0 where index[k] == x.shape[1] (the padding)."""
    size = x.shape[1]
    a = np.zeros(size + 1, np.float32)  # a sample, then the padding's 0
    for t in range(x.shape[0]):
        a[:size] = x[t]
        b = out[t]
        for k in range(index.shape[0]):
            b[k] = a[index[k]]


def gather_columns(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``np.take`` of float32 ``x`` (N, ...) flattened per sample and extended by one zero at the end, at
    ``index`` (``im2col.gather_index``): (N, index.size), the same entries, without the extended copy."""
    out = np.empty((x.shape[0], index.size), np.float32)
    _gather(np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1), index, out)
    return out


@njit(nogil=True, cache=True)
def _bias_relu(y, b, has_bias, relu):
    for t in range(y.shape[0]):
        for c in range(y.shape[1]):
            row = y[t, c]
            bc = b[c] if has_bias else np.float32(0)
            for q in range(row.shape[0]):
                v = row[q] + bc if has_bias else row[q]
                row[q] = v if (not relu or v >= 0 or v != v) else np.float32(0)


def bias_relu(y: np.ndarray, b: np.ndarray | None, relu: bool) -> np.ndarray:
    """In place on float32 ``y`` (N, C, P): ``y += b`` per channel (float32), then, when ``relu``, numpy's
    ``maximum(y, 0)`` (NaN and -0.0 kept); returns ``y``."""
    if b is None and not relu:
        return y
    _bias_relu(y, np.zeros(1, np.float32) if b is None else b, b is not None, relu)
    return y


@njit(nogil=True, cache=True)
def _rows2d(x, kh, kw, sh, sw, dh, dw, ph, pw, r0, r1, ow, out):
    """out[(c, i, j), (r - r0) * ow + q] = x[c, r * sh + i * dh - ph, q * sw + j * dw - pw] (0 outside x) for the
    output rows r0 <= r < r1 of one sample x (C, H, W)."""
    hh, ww = x.shape[1], x.shape[2]
    for c in range(x.shape[0]):
        for i in range(kh):
            for j in range(kw):
                dst = out[(c * kh + i) * kw + j]
                off = j * dw - pw
                qa = min(ow, max(0, (-off + sw - 1) // sw))  # output columns reading inside [0, ww)
                qb = max(qa, min(ow, (ww - 1 - off) // sw + 1)) if ww - 1 - off >= 0 else qa
                for r in range(r0, r1):
                    ih = r * sh + i * dh - ph
                    d = dst[(r - r0) * ow:(r - r0 + 1) * ow]
                    if ih < 0 or ih >= hh:
                        d[:] = 0
                        continue
                    src = x[c, ih]
                    d[:qa] = 0
                    if sw == 1:
                        sv = src[qa + off:qb + off]
                        dv = d[qa:qb]
                        for q in range(qb - qa):
                            dv[q] = sv[q]
                    else:
                        for q in range(qa, qb):
                            d[q] = src[q * sw + off]
                    d[qb:] = 0


def row_columns(x: np.ndarray, kernel, strides, dilations, begin, r0: int, r1: int, ow: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """The patch-matrix columns of output rows r0..r1 of one float32 2-D sample ``x`` (C, H, W): (C * kh * kw,
    (r1 - r0) * ow), the entries of ``im2col.sample_columns`` (into ``out`` when given)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides or (1, 1), dilations or (1, 1)
    if out is None:
        out = np.empty((x.shape[0] * kh * kw, (r1 - r0) * ow), np.float32)
    _rows2d(x, kh, kw, sh, sw, dh, dw, begin[0], begin[1], r0, r1, ow, out)
    return out
