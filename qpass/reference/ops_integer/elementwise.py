"""Fused Add and Mul.

* Add (QLinearAdd, AVX2 kernel ``intrinsics/avx2/qladd_avx2.cpp``; GCC contracts the scalar expression into an
  FMA)::

      ra = f32(sa / sc), rb = f32(sb / sc)
      fixed = f32(zc) - fma(ra, za, f32(rb * zb))
      y = sat(rne(fma(a, ra, fma(b, rb, fixed))))             (operands swapped when input 0 is broadcast)

* Mul (QLinearMul, SSE2 kernel ``qlmul.cpp``)::

      y = sat(rne(f32(f32((a - za) * (b - zb)) * f32(f32(sa * sb) / sc)) + zc))
"""
from __future__ import annotations

import numpy as np

from ..numerics import F32, I64, int_range
from ..registry import NodeInfo
from .arith import fma32, rne_i, saturate
from .planning import FusedOp, FusionContext, NotFused, act_dq, fuser, need, u8_shift


def _input0_broadcast(a_shape, b_shape) -> bool:
    """Whether onnxruntime's broadcaster treats input 0 as the scalar of the innermost span."""
    if int(np.prod(a_shape)) == 1:
        return True
    out = np.broadcast_shapes(a_shape, b_shape)
    nd = len(out)
    ap = (1,) * (nd - len(a_shape)) + tuple(a_shape)
    for d in range(nd - 1, -1, -1):
        if out[d] != 1:
            return ap[d] == 1
    return False


def qlinear_add(a, za, sa, b, zb, sb, zc, sc, dtype, sh=0):
    """QLinearAdd on integer codes (numpy arrays), returning codes of ``dtype``; ``sh`` = 128 computes int8 in
    the uint8 domain."""
    dtype = np.dtype(dtype)
    if dtype.itemsize == 1:
        af = (a.astype(I64) + sh).astype(F32)
        bf = (b.astype(I64) + sh).astype(F32)
        za_, zb_, zc_ = F32(za + sh), F32(zb + sh), F32(zc + sh)
        ra, rb = F32(F32(sa) / F32(sc)), F32(F32(sb) / F32(sc))
        out_shape = np.broadcast_shapes(a.shape, b.shape)
        af, bf = np.broadcast_to(af, out_shape), np.broadcast_to(bf, out_shape)
        if int(np.prod(out_shape)) == 1:
            fixed = F32(zc_ - fma32(rb, zb_, F32(ra * za_)))
            v = fma32(af, ra, fma32(bf, rb, fixed))
        elif _input0_broadcast(a.shape, b.shape):
            fixed = F32(zc_ - fma32(rb, zb_, F32(ra * za_)))
            v = fma32(bf, rb, fma32(af, ra, fixed))
        else:
            fixed = F32(zc_ - fma32(ra, za_, F32(rb * zb_)))
            v = fma32(af, ra, fma32(bf, rb, fixed))
        return saturate(v, dtype, sh)
    # 16-bit: MlasQLinearAddKernelRawHelper
    lo, hi = int_range(dtype)
    va = (F32(sa) * (a.astype(I64) - za).astype(F32)).astype(F32)
    vb = (F32(sb) * (b.astype(I64) - zb).astype(F32)).astype(F32)
    vc = ((va + vb) / F32(sc)).astype(F32)
    vc = np.clip(vc, F32(lo - zc), F32(hi - zc))
    return np.clip(rne_i((vc + F32(zc)).astype(F32)), lo, hi).astype(dtype)


def qlinear_mul(a, za, sa, b, zb, sb, zc, sc, dtype, sh=0):
    dtype = np.dtype(dtype)
    p = (a.astype(I64) - za) * (b.astype(I64) - zb)
    ratio = F32(F32(F32(sa) * F32(sb)) / F32(sc))
    v = (p.astype(F32) * ratio).astype(F32) + F32(zc + sh)
    return saturate(v.astype(F32), dtype, sh)


def _binary_fuser(kind, fn):
    def plan(fc: FusionContext, node: NodeInfo) -> FusedOp:
        q = need(fc.q_out(node))
        a = act_dq(fc, node.inputs[0], "A")
        b = act_dq(fc, node.inputs[1], "B")
        if not (a.dtype == b.dtype == q.dtype):
            raise NotFused("operands and output have different integer types")
        name = node.name
        sh = u8_shift(fc, q.dtype, a, b)

        def compute(vals, ex):
            y = fn(vals[0], a.z(), a.s(), vals[1], b.z(), b.s(), q.zp, q.scale, q.dtype, sh)
            ex.record(name, kind, outputs=y.size)
            return y

        return FusedOp(kind, node.name, q.node, [a.codes, b.codes], q.output, compute)
    return plan


fuser("Add")(_binary_fuser("QLinearAdd", qlinear_add))
fuser("Mul")(_binary_fuser("QLinearMul", qlinear_mul))
