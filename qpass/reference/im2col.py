"""Sliding windows for Conv / ConvTranspose / pooling, vectorised with numpy stride tricks (no pixel loops).

Spatial geometry follows ONNX (and onnxruntime's ``ConvAttributes`` / ``PoolAttributes``): explicit ``pads``
[b1, b2, ..., e1, e2, ...] or ``auto_pad`` in NOTSET / SAME_UPPER / SAME_LOWER / VALID, strides, dilations and,
for pooling, ``ceil_mode``.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _ints(v, n, default):
    return [int(x) for x in v] if v is not None and len(v) else [default] * n


def geometry(in_spatial, kernel, strides=None, dilations=None, pads=None, auto_pad="NOTSET",
             ceil_mode=False):
    """Return (pads_begin, pads_end, out_spatial) for a windowed op over ``in_spatial``."""
    n = len(in_spatial)
    strides = _ints(strides, n, 1)
    dilations = _ints(dilations, n, 1)
    pads = _ints(pads, 2 * n, 0)
    auto_pad = auto_pad or "NOTSET"
    begin, end, out = list(pads[:n]), list(pads[n:]), []
    for i, (size, k, s, d) in enumerate(zip(in_spatial, kernel, strides, dilations)):
        ext = d * (k - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = -(-size // s)
            total = max(0, (o - 1) * s + ext - size)
            small, large = total // 2, total - total // 2
            begin[i], end[i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        elif auto_pad == "VALID":
            begin[i] = end[i] = 0
            o = (size - ext) // s + 1
        else:
            span = size + begin[i] + end[i] - ext
            if ceil_mode:
                o = int(math.ceil(span / s)) + 1
                if (o - 1) * s >= size + begin[i]:  # the last window must start inside input or left pad
                    o -= 1
            else:
                o = span // s + 1
        out.append(max(int(o), 0))
    return begin, end, out


def windows(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value=0) -> np.ndarray:
    """View of shape (N, C, *out_spatial, *kernel) holding every window of ``x`` (N, C, *spatial).

    ``end`` padding is extended when needed so that ceil-mode windows exist; the extension uses ``pad_value``.
    """
    n = len(kernel)
    strides = _ints(strides, n, 1)
    dilations = _ints(dilations, n, 1)
    extra = []
    for i in range(n):
        ext = dilations[i] * (kernel[i] - 1) + 1
        need = (out_spatial[i] - 1) * strides[i] + ext
        have = x.shape[2 + i] + begin[i] + end[i]
        extra.append(max(0, need - have))
    widths = [(0, 0), (0, 0)] + [(b, e + extra[i]) for i, (b, e) in enumerate(zip(begin, end))]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=pad_value)
    exts = [dilations[i] * (kernel[i] - 1) + 1 for i in range(n)]
    v = sliding_window_view(x, exts, axis=tuple(range(2, 2 + n)))
    idx = [slice(None), slice(None)]
    idx += [slice(0, (out_spatial[i] - 1) * strides[i] + 1, strides[i]) for i in range(n)]
    idx += [slice(None, None, dilations[i]) for i in range(n)]
    return v[tuple(idx)]


def im2col(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value=0) -> np.ndarray:
    """(N, *out_spatial, C * prod(kernel)) patch matrix; the last axis is ordered (c, k1, k2, ...) like ONNX weights."""
    w = windows(x, kernel, strides, dilations, begin, end, out_spatial, pad_value)
    n = len(kernel)
    nd = w.ndim
    # (N, C, *out, *k) -> (N, *out, C, *k)
    perm = [0] + list(range(2, 2 + n)) + [1] + list(range(2 + n, nd))
    w = w.transpose(perm)
    return w.reshape(w.shape[: 1 + n] + (-1,))


def batch_chunks(n: int, bytes_per_sample: int, budget: int = 1 << 28):
    """[(start, stop)] slices of the batch so that one chunk's patch matrix stays under ``budget`` bytes."""
    step = max(1, budget // max(int(bytes_per_sample), 1))
    return [(i, min(n, i + step)) for i in range(0, max(n, 1), step)] if n else [(0, 0)]
