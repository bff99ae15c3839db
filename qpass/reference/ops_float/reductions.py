"""Normalisation and reduction kernels: BatchNormalization, LayerNormalization, Softmax, LogSoftmax and the
Reduce* ops, computed in float64 and rounded once to the input dtype."""
from __future__ import annotations

import numpy as np

from ..registry import register
from .common import axes_arg, wide


def _check_bn(node):
    if int(node.attr("training_mode", 0)):
        return "training_mode=1 is not supported (inference only)"
    if len([o for o in node.outputs if o]) > 1:
        return "running-statistics outputs (training) are not supported"
    return None


@register("BatchNormalization", check=_check_bn)
def batch_norm(node, x, scale, b, mean, var):
    eps = float(node.attr("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = wide(scale).reshape(shape) / np.sqrt(wide(var).reshape(shape) + eps)
    return ((wide(x) - wide(mean).reshape(shape)) * inv + wide(b).reshape(shape)).astype(x.dtype)


@register("LayerNormalization")
def layer_norm(node, x, scale, b=None):
    axis = int(node.attr("axis", -1)) % x.ndim
    eps = float(node.attr("epsilon", 1e-5))
    v = wide(x)
    ax = tuple(range(axis, x.ndim))
    mu = v.mean(axis=ax, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=ax, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps) * wide(scale)
    if b is not None:
        y = y + wide(b)
    return y.astype(x.dtype)


def _along_axis(node, x, fn):
    """``fn(v, axis)`` over the softmax axis of ``x`` in float64: the ``axis`` attribute from opset 13, before that
    the input coerced to 2-D at ``axis``."""
    axis = int(node.attr("axis", -1 if node.opset >= 13 else 1)) % max(x.ndim, 1)
    v = wide(x)
    if node.opset < 13:
        shp = v.shape
        return fn(v.reshape(int(np.prod(shp[:axis])), -1), 1).reshape(shp).astype(x.dtype)
    return fn(v, axis).astype(x.dtype)


def _softmax(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(v, axis):
    m = v.max(axis=axis, keepdims=True)
    return v - m - np.log(np.exp(v - m).sum(axis=axis, keepdims=True))


@register("Softmax")
def softmax(node, x):
    return _along_axis(node, x, _softmax)


@register("LogSoftmax")
def log_softmax(node, x):
    return _along_axis(node, x, _log_softmax)


def _reduce(fn, since, hi=True):
    def k(node, x, axes=None):
        ax = axes_arg(node, axes, since=since)
        keep = bool(node.attr("keepdims", 1))
        if ax is None or len(ax) == 0:
            if node.attr("noop_with_empty_axes", 0) and ax is not None:
                return x
            ax = list(range(x.ndim))
        v = wide(x) if hi else x
        return np.asarray(fn(v, axis=tuple(a % x.ndim for a in ax), keepdims=keep)).astype(x.dtype)
    return k


register("ReduceMean")(_reduce(np.mean, 18))
register("ReduceSum")(_reduce(np.sum, 13))
register("ReduceMax")(_reduce(np.max, 18, hi=False))
register("ReduceMin")(_reduce(np.min, 18, hi=False))
register("ReduceProd")(_reduce(np.prod, 18))
