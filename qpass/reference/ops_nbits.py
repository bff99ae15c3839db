"""com.microsoft ``MatMulNBits`` (4-bit blocked weights, float activations) as onnxruntime 1.32's MLAS computes it
on x86-64 with AVX512F at ``accuracy_level`` 0 (float32 compute, ``CompFp32``), bit for bit.

    Y[m, n] = sum_k A[m, k] * W[k, n],  W[k, n] = (q[n, k] - zp[n, blk]) * scale[n, blk]   (float32 product)

``B`` is uint8 ``[N, k_blocks, block_size / 2]``, two codes a byte, low nibble first; the zero point is 8 unless a
``zero_points`` input is given (packed uint8, two a byte, or float). The sum order is MLAS's:

- M = 1 (``SQ4BitGemmM1Kernel_CompFp32_avx512``, block size >= 32): sixteen lane sums per column, lane ``l``
  a chain of fused multiply-adds over ``k = l, l + 16, l + 32, ...`` in order; then per group of four lanes
  ``((l0 + l1) + l2) + l3``, the groups added ``(g0 + g2) + (g1 + g3)`` (``FoldAccumulators``); the last
  ``N % 4`` columns halve instead (``_mm512_reduce_add_ps``: lane i + lane i + 8, then i + 4, i + 2, i + 1).
- M > 1: B is dequantised to float32 and multiplied by the FMA SGEMM kernel, one chain over all of K per output.

Checked against onnxruntime in tests/test_bitwidth_nbits.py. Block size 16 (another M = 1 kernel), bits other than
4, g_idx and the int8 compute levels are refused by ``check``.
"""
from __future__ import annotations

import numpy as np

from .mlas import _fma_chain
from .registry import register

F32 = np.float32
LANES = 16


def dequantize(node, b, scales, zero_points=None) -> np.ndarray:
    """W as float32 [K, N]: ``(q - zp) * scale`` per element, one float32 rounding (MLAS's dequantisation)."""
    k, n, bs = int(node.attr("K")), int(node.attr("N")), int(node.attr("block_size"))
    nb = -(-k // bs)
    packed = np.asarray(b, np.uint8).reshape(n, nb, bs // 2)
    q = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(n, nb, bs).astype(np.int32)
    if zero_points is None:
        zp = np.full((n, nb, 1), 8, np.int32)
    elif np.asarray(zero_points).dtype == np.uint8:
        z = np.asarray(zero_points, np.uint8).reshape(n, -1)
        zp = np.stack([z & 0xF, z >> 4], axis=-1).reshape(n, -1)[:, :nb, None].astype(np.int32)
    else:
        raise ValueError("float zero points are not supported")
    s = np.asarray(scales, F32).reshape(n, nb, 1)
    w = ((q - zp).astype(F32) * s).astype(F32)
    return np.ascontiguousarray(w.reshape(n, nb * bs)[:, :k].T)


def _m1(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One row: sixteen FMA lane chains per column (k mod 16), then the fixed fold."""
    k, n = w.shape
    kp = -(-k // LANES) * LANES
    a_p = np.zeros(kp, F32)
    a_p[:k] = a
    w_p = np.zeros((kp, n), F32)
    w_p[:k] = w
    # lanes as rows: chain over the k of each lane, in order (a 16-row "GEMM" with K = kp / 16)
    a_l = a_p.reshape(-1, LANES).T  # [16, kp/16]
    lanes = np.stack([_fma_chain(a_l[l:l + 1], w_p[l::LANES], 0, kp // LANES)[0] for l in range(LANES)])
    g = [((lanes[4 * i] + lanes[4 * i + 1]) + lanes[4 * i + 2]) + lanes[4 * i + 3] for i in range(4)]
    out = (g[0] + g[2]) + (g[1] + g[3])
    tail = n - n % 4  # the last N % 4 columns: _mm512_reduce_add_ps, halving
    t = lanes[:, tail:]
    while t.shape[0] > 1:
        h = t.shape[0] // 2
        t = t[:h] + t[h:]
    out[tail:] = t[0]
    return out.astype(F32)


def check(node) -> str | None:
    if int(node.attr("bits", 4)) != 4:
        return f"bits={node.attr('bits')} (the reference computes 4-bit MatMulNBits)"
    if int(node.attr("block_size")) < 32:
        return f"block_size={node.attr('block_size')} (the reference computes block sizes >= 32)"
    if int(node.attr("accuracy_level", 0)) not in (0, 1):
        return f"accuracy_level={node.attr('accuracy_level')} (the reference computes the float32 levels 0 / 1)"
    if node.has_input(4) or node.has_input(5):
        return "g_idx / bias inputs"
    return None


@register("MatMulNBits", domain="com.microsoft", check=check)
def matmul_nbits(node, a, b, scales, zero_points=None, g_idx=None, bias=None):
    w = dequantize(node, b, scales, zero_points)
    a = np.asarray(a, F32)
    lead = a.shape[:-1]
    rows = a.reshape(-1, a.shape[-1])
    if rows.shape[0] == 1:
        y = _m1(rows[0], w).reshape(1, -1)
    else:
        y = _fma_chain(rows, w, 0, w.shape[0])
    return y.reshape(*lead, w.shape[1]).astype(F32)
