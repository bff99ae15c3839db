"""Fused Conv / ConvTranspose / Gemm / MatMul (onnxruntime's QLinearConv, QGemm, QLinearMatMul;
``MlasRequantizeOutput`` in ``onnxruntime/core/mlas/lib/quantize.cpp``, scales in ``qlinearconv.cc`` /
``quant_gemm.cc``)::

    acc  = bias + sum((x - zx) * (w - zw))                   exact integer (int32 in MLAS)
    mult = f32(f32(alpha * sx * sw[c]) / sy)                 per output channel, float32, in this order
    y    = clamp(rne(f32(f32(acc) * mult)), qmin - zy, qmax - zy) + zy
"""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from ..memo import kept
from ..numerics import F32, F64, I64, apply_acc_width, int_range
from ..registry import NodeInfo
from . import compiled
from .arith import (acc_range, accumulate, add_bias, exact_dtype, exact_matmul, l1_bound, merge_counts,
                    requant)
from .planning import FusedOp, FusionContext, NotFused, act_dq, bias_codes, fuser, need, per_channel, weight_dq


def _conv_operands(fc: FusionContext, node: NodeInfo):
    """(output Q, input DQ, constant weight codes) of a Conv / ConvTranspose, or NotFused."""
    q = need(fc.q_out(node))
    x = act_dq(fc, node.inputs[0], "input")
    wdq = need(fc.dq(node.inputs[1]), "weight")
    if wdq.const_codes is None:
        raise NotFused("weight is not constant")
    return q, x, wdq.const_codes


def _act_bound(d) -> int:
    """max |code - zero point| of a per-tensor activation DQ, from its integer type."""
    lo, hi = int_range(d.dtype)
    return max(abs(lo - int(d.z())), abs(hi - int(d.z())))


@fuser("Conv")
def fuse_conv(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q, x, w_codes = _conv_operands(fc, node)
    m = w_codes.shape[0]
    w = weight_dq(fc, node.inputs[1], 0, m, w_codes.ndim)
    g = int(node.attr("group", 1))
    zw = per_channel(w.zp, m).reshape((m,) + (1,) * (w_codes.ndim - 1))
    wi = w_codes.astype(I64) - zw  # (M, C/g, *k)
    mg, kg = m // g, int(np.prod(w_codes.shape[1:]))
    xmax = _act_bound(x)
    wmax = int(np.abs(wi).max()) if wi.size else 0
    top = l1_bound(xmax, wi.reshape(m, -1), 1)  # bound of every partial sum of one output
    dt = exact_dtype(kg, xmax, wmax, top)  # BLAS type of the exact accumulation, proven from the operand ranges
    wt = wi.reshape(g, mg, kg).astype(dt)  # (g, Mg, Kg)
    # the depthwise path sums one window (kg terms) in any order: exact in float32 only below 2^24 in all
    ddt = F64 if dt == F32 and top >= 2 ** 24 else dt
    wdw = wi.astype(ddt)  # (M, C/g, *k): the depthwise path's weights
    s_in = (x.s() * per_channel(w.scale, m)).astype(F32)
    bias = bias_codes(fc, node, 2, s_in, m)
    bias_g = None if bias is None else bias.reshape(g, mg, 1)
    mult = (s_in / q.scale).astype(F32)
    kernel = list(node.attr("kernel_shape") or w_codes.shape[2:])
    zx = x.z()
    name = node.name
    jdt = compiled.acc_type(top, bias)  # the compiled path's accumulation type (None: numpy only)
    jdw = g == m and kg == int(np.prod(kernel))  # one input and output channel per group
    jw = None if jdt is None else (wi.reshape(m, kg).astype(jdt) if jdw else
                                   wi.reshape(g, mg, kg).astype(jdt))
    jp = compiled.Prepared(bias, mult, zx, q, m)

    geometry = {}  # input shape -> (begin, end, out): resolved once per shape

    def compute(vals, ex):
        codes = vals[0]
        geo = geometry.get(codes.shape)
        if geo is None:
            geo = geometry[codes.shape] = ic.node_geometry(node, codes.shape, kernel)
        begin, end, out = geo
        k = compiled.jit() if jw is not None and len(kernel) <= 2 and compiled.usable(ex, q) else None
        if k is not None and (not jdw or g == codes.shape[1]):
            return compiled.conv(k, ex, name, codes, jp, jw, kernel, node, begin, out, jdw)
        p, isz = int(np.prod(out)), np.dtype(dt).itemsize
        if ex.acc_bits is None and g > 1 and kg == int(np.prod(kernel)):  # depthwise, exact: no patch matrix
            xi = np.subtract(codes, dt(zx), dtype=dt)
            acc = ic.depthwise(xi.astype(ddt, copy=False), wdw, kernel, node.attr("strides"),
                               node.attr("dilations"), begin, end, out, exact=ddt != I64)
            acc = add_bias(acc, None if bias is None else bias.reshape((1, m) + (1,) * len(out)), False, top)
            return requant(ex, name, "QLinearConv", acc, mult.reshape((1, m) + (1,) * len(out)), q, acc_range(acc))
        if ex.acc_bits is None and p * kg * g * isz > BLOCKED_PATCH_BYTES:
            acc = _blocked_conv(np.subtract(codes, dt(zx), dtype=dt), wt, kernel, node, (begin, end, out), wmax,
                                xmax, top)
            acc = add_bias(acc, None if bias is None else bias.reshape((1, m) + (1,) * len(out)), False, top)
            return requant(ex, name, "QLinearConv", acc, mult.reshape((1, m) + (1,) * len(out)), q, acc_range(acc))
        accs, counts = [], {}
        for lo, hi in ic.batch_chunks(codes.shape[0], p * kg * g * isz):
            cols = ic.columns(codes[lo:hi], kernel, node.attr("strides"), node.attr("dilations"), begin, end,
                              out, dt, pointwise=True, zero=zx)  # windows of the codes, minus zx as written
            acc, c = accumulate(ex, wt, cols.reshape(g, kg, -1), bias_g, wmax, xmax, top)  # (g, Mg, n * P)
            accs.append(acc.reshape(m, hi - lo, p).swapaxes(0, 1).reshape((hi - lo, m) + tuple(out)))
            counts = merge_counts(counts, c)
        acc = np.concatenate(accs) if len(accs) > 1 else accs[0]
        return requant(ex, name, "QLinearConv", acc, mult.reshape((1, m) + (1,) * len(out)), q, counts)

    return FusedOp("QLinearConv", node.name, q.node, [x.codes], q.output, compute)


BLOCKED_PATCH_BYTES = 1 << 22  # one sample's patch matrix above this: built and multiplied in cache-sized blocks


def _blocked_conv(xi, wt, kernel, node, geom, wmax: int, xmax: int, top: int) -> np.ndarray:
    """Exact (N, M, *out) accumulators (no bias) of a Conv whose patch matrix is large, block by block of output
    rows (``im2col.column_blocks``): the same exact integers as one GEMM, without the patch matrix in memory."""
    begin, end, out = geom
    g, mg, kg = wt.shape
    y = None
    for s, r0, r1, cols in ic.column_blocks(xi, kernel, node.attr("strides"), node.attr("dilations"), begin, end,
                                            out):
        blk = exact_matmul(wt, cols.reshape(g, kg, -1), wmax, xmax, top)  # (g, Mg, rows * rest)
        if y is None:
            y = np.empty((xi.shape[0], g * mg) + tuple(out), blk.dtype)
        y[s, :, r0:r1] = blk.reshape((g * mg, r1 - r0) + tuple(out[1:]))
    return y


@fuser("ConvTranspose")
def fuse_conv_transpose(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q, x, w_codes = _conv_operands(fc, node)  # w_codes (C, M/g, *k)
    g = int(node.attr("group", 1))
    mg = w_codes.shape[1]
    m = mg * g
    w = weight_dq(fc, node.inputs[1], 1, mg, w_codes.ndim)
    if not w.per_tensor and g != 1:
        raise NotFused("per-channel weights with groups")
    zw = per_channel(w.zp, mg).reshape((1, mg) + (1,) * (w_codes.ndim - 2))
    wi = w_codes.astype(I64) - zw
    s_in = (x.s() * np.tile(per_channel(w.scale, mg), g)).astype(F32)
    bias = bias_codes(fc, node, 2, s_in, m)
    mult = (s_in / q.scale).astype(F32)
    zx = x.z()
    name = node.name

    def compute(vals, ex):
        xi = vals[0].astype(I64) - zx
        kernel, strides, dil, begin, out = ic.conv_transpose_geometry(node, xi, wi)
        cols = ic.conv_transpose_columns(xi.astype(F64), wi.astype(F64), g)  # exact: small integers
        acc = np.rint(ic.col2im_transpose(cols, xi.shape[2:], kernel, strides, dil, begin, out, F64)).astype(I64)
        if bias is not None:
            acc = acc + bias.reshape((1, m) + (1,) * len(out))
        counts = acc_range(acc)
        if ex.acc_bits is not None:
            acc, changed = apply_acc_width(acc, ex.acc_bits, ex.overflow)
            counts["overflowed"] = changed
        return requant(ex, name, "QLinearConvTranspose", acc, mult.reshape((1, m) + (1,) * len(out)), q, counts)

    return FusedOp("QLinearConvTranspose", node.name, q.node, [x.codes], q.output, compute)


# ------------------------------------------------------------------ Gemm / MatMul


def _b_operand(fc: FusionContext, node: NodeInfo, codes: np.ndarray | None, trans_b: bool):
    """Input B of Gemm / MatMul: (its DQ, constant ``codes`` minus zero points as (K, N) or None for an
    activation, scales per output column or one per-tensor scale)."""
    if codes is None:
        b = act_dq(fc, node.inputs[1], "B")
        return b, None, b.scale.reshape(-1)[:1]
    n = codes.shape[0 if trans_b else 1]
    b = weight_dq(fc, node.inputs[1], 0 if trans_b else 1, n, 2, "B")
    zb = per_channel(b.zp, n)
    bi = codes.astype(I64) - (zb[:, None] if trans_b else zb[None, :])
    return b, (bi.T if trans_b else bi), per_channel(b.scale, n)  # (K, N)


def _b_bounds(a, b, bi):
    """(bound of |A - za|, bound of |B - zb|, dtype -> constant B cast once per dtype, bound of every partial sum
    or None) of a Gemm / MatMul."""
    casts: dict = {}

    def const_b(dt):
        if dt not in casts:
            casts[dt] = bi.astype(dt)
        return casts[dt]

    bmax = _act_bound(b) if bi is None else (int(np.abs(bi).max()) if bi.size else 0)
    amax = _act_bound(a)
    return amax, bmax, const_b, None if bi is None else l1_bound(amax, bi, 0)


def _q_or_float(fc: FusionContext, node: NodeInfo):
    """The output Q of a Gemm / MatMul, or None when nothing quantizes its output: onnxruntime then runs QGemm
    with float output / MatMulIntegerToFloat, y = f32(f32(acc) * f32(sa * sb)) (a QGemm's int32 bias in acc)."""
    q = fc.q_out(node)
    if isinstance(q, str) and len([o for o in node.outputs if o]) == 1 and (
            q.startswith("its float output is a graph output") or q.startswith("its output does not go only")):
        cons = fc.consumers.get(node.outputs[0], [])
        if not any(c.op_type == "QuantizeLinear" for c in cons):
            return None
    return need(q)


def _float_out(ex, name: str, kind: str, acc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    ex.record(name, kind, outputs=acc.size)
    return (acc.astype(F32) * scale.astype(F32)).astype(F32)


@fuser("Gemm")
def fuse_gemm(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _q_or_float(fc, node)
    a = act_dq(fc, node.inputs[0], "A")
    bdq = need(fc.dq(node.inputs[1]), "B")
    trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    alpha, beta = F32(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if node.has_input(2) and beta != 1.0:
        raise NotFused("beta != 1 with a bias")
    b, bi, s_b = _b_operand(fc, node, bdq.const_codes, trans_b)
    s_in = ((alpha * a.s()).astype(F32) * s_b).astype(F32)
    bias = None
    if node.has_input(2):
        bias = bias_codes(fc, node, 2, (a.s() * s_b).astype(F32), s_b.size)
    mult = s_in if q is None else (s_in / q.scale).astype(F32)
    za = a.z()
    name = node.name
    inputs = [a.codes] + ([] if bi is not None else [b.codes])
    amax, bmax, bc, top = _b_bounds(a, b, bi)

    jdt = compiled.acc_type(top, bias)
    jb = None if jdt is None or trans_a else np.ascontiguousarray(bi, jdt)[None]  # (1, K, N)
    jp = None if jb is None else compiled.Prepared(bias, mult, za, q, jb.shape[2])

    def compute(vals, ex):
        k = compiled.jit() if jb is not None and vals[0].ndim == 2 and compiled.usable(ex, q) else None
        if k is not None:
            return compiled.gemm(k, ex, name, "QGemm", vals[0][None], jb, jp, constant=True)[0]
        dt = exact_dtype(vals[0].shape[0 if trans_a else -1], amax, bmax, top)
        av = vals[0].astype(dt) - dt(za)
        av = av.T if trans_a else av
        if bi is None:
            bv = vals[1].astype(dt) - dt(b.z())
            bv = bv.T if trans_b else bv
        else:
            bv = bc(dt)
        acc, counts = accumulate(ex, av[None], bv[None], None if bias is None else bias[None], amax, bmax, top)
        if q is None:
            return _float_out(ex, name, "QGemm", acc[0], mult)
        return requant(ex, name, "QGemm", acc[0], mult, q, counts)

    if q is None:
        return FusedOp("QGemm", node.name, "", inputs, node.outputs[0], compute)
    return FusedOp("QGemm", node.name, q.node, inputs, q.output, compute)


@fuser("MatMul")
def fuse_matmul(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _q_or_float(fc, node)
    a = act_dq(fc, node.inputs[0], "A")
    bdq = need(fc.dq(node.inputs[1]), "B")
    const = bdq.const_codes is not None and bdq.const_codes.ndim == 2
    b, bi, s_b = _b_operand(fc, node, bdq.const_codes if const else None, False)
    mult = (a.s() * s_b).astype(F32) if q is None else ((a.s() * s_b).astype(F32) / q.scale).astype(F32)
    za = a.z()
    name = node.name
    inputs = [a.codes] + ([] if bi is not None else [b.codes])
    amax, bmax, bc, top = _b_bounds(a, b, bi)

    jdt = compiled.acc_type(top, None)
    jb = None if jdt is None else np.ascontiguousarray(bi, jdt)[None]  # (1, K, N)
    jp = compiled.Prepared(None, mult, za, q, np.size(mult))

    def compute(vals, ex):
        k = compiled.jit() if vals[0].ndim >= 2 and compiled.usable(ex, q) else None
        if k is not None:
            kind = "MatMulIntegerToFloat" if q is None else "QLinearMatMul"
            y = _matmul_jit(k, ex, name, kind, vals, jb, b, amax, bmax, jp)
            if y is not None:
                return y
        dt = exact_dtype(vals[0].shape[-1], amax, bmax, top)
        av = vals[0].astype(dt) - dt(za)
        bv = bc(dt) if bi is not None else vals[1].astype(dt) - dt(b.z())
        if av.ndim < 2 or bv.ndim < 2:
            raise ValueError("1-D MatMul operands are not supported by the integer kernel")
        if bv.ndim == 2:
            lead = av.shape[:-1]
            acc, counts = accumulate(ex, av.reshape(1, -1, av.shape[-1]), bv[None], None, amax, bmax, top)
            acc = acc.reshape(lead + (bv.shape[1],))
        else:
            batch = np.broadcast_shapes(av.shape[:-2], bv.shape[:-2])
            a3 = np.broadcast_to(av, batch + av.shape[-2:]).reshape((-1,) + av.shape[-2:])
            b3 = np.broadcast_to(bv, batch + bv.shape[-2:]).reshape((-1,) + bv.shape[-2:])
            acc, counts = accumulate(ex, a3, b3, None, amax, bmax)
            acc = acc.reshape(batch + (av.shape[-2], bv.shape[-1]))
        if q is None:
            return _float_out(ex, name, "MatMulIntegerToFloat", acc, mult)
        return requant(ex, name, "QLinearMatMul", acc, mult, q, counts)

    if q is None:
        return FusedOp("MatMulIntegerToFloat", node.name, "", inputs, node.outputs[0], compute)
    return FusedOp("QLinearMatMul", node.name, q.node, inputs, q.output, compute)


def _matmul_jit(k, ex, name, kind, vals, jb, b, amax, bmax, jp):
    """A QLinearMatMul / MatMulIntegerToFloat by ``int8_jit``: a constant B (``jb``), or two activations of
    proven exact float accumulation (their batch axes broadcast); None when neither applies."""
    a = vals[0]
    if jb is not None:
        a3 = np.ascontiguousarray(a).reshape(1, -1, a.shape[-1])
        return compiled.gemm(k, ex, name, kind, a3, jb, jp, constant=True).reshape(a.shape[:-1] + (jb.shape[2],))
    bv = vals[1]
    dt = compiled.acc_type(amax * bmax * a.shape[-1], None)
    if jb is not None or dt is None or bv.ndim < 2:
        return None
    batch = np.broadcast_shapes(a.shape[:-2], bv.shape[:-2])
    a3 = np.ascontiguousarray(np.broadcast_to(a, batch + a.shape[-2:])).reshape((-1,) + a.shape[-2:])
    # B's centred codes, kept while the same codes come back (a Loop's carried B)
    b3 = kept(ex.scratch, ("qmm_b", name, batch, dt), (bv,), lambda: np.subtract(
        np.broadcast_to(bv, batch + bv.shape[-2:]), dt(b.z()), dtype=dt).reshape((-1,) + bv.shape[-2:]))[0]
    y = compiled.gemm(k, ex, name, kind, a3, b3, jp)
    return y.reshape(batch + y.shape[1:])
