"""Fused pooling.

* AveragePool (QLinearAveragePool, ``contrib_ops/cpu/quantization/qlinear_pool.cc``): dequantise to float32, sum
  the window in row-major order in float32, divide by the count, ``sat(rne(f32(avg / sy) + zy))``; a kernel
  covering the whole image without padding becomes GlobalAveragePool.
* GlobalAveragePool (``mlas/lib/qlgavgpool.cpp``): ``acc = sum(x) - zx * n``, ``mult = f32(sx / f32(sy * n))``,
  then the MLAS requantisation.
* MaxPool: max of the codes (only when input and output share scale and zero point; otherwise the float path,
  which is exact too because DequantizeLinear is monotonic).
"""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from ..numerics import F32, I64, int_range, requantize_mlas
from ..registry import NodeInfo
from .arith import saturate
from .planning import FusedOp, FusionContext, NotFused, act_dq, fuser, need, u8_shift


def _same_type_operands(fc: FusionContext, node: NodeInfo):
    """(output Q, input DQ) of an average pool whose input and output share an integer type, or NotFused."""
    q = need(fc.q_out(node))
    x = act_dq(fc, node.inputs[0], "input")
    if x.dtype != q.dtype:
        raise NotFused("input and output have different integer types")
    return q, x


def global_avg_pool_codes(x, zx, sx, zy, sy, dtype, ex=None, name=None):
    """GlobalAveragePool on codes (N, C, *spatial): integer sum, MLAS requantisation; records on ``ex``."""
    n = int(np.prod(x.shape[2:]))
    acc = x.astype(I64).sum(axis=tuple(range(2, x.ndim)), keepdims=True) - zx * n
    mult = F32(F32(sx) / F32(F32(sy) * F32(n)))
    if ex is not None:
        ex.record(name, "QLinearGlobalAveragePool", outputs=acc.size, acc_min=int(acc.min()), acc_max=int(acc.max()))
    return requantize_mlas(acc, mult, zy, dtype)


@fuser("GlobalAveragePool")
def fuse_gap(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q, x = _same_type_operands(fc, node)

    def compute(vals, ex):
        return global_avg_pool_codes(vals[0], x.z(), x.s(), q.zp, q.scale, q.dtype, ex, node.name)

    return FusedOp("QLinearGlobalAveragePool", node.name, q.node, [x.codes], q.output, compute)


@fuser("AveragePool")
def fuse_avg_pool(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q, x = _same_type_operands(fc, node)
    if any(int(d) != 1 for d in (node.attr("dilations") or [])):
        raise NotFused("dilated AveragePool")
    kernel = list(node.attr("kernel_shape"))
    include_pad = bool(node.attr("count_include_pad", 0))
    sh = u8_shift(fc, q.dtype, x, q=q)

    def compute(vals, ex):
        xq = vals[0]
        begin, end, out = ic.node_geometry(node, xq.shape, kernel, pooling=True)  # dilations are 1 here
        if list(xq.shape[2:]) == kernel and not any(begin) and not any(end):
            return global_avg_pool_codes(xq, x.z(), x.s(), q.zp, q.scale, q.dtype, ex, node.name)
        xf = (F32(x.s()) * (xq.astype(I64) - x.z()).astype(F32)).astype(F32)
        w = ic.windows(xf, kernel, node.attr("strides"), None, begin, end, out, 0.0)
        acc = np.zeros(w.shape[: 2 + len(kernel)], F32)
        for tap in np.ndindex(*kernel):
            acc = (acc + w[(Ellipsis,) + tap]).astype(F32)
        if include_pad:
            cnt = F32(np.prod(kernel))
        else:
            ones = np.ones((1, 1) + xq.shape[2:], F32)
            cnt = ic.windows(ones, kernel, node.attr("strides"), None, begin, end, out, 0.0)
            cnt = cnt.sum(axis=tuple(range(-len(kernel), 0))).astype(F32)
        avg = (acc / cnt).astype(F32)
        v = ((avg / q.scale).astype(F32) + F32(q.zp + sh)).astype(F32)
        ex.record(node.name, "QLinearAveragePool", outputs=v.size)
        return saturate(v, q.dtype, sh)

    return FusedOp("QLinearAveragePool", node.name, q.node, [x.codes], q.output, compute)


@fuser("MaxPool")
def fuse_max_pool(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = need(fc.q_out(node))
    x = act_dq(fc, node.inputs[0], "input")
    if x.dtype != q.dtype or x.s() != q.scale or x.z() != q.zp:
        raise NotFused("input and output quantisation differ (the float path is exact)")
    if len([o for o in node.outputs if o]) != 1:
        raise NotFused("Indices output")
    kernel = list(node.attr("kernel_shape"))

    def compute(vals, ex):
        xq = vals[0]
        begin, end, out = ic.node_geometry(node, xq.shape, kernel, pooling=True)
        y = ic.window_max(xq, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out,
                          int_range(xq.dtype)[0]).astype(q.dtype, copy=False)
        ex.record(node.name, "MaxPool(int)", outputs=y.size)
        return y

    return FusedOp("MaxPool(int)", node.name, q.node, [x.codes], q.output, compute)
