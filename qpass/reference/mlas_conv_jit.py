"""onnxruntime's NCHWc float32 Conv kernels (MLAS ``snchwc.cpp`` / ``SconvKernel*``), bit for bit, compiled.

On an AVX512F machine onnxruntime's NchwcTransformer turns a 2-D float Conv with a constant weight into an
NchwcConv (block size 16) when its output channels per group are a multiple of 16 (depthwise: channels a multiple
of 16). Each output element is then one float32 accumulator, started at +0, updated by one ``vfmadd`` (one IEEE
rounding) per tap in this order: input-channel blocks of 16 (one block of 1 channel for the NCHW-input kernel, where
the input channels are fewer than 16), then kernel rows, kernel columns, the channels of the block; a tap in the
padding is skipped (its product is 0 and adding 0 is exact). The bias is added after the last block (a plain
float32 add), a fused Relu after that. Pointwise (1x1) and depthwise kernels are the same order with one tap or
one channel. Needs ``numba`` (the ``fast`` extra): without it the caller keeps its BLAS path.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .mlas_jit import _fma

F32 = np.float32
BLOCK = 16


@njit(cache=True, nogil=True)
def _conv(x, w, bias, has_bias, out, sh, sw, dh, dw, ph, pw, cblock, cbatch):
    """x (N, G, H, W, Cg); w (G, Cg, KH, KW, Mg); out (N, G, OH, OW, Mg) (all float32, C order). Kernel calls of
    ``cbatch`` input channels, each from +0 and added to the output so far; within a call, blocks of ``cblock``."""
    n, g, h, wd, cg = x.shape
    oh, ow, mg = out.shape[2], out.shape[3], out.shape[4]
    kh, kw = w.shape[2], w.shape[3]
    acc = np.empty(mg, np.float32)
    tot = np.empty(mg, np.float32)
    for s in range(n):
        for q in range(g):
            for r in range(oh):
                for c in range(ow):
                    for b0 in range(0, cg, cbatch):
                        acc[:] = 0
                        for c0 in range(b0, min(cg, b0 + cbatch), cblock):
                            for i in range(kh):
                                y = r * sh + i * dh - ph
                                if y < 0 or y >= h:
                                    continue
                                for j in range(kw):
                                    xx = c * sw + j * dw - pw
                                    if xx < 0 or xx >= wd:
                                        continue
                                    for ch in range(c0, min(cg, b0 + cbatch, c0 + cblock)):
                                        v = x[s, q, y, xx, ch]
                                        for m in range(mg):
                                            acc[m] = _fma(v, w[q, ch, i, j, m], acc[m])
                        if b0 == 0:
                            tot[:] = acc
                        else:
                            for m in range(mg):
                                tot[m] = acc[m] + tot[m]
                    for m in range(mg):
                        out[s, q, r, c, m] = tot[m] + bias[q * mg + m] if has_bias else tot[m]


@njit(cache=True, nogil=True)
def _depthwise(x, w, bias, has_bias, out, sh, sw, dh, dw, ph, pw):
    """x (N, C, H, W); w (C, KH, KW); out (N, C, OH, OW): one accumulator per output, taps row by row."""
    n, cn, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = w.shape[1], w.shape[2]
    acc = np.empty(ow, np.float32)
    for s in range(n):
        for ch in range(cn):
            for r in range(oh):
                acc[:] = 0
                for i in range(kh):
                    y = r * sh + i * dh - ph
                    if y < 0 or y >= h:
                        continue
                    for j in range(kw):
                        wv = w[ch, i, j]
                        for c in range(ow):
                            xx = c * sw + j * dw - pw
                            if xx >= 0 and xx < wd:
                                acc[c] = _fma(x[s, ch, y, xx], wv, acc[c])
                for c in range(ow):
                    out[s, ch, r, c] = acc[c] + bias[ch] if has_bias else acc[c]


def nchwc_conv(x: np.ndarray, w: np.ndarray, b, group: int, strides, dilations, begin, out_hw,
               how: str) -> np.ndarray:
    """(N, M, OH, OW) float32: the NCHWc Conv of ``x`` (N, C, H, W) and ``w`` (M, C/group, KH, KW) (+ ``b``) by
    kernel ``how`` (``mlas_conv.kind``)."""
    n, cn = x.shape[:2]
    m, cg = w.shape[:2]
    bias = np.zeros(1, F32) if b is None else np.ascontiguousarray(b, F32).reshape(-1)
    args = (int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1]), int(begin[0]), int(begin[1]))
    xc = np.ascontiguousarray(x, F32)
    if how == "depthwise":
        y = np.empty((n, m) + tuple(out_hw), F32)
        _depthwise(xc, np.ascontiguousarray(w, F32).reshape(m, w.shape[2], w.shape[3]), bias, b is not None, y,
                   *args)
        return y
    cblock, cbatch = {"nchw": (1, 1), "pointwise": (BLOCK, 8 * BLOCK), "nchwc": (BLOCK, BLOCK)}[how]
    mg = m // group
    wt = np.ascontiguousarray(np.asarray(w, F32).reshape(group, mg, cg, w.shape[2], w.shape[3])
                              .transpose(0, 2, 3, 4, 1))
    y = np.empty((n, group) + tuple(out_hw) + (mg,), F32)
    xt = np.ascontiguousarray(xc.reshape((n, group, cg) + x.shape[2:]).transpose(0, 1, 3, 4, 2))  # channels last
    _conv(xt, wt, bias, b is not None, y, *args, cblock, cbatch)
    return np.ascontiguousarray(y.transpose(0, 1, 4, 2, 3)).reshape((n, m) + tuple(out_hw))
