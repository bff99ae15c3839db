"""Where onnxruntime's u8s8 kernels add int8 weight products in int16 (x86 without VNNI), and how qpass keeps
every layer exact there.

What MLAS does (read from ``onnxruntime/core/mlas``): the u8s8 kernels for AVX2 and AVX512BW
(``QgemmU8S8KernelAvx2.S``, ``QgemvU8S8KernelAvx2.S``, ``ConvSymKernelAvx2.S``) multiply uint8 activation codes by
int8 weight codes with ``vpmaddubsw``, which adds each *adjacent pair* of products into int16 **with saturation**;
only then ``vpmaddwd`` widens to int32. The pairs, in the reduction index K of the layer's GEMM:

- ``MlasGemmU8S8CopyPackBAvx2`` packs B (the weights, K x N) as groups of 4 consecutive K rows per output column,
  the kernel broadcasts the matching 4 activation bytes, and ``vpmaddubsw`` adds bytes (0, 1) and (2, 3) of a
  group: pairs are the reduction indices (2i, 2i + 1), counted from 0 (K is zero-padded to a multiple of 4). The
  GEMV kernel (one row) interleaves 4 rows of B the same way.
- Conv: ``QLinearConv::ReorderFilter`` turns the filter [M, C/g, *k] into [*k, C/g, M], so the reduction index is
  ``kernel_position * C/g + input_channel`` (the NHWC im2col order): a pair is two adjacent input channels at one
  kernel position (with C/g odd, the last channel of a position pairs with the first of the next). The
  symmetric-weight path (``MlasConvSymPackW``, int8 weights with zero point 0, C/g a multiple of 4) packs 4 input
  channels of one kernel position: the same pairs.
- Gemm / MatMul: K is the reduction axis of the weight (Gemm transB=1: axis 1, else axis 0; MatMul: axis -2).
- Depthwise Conv (one input channel per group): ``vpmovzxbd`` / ``vpmovsxbd`` then ``vpmaddwd`` on int32 lanes: no
  int16 sum, exact. uint8 weights (zero point 128) run on the u8u8 kernels, which widen both operands to int16 and
  use ``vpmaddwd``: exact.
- ConvTranspose: its pairing was not read; qpass bounds it as if any two weights of one reduction could pair.

VNNI (``vpdpbusd``) and ARM (``sdot``, ``smull``) accumulate products in int32 directly: int8 weights are exact.

A pair (w1, w2) can saturate iff max over activation codes a1, a2 of a1 w1 + a2 w2 exceeds 32767 (or the min is
below -32768). QuantizeLinear saturates, so every code of the activation's range is produced by some input: with
uint8 activations (int8 ones run as uint8 + 128 there) a1, a2 reach [0, 255], and a pair saturates iff both weights
have the same sign and 255 (|w1| + |w2|) leaves the int16 range, i.e. |w1| + |w2| >= 129.
"""
from __future__ import annotations

import numpy as np

INT16_MAX = 32767


def reduction_rows(op: str, attrs: dict, w: np.ndarray) -> np.ndarray | None:
    """The weight as [output channels (or rows), K] in MLAS reduction order, or None for a layer whose products
    are not paired (depthwise Conv)."""
    w = np.asarray(w)
    if op == "Conv":
        m, cg = w.shape[0], w.shape[1]
        if cg == 1 and m == int(attrs.get("group", 1)) > 1:
            return None  # depthwise: exact kernels
        return np.moveaxis(w, 1, -1).reshape(m, -1)  # [M, C/g, *k] -> [M, *k, C/g] -> [M, K]
    if op == "Gemm":
        return w if int(attrs.get("transB", 0)) else w.T
    if op == "MatMul":
        return w.T if w.ndim == 2 else np.moveaxis(w, -1, -2).reshape(-1, w.shape[-2])  # batched: per tensor
    return None


def _pair_extremes(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the largest sum of the positive parts and the smallest sum of the negative parts of pairs (2i, 2i+1)."""
    r = np.asarray(rows, np.float64)
    if r.shape[1] % 2:
        r = np.concatenate([r, np.zeros((r.shape[0], 1))], axis=1)
    a, b = r[:, 0::2], r[:, 1::2]
    pos = np.maximum(a, 0) + np.maximum(b, 0)
    neg = np.minimum(a, 0) + np.minimum(b, 0)
    return pos.max(axis=1, initial=0.0), neg.min(axis=1, initial=0.0)


def _any_two_extremes(w: np.ndarray, red_axis: int, chan_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of ``chan_axis``: the two largest positive / most negative values along ``red_axis`` added (any
    two weights of one reduction may pair)."""
    x = np.moveaxis(np.asarray(w, np.float64), (chan_axis, red_axis), (0, -1))
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    top = np.sort(np.maximum(x, 0), axis=-1)[..., -2:].sum(-1)
    bottom = np.sort(np.minimum(x, 0), axis=-1)[..., :2].sum(-1)
    return top.max(axis=1, initial=0.0), bottom.min(axis=1, initial=0.0)


def pair_sums(op: str, attrs: dict, w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(largest positive pair sum, most negative pair sum) per channel of ``axis`` (one value when ``axis`` is None)
    of a weight tensor (codes or floats) under onnxruntime's u8s8 pairing; None when nothing is paired."""
    if op == "ConvTranspose":
        pos, neg = _any_two_extremes(w, 0, 1)
    else:
        rows = reduction_rows(op, attrs, w)
        if rows is None:
            return None
        pos, neg = _pair_extremes(rows)
    if axis is None or pos.size == 1:
        return np.array([pos.max(initial=0.0)]), np.array([neg.min(initial=0.0)])
    return pos, neg


def pair_limit(a_max: int) -> int:
    """The largest |w1 + w2| of same-sign weight codes whose products with activation codes up to ``a_max`` stay
    in int16 (128 for uint8 activations)."""
    return INT16_MAX // max(int(a_max), 1)


def saturating_channels(op: str, attrs: dict, codes: np.ndarray, axis: int | None, a_max: int) -> np.ndarray:
    """Boolean per channel of ``axis`` (one value for per-tensor codes): can some input saturate an int16 pair sum
    of this channel on a u8s8 kernel without VNNI? Activation codes are in [0, a_max]."""
    sums = pair_sums(op, attrs, codes, axis)
    if sums is None:
        return np.zeros(1 if axis is None else np.shape(codes)[axis], bool)
    pos, neg = sums
    return (pos * a_max > INT16_MAX) | (neg * a_max < -INT16_MAX - 1)
