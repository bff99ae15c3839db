"""Pooling kernels: MaxPool (with Indices), AveragePool (ONNX pad counting), GlobalAveragePool, GlobalMaxPool,
LpPool, MaxUnpool."""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from ..registry import register
from .common import F64, wide


def _pool_geometry(node, x):
    kernel = list(node.attr("kernel_shape"))
    return kernel, ic.node_geometry(node, x.shape, kernel, pooling=True)


def _lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


@register("MaxPool")
def max_pool(node, x):
    """Y, and when asked for, Indices: the flat position of each maximum in the unpadded input (row-major, or
    column-major over the spatial axes with storage_order=1); ties go to the first position in the window."""
    kernel, (begin, end, out) = _pool_geometry(node, x)
    if len(node.outputs) < 2 or not node.outputs[1]:
        return ic.window_max(x, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out,
                             _lowest(x.dtype)).astype(x.dtype, copy=False)
    w = ic.windows(x, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, _lowest(x.dtype))
    k_axes = tuple(range(-len(kernel), 0))
    y = w.max(axis=k_axes).astype(x.dtype)
    spatial = x.shape[2:]
    pos = np.arange(int(np.prod(spatial)), dtype=np.int64).reshape(spatial)
    if int(node.attr("storage_order", 0)):
        pos = pos.reshape(spatial[::-1]).T  # column-major numbering
    pos = np.broadcast_to(pos, (1, 1) + spatial)
    wi = ic.windows(pos, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, -1)
    flat = w.reshape(w.shape[:-len(kernel)] + (-1,))
    first = np.argmax(flat, axis=-1)[..., None]
    idx = np.take_along_axis(np.broadcast_to(wi.reshape(wi.shape[:-len(kernel)] + (-1,)), flat.shape), first,
                             axis=-1)[..., 0]
    base = (np.arange(x.shape[0] * x.shape[1], dtype=np.int64) * int(np.prod(spatial)))
    return y, idx + base.reshape((x.shape[0], x.shape[1]) + (1,) * len(spatial))


def avg_pool_counts(node, x_shape, kernel, begin, end, out):
    """Divisor per output position: valid inputs, or inputs + explicit pads with count_include_pad."""
    spatial = x_shape[2:]
    ones = np.ones((1, 1) + tuple(spatial), F64)
    if int(node.attr("count_include_pad", 0)):
        ones = np.pad(ones, [(0, 0), (0, 0)] + list(zip(begin, end)), constant_values=1.0)
        b0 = [0] * len(begin)
        w = ic.windows(ones, kernel, node.attr("strides"), node.attr("dilations"), b0, b0, out, 0.0)
    else:
        w = ic.windows(ones, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
    return w.sum(axis=tuple(range(-len(kernel), 0)))


@register("AveragePool")
def average_pool(node, x):
    """float32 2-D (MLAS's ``MlasPool``): the window's inputs added in float32 row by row from +0, then divided by
    the count in float32; other dtypes and ranks: the float64 sum rounded once."""
    kernel, (begin, end, out) = _pool_geometry(node, x)
    if x.dtype == np.float32 and len(kernel) == 2 and not any(d != 1 for d in node.attr("dilations") or []):
        w = ic.windows(x, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
        s = np.zeros(w.shape[:-2], np.float32)
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                s += w[..., i, j]
        return s / avg_pool_counts(node, x.shape, kernel, begin, end, out).astype(np.float32)
    w = ic.windows(wide(x), kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
    s = w.sum(axis=tuple(range(-len(kernel), 0)))
    return (s / avg_pool_counts(node, x.shape, kernel, begin, end, out)).astype(x.dtype)


@register("GlobalAveragePool")
def global_average_pool(node, x):
    return wide(x).mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


@register("GlobalMaxPool")
def global_max_pool(node, x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@register("LpPool")
def lp_pool(node, x):
    """(sum over the window of |x| ** p) ** (1 / p); padding contributes nothing."""
    kernel, (begin, end, out) = _pool_geometry(node, x)
    p = x.dtype.type(node.attr("p", 2))
    w = ic.windows(np.abs(x) ** p, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0)
    return (w.sum(axis=tuple(range(-len(kernel), 0))) ** (1 / p)).astype(x.dtype)


@register("MaxUnpool")
def max_unpool(node, x, indices, output_shape=None):
    """Zeros of ``output_shape`` (default: the shape the pooling came from) with ``x`` placed at the flat
    ``indices`` a MaxPool returned."""
    if output_shape is None:
        kernel = list(node.attr("kernel_shape"))
        n = len(kernel)
        strides = list(node.attr("strides") or [1] * n)
        pads = list(node.attr("pads") or [0] * (2 * n))
        shape = list(x.shape[:2]) + [(x.shape[2 + i] - 1) * strides[i] - pads[i] - pads[n + i] + kernel[i]
                                     for i in range(n)]
    else:
        shape = [int(d) for d in np.asarray(output_shape).reshape(-1)]
    y = np.zeros(int(np.prod(shape)), x.dtype)
    y[np.asarray(indices).reshape(-1)] = x.reshape(-1)
    return y.reshape(shape)
