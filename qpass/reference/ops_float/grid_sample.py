"""GridSample (2-D and N-D): the grid's normalised coordinates (last axis x, y, z...) mapped to input positions
(``align_corners`` choosing the corner or edge convention), then nearest (round half to even), linear or cubic
(Keys, a = -0.75) interpolation; samples outside the input are zeros, the nearest border value, or reflected
back inside. In the input dtype, as onnxruntime computes it."""
from __future__ import annotations

import numpy as np

from ..registry import register

_MODES = {"nearest": "nearest", "linear": "linear", "bilinear": "linear", "cubic": "cubic", "bicubic": "cubic"}


def _check_grid_sample(node):
    if node.attr("mode", "linear" if node.opset >= 20 else "bilinear") not in _MODES:
        return f"mode {node.attr('mode')!r} is not supported"
    if node.attr("padding_mode", "zeros") not in ("zeros", "border", "reflection"):
        return f"padding_mode {node.attr('padding_mode')!r} is not supported"
    return None


def _reflect(x, lo, hi):
    """Fold ``x`` back into [lo, hi] by reflecting at the nearer border as often as needed."""
    span = hi - lo
    below, above = x < lo, x > hi
    d = np.where(below, lo - x, x - hi)
    n = np.floor(d / span)
    r = d - n * span
    even = n % 2 == 0
    inside_from_below = np.where(even, lo + r, hi - r)
    inside_from_above = np.where(even, hi - r, lo + r)
    return np.where(below, inside_from_below, np.where(above, inside_from_above, x))


def _keys(t):
    """Cubic convolution weights of the taps at -1, 0, 1, 2 for fractional offsets ``t``."""
    a = t.dtype.type(-0.75)
    w = []
    for d in (t + 1, t, 1 - t, 2 - t):
        w.append(np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a))
    return w


def _fetch(xt, n_idx, idx, dims, borders, padding):
    """Values of ``xt`` (N, *in, C) at integer positions ``idx`` (one array per axis), with the padding rule."""
    valid = np.ones(idx[0].shape, bool)
    fixed = []
    for i, dim, (lo, hi) in zip(idx, dims, borders):
        if padding == "zeros":
            valid &= (i >= 0) & (i < dim)
            i = np.clip(i, 0, dim - 1)
        elif padding == "border":
            i = np.clip(i, 0, dim - 1)
        else:
            i = np.trunc(_reflect(i.astype(np.float32), lo, hi)).astype(np.int64)
        fixed.append(i)
    v = xt[(n_idx,) + tuple(fixed)]
    return np.where(valid[..., None], v, 0) if padding == "zeros" else v


@register("GridSample", check=_check_grid_sample)
def grid_sample(node, x, grid):
    mode = _MODES[node.attr("mode", "linear" if node.opset >= 20 else "bilinear")]
    padding = node.attr("padding_mode", "zeros")
    corners = bool(int(node.attr("align_corners", 0)))
    dims = x.shape[2:]
    t = x.dtype.type
    g = grid.astype(x.dtype)[..., ::-1]  # per input axis, slowest first
    borders = [(t(0), t(d - 1)) if corners else (t(-0.5), t(d - 0.5)) for d in dims]
    coords = []
    for k, dim in enumerate(dims):
        c = (g[..., k] + 1) / 2 * t(dim - 1) if corners else ((g[..., k] + 1) * t(dim) - 1) / 2
        if mode == "nearest":
            c = np.rint(c)
        lo, hi = borders[k]
        if padding == "border" and mode != "cubic":  # cubic clamps its taps instead, as onnxruntime does
            c = np.where((c < lo) | (c > hi), np.clip(c, 0, dim - 1), c)
        elif padding == "reflection":
            c = _reflect(c, lo, hi)
        coords.append(c.astype(x.dtype))
    xt = np.moveaxis(x, 1, -1)
    n_idx = np.arange(x.shape[0]).reshape((-1,) + (1,) * (grid.ndim - 2))
    if mode == "nearest":
        y = _fetch(xt, n_idx, [c.astype(np.int64) for c in coords], dims, borders, padding)
        return np.moveaxis(y, -1, 1).astype(x.dtype)
    base = [np.floor(c).astype(np.int64) for c in coords]
    frac = [c - np.floor(c) for c in coords]
    offsets = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
    weights = [[1 - f, f] if mode == "linear" else _keys(f) for f in frac]
    y = 0
    for taps in np.ndindex(*([len(offsets)] * len(dims))):
        w = np.prod([weights[k][j] for k, j in enumerate(taps)], axis=0)
        idx = [base[k] + offsets[j] for k, j in enumerate(taps)]
        y = y + w[..., None] * _fetch(xt, n_idx, idx, dims, borders, padding)
    return np.moveaxis(np.asarray(y), -1, 1).astype(x.dtype)
