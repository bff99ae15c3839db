"""Pooling kernels: MaxPool, AveragePool (ONNX pad counting), GlobalAveragePool, GlobalMaxPool."""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from ..registry import register
from .common import F64, wide


def _pool_geometry(node, x):
    kernel = list(node.attr("kernel_shape"))
    return kernel, ic.node_geometry(node, x.shape, kernel, pooling=True)


def _check_maxpool(node):
    if len(node.outputs) > 1 and node.outputs[1]:
        return "the Indices output is not supported"
    if int(node.attr("storage_order", 0)) != 0:
        return "storage_order=1 is not supported"
    return None


def _lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


@register("MaxPool", check=_check_maxpool)
def max_pool(node, x):
    kernel, (begin, end, out) = _pool_geometry(node, x)
    w = ic.windows(x, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, _lowest(x.dtype))
    return w.max(axis=tuple(range(-len(kernel), 0))).astype(x.dtype)


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
    kernel, (begin, end, out) = _pool_geometry(node, x)
    w = ic.windows(wide(x), kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
    s = w.sum(axis=tuple(range(-len(kernel), 0)))
    return (s / avg_pool_counts(node, x.shape, kernel, begin, end, out)).astype(x.dtype)


@register("GlobalAveragePool")
def global_average_pool(node, x):
    return wide(x).mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


@register("GlobalMaxPool")
def global_max_pool(node, x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
