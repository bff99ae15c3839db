"""onnxruntime's float32 Conv (CPU provider, AVX512F machine), bit for bit: which MLAS kernel runs and its order.

* A constant weight (an initializer, or folded from one): onnxruntime's NchwcTransformer rewrites every 2-D Conv
  with group 1 or depthwise (group == input == output channels) into an NchwcConv (block 16; channel counts padded
  up to the block), computed by ``mlas_conv_jit``'s kernels: fewer than 16 input channels the NCHW-input kernel,
  a 1x1 kernel without padding the pointwise one, else the NCHWc one.
* A computed weight (a 16-bit QDQ model's DequantizeLinear output: the transformer leaves the Conv alone):
  ``MlasConv``, i.e. per sample and group the patch matrix (im2col)
  times the weight by ``MlasGemm`` (non-packed B: ``mlas.sgemm``; one output channel per group, the M=1 AVX kernel),
  then the bias added (``MlasActivation``).
* Not reproduced yet (None: the caller keeps its BLAS path): a grouped, not depthwise, Conv of a constant weight.
"""
from __future__ import annotations

import numpy as np

from . import im2col as ic
from . import mlas
from .jit import compiled
from .numerics import fma32

F32 = np.float32


def kind(cn: int, m: int, group: int, kernel, pads) -> str | None:
    """The NCHWc kernel for a constant-weight 2-D Conv of ``cn`` input and ``m`` output channels, or None
    (``MlasConv``)."""
    if len(kernel) != 2:
        return None
    if group > 1:
        return "depthwise" if group == cn == m else None
    if cn < 16:
        return "nchw"
    return "pointwise" if tuple(kernel) == (1, 1) and not any(pads) else "nchwc"


def conv(node, x: np.ndarray, w: np.ndarray, b, const: bool):
    """(N, M, *out) float32 Conv of float32 ``x``, ``w`` (+ ``b``) as onnxruntime computes it, or None where its
    order is not reproduced (a grouped, not depthwise, Conv of a constant weight; a constant weight's N-D Conv)."""
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    g = int(node.attr("group", 1))
    begin, end, out = ic.node_geometry(node, x.shape, kernel)
    strides = node.attr("strides") or [1] * len(kernel)
    dil = node.attr("dilations") or [1] * len(kernel)
    how = kind(x.shape[1], w.shape[0], g, kernel, list(begin) + list(end)) if const else None
    if how is not None:
        jit = compiled("mlas_conv_jit")
        if jit is None:
            return _nchwc_numpy(x, w, b, g, kernel, (strides, dil, begin, end, out), how)
        return jit.nchwc_conv(x, w, b, g, strides, dil, begin, out, how)
    if const:  # a grouped Conv of a constant weight: onnxruntime's order not yet reproduced (the caller's path)
        return None
    return _mlas_conv(x, w, b, g, kernel, (strides, dil, begin, end, out))


def _mlas_conv(x, w, b, g, kernel, geom):
    """``MlasConv``: per sample and group, weight (Mg, K) times patches (K, P) by ``MlasGemm``, then + bias."""
    strides, dil, begin, end, out = geom
    n, m = x.shape[0], w.shape[0]
    mg, kg, p = m // g, w[0].size, int(np.prod(out))
    wg = np.ascontiguousarray(w, F32).reshape(g, mg, kg)
    jit = compiled("mlas_jit")
    y = np.empty((n, g, mg, p), F32)
    for s in range(n):
        cols = ic.sample_columns(x[s:s + 1], kernel, strides, dil, begin, end, out, F32).reshape(g, kg, p)
        for q in range(g):
            if mg == 1 or jit is None:
                y[s, q] = mlas.sgemm(wg[q], cols[q])
            else:
                y[s, q] = jit.packed_gemm(wg[q], np.ascontiguousarray(cols[q]), None, mlas._strides(p, kg))
    y = y.reshape((n, m) + tuple(out))
    if b is not None:
        y += np.asarray(b, F32).reshape((1, -1) + (1,) * len(out))
    return y


def _nchwc_numpy(x, w, b, g, kernel, geom, how):
    """``mlas_conv_jit.nchwc_conv`` without numba: the same FMA chains (``numerics.fma32``), one tap and channel at a
    time over every output (a padded tap adds 0 * w: exact, as MLAS's skip)."""
    strides, dil, begin, end, out = geom
    win = ic.windows(np.asarray(x, F32), kernel, strides, dil, begin, end, out, 0.0)  # (N, C, OH, OW, KH, KW)
    n, m, cg = x.shape[0], w.shape[0], w.shape[1]
    w = np.asarray(w, F32)
    if how == "depthwise":
        y = np.zeros((n, m) + tuple(out), F32)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                y = fma32(win[..., i, j], w[:, 0, i, j].reshape(1, -1, 1, 1), y)
    else:
        cblock, cbatch = {"nchw": (1, 1), "pointwise": (16, 128), "nchwc": (16, 16)}[how]
        y = None
        for b0 in range(0, cg, cbatch):
            acc = np.zeros((n, m) + tuple(out), F32)
            for c0 in range(b0, min(cg, b0 + cbatch), cblock):
                for i in range(kernel[0]):
                    for j in range(kernel[1]):
                        for ch in range(c0, min(cg, b0 + cbatch, c0 + cblock)):
                            acc = fma32(win[:, ch:ch + 1, :, :, i, j], w[:, ch, i, j].reshape(1, -1, 1, 1), acc)
            y = acc if y is None else (acc + y).astype(F32)
    if b is not None:
        y = y + np.asarray(b, F32).reshape(1, -1, 1, 1)
    return y
