"""Exact 8-bit GEMM by ``torch._int_mm`` (oneDNN: AVX512-VNNI where the CPU has it, ~4x float32 BLAS per
multiply-add on the AMD EPYC with avx2 avx512f avx512_vnni), optional: loaded through ``qpass.reference.jit`` when
torch is installed (QPASS_NO_JIT=1 or QPASS_NO_INT_MM=1: the float BLAS path, the same numbers).

For codes ``x`` (uint8 / int8) with zero point ``zx`` and integer weights ``B`` in [-128, 127]::

    (x - zx) @ B = (x - c) @ B + (c - zx) * colsum(B)        c = 128 for uint8 (x ^ 0x80 as int8), 0 for int8

``x - c`` and ``B`` are int8 and every partial sum is below 128 * 128 * K < 2^31 (K < 2^17): torch's int32
accumulation is exact; the correction goes into the layer's bias (int64).
"""
from __future__ import annotations

import numpy as np
import torch

MAX_K = 1 << 16


def weights(bi: np.ndarray):
    """(K, N) exact integer weights as a torch int8 tensor and their column sums (int64), or None when a weight
    leaves [-128, 127] or K is too long for exact int32 sums."""
    if bi.ndim != 2 or bi.shape[0] >= MAX_K or not bi.size or bi.min() < -128 or bi.max() > 127:
        return None
    b = np.ascontiguousarray(bi, np.int8)
    return torch.from_numpy(b), b.astype(np.int64).sum(axis=0)


def shift(dtype) -> int:
    """c: what is subtracted from the codes to make them int8."""
    return 128 if np.dtype(dtype) == np.dtype(np.uint8) else 0


def matmul(a2: np.ndarray, tb) -> np.ndarray:
    """(R, N) int32 exact ``(a2 - c) @ B`` of 8-bit codes ``a2`` (R, K) and ``tb`` from :func:`weights`."""
    if a2.dtype == np.uint8:
        a2 = np.bitwise_xor(a2, np.uint8(0x80)).view(np.int8)  # x - 128, exactly
    return torch._int_mm(torch.from_numpy(np.ascontiguousarray(a2)), tb).numpy()


def conv_weights(w: np.ndarray):
    """(G, Mg, Kg) exact integer conv weights as torch int8 tensors (one per group) and their row sums (M,), or
    None (as :func:`weights`)."""
    if w.shape[2] >= MAX_K or not w.size or w.min() < -128 or w.max() > 127:
        return None
    b = np.ascontiguousarray(w, np.int8)
    return [torch.from_numpy(b[i]) for i in range(b.shape[0])], b.astype(np.int64).sum(axis=2).reshape(-1)


def conv_mm(tw, patch: np.ndarray) -> np.ndarray:
    """(Mg, n) int32 exact ``W @ patch`` of one group's int8 weights and an int8 patch matrix (Kg, n)."""
    return torch._int_mm(tw, torch.from_numpy(patch)).numpy()
