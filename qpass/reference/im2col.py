"""Sliding windows for Conv / pooling and the ConvTranspose scatter, vectorised with numpy (no pixel loops).

Spatial geometry follows ONNX (and onnxruntime's ``ConvAttributes`` / ``PoolAttributes``): explicit ``pads``
[b1, b2, ..., e1, e2, ...] or ``auto_pad`` in NOTSET / SAME_UPPER / SAME_LOWER / VALID, strides, dilations and,
for pooling, ``ceil_mode``.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .jit import compiled


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


def node_geometry(node, x_shape, kernel, pooling: bool = False):
    """:func:`geometry` of a Conv or pooling node (its strides, dilations, pads, auto_pad and, for pooling,
    ceil_mode) over an input of shape ``x_shape`` (N, C, *spatial)."""
    ceil = bool(node.attr("ceil_mode", 0)) if pooling else False
    return geometry(x_shape[2:], kernel, node.attr("strides"), node.attr("dilations"), node.attr("pads"),
                    node.attr("auto_pad", "NOTSET"), ceil)


def _padded(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value):
    """``x`` padded so every window of the output exists (``end`` padding extended for ceil-mode windows)."""
    n = len(kernel)
    extra = []
    for i in range(n):
        ext = dilations[i] * (kernel[i] - 1) + 1
        need = (out_spatial[i] - 1) * strides[i] + ext
        have = x.shape[2 + i] + begin[i] + end[i]
        extra.append(max(0, need - have))
    widths = [(b, e + extra[i]) for i, (b, e) in enumerate(zip(begin, end))]
    if any(w != (0, 0) for w in widths):  # np.pad's constant mode, without its per-call overhead
        shape = x.shape[:2] + tuple(x.shape[2 + i] + b + e for i, (b, e) in enumerate(widths))
        xp = np.full(shape, pad_value, x.dtype)
        xp[(slice(None), slice(None)) + tuple(slice(b, b + x.shape[2 + i]) for i, (b, _) in enumerate(widths))] = x
        return xp
    return x


def windows(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value=0) -> np.ndarray:
    """View of shape (N, C, *out_spatial, *kernel) holding every window of ``x`` (N, C, *spatial).

    ``end`` padding is extended when needed so that ceil-mode windows exist; the extension uses ``pad_value``.
    """
    n = len(kernel)
    strides = _ints(strides, n, 1)
    dilations = _ints(dilations, n, 1)
    x = _padded(x, kernel, strides, dilations, begin, end, out_spatial, pad_value)
    st = x.strides
    return as_strided(x, tuple(x.shape[:2]) + tuple(out_spatial) + tuple(kernel),
                      st[:2] + tuple(st[2 + i] * strides[i] for i in range(n))
                      + tuple(st[2 + i] * dilations[i] for i in range(n)), writeable=False)


def im2col(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value=0) -> np.ndarray:
    """(N, *out_spatial, C * prod(kernel)) patch matrix, one row per output position; the last axis is ordered
    (c, k1, k2, ...) like ONNX weights."""
    w = windows(x, kernel, strides, dilations, begin, end, out_spatial, pad_value)
    n = len(kernel)
    w = w.transpose([0] + list(range(2, 2 + n)) + [1] + list(range(2 + n, w.ndim)))  # (N, *out, C, *k)
    return w.reshape(w.shape[: 1 + n] + (-1,))


def columns(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, dtype=None,
            pointwise: bool = False, zero=None) -> np.ndarray:
    """Patch matrix of a convolution as a contiguous (C, *kernel, N, *out_spatial) array (zero padding), in
    ``dtype`` (default: x's), written by one copy of the window view: reshaped to (g, C/g * prod(kernel),
    N * prod(out)) it is the right operand of one GEMM per group, rows ordered (c, k1, k2, ...) like ONNX weights.
    ``pointwise``: a 1x1 kernel with unit strides and no padding of one sample returns a view of ``x`` itself.
    ``zero``: ``x`` holds integer codes with this zero point; the matrix holds ``x - zero`` in ``dtype`` (padding
    0), the windows copied from the narrow codes and the difference taken as they are written."""
    n = len(kernel)
    if pointwise and x.shape[0] == 1 and (dtype is None or np.dtype(dtype) == x.dtype or zero is not None) and \
            all(k == 1 for k in kernel) and not any(begin) and not any(end) and \
            all(s == 1 for s in _ints(strides, n, 1)) and list(x.shape[2:]) == list(out_spatial):
        v = x.reshape((x.shape[1],) + (1,) * n + x.shape[:1] + x.shape[2:])
        return v if zero is None else np.subtract(v, np.dtype(dtype).type(zero), dtype=dtype)
    w = windows(x, kernel, strides, dilations, begin, end, out_spatial, 0 if zero is None else zero)
    buf = np.empty((x.shape[1],) + tuple(kernel) + (x.shape[0],) + tuple(out_spatial), dtype or x.dtype)
    w = w.transpose([1] + list(range(2 + n, 2 + 2 * n)) + [0] + list(range(2, 2 + n)))  # (C, *k, N, *out)
    if zero is None:
        buf[...] = w
    else:
        np.subtract(w, buf.dtype.type(zero), out=buf, dtype=buf.dtype)
    return buf


def sample_columns(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, dtype) -> np.ndarray:
    """Patch matrix of a convolution, one per sample: a (N, C * prod(kernel), prod(out_spatial)) array in
    ``dtype``, rows ordered (c, k1, k2, ...) like ONNX weights (zero padding), so that one stacked matmul runs the
    same-shape GEMM once per sample. A 1x1 kernel with unit strides and no padding: a view of ``x`` itself."""
    n = len(kernel)
    if np.dtype(dtype) == x.dtype and all(k == 1 for k in kernel) and not any(begin) and not any(end) and \
            all(s == 1 for s in _ints(strides, n, 1)) and list(x.shape[2:]) == list(out_spatial):
        return x.reshape(x.shape[:2] + (-1,))
    w = windows(x, kernel, strides, dilations, begin, end, out_spatial, 0)  # (N, C, *out, *k)
    buf = np.empty(x.shape[:2] + tuple(kernel) + tuple(out_spatial), dtype)
    buf[...] = w.transpose([0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n)))  # (N, C, *k, *out)
    return buf.reshape(x.shape[0], -1, int(np.prod(out_spatial)))


def gather_index(in_shape, kernel, strides, dilations, begin, end, out_spatial) -> np.ndarray:
    """Flat positions in a (C, *spatial) sample, extended by one zero element at index C * prod(spatial), of every
    entry of :func:`sample_columns`'s (C * prod(kernel), prod(out_spatial)) patch matrix (padding: the zero
    element): ``np.take(x_ext, index, axis=1)`` builds the batch's patch matrices in one gather."""
    size = int(np.prod(in_shape))
    pos = np.arange(size, dtype=np.intp).reshape((1,) + tuple(in_shape))
    n = len(kernel)
    w = windows(pos, kernel, strides, dilations, begin, end, out_spatial, size)  # (1, C, *out, *k)
    w = w.transpose([0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n)))  # (1, C, *k, *out)
    return np.ascontiguousarray(w).reshape(-1)


def column_blocks(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, budget: int = 1 << 20):
    """The patch matrix of :func:`columns`, sample by sample and in blocks of output rows (first spatial axis)
    small enough (``budget`` bytes) to stay in cache: yields (sample, row0, row1, (C, *kernel, rows, *rest))
    arrays, one reused buffer (use each before the next)."""
    n = len(kernel)
    w = windows(x, kernel, strides, dilations, begin, end, out_spatial, 0)  # (N, C, *out, *k)
    w = w.transpose([0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n)))  # (N, C, *k, *out)
    row = x.shape[1] * int(np.prod(kernel)) * int(np.prod(out_spatial[1:])) * x.itemsize
    rb = max(1, min(out_spatial[0], budget // max(row, 1)))
    buf = np.empty((x.shape[1],) + tuple(kernel) + (rb,) + tuple(out_spatial[1:]), x.dtype)
    at = (slice(None),) * (1 + n)
    for s in range(x.shape[0]):
        for r0 in range(0, out_spatial[0], rb):
            r1 = min(out_spatial[0], r0 + rb)
            b = buf[at + (slice(0, r1 - r0),)]
            b[...] = w[(s,) + at + (slice(r0, r1),)]
            yield s, r0, r1, b


def _tap_slices(kernel, strides, dilations, out_spatial) -> list[tuple]:
    """Per kernel tap (in kernel order): the slices of the padded input it reads for every output position."""
    n = len(kernel)
    return [tuple(slice(tap[i] * dilations[i], tap[i] * dilations[i] + (out_spatial[i] - 1) * strides[i] + 1,
                        strides[i]) for i in range(n)) for tap in np.ndindex(*kernel)]


def depthwise(x: np.ndarray, w: np.ndarray, kernel, strides, dilations, begin, end, out_spatial,
              block_bytes: int = 1 << 18, exact: bool = False) -> np.ndarray:
    """A convolution with one input channel per group (x (N, C, *spatial), w (C * mult, 1, *kernel)) in the dtype
    of ``x``: (N, C * mult, *out_spatial).

    ``exact`` (the caller proved every partial sum an exact integer of the dtype, so any summation order gives the
    same numbers): per block of channels, the channels' windows copied once into an in-cache patch matrix and one
    BLAS product per channel. Otherwise one multiply-add per kernel tap, summed in kernel order, sample by sample
    over blocks of channels small enough (``block_bytes``) that all taps of a block run in cache; with unit
    strides and wide rows over the flat padded image, so each tap is one long contiguous run per channel."""
    n = len(kernel)
    strides = _ints(strides, n, 1)
    dilations = _ints(dilations, n, 1)
    xp = _padded(x, kernel, strides, dilations, begin, end, out_spatial, 0)
    mult = w.shape[0] // x.shape[1]
    wr = w.reshape((x.shape[1], mult, -1)).astype(x.dtype, copy=False)  # (C, mult, taps)
    if exact:
        return _depthwise_gemv(xp, wr, kernel, strides, dilations, out_spatial, 2 * block_bytes)
    jit = compiled("float_jit") if n == 2 and xp.dtype == np.float32 else None
    if jit is not None:  # the same sums, compiled
        return jit.depthwise2d(xp, w.reshape((w.shape[0],) + tuple(kernel)), strides, dilations, out_spatial)
    unit = all(s == 1 for s in strides)
    if mult == 1 and out_spatial[-1] >= (FLAT_MIN_WIDTH if unit else STRIDED_FLAT_MIN_WIDTH):
        return _depthwise_flat(xp, wr[:, 0], kernel, strides, dilations, out_spatial, block_bytes)
    if mult == 1 and unit and out_spatial[-1] <= CHANNELS_LAST_MAX_WIDTH and \
            x.shape[1] >= CHANNELS_LAST_MIN_CHANNELS:
        return _depthwise_channels_last(xp, wr[:, 0], kernel, dilations, out_spatial, block_bytes // 4)
    return _depthwise_taps(xp, wr, kernel, strides, dilations, out_spatial, block_bytes)


# output rows at least this wide: the flat form (narrower rows: its wrapped columns cost more; measured on 3x3 and
# 5x5 kernels, widths 14-112: 56-wide rows 2.7x faster flat than by taps, 28-wide ones as fast)
FLAT_MIN_WIDTH = 32
STRIDED_FLAT_MIN_WIDTH = 48  # strided: the phase copy costs a pass (56-wide rows, stride 2: 1.3x faster flat)
# narrow rows and many channels: the flat form over a channels-last copy (runs of whole pixels, channels inner)
CHANNELS_LAST_MAX_WIDTH, CHANNELS_LAST_MIN_CHANNELS = 31, 64


def _depthwise_channels_last(xp, wr, kernel, dilations, out_spatial, block: int) -> np.ndarray:
    """Unit strides, one output channel per input channel, on a (N, *spatial, C) copy of ``xp``: tap t of output
    pixel f reads pixel f + offset(t), so every tap is one contiguous (pixels, C) block times the tap's C weights;
    the flat positions past a row's end are computed and dropped. Returns a (N, C, *out) view."""
    n = len(kernel)
    N, c = xp.shape[:2]
    sp = xp.shape[2:]
    xl = np.empty((N,) + tuple(sp) + (c,), xp.dtype)
    xl[...] = np.moveaxis(xp, 1, -1)
    pitch = [int(np.prod(sp[k + 1:])) for k in range(n)]
    span = sum((out_spatial[k] - 1) * pitch[k] for k in range(n)) + 1
    offs = [sum(t[k] * dilations[k] * pitch[k] for k in range(n)) for t in np.ndindex(*kernel)]
    xf = xl.reshape(N, -1, c)
    wt = np.ascontiguousarray(wr.T)  # (taps, C)
    full = np.empty((N, int(np.prod(sp)), c), xp.dtype)
    rb = max(1, block // c)
    tmp = np.empty((rb, c), xp.dtype)
    for s in range(N):
        for r0 in range(0, span, rb):
            r1 = min(span, r0 + rb)
            _sum_taps(full[s, r0:r1], tmp[:r1 - r0], ((xf[s, o + r0:o + r1], wt[t]) for t, o in enumerate(offs)))
    y = full.reshape((N,) + tuple(sp) + (c,))[(slice(None),) + tuple(slice(0, o) for o in out_spatial)]
    return np.moveaxis(y, -1, 1)


def _depthwise_gemv(xp, wr, kernel, strides, dilations, out_spatial, block_bytes) -> np.ndarray:
    """Exact depthwise: (cb, taps, P) patch matrix per channel block, then (cb, mult, taps) @ it."""
    n = len(kernel)
    N, c = xp.shape[:2]
    mult, taps, p = wr.shape[1], wr.shape[2], int(np.prod(out_spatial))
    y = np.empty((N, c, mult, p), xp.dtype)
    v = windows(xp, kernel, strides, dilations, [0] * n, [0] * n, out_spatial)  # (N, C, *out, *k), no more pad
    v = v.transpose([0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n)))  # (N, C, *k, *out)
    cb = max(1, min(c, block_bytes // max(1, taps * p * xp.itemsize)))
    cols = np.empty((cb,) + tuple(kernel) + tuple(out_spatial), xp.dtype)
    for s in range(N):
        for c0 in range(0, c, cb):
            c1 = min(c, c0 + cb)
            cc = cols[:c1 - c0]
            cc[...] = v[s, c0:c1]
            np.matmul(wr[c0:c1], cc.reshape(c1 - c0, taps, p), out=y[s, c0:c1])
    return y.reshape((N, c * mult) + tuple(out_spatial))


def _depthwise_flat(xp, wr, kernel, strides, dilations, out_spatial, block_bytes) -> np.ndarray:
    """One output channel per input channel: output position (i1, ..., in) is computed at the flat index of its
    window's first element in the padded image ``xp`` (strided: in the phase image of the stride, see
    :func:`_phases`), so tap t reads the contiguous run starting at its own offset; the row ends in between
    (wrapped windows) are computed and dropped."""
    n = len(kernel)
    N, c = xp.shape[:2]
    phases, sp = _phases(xp, strides)
    pitch = [int(np.prod(sp[k + 1:])) for k in range(n)]
    span = sum((out_spatial[k] - 1) * pitch[k] for k in range(n)) + 1
    reach = [[t[k] * dilations[k] for k in range(n)] for t in np.ndindex(*kernel)]
    offs = [(int(np.ravel_multi_index([r[k] % strides[k] for k in range(n)], strides)),
             sum(r[k] // strides[k] * pitch[k] for k in range(n))) for r in reach]
    full = np.empty((N, c, int(np.prod(sp))), xp.dtype)
    cb = max(1, min(c, block_bytes // max(1, span * xp.itemsize)))
    tmp = np.empty((cb, span), xp.dtype)
    for s in range(N):
        for c0 in range(0, c, cb):
            c1 = min(c, c0 + cb)
            _sum_taps(full[s, c0:c1, :span], tmp[:c1 - c0],
                      ((phases[ph, s, c0:c1, o:o + span], wr[c0:c1, t:t + 1]) for t, (ph, o) in enumerate(offs)))
    return full.reshape((N, c) + tuple(sp))[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_spatial)]


def _phases(xp: np.ndarray, strides) -> tuple[np.ndarray, list[int]]:
    """``xp`` (N, C, *spatial) as (prod(strides), N, C, prod(phase shape)) flat images, one per stride phase:
    phase (r1, ..., rn) holds xp[..., r1::s1, ..., rn::sn] (zero-padded to whole strides), so input position
    s * i + r is element i of phase r. Unit strides: a view of ``xp`` itself. Returns it and the phase shape."""
    n = len(strides)
    N, c = xp.shape[:2]
    if all(s == 1 for s in strides):
        return xp.reshape(1, N, c, -1), list(xp.shape[2:])
    ph = [-(-xp.shape[2 + k] // strides[k]) for k in range(n)]
    whole = np.zeros((N, c) + tuple(p * s for p, s in zip(ph, strides)), xp.dtype)
    whole[(slice(None), slice(None)) + tuple(slice(0, d) for d in xp.shape[2:])] = xp
    split = whole.reshape((N, c) + tuple(v for k in range(n) for v in (ph[k], strides[k])))
    order = [3 + 2 * k for k in range(n)] + [0, 1] + [2 + 2 * k for k in range(n)]
    out = np.empty(tuple(strides) + (N, c) + tuple(ph), xp.dtype)
    out[...] = split.transpose(order)
    return out.reshape(int(np.prod(strides)), N, c, -1), ph


def _depthwise_taps(xp, wr, kernel, strides, dilations, out_spatial, block_bytes) -> np.ndarray:
    """One multiply-add per kernel tap over the strided windows, per sample and block of channels."""
    n = len(kernel)
    N, c = xp.shape[:2]
    mult = wr.shape[1]
    wr = wr.reshape(wr.shape + (1,) * n)
    y = np.empty((N, c, mult) + tuple(out_spatial), xp.dtype)
    cb = max(1, min(c, block_bytes // max(1, int(np.prod(out_spatial)) * xp.itemsize * mult)))
    tmp = np.empty((cb, mult) + tuple(out_spatial), xp.dtype)
    slices = _tap_slices(kernel, strides, dilations, out_spatial)
    for s in range(N):
        for c0 in range(0, c, cb):
            c1 = min(c, c0 + cb)
            _sum_taps(y[s, c0:c1], tmp[:c1 - c0],
                      ((xp[(s, slice(c0, c1)) + sl][:, None], wr[c0:c1, :, t]) for t, sl in enumerate(slices)))
    return y.reshape((N, c * mult) + tuple(out_spatial))


def _sum_taps(acc: np.ndarray, tmp: np.ndarray, terms) -> None:
    """``acc`` = the sum of x * w over ``terms`` (pairs of arrays), in order: each product rounded, then added."""
    for t, (xs, ws) in enumerate(terms):
        if t == 0:
            np.multiply(xs, ws, out=acc)
        else:
            np.multiply(xs, ws, out=tmp)
            acc += tmp


def window_max(x: np.ndarray, kernel, strides, dilations, begin, end, out_spatial, pad_value) -> np.ndarray:
    """Max over every window (N, C, *out_spatial) as one elementwise maximum per kernel tap (NaN propagates, as in
    a reduction)."""
    n = len(kernel)
    strides = _ints(strides, n, 1)
    dilations = _ints(dilations, n, 1)
    xp = _padded(x, kernel, strides, dilations, begin, end, out_spatial, pad_value)
    y = None
    for sl in _tap_slices(kernel, strides, dilations, out_spatial):
        v = xp[(slice(None), slice(None)) + sl]
        y = v.copy() if y is None else np.maximum(y, v, out=y)
    return y


def batch_chunks(n: int, bytes_per_sample: int, budget: int = 1 << 28):
    """[(start, stop)] slices of the batch so that one chunk's patch matrix stays under ``budget`` bytes."""
    step = max(1, budget // max(int(bytes_per_sample), 1))
    return [(i, min(n, i + step)) for i in range(0, max(n, 1), step)] if n else [(0, 0)]


def conv_transpose_geometry(node, x, w):
    """(kernel, strides, dilations, pads_begin, out_spatial) of a ConvTranspose node over input ``x`` and weights
    ``w``, from explicit pads, ``auto_pad`` or ``output_shape`` (with ``output_padding``) as ONNX defines them."""
    n = x.ndim - 2
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    strides = list(node.attr("strides") or [1] * n)
    dil = list(node.attr("dilations") or [1] * n)
    outpad = list(node.attr("output_padding") or [0] * n)
    pads = list(node.attr("pads") or [0] * (2 * n))
    auto_pad = node.attr("auto_pad", "NOTSET") or "NOTSET"
    out_shape = node.attr("output_shape")
    begin, end, out = [], [], []
    for i in range(n):
        full = strides[i] * (x.shape[2 + i] - 1) + outpad[i] + (kernel[i] - 1) * dil[i] + 1
        if out_shape is not None and len(out_shape):
            o = int(out_shape[-n + i])
            total = max(0, full - o)  # a larger output_shape appends zeros at the end (as onnxruntime does)
            if auto_pad == "SAME_UPPER":
                b = total - total // 2
            else:
                b = total // 2
            e = total - b
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = x.shape[2 + i] * strides[i]
            total = full - o
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
        else:
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[n + i])
            o = full - b - e
        begin.append(b)
        end.append(e)
        out.append(o)
    return kernel, strides, dil, begin, out


def col2im_transpose(cols: np.ndarray, in_spatial, kernel, strides, dil, begin, out, dtype) -> np.ndarray:
    """Scatter-add ``cols`` (N, M, *in, *k) into the ConvTranspose output (N, M, *out): one pass per kernel tap."""
    n = len(kernel)
    N, M = cols.shape[:2]
    full = [max((in_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1, begin[i] + out[i]) for i in range(n)]
    buf = np.zeros((N, M) + tuple(full), dtype=dtype)
    for tap in np.ndindex(*kernel):
        sl = tuple(slice(tap[i] * dil[i], tap[i] * dil[i] + (in_spatial[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(n))
        buf[(slice(None), slice(None)) + sl] += cols[(Ellipsis,) + tap]
    crop = tuple(slice(begin[i], begin[i] + out[i]) for i in range(n))
    return buf[(slice(None), slice(None)) + crop]


def conv_transpose_columns(x: np.ndarray, w: np.ndarray, g: int) -> np.ndarray:
    """x (N, C, *in), w (C, M/g, *k) -> per-tap contributions (N, M, *in, *k)."""
    N, C = x.shape[:2]
    ins = x.shape[2:]
    k = w.shape[2:]
    cg, mg = C // g, w.shape[1]
    xr = x.reshape(N, g, cg, -1).transpose(1, 0, 3, 2).reshape(g, -1, cg)  # (g, N*P, Cg)
    wr = w.reshape(g, cg, -1)  # (g, Cg, Mg*kk)
    y = np.matmul(xr, wr)  # (g, N*P, Mg*kk)
    y = y.reshape((g, N) + tuple(ins) + (mg,) + tuple(k))
    nd = len(ins)
    # (g, N, *in, Mg, *k) -> (N, g, Mg, *in, *k)
    perm = [1, 0, 2 + nd] + list(range(2, 2 + nd)) + list(range(3 + nd, 3 + 2 * nd))
    y = y.transpose(perm)
    return y.reshape((N, g * mg) + tuple(ins) + tuple(k))
