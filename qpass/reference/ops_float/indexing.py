"""Indexing kernels: GatherElements, GatherND, ScatterElements (and the older Scatter), ScatterND, TopK, NonZero,
OneHot, Trilu, Compress, CumSum, CumProd, EyeLike, ReverseSequence, Unique, CenterCropPad. Negative indices count from the end; the
values are moved, not computed, except by the Scatter reductions and the cumulative ops, which work in the
input dtype as onnxruntime does."""
from __future__ import annotations

import numpy as np
import onnx

from ..registry import register

_SCATTER_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _positive(idx, dim):
    idx = np.asarray(idx).astype(np.int64)
    return np.where(idx < 0, idx + dim, idx)


@register("GatherElements")
def gather_elements(node, x, idx):
    axis = int(node.attr("axis", 0)) % x.ndim
    return np.take_along_axis(x, _positive(idx, x.shape[axis]), axis=axis)


@register("GatherND")
def gather_nd(node, x, idx):
    b = int(node.attr("batch_dims", 0))
    k = idx.shape[-1]
    batch = int(np.prod(x.shape[:b], dtype=np.int64))
    data = x.reshape((batch,) + x.shape[b:])
    ind = _positive(idx, np.asarray(x.shape[b:b + k], np.int64)).reshape(batch, -1, k)
    rows = np.arange(batch).reshape(-1, 1)
    out = data[(rows,) + tuple(ind[..., i] for i in range(k))]  # (batch, M, *rest)
    return out.reshape(idx.shape[:-1] + x.shape[b + k:])


def _check_scatter(node):
    red = node.attr("reduction", "none")
    if red not in ("none",) + tuple(_SCATTER_REDUCTIONS):
        return f"reduction {red!r} is not supported"
    return None


def _scatter_at(out, index, updates, reduction):
    """``out[index] = updates`` in index order (a later duplicate wins), or combined by ``reduction``."""
    if reduction == "none":
        out[index] = updates
    else:
        _SCATTER_REDUCTIONS[reduction].at(out, index, updates)
    return out


@register("ScatterElements", check=_check_scatter)
@register("Scatter", check=_check_scatter)
def scatter_elements(node, x, idx, updates):
    axis = int(node.attr("axis", 0)) % x.ndim
    full = list(np.indices(idx.shape, sparse=True))
    full[axis] = _positive(idx, x.shape[axis])
    return _scatter_at(x.copy(), tuple(full), updates, node.attr("reduction", "none"))


@register("ScatterND", check=_check_scatter)
def scatter_nd(node, x, idx, updates):
    k = idx.shape[-1]
    ind = _positive(idx, np.asarray(x.shape[:k], np.int64))
    return _scatter_at(x.copy(), tuple(ind[..., i] for i in range(k)), updates, node.attr("reduction", "none"))


@register("TopK")
def top_k(node, x, k):
    """The k largest (or smallest) along ``axis``, sorted; equal values keep their index order."""
    axis = int(node.attr("axis", -1)) % x.ndim
    k = int(np.asarray(k).reshape(-1)[0]) if node.opset >= 10 else int(node.attr("k"))
    if int(node.attr("largest", 1)):
        order = np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
        order = x.shape[axis] - 1 - order
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    order = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, order, axis=axis), order.astype(np.int64)


@register("NonZero")
def non_zero(node, x):
    return np.asarray(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@register("OneHot")
def one_hot(node, indices, depth, values):
    depth = int(np.asarray(depth).reshape(-1)[0])
    ind = np.asarray(indices)
    ind = np.where(ind < 0, ind + depth, ind).astype(np.int64)
    axis = int(node.attr("axis", -1)) % (ind.ndim + 1)
    shape = [1] * (ind.ndim + 1)
    shape[axis] = depth
    hot = np.expand_dims(ind, axis) == np.arange(depth).reshape(shape)
    v = np.asarray(values).reshape(-1)
    return np.where(hot, v[1], v[0]).astype(v.dtype)


@register("Trilu")
def trilu(node, x, k=None):
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return np.triu(x, k) if int(node.attr("upper", 1)) else np.tril(x, k)


@register("Compress")
def compress(node, x, condition):
    axis = node.attr("axis")
    cond = np.asarray(condition).astype(bool).reshape(-1)
    if axis is None:
        return x.reshape(-1)[np.flatnonzero(cond[:x.size])]
    axis = int(axis) % x.ndim
    return np.take(x, np.flatnonzero(cond[:x.shape[axis]]), axis=axis)


def _cumulative(fn, identity):
    def k(node, x, axis):
        a = int(np.asarray(axis).reshape(-1)[0]) % x.ndim
        reverse, exclusive = int(node.attr("reverse", 0)), int(node.attr("exclusive", 0))
        v = np.flip(x, a) if reverse else x
        y = fn(v, axis=a, dtype=x.dtype)
        if exclusive:
            first = np.full_like(np.take(y, [0], axis=a), identity)
            y = np.concatenate([first, np.take(y, np.arange(y.shape[a] - 1), axis=a)], axis=a)
        return np.flip(y, a) if reverse else y
    return k


register("CumSum")(_cumulative(np.cumsum, 0))
register("CumProd")(_cumulative(np.cumprod, 1))


@register("EyeLike")
def eye_like(node, x):
    dt = x.dtype if node.attr("dtype") is None else onnx.helper.tensor_dtype_to_np_dtype(int(node.attr("dtype")))
    return np.eye(x.shape[0], x.shape[1], int(node.attr("k", 0)), dtype=dt)


@register("ReverseSequence")
def reverse_sequence(node, x, lens):
    b, t = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
    y = np.moveaxis(x, (b, t), (0, 1)).copy()
    for i, n in enumerate(np.asarray(lens).reshape(-1)):
        y[i, :int(n)] = y[i, :int(n)][::-1]
    return np.moveaxis(y, (0, 1), (b, t))


@register("Unique")
def unique(node, x):
    """Y, indices of first occurrences, inverse indices, counts; sorted=0 keeps the order of first occurrence."""
    axis = node.attr("axis")
    kw = {} if axis is None else {"axis": int(axis) % x.ndim}
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True, **kw)
    inverse = inverse.reshape(-1)
    if not int(node.attr("sorted", 1)):
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        first, counts, inverse = first[order], counts[order], rank[inverse]
        y = np.take(x.reshape(-1) if axis is None else x, first, axis=kw.get("axis", 0))
    return y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64)


@register("CenterCropPad")
def center_crop_pad(node, x, shape):
    """Crop or zero-pad each of ``axes`` to ``shape`` around the centre (the odd element goes to the end)."""
    axes = [int(a) % x.ndim for a in (node.attr("axes") or range(x.ndim))]
    src = [slice(None)] * x.ndim
    dst = [slice(None)] * x.ndim
    out = list(x.shape)
    for a, target in zip(axes, np.asarray(shape).reshape(-1)):
        dim, target = x.shape[a], int(target)
        out[a] = target
        lo = abs(dim - target) // 2
        if target < dim:
            src[a] = slice(lo, lo + target)
        else:
            dst[a] = slice(lo, lo + dim)
    y = np.zeros(out, x.dtype)
    y[tuple(dst)] = x[tuple(src)]
    return y
