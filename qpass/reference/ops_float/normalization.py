"""Normalisation kernels added with issue 15: InstanceNormalization, GroupNormalization, RMSNormalization,
LpNormalization, MeanVarianceNormalization, LRN. Statistics are computed in float32 (float64 for float64
inputs), as onnxruntime does, and the result is rounded to the input dtype."""
from __future__ import annotations

import numpy as np

from ..registry import register


def _work(x):
    return x.astype(np.float64 if x.dtype == np.float64 else np.float32)


def _channel(v, ndim):
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _standardise(v, axes, eps):
    mu = v.mean(axis=axes, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=axes, keepdims=True)
    return (v - mu) / np.sqrt(var + v.dtype.type(eps))


@register("InstanceNormalization")
def instance_norm(node, x, scale, b):
    v = _work(x)
    y = _standardise(v, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return (y * _channel(scale, x.ndim).astype(v.dtype) + _channel(b, x.ndim).astype(v.dtype)).astype(x.dtype)


@register("GroupNormalization")
def group_norm(node, x, scale, b):
    """Statistics per (sample, group); scale and bias per channel (opset 21) or per group (opset 18)."""
    g = int(node.attr("num_groups"))
    n, c = x.shape[:2]
    v = _work(x).reshape((n, g, -1))
    y = _standardise(v, (2,), node.attr("epsilon", 1e-5)).reshape(x.shape)
    scale, b = np.asarray(scale).reshape(-1), np.asarray(b).reshape(-1)
    if scale.size == g and g != c:
        scale, b = np.repeat(scale, c // g), np.repeat(b, c // g)
    return (y * _channel(scale, x.ndim).astype(v.dtype) + _channel(b, x.ndim).astype(v.dtype)).astype(x.dtype)


@register("RMSNormalization")
def rms_norm(node, x, scale):
    axis = int(node.attr("axis", -1)) % x.ndim
    v = _work(x)
    ms = (v * v).mean(axis=tuple(range(axis, x.ndim)), keepdims=True)
    y = v / np.sqrt(ms + v.dtype.type(node.attr("epsilon", 1e-5)))
    return (y * np.asarray(scale).astype(v.dtype)).astype(x.dtype)


def _check_lp(node):
    return None if int(node.attr("p", 2)) in (1, 2) else f"p={node.attr('p')} is not supported (1 and 2 are)"


@register("LpNormalization", check=_check_lp)
def lp_norm(node, x):
    axis = int(node.attr("axis", -1)) % x.ndim
    v = _work(x)
    if int(node.attr("p", 2)) == 1:
        norm = np.abs(v).sum(axis=axis, keepdims=True)
    else:
        norm = np.sqrt((v * v).sum(axis=axis, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm == 0, 0, v / norm).astype(x.dtype)  # a zero vector stays zero


@register("MeanVarianceNormalization")
def mean_variance_norm(node, x):
    """(x - mean) / (std + 1e-9) over ``axes`` (default N, H, W), as the op's function body defines it."""
    axes = tuple(int(a) % x.ndim for a in (node.attr("axes") or [0, 2, 3]))
    v = _work(x)
    mu = v.mean(axis=axes, keepdims=True)
    std = np.sqrt((v * v).mean(axis=axes, keepdims=True) - mu * mu)
    return ((v - mu) / (std + v.dtype.type(1e-9))).astype(x.dtype)


@register("LRN")
def lrn(node, x):
    """x / (bias + alpha / size * sum of squares over the channel window) ** beta."""
    size = int(node.attr("size"))
    alpha, beta, bias = (float(node.attr(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    v = _work(x)
    sq = np.pad(v * v, [(0, 0), ((size - 1) // 2, size - 1 - (size - 1) // 2)] + [(0, 0)] * (x.ndim - 2))
    window = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    t = v.dtype.type
    return (v / (t(bias) + t(alpha / size) * window) ** t(beta)).astype(x.dtype)
