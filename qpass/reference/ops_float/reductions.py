"""Normalisation and reduction kernels: BatchNormalization, LayerNormalization, Softmax, LogSoftmax, the Reduce*
ops and ArgMax / ArgMin. The sums (normalisations, Softmax, ReduceMean / Sum / Prod) are computed in float64 and
rounded once to the input dtype; the Reduce* ops added later compute in the input dtype, as onnxruntime does."""
from __future__ import annotations

import numpy as np
import onnx

from .. import mlas, mlas_norm
from ..jit import compiled
from ..memo import kept
from ..registry import register
from .common import axes_arg, is_float, wide


JIT_MIN_SIZE = 4096  # smaller BatchNormalization inputs: numpy (a compiled call's fixed cost is not worth it)


def _check_bn(node):
    if node.opset < 14 and len([o for o in node.outputs if o]) > 1:
        return "running-statistics outputs before opset 14 are not supported"
    if not int(node.attr("training_mode", 0)) and len([o for o in node.outputs if o]) > 1:
        return "running-statistics outputs need training_mode=1"
    return None


def _bn_factors(ex, node, params, eps: float, shape):
    """float32 per-channel (scale / sqrt(var + eps), b - mean * that) as onnxruntime's kernel computes them, kept on
    the executor while the same parameter arrays come back (constant parameters: computed once, not per call)."""
    def make():
        f = [np.asarray(v, np.float32).reshape(shape) for v in params]
        inv = f[0] * (np.float32(1) / np.sqrt(f[3] + np.float32(eps)))
        return inv, f[1] - f[2] * inv

    return kept(ex.scratch, ("bn", node.name), tuple(params), make)[0]


@register("BatchNormalization", check=lambda ex, node: _check_bn(node), with_executor=True)
def batch_norm(ex, node, x, scale, b, mean, var):
    """Inference: the given statistics; training_mode=1: the batch's (population variance), plus the running
    mean and variance updated with ``momentum``."""
    eps = float(node.attr("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    training = int(node.attr("training_mode", 0))
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        batch_mean, batch_var = wide(x).mean(axis=axes), wide(x).var(axis=axes)
        mu, sigma2 = batch_mean, batch_var
    else:
        mu, sigma2 = wide(mean), wide(var)
    if x.dtype == np.float32 and not training:  # as onnxruntime's kernel: per-channel factors in float32
        inv, shift = _bn_factors(ex, node, (scale, b, mean, var), eps, shape)
        jit = compiled("float_jit") if x.ndim >= 2 and x.size >= JIT_MIN_SIZE else None
        if jit is not None:  # the same two roundings, one pass
            return jit.scale_shift(x, inv, shift)
        y = x * inv
        y += shift
        return y
    inv = wide(scale).reshape(shape) / np.sqrt(sigma2.reshape(shape) + eps)
    y = wide(x) * inv  # float64: (x - mean) * inv + b as x * inv + (b - mean * inv), in place
    y += wide(b).reshape(shape) - mu.reshape(shape) * inv
    y = y.astype(x.dtype)
    if not training:
        return y
    m = float(node.attr("momentum", 0.9))
    return (y, (wide(mean) * m + batch_mean * (1 - m)).astype(mean.dtype),
            (wide(var) * m + batch_var * (1 - m)).astype(var.dtype))


def _check_layer_norm(node):
    if len(node.outputs) > 1 and not is_float(onnx.helper.tensor_dtype_to_np_dtype(node.attr("stash_type", 1))):
        return f"stash_type {node.attr('stash_type')} is not a float type"
    return None


@register("LayerNormalization", check=_check_layer_norm)
def layer_norm(node, x, scale, b=None):
    """Y, and when asked for, Mean and InvStdDev (shape ``x.shape[:axis] + (1, ...)``) in the stash type."""
    axis = int(node.attr("axis", -1)) % x.ndim
    eps = float(node.attr("epsilon", 1e-5))
    stash = onnx.helper.tensor_dtype_to_np_dtype(node.attr("stash_type", 1))
    n = int(np.prod(x.shape[axis:]))
    if x.dtype == np.float32 and n >= mlas_norm.MIN_ROW and np.size(scale) == n and (b is None or np.size(b) == n) \
            and (len(node.outputs) == 1 or stash == np.float32):  # onnxruntime's MLAS kernel, bit for bit
        y, mean, inv = mlas_norm.layer_norm_avx2(x, scale, b, axis, eps)
        return y if len(node.outputs) == 1 else (y, mean, inv)
    v = wide(x)
    ax = tuple(range(axis, x.ndim))
    mu = v.mean(axis=ax, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=ax, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps) * wide(scale)
    if b is not None:
        y = y + wide(b)
    if len(node.outputs) == 1:
        return y.astype(x.dtype)
    return y.astype(x.dtype), mu.astype(stash), (1.0 / np.sqrt(var + eps)).astype(stash)


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


def _mlas_softmax(node, x):
    """float32 Softmax as onnxruntime's MLAS kernel computes it, bit for bit: compiled (``softmax_jit``) when
    numba is there, else the numpy emulation ``mlas.softmax`` (the same numbers); no float64 round trip."""
    kernel = (compiled("softmax_jit") or mlas).softmax
    axis = int(node.attr("axis", -1 if node.opset >= 13 else 1)) % max(x.ndim, 1)
    if node.opset < 13:
        return kernel(x.reshape(int(np.prod(x.shape[:axis])), -1), 1).reshape(x.shape)
    return kernel(x, axis)


@register("Softmax")
def softmax(node, x):
    if x.dtype == np.float32 and x.size:  # onnxruntime's MLAS kernel, bit for bit
        return _mlas_softmax(node, x)
    return _along_axis(node, x, _softmax)


@register("LogSoftmax")
def log_softmax(node, x):
    return _along_axis(node, x, _log_softmax)


def _reduce(fn, since, hi=True):
    """A Reduce* kernel: ``fn(v, axis, keepdims)`` over the node's axes (attribute before opset ``since``, input
    from then on), in float64 when ``hi`` (rounded once to the input dtype), else in the input dtype."""
    def k(node, x, axes=None):
        ax = axes_arg(node, axes, since=since)
        keep = bool(node.attr("keepdims", 1))
        if ax is None or len(ax) == 0:
            if node.attr("noop_with_empty_axes", 0):
                return x
            ax = list(range(x.ndim))
        v = wide(x) if hi else x
        return np.asarray(fn(v, axis=tuple(a % x.ndim for a in ax), keepdims=keep)).astype(x.dtype)
    return k


def _extreme(dtype, largest: bool):
    """The identity of ReduceMin (largest) / ReduceMax over an empty set: +-inf, the integer limits, True/False."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return largest
    if is_float(dt):
        return np.inf if largest else -np.inf
    info = np.iinfo(dt)
    return info.max if largest else info.min


def _max(v, axis, keepdims):
    if v.size == 0:
        return np.max(v, axis=axis, keepdims=keepdims, initial=_extreme(v.dtype, False))
    return np.max(v, axis=axis, keepdims=keepdims)


def _min(v, axis, keepdims):
    if v.size == 0:
        return np.min(v, axis=axis, keepdims=keepdims, initial=_extreme(v.dtype, True))
    return np.min(v, axis=axis, keepdims=keepdims)


def _l1(v, axis, keepdims):
    return np.sum(np.abs(v), axis=axis, keepdims=keepdims)


def _sum_square(v, axis, keepdims):
    return np.sum(v * v, axis=axis, keepdims=keepdims)


def _l2(v, axis, keepdims):
    return np.sqrt(_sum_square(v, axis, keepdims))


def _log_sum(v, axis, keepdims):
    with np.errstate(divide="ignore"):
        return np.log(np.sum(v, axis=axis, keepdims=keepdims))


def _log_sum_exp(v, axis, keepdims):
    """Shifted by the finite maximum, as onnxruntime computes it (an empty set gives -inf)."""
    if v.size == 0:
        return _log_sum(np.exp(v), axis, keepdims)
    m = np.max(v, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, np.zeros((), v.dtype))
    with np.errstate(divide="ignore"):
        y = np.log(np.sum(np.exp(v - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


register("ReduceMean")(_reduce(np.mean, 18))
register("ReduceSum")(_reduce(np.sum, 13))
register("ReduceMax")(_reduce(_max, 18, hi=False))
register("ReduceMin")(_reduce(_min, 18, hi=False))
register("ReduceProd")(_reduce(np.prod, 18))
# added with issue 15: in the input dtype, as onnxruntime computes them
register("ReduceL1")(_reduce(_l1, 18, hi=False))
register("ReduceL2")(_reduce(_l2, 18, hi=False))
register("ReduceSumSquare")(_reduce(_sum_square, 18, hi=False))
register("ReduceLogSum")(_reduce(_log_sum, 18, hi=False))
register("ReduceLogSumExp")(_reduce(_log_sum_exp, 18, hi=False))


def _arg(fn):
    """ArgMax / ArgMin: int64 indices along ``axis``; ties go to the first index unless select_last_index."""
    def k(node, x):
        axis = int(node.attr("axis", 0)) % max(x.ndim, 1)
        if int(node.attr("select_last_index", 0)):
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis=axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = np.asarray(idx, np.int64)
        return np.expand_dims(idx, axis) if int(node.attr("keepdims", 1)) else idx
    return k


register("ArgMax")(_arg(np.argmax))
register("ArgMin")(_arg(np.argmin))
