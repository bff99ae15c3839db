"""Stream orders: a stream carries one sample per frame; its order is a permutation of the tensor's per-sample
elements (position j holds element ``order[j]``). Image tensors stream NHWC (pixels in raster order, channels
innermost)."""
from __future__ import annotations

import numpy as np


def nhwc_order(chw) -> np.ndarray:
    """Stream order of a (C, H, W) sample streamed pixel by pixel, channels innermost."""
    c, h, w = (int(v) for v in chw)
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).ravel()


def natural_order(sample_shape) -> np.ndarray:
    """The order a stream entering a partition gets: NHWC for image tensors, row-major otherwise."""
    if len(sample_shape) == 3:
        return nhwc_order(sample_shape)
    return np.arange(int(np.prod(sample_shape, dtype=np.int64)), dtype=np.int64)


def row_major(sample_shape) -> np.ndarray:
    return np.arange(int(np.prod(sample_shape)), dtype=np.int64)


def channel_slots(order: np.ndarray, sample_shape, axis: int) -> np.ndarray:
    """Channel index (along per-sample ``axis``) of the element at each of the first P stream positions, where P
    is the smallest period of the channel sequence along the stream (C for an NHWC stream)."""
    shape = tuple(int(v) for v in sample_shape)
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    chan = (order // inner) % shape[axis]
    n = len(chan)
    c = shape[axis]
    for p in sorted({d for d in range(1, n + 1) if n % d == 0 and d % c == 0} or {n}):
        rows = chan.reshape(-1, p)
        if np.all(rows == rows[0]):
            return rows[0].copy()
    return chan.copy()


def vector_perm(order: np.ndarray, nvec: int) -> np.ndarray | None:
    """For a stream of ``nvec`` vectors of K elements: the per-vector element permutation (stream slot -> vector
    element) when every vector is contiguous and permuted the same way, else None."""
    k = len(order) // nvec
    o = order.reshape(nvec, k)
    if not np.all(o // k == np.arange(nvec)[:, None]):
        return None
    p = o % k
    return p[0].copy() if np.all(p == p[0]) else None


def image_out_order(x_shape, y_shape, in_order: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """Output order of an image layer (convolution, pool): it reads an NHWC stream and writes one."""
    if not np.array_equal(in_order, nhwc_order(x_shape)):
        return None, "its input stream is not in NHWC order (a real reordering would be needed)"
    return nhwc_order(y_shape), None
