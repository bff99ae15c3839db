"""Shape and data-movement kernels: Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Split, Slice, Gather,
Shape, Size, Constant, ConstantOfShape, Expand, Tile, Range, Pad, DepthToSpace, SpaceToDepth."""
from __future__ import annotations

import math

import numpy as np

from ..registry import register
from .common import F32, axes_arg


@register("Reshape")
def reshape(node, x, shape=None):
    if node.opset < 5:
        shape = node.attr("shape")
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@register("Flatten")
def flatten(node, x):
    axis = int(node.attr("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Transpose")
def transpose(node, x):
    perm = node.attr("perm")
    return np.transpose(x, None if perm is None else list(perm))


@register("Squeeze")
def squeeze(node, x, axes=None):
    ax = axes_arg(node, axes)
    if ax is None:
        return np.squeeze(x)
    drop = {a % x.ndim for a in ax}
    if any(x.shape[a] != 1 for a in drop):
        raise ValueError(f"cannot squeeze axes {sorted(drop)} of shape {x.shape}: not of size 1")
    return x.reshape([d for i, d in enumerate(x.shape) if i not in drop])


@register("Unsqueeze")
def unsqueeze(node, x, axes=None):
    ax = axes_arg(node, axes)
    r = x.ndim + len(ax)
    shape = list(x.shape)
    for a in sorted(a % r for a in ax):
        shape.insert(a, 1)
    return x.reshape(shape)


@register("Concat")
def concat(node, *xs):
    return np.concatenate([np.asarray(v) for v in xs], axis=int(node.attr("axis")))


@register("Split")
def split(node, x, split_=None):
    axis = int(node.attr("axis", 0)) % x.ndim
    n_out = len(node.outputs)
    sizes = node.attr("split") if node.opset < 13 else (None if split_ is None else list(np.asarray(split_)))
    dim = x.shape[axis]
    if sizes is None or len(sizes) == 0:
        n = int(node.attr("num_outputs", n_out))
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    bounds = [0]
    for v in list(sizes)[:-1]:
        bounds.append(bounds[-1] + int(v))
    bounds.append(dim)  # as np.split at the running sums: the last part runs to the end
    lead = (slice(None),) * axis
    return tuple(x[lead + (slice(a, b),)] for a, b in zip(bounds[:-1], bounds[1:]))


@register("Slice")
def slice_(node, x, starts=None, ends=None, axes=None, steps=None):
    if node.opset < 10:
        starts, ends, axes = node.attr("starts"), node.attr("ends"), node.attr("axes")
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            sl[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            sl[a] = slice(s, None if e < 0 else e, st)
    return x[tuple(sl)]


@register("Gather")
def gather(node, x, idx):
    axis = int(node.attr("axis", 0)) % x.ndim
    idx = np.asarray(idx).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


@register("Shape")
def shape(node, x):
    s = list(np.shape(x))
    start = node.attr("start", 0)
    end = node.attr("end", None)
    return np.asarray(s[start:end], dtype=np.int64)


@register("Size")
def size(node, x):
    return np.asarray(np.size(x), dtype=np.int64)


def _check_constant(node):
    ok = {"value", "value_float", "value_floats", "value_int", "value_ints"}
    if not set(node.attrs) & ok:
        return f"Constant with attribute {sorted(node.attrs)} is not supported"
    return None


@register("Constant", check=_check_constant)
def constant(node):
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    if "value_float" in a:
        return np.asarray(a["value_float"], F32)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], F32)
    if "value_int" in a:
        return np.asarray(a["value_int"], np.int64)
    return np.asarray(a["value_ints"], np.int64)


@register("ConstantOfShape")
def constant_of_shape(node, shp):
    v = node.attr("value")
    v = np.zeros(1, F32) if v is None else np.asarray(v).reshape(-1)
    return np.full([int(d) for d in np.asarray(shp).reshape(-1)], v[0], dtype=v.dtype)


@register("Expand")
def expand(node, x, shp):
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shp).reshape(-1)))
    return np.broadcast_to(x, target).copy()


@register("Tile")
def tile(node, x, reps):
    return np.tile(x, [int(r) for r in np.asarray(reps).reshape(-1)])


@register("Range")
def range_(node, start, limit, delta):
    return np.arange(start.item(), limit.item(), delta.item()).astype(np.asarray(start).dtype)


def _check_pad(node):
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        return f"Pad mode {mode!r} is not supported"
    return None


@register("Pad", check=_check_pad)
def pad(node, x, pads=None, value=None, axes=None):
    if node.opset < 11:
        pads, value = node.attr("pads"), node.attr("value", 0.0)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    n = len(pads) // 2
    ax = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(ax[:n]):
        begin[a], end[a] = pads[i], pads[n + i]
    # negative pads crop
    sl = tuple(slice(max(0, -b), x.shape[a] - max(0, -e)) for a, (b, e) in enumerate(zip(begin, end)))
    x = x[sl]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    mode = node.attr("mode", "constant")
    if mode == "constant":
        v = 0 if value is None else np.asarray(value).reshape(-1)[0] if np.size(value) else 0
        return np.pad(x, widths, mode="constant", constant_values=v)
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


@register("DepthToSpace")
def depth_to_space(node, x):
    b = int(node.attr("blocksize"))
    n, c, h, w = x.shape
    if node.attr("mode", "DCR") == "CRD":
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    else:
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.reshape(n, c // (b * b), h * b, w * b)


@register("SpaceToDepth")
def space_to_depth(node, x):
    b = int(node.attr("blocksize"))
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.transpose(0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else y.transpose(0, 3, 5, 1, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)
