"""Matrix-product kernels: MatMul, Gemm, Conv and ConvTranspose, accumulated in float64 and rounded once (exact
for the integer-valued float tensors of streamlined QONNX models, whose accumulators pass 2^24); Einsum and Det in
the input dtype, as onnxruntime computes them; MatMulInteger and ConvInteger exact."""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from ..registry import register
from .common import F64, is_float, out_dtype, wide


@register("MatMul")
def matmul(node, a, b):
    if is_float(a.dtype):
        return np.matmul(a.astype(F64), b.astype(F64)).astype(out_dtype(a))
    return np.matmul(a, b)


@register("Gemm")
def gemm(node, a, b, c=None):
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    y = alpha * (wide(a) @ wide(b))
    if c is not None:
        y = y + beta * wide(c)
    return y.astype(out_dtype(a))


@register("Conv")
def conv(node, x, w, b=None):
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    begin, end, out = ic.node_geometry(node, x.shape, kernel)
    g = int(node.attr("group", 1))
    if g > 1 and w.shape[1] == 1:  # depthwise: one multiply-add per tap, no patch matrix
        y = ic.depthwise(wide(x), wide(w), kernel, node.attr("strides"), node.attr("dilations"), begin, end, out)
        if b is not None:
            y = y + wide(b).reshape((1, -1) + (1,) * len(out))
        return y.astype(out_dtype(x))
    m, p = w.shape[0], int(np.prod(out))
    wg = wide(w).reshape(g, m // g, -1)  # (g, Mg, Kg)
    per_sample = p * int(np.prod(w.shape[1:])) * g * wg.itemsize
    ys = []
    for lo, hi in ic.batch_chunks(x.shape[0], per_sample):
        cols = ic.columns(x[lo:hi], kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, wg.dtype)
        y = np.matmul(wg, cols.reshape(g, wg.shape[2], -1))  # (g, Mg, n * P): one GEMM per group
        ys.append(y.reshape(m, hi - lo, p).swapaxes(0, 1))
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    if b is not None:
        y = y + wide(b).reshape(1, -1, 1)
    return y.reshape(y.shape[:2] + tuple(out)).astype(out_dtype(x), order="C")  # C order: later ops stride well


@register("ConvTranspose")
def conv_transpose(node, x, w, b=None):
    g = int(node.attr("group", 1))
    kernel, strides, dil, begin, out = ic.conv_transpose_geometry(node, x, w)
    cols = ic.conv_transpose_columns(wide(x), wide(w), g)
    y = ic.col2im_transpose(cols, x.shape[2:], kernel, strides, dil, begin, out, F64)
    if b is not None:
        y = y + wide(b).reshape((1, -1) + (1,) * len(kernel))
    return y.astype(out_dtype(x))


@register("Einsum")
def einsum(node, *xs):
    """numpy's einsum in the input dtype, float32 for narrower floats (an equation without '->' sums the repeated
    letters and orders the rest alphabetically, as ONNX specifies)."""
    dt = xs[0].dtype
    narrow = is_float(dt) and dt.itemsize < 4
    y = np.einsum(node.attr("equation").replace(" ", ""), *[v.astype(np.float32) if narrow else v for v in xs])
    return np.asarray(y).astype(dt)


def _shifted(v, zero_point, axis_shape=None):
    """``v - zero_point`` as exact float64 integers (8-bit codes: every product and sum of the integer matrix
    product stays far below 2**53, so float64 BLAS is exact)."""
    v = np.asarray(v).astype(F64)
    if zero_point is None:
        return v
    z = np.asarray(zero_point).astype(F64)
    return v - (z.reshape(axis_shape) if axis_shape is not None and z.size > 1 else z)


@register("MatMulInteger")
def matmul_integer(node, a, b, a_zero_point=None, b_zero_point=None):
    """int32 result of (A - a_zero_point) @ (B - b_zero_point); zero points scalar, per row of A, per column
    of B."""
    y = np.matmul(_shifted(a, a_zero_point, (-1, 1)), _shifted(b, b_zero_point))
    return np.rint(y).astype(np.int64).astype(np.int32)


@register("ConvInteger")
def conv_integer(node, x, w, x_zero_point=None, w_zero_point=None):
    """int32 Conv of (X - x_zero_point) with (W - w_zero_point) (w_zero_point scalar or per output channel)."""
    wz = (-1,) + (1,) * (w.ndim - 1)
    y = conv(node, _shifted(x, x_zero_point), _shifted(w, w_zero_point, wz))
    return np.rint(y).astype(np.int64).astype(np.int32)


@register("Det")
def det(node, x):
    return np.linalg.det(x).astype(x.dtype)
