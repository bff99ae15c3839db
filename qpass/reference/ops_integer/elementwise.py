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
from . import compiled
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


def _add8(af, bf, za, sa, zb, sb, zc, sc, sh, mode):
    """QLinearAdd's float32 arithmetic on 8-bit codes (already in float32, ``sh`` added); ``mode`` 0: one
    output element, 1: input 0 broadcast, 2: otherwise (which operand onnxruntime's kernel treats as the scalar)."""
    za_, zb_, zc_ = F32(za + sh), F32(zb + sh), F32(zc + sh)
    ra, rb = F32(F32(sa) / F32(sc)), F32(F32(sb) / F32(sc))
    if mode == 2:
        fixed = F32(zc_ - fma32(ra, za_, F32(rb * zb_)))
        return fma32(af, ra, fma32(bf, rb, fixed))
    fixed = F32(zc_ - fma32(rb, zb_, F32(ra * za_)))
    if mode == 1:
        return fma32(bf, rb, fma32(af, ra, fixed))
    return fma32(af, ra, fma32(bf, rb, fixed))


def _table(cache: dict | None, key, a_dtype, b_dtype, fn) -> np.ndarray:
    """The 8-bit op as a 256 x 256 table of output codes, indexed by (a - lo_a, b - lo_b): ``fn`` evaluated once
    on every pair of codes (kept in ``cache``, the fused layer's own)."""
    if cache is not None and key in cache:
        return cache[key]
    ga = np.arange(int_range(a_dtype)[0], int_range(a_dtype)[1] + 1).astype(a_dtype).reshape(-1, 1)
    gb = np.arange(int_range(b_dtype)[0], int_range(b_dtype)[1] + 1).astype(b_dtype).reshape(1, -1)
    t = fn(np.broadcast_to(ga, (ga.size, gb.size)), np.broadcast_to(gb, (ga.size, gb.size)))
    if cache is not None:
        cache[key] = t
    return t


def _lookup(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``t[a - lo_a, b - lo_b]`` broadcast, as one flat gather; the 16-bit index is built in place (an int8
    code's offset is its bits with the sign bit flipped). Operands of one shape, or one of one element: one
    compiled pass (other broadcasts: the smaller operand copied out to the output's shape first, one byte per
    element, cheaper than the numpy path's 16-bit index)."""
    if a.size and b.size:
        k = compiled.jit()
        if k is not None:
            out = np.empty(np.broadcast_shapes(a.shape, b.shape), t.dtype)
            if not (a.shape == b.shape or a.size == 1 or b.size == 1):
                a, b = (np.broadcast_to(v, out.shape) for v in (a, b))
            k.lookup2(np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1),
                      -int_range(a.dtype)[0], -int_range(b.dtype)[0], t.reshape(-1), out.reshape(-1))
            return out
    idx = np.empty(np.broadcast_shapes(a.shape, b.shape), np.uint16)
    idx[...] = a.view(np.uint8)
    idx <<= 8
    idx |= b.view(np.uint8)
    flip = (0x8000 if a.dtype == np.int8 else 0) | (0x80 if b.dtype == np.int8 else 0)
    if flip:
        idx ^= np.uint16(flip)
    return np.take(t.reshape(-1), idx)


def qlinear_add(a, za, sa, b, zb, sb, zc, sc, dtype, sh=0, cache=None):
    """QLinearAdd on integer codes (numpy arrays), returning codes of ``dtype``; ``sh`` = 128 computes int8 in
    the uint8 domain. 8-bit codes go through a table of every code pair (``cache``: where to keep it)."""
    dtype = np.dtype(dtype)
    if dtype.itemsize == 1:
        out_shape = np.broadcast_shapes(a.shape, b.shape)
        mode = 0 if int(np.prod(out_shape)) == 1 else 1 if _input0_broadcast(a.shape, b.shape) else 2

        def codes(x, y):
            af, bf = (x.astype(I64) + sh).astype(F32), (y.astype(I64) + sh).astype(F32)
            return saturate(_add8(af, bf, za, sa, zb, sb, zc, sc, sh, mode), dtype, sh)

        if cache is None and int(np.prod(out_shape)) < 1 << 16:
            return codes(*np.broadcast_arrays(a, b))
        return _lookup(_table(cache, ("add", mode), a.dtype, b.dtype, codes), a, b)
    # 16-bit: MlasQLinearAddKernelRawHelper
    lo, hi = int_range(dtype)
    va = (F32(sa) * (a.astype(I64) - za).astype(F32)).astype(F32)
    vb = (F32(sb) * (b.astype(I64) - zb).astype(F32)).astype(F32)
    vc = ((va + vb) / F32(sc)).astype(F32)
    vc = np.clip(vc, F32(lo - zc), F32(hi - zc))
    return np.clip(rne_i((vc + F32(zc)).astype(F32)), lo, hi).astype(dtype)


def qlinear_mul(a, za, sa, b, zb, sb, zc, sc, dtype, sh=0, cache=None):
    dtype = np.dtype(dtype)

    def codes(x, y):
        p = (x.astype(I64) - za) * (y.astype(I64) - zb)
        ratio = F32(F32(F32(sa) * F32(sb)) / F32(sc))
        v = (p.astype(F32) * ratio).astype(F32) + F32(zc + sh)
        return saturate(v.astype(F32), dtype, sh)

    if dtype.itemsize != 1 or (cache is None and max(a.size, b.size) < 1 << 16):
        return codes(a, b)
    return _lookup(_table(cache, "mul", a.dtype, b.dtype, codes), a, b)


def _binary_fuser(kind, fn):
    def plan(fc: FusionContext, node: NodeInfo) -> FusedOp:
        q = need(fc.q_out(node))
        a = act_dq(fc, node.inputs[0], "A")
        b = act_dq(fc, node.inputs[1], "B")
        if not (a.dtype == b.dtype == q.dtype):
            raise NotFused("operands and output have different integer types")
        name = node.name
        sh = u8_shift(fc, q.dtype, a, b, q=q)
        tables: dict = {}  # this layer's code-pair tables

        def compute(vals, ex):
            y = fn(vals[0], a.z(), a.s(), vals[1], b.z(), b.s(), q.zp, q.scale, q.dtype, sh, tables)
            ex.record(name, kind, outputs=y.size)
            return y

        return FusedOp(kind, node.name, q.node, [a.codes, b.codes], q.output, compute)
    return plan


fuser("Add")(_binary_fuser("QLinearAdd", qlinear_add))
fuser("Mul")(_binary_fuser("QLinearMul", qlinear_mul))
