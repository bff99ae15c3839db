"""Integer execution of QDQ layers, bit-exact with onnxruntime's CPU integer kernels (MLAS, x86-64).

A compute node is *fused* when its data inputs are DequantizeLinear outputs with constant parameters and its only
consumer is a QuantizeLinear with a constant per-tensor scale: the fused kernel reads the integer codes and writes
the QuantizeLinear's output. The arithmetic of each kernel, as read from onnxruntime's source and checked against
onnxruntime 1.32 (see tests/test_golden.py):

* Conv / ConvTranspose / Gemm / MatMul (QLinearConv, QGemm, QLinearMatMul; ``MlasRequantizeOutput`` in
  ``onnxruntime/core/mlas/lib/quantize.cpp``, scales in ``qlinearconv.cc`` / ``quant_gemm.cc``)::

      acc  = bias + sum((x - zx) * (w - zw))                   exact integer (int32 in MLAS)
      mult = f32(f32(alpha * sx * sw[c]) / sy)                 per output channel, float32, in this order
      y    = clamp(rne(f32(f32(acc) * mult)), qmin - zy, qmax - zy) + zy

* Add (QLinearAdd, AVX2 kernel ``intrinsics/avx2/qladd_avx2.cpp``; GCC contracts the scalar expression into an
  FMA)::

      ra = f32(sa / sc), rb = f32(sb / sc)
      fixed = f32(zc) - fma(ra, za, f32(rb * zb))
      y = sat(rne(fma(a, ra, fma(b, rb, fixed))))             (operands swapped when input 0 is broadcast)

* Mul (QLinearMul, SSE2 kernel ``qlmul.cpp``)::

      y = sat(rne(f32(f32((a - za) * (b - zb)) * f32(f32(sa * sb) / sc)) + zc))

* AveragePool (QLinearAveragePool, ``contrib_ops/cpu/quantization/qlinear_pool.cc``): dequantise to float32, sum
  the window in row-major order in float32, divide by the count, ``sat(rne(f32(avg / sy) + zy))``; a kernel
  covering the whole image without padding becomes GlobalAveragePool.
* GlobalAveragePool (``mlas/lib/qlgavgpool.cpp``): ``acc = sum(x) - zx * n``, ``mult = f32(sx / f32(sy * n))``,
  then the MLAS requantisation above.
* MaxPool: max of the codes (only when input and output share scale and zero point; otherwise the float path,
  which is exact too because DequantizeLinear is monotonic).

int8 activations: onnxruntime on x86 without AVX512-VNNI rewrites int8 QDQ pairs to uint8 (QDQS8ToU8Transformer)
before fusing, so Add, Mul and AveragePool add the zero point in the uint8 domain; the golden kernels do the same
(``+128`` on codes and zero points), which only matters for float rounding at exact ties.

Accumulators (Conv, Gemm, MatMul): exact int64 unless ``acc_bits`` is set; then ``wrap`` is two's complement and
``saturate`` clamps after every addition in the order bias, then products along the reduction axis in weight
layout order (Conv: input channel, then kernel rows, then columns). ConvTranspose and the pools apply the width
to the final sum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import im2col as ic
from .numerics import F32, F64, apply_acc_width, fma32, int_range, requantize_mlas
from .ops_float import col2im_transpose, conv_transpose_columns, conv_transpose_geometry
from .registry import NodeInfo

I64 = np.int64
ACT_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int16, np.uint16))


@dataclass
class DQ:
    """A DequantizeLinear feeding a fused kernel: integer tensor name and constant parameters."""

    codes: str
    scale: np.ndarray  # float32, 0-d or 1-d
    zp: np.ndarray  # int64, same shape as scale
    dtype: np.dtype
    axis: int
    const_codes: np.ndarray | None

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    def s(self) -> np.float32:
        return F32(self.scale.reshape(-1)[0])

    def z(self) -> int:
        return int(self.zp.reshape(-1)[0])


@dataclass
class QOut:
    node: str
    output: str
    scale: np.float32
    zp: int
    dtype: np.dtype


@dataclass
class FusedOp:
    kind: str
    node: str
    q_node: str
    inputs: list[str]
    output: str
    compute: Callable[[list[np.ndarray], Any], np.ndarray]


FUSERS: dict[str, Callable] = {}


def fuser(*ops):
    def deco(fn):
        for op in ops:
            FUSERS[op] = fn
        return fn
    return deco


class FusionContext:
    """Graph queries for the fusion planners (constants, DQ producers, the single Q consumer)."""

    def __init__(self, ex):
        self.ex = ex
        self.producer: dict[str, NodeInfo] = {o: n for n in ex.nodes for o in n.outputs if o}
        self.consumers: dict[str, list[NodeInfo]] = {}
        for n in ex.nodes:
            for x in n.inputs:
                if x:
                    self.consumers.setdefault(x, []).append(n)
        self.graph_outputs = set(ex.output_names)

    def const(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.ex.initializers and name not in self.ex.overridable:
            return self.ex.initializers[name]
        p = self.producer.get(name)
        if p is not None and p.op_type == "Constant" and p.domain == "" and "value" in p.attrs:
            return np.asarray(p.attrs["value"])
        return None

    def dq(self, name: str) -> DQ | str:
        p = self.producer.get(name)
        if p is None or p.op_type != "DequantizeLinear" or p.domain != "":
            return f"input {name!r} is not a DequantizeLinear output"
        if p.attr("block_size", 0):
            return "blocked DequantizeLinear"
        scale = self.const(p.inputs[1])
        zp = self.const(p.inputs[2]) if p.has_input(2) else None
        if scale is None or (p.has_input(2) and zp is None):
            return f"DequantizeLinear {p.name!r} has non-constant scale or zero point"
        codes = p.inputs[0]
        cc = self.const(codes)
        if zp is not None:
            dtype = np.asarray(zp).dtype
        elif cc is not None:
            dtype = cc.dtype
        else:
            dtype = np.dtype(np.uint8)
        zp = np.zeros(np.shape(scale), I64) if zp is None else np.asarray(zp).astype(I64)
        return DQ(codes, np.asarray(scale, F32), zp, np.dtype(dtype), int(p.attr("axis", 1)), cc)

    def q_out(self, node: NodeInfo) -> QOut | str:
        if len([o for o in node.outputs if o]) != 1:
            return "more than one output"
        out = node.outputs[0]
        if out in self.graph_outputs:
            return "its float output is a graph output"
        cons = self.consumers.get(out, [])
        if len(cons) != 1 or cons[0].op_type != "QuantizeLinear" or cons[0].domain != "" or cons[0].inputs[0] != out:
            return "its output does not go only into a QuantizeLinear"
        q = cons[0]
        scale = self.const(q.inputs[1])
        zp = self.const(q.inputs[2]) if q.has_input(2) else None
        if scale is None or (q.has_input(2) and zp is None):
            return f"QuantizeLinear {q.name!r} has non-constant parameters"
        if np.size(scale) != 1 or (zp is not None and np.size(zp) != 1):
            return "per-axis output quantisation"
        dtype = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
        if dtype not in ACT_DTYPES:
            return f"output type {dtype}"
        return QOut(q.name, q.outputs[0], F32(np.asarray(scale).reshape(-1)[0]),
                    0 if zp is None else int(np.asarray(zp).reshape(-1)[0]), dtype)

    def plan_all(self) -> dict[str, FusedOp | str]:
        plans: dict[str, FusedOp | str] = {}
        for n in self.ex.nodes:
            if n.domain != "" or n.op_type not in FUSERS:
                continue
            if not any(self.producer.get(x) is not None and self.producer[x].op_type == "DequantizeLinear"
                       for x in n.inputs if x):
                continue  # a plain float node
            try:
                plans[n.name] = FUSERS[n.op_type](self, n)
            except _NotFused as exc:
                plans[n.name] = str(exc)
        return plans


class _NotFused(Exception):
    pass


def _need(v, what=None):
    if isinstance(v, str):
        raise _NotFused(v if what is None else f"{what}: {v}")
    return v


def _act(fc: FusionContext, name: str, what: str) -> DQ:
    d = _need(fc.dq(name), what)
    if not d.per_tensor:
        raise _NotFused(f"{what} is quantised per axis")
    if d.dtype not in ACT_DTYPES:
        raise _NotFused(f"{what} has type {d.dtype}")
    return d


def _weight(fc: FusionContext, name: str, axis: int, channels: int, ndim: int, what="weight") -> DQ:
    d = _need(fc.dq(name), what)
    if d.dtype not in ACT_DTYPES:
        raise _NotFused(f"{what} has type {d.dtype}")
    if not d.per_tensor:
        if d.scale.ndim != 1 or d.scale.size != channels or d.axis % ndim != axis % ndim:
            raise _NotFused(f"{what} is quantised along axis {d.axis}, not per output channel")
    return d


def _per_channel(v: np.ndarray, channels: int) -> np.ndarray:
    v = np.asarray(v).reshape(-1)
    return np.broadcast_to(v, (channels,)).copy() if v.size == 1 else v


def _bias(fc: FusionContext, node: NodeInfo, idx: int, s_in: np.ndarray, channels: int) -> np.ndarray | None:
    """int32 bias codes of a DQ(int32, zp 0) whose scale equals s_in (per channel); else not fused."""
    if not node.has_input(idx):
        return None
    d = _need(fc.dq(node.inputs[idx]), "bias")
    if d.const_codes is None or d.dtype != np.dtype(np.int32):
        raise _NotFused("bias is not a constant int32 DequantizeLinear")
    if np.any(d.zp != 0):
        raise _NotFused("bias zero point is not 0")
    sb = _per_channel(d.scale, channels).astype(F64)
    want = _per_channel(s_in, channels).astype(F64)
    if not np.allclose(sb, want, rtol=1e-6, atol=0):
        raise _NotFused("bias scale differs from input scale * weight scale")
    return d.const_codes.astype(I64)


# ------------------------------------------------------------------ accumulation


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int64 matmul; through float64 BLAS when every partial sum stays below 2^53."""
    k = a.shape[-1]
    amax = int(np.abs(a).max()) if a.size else 0
    bmax = int(np.abs(b).max()) if b.size else 0
    if amax * bmax * max(k, 1) < 2 ** 53:
        return np.rint(np.matmul(a.astype(F64), b.astype(F64))).astype(I64)
    return np.matmul(a.astype(I64), b.astype(I64))


def accumulate(ex, node: str, kind: str, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """bias + a @ b for a (B, R, K), b (B or 1, K, M), bias broadcastable to (B, R, M), with the accumulator model."""
    acc = _exact_matmul(a, b)
    if bias is not None:
        acc = acc + bias
    counts = {"acc_min": int(acc.min()) if acc.size else None, "acc_max": int(acc.max()) if acc.size else None}
    bits = ex.acc_bits
    if bits is not None:
        if ex.overflow == "wrap":
            acc, changed = apply_acc_width(acc, bits, "wrap")
            counts["overflowed"] = changed
        else:
            acc, changed, events = _saturating(a, b, bias, acc, bits)
            counts["overflowed"] = changed
            counts["saturation_events"] = events
    return acc, counts


def _saturating(a, b, bias, exact, bits, chunk=1 << 15):
    """Per-addition saturating accumulation; only accumulators whose |partial sums| could leave the range are
    replayed step by step (the others provably equal the exact sum)."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    absb = np.abs(bias) if bias is not None else 0
    bound = _exact_matmul(np.abs(a), np.abs(b)) + absb
    risky = np.argwhere(np.broadcast_to(bound > hi, exact.shape))
    out = exact.copy()
    events = 0
    if len(risky):
        bfull = None if bias is None else np.broadcast_to(bias, exact.shape)
        for s in range(0, len(risky), chunk):
            idx = risky[s:s + chunk]
            bi, r, m = idx[:, 0], idx[:, 1], idx[:, 2]
            prods = a[bi if a.shape[0] > 1 else 0, r, :] * b[bi if b.shape[0] > 1 else 0, :, m]
            acc = np.zeros(len(idx), I64) if bfull is None else bfull[bi, r, m].astype(I64)
            c = np.clip(acc, lo, hi)
            events += int(np.count_nonzero(c != acc))
            acc = c
            for k in range(prods.shape[1]):
                t = acc + prods[:, k]
                acc = np.clip(t, lo, hi)
                events += int(np.count_nonzero(acc != t))
            out[bi, r, m] = acc
    return out, int(np.count_nonzero(out != exact)), events


def _merge_counts(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if v is None:
            continue
        if k not in out or out[k] is None:
            out[k] = v
        elif k == "acc_min":
            out[k] = min(out[k], v)
        elif k == "acc_max":
            out[k] = max(out[k], v)
        else:
            out[k] += v
    return out


def _requant(ex, node: str, kind: str, acc: np.ndarray, mult: np.ndarray, q: QOut, counts: dict) -> np.ndarray:
    lo, hi = int_range(q.dtype)
    v = acc.astype(F32) * mult
    counts["output_clipped"] = int(np.count_nonzero((v < lo - q.zp) | (v > hi - q.zp)))
    ex.record(node, kind, outputs=acc.size, **counts)
    return requantize_mlas(acc, mult, q.zp, q.dtype)


# ------------------------------------------------------------------ Conv / ConvTranspose


@fuser("Conv")
def fuse_conv(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    x = _act(fc, node.inputs[0], "input")
    wdq = _need(fc.dq(node.inputs[1]), "weight")
    if wdq.const_codes is None:
        raise _NotFused("weight is not constant")
    w_codes = wdq.const_codes
    m = w_codes.shape[0]
    w = _weight(fc, node.inputs[1], 0, m, w_codes.ndim)
    g = int(node.attr("group", 1))
    zw = _per_channel(w.zp, m).reshape((m,) + (1,) * (w_codes.ndim - 1))
    wi = w_codes.astype(I64) - zw  # (M, C/g, *k)
    mg, kg = m // g, int(np.prod(w_codes.shape[1:]))
    wt = wi.reshape(g, mg, kg).transpose(0, 2, 1).copy()  # (g, Kg, Mg)
    s_in = (x.s() * _per_channel(w.scale, m)).astype(F32)
    bias = _bias(fc, node, 2, s_in, m)
    bias_g = None if bias is None else bias.reshape(g, 1, mg)
    mult = (s_in / q.scale).astype(F32)
    kernel = list(node.attr("kernel_shape") or w_codes.shape[2:])
    zx = x.z()
    name = node.name

    def compute(vals, ex):
        xi = vals[0].astype(I64) - zx
        begin, end, out = ic.geometry(xi.shape[2:], kernel, node.attr("strides"), node.attr("dilations"),
                                      node.attr("pads"), node.attr("auto_pad", "NOTSET"))
        p = int(np.prod(out))
        accs, counts = [], {}
        for lo, hi in ic.batch_chunks(xi.shape[0], p * kg * g * 8):
            cols = ic.im2col(xi[lo:hi], kernel, node.attr("strides"), node.attr("dilations"), begin, end, out)
            n = hi - lo
            a = cols.reshape(n, p, g, kg).transpose(2, 0, 1, 3).reshape(g, n * p, kg)
            acc, c = accumulate(ex, name, "QLinearConv", a, wt, bias_g)  # (g, N*P, Mg)
            accs.append(acc.reshape(g, n, p, mg).transpose(1, 0, 3, 2).reshape((n, m) + tuple(out)))
            counts = _merge_counts(counts, c)
        acc = np.concatenate(accs) if len(accs) > 1 else accs[0]
        return _requant(ex, name, "QLinearConv", acc, mult.reshape((1, m) + (1,) * len(out)), q, counts)

    return FusedOp("QLinearConv", node.name, q.node, [x.codes], q.output, compute)


@fuser("ConvTranspose")
def fuse_conv_transpose(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    x = _act(fc, node.inputs[0], "input")
    wdq = _need(fc.dq(node.inputs[1]), "weight")
    if wdq.const_codes is None:
        raise _NotFused("weight is not constant")
    w_codes = wdq.const_codes  # (C, M/g, *k)
    g = int(node.attr("group", 1))
    mg = w_codes.shape[1]
    m = mg * g
    w = _weight(fc, node.inputs[1], 1, mg, w_codes.ndim)
    if not w.per_tensor and g != 1:
        raise _NotFused("per-channel weights with groups")
    zw = _per_channel(w.zp, mg).reshape((1, mg) + (1,) * (w_codes.ndim - 2))
    wi = w_codes.astype(I64) - zw
    s_in = (x.s() * np.tile(_per_channel(w.scale, mg), g)).astype(F32)
    bias = _bias(fc, node, 2, s_in, m)
    mult = (s_in / q.scale).astype(F32)
    zx = x.z()
    name = node.name

    def compute(vals, ex):
        xi = vals[0].astype(I64) - zx
        kernel, strides, dil, begin, out = conv_transpose_geometry(node, xi, wi)
        cols = conv_transpose_columns(xi.astype(F64), wi.astype(F64), g)  # exact: small integers
        acc = np.rint(col2im_transpose(cols, xi.shape[2:], kernel, strides, dil, begin, out, F64)).astype(I64)
        if bias is not None:
            acc = acc + bias.reshape((1, m) + (1,) * len(out))
        counts = {"acc_min": int(acc.min()) if acc.size else None, "acc_max": int(acc.max()) if acc.size else None}
        if ex.acc_bits is not None:
            acc, changed = apply_acc_width(acc, ex.acc_bits, ex.overflow)
            counts["overflowed"] = changed
        return _requant(ex, name, "QLinearConvTranspose", acc, mult.reshape((1, m) + (1,) * len(out)), q, counts)

    return FusedOp("QLinearConvTranspose", node.name, q.node, [x.codes], q.output, compute)


# ------------------------------------------------------------------ Gemm / MatMul


@fuser("Gemm")
def fuse_gemm(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    a = _act(fc, node.inputs[0], "A")
    bdq = _need(fc.dq(node.inputs[1]), "B")
    trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    alpha, beta = F32(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if node.has_input(2) and beta != 1.0:
        raise _NotFused("beta != 1 with a bias")
    if bdq.const_codes is not None:
        n = bdq.const_codes.shape[0 if trans_b else 1]
        b = _weight(fc, node.inputs[1], 0 if trans_b else 1, n, 2, "B")
        zb = _per_channel(b.zp, n)
        bi = bdq.const_codes.astype(I64) - (zb[:, None] if trans_b else zb[None, :])
        bi = bi.T if trans_b else bi  # (K, N)
        s_b = _per_channel(b.scale, n)
    else:
        b = _act(fc, node.inputs[1], "B")
        bi, n, s_b = None, None, b.scale.reshape(-1)[:1]
    s_in = ((alpha * a.s()).astype(F32) * s_b).astype(F32)
    bias = None
    if node.has_input(2):
        bias = _bias(fc, node, 2, (a.s() * s_b).astype(F32), s_b.size)
    mult = (s_in / q.scale).astype(F32)
    za = a.z()
    name = node.name
    inputs = [a.codes] + ([] if bi is not None else [b.codes])

    def compute(vals, ex):
        av = vals[0].astype(I64) - za
        av = av.T if trans_a else av
        if bi is None:
            bv = vals[1].astype(I64) - b.z()
            bv = bv.T if trans_b else bv
        else:
            bv = bi
        acc, counts = accumulate(ex, name, "QGemm", av[None], bv[None], None if bias is None else bias[None])
        return _requant(ex, name, "QGemm", acc[0], mult, q, counts)

    return FusedOp("QGemm", node.name, q.node, inputs, q.output, compute)


@fuser("MatMul")
def fuse_matmul(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    a = _act(fc, node.inputs[0], "A")
    bdq = _need(fc.dq(node.inputs[1]), "B")
    if bdq.const_codes is not None and bdq.const_codes.ndim == 2:
        n = bdq.const_codes.shape[1]
        b = _weight(fc, node.inputs[1], 1, n, 2, "B")
        bi = bdq.const_codes.astype(I64) - _per_channel(b.zp, n)[None, :]
        s_b = _per_channel(b.scale, n)
    else:
        b = _act(fc, node.inputs[1], "B")
        bi, s_b = None, b.scale.reshape(-1)[:1]
    mult = ((a.s() * s_b).astype(F32) / q.scale).astype(F32)
    za = a.z()
    name = node.name
    inputs = [a.codes] + ([] if bi is not None else [b.codes])

    def compute(vals, ex):
        av = vals[0].astype(I64) - za
        bv = bi if bi is not None else vals[1].astype(I64) - b.z()
        if av.ndim < 2 or bv.ndim < 2:
            raise ValueError("1-D MatMul operands are not supported by the integer kernel")
        if bv.ndim == 2:
            lead = av.shape[:-1]
            acc, counts = accumulate(ex, name, "QLinearMatMul", av.reshape(1, -1, av.shape[-1]), bv[None], None)
            acc = acc.reshape(lead + (bv.shape[1],))
        else:
            batch = np.broadcast_shapes(av.shape[:-2], bv.shape[:-2])
            a3 = np.broadcast_to(av, batch + av.shape[-2:]).reshape((-1,) + av.shape[-2:])
            b3 = np.broadcast_to(bv, batch + bv.shape[-2:]).reshape((-1,) + bv.shape[-2:])
            acc, counts = accumulate(ex, name, "QLinearMatMul", a3, b3, None)
            acc = acc.reshape(batch + (av.shape[-2], bv.shape[-1]))
        return _requant(ex, name, "QLinearMatMul", acc, mult, q, counts)

    return FusedOp("QLinearMatMul", node.name, q.node, inputs, q.output, compute)


# ------------------------------------------------------------------ elementwise


def _u8_shift(fc: FusionContext, dtype: np.dtype, *dqs: DQ) -> int:
    """+128 when onnxruntime would run these int8 codes as uint8: x86 without VNNI rewrites Q -> DQ pairs from
    int8 to uint8 (QDQS8ToU8Transformer); int8 codes fed directly (graph inputs, initializers) stay int8."""
    if np.dtype(dtype) != np.dtype(np.int8):
        return 0
    from_q = all(fc.producer.get(d.codes) is not None and fc.producer[d.codes].op_type == "QuantizeLinear"
                 for d in dqs)
    return 128 if from_q else 0


def _saturate(v: np.ndarray, dtype, shift: int) -> np.ndarray:
    lo, hi = int_range(np.uint8 if shift else dtype)  # shift: computed in the uint8 domain
    return (np.clip(rne_i(v), lo, hi) - shift).astype(dtype)


def rne_i(v: np.ndarray) -> np.ndarray:
    return np.rint(v).astype(I64)


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
        return _saturate(v, dtype, sh)
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
    return _saturate(v.astype(F32), dtype, sh)


def _binary_fuser(kind, fn):
    def plan(fc: FusionContext, node: NodeInfo) -> FusedOp:
        q = _need(fc.q_out(node))
        a = _act(fc, node.inputs[0], "A")
        b = _act(fc, node.inputs[1], "B")
        if not (a.dtype == b.dtype == q.dtype):
            raise _NotFused("operands and output have different integer types")
        name = node.name
        sh = _u8_shift(fc, q.dtype, a, b)

        def compute(vals, ex):
            y = fn(vals[0], a.z(), a.s(), vals[1], b.z(), b.s(), q.zp, q.scale, q.dtype, sh)
            ex.record(name, kind, outputs=y.size)
            return y

        return FusedOp(kind, node.name, q.node, [a.codes, b.codes], q.output, compute)
    return plan


fuser("Add")(_binary_fuser("QLinearAdd", qlinear_add))
fuser("Mul")(_binary_fuser("QLinearMul", qlinear_mul))


# ------------------------------------------------------------------ pooling


def global_avg_pool_codes(x, zx, sx, zy, sy, dtype, ex=None, name=None):
    n = int(np.prod(x.shape[2:]))
    acc = x.astype(I64).sum(axis=tuple(range(2, x.ndim)), keepdims=True) - zx * n
    mult = F32(F32(sx) / F32(F32(sy) * F32(n)))
    if ex is not None:
        ex.record(name, "QLinearGlobalAveragePool", outputs=acc.size, acc_min=int(acc.min()), acc_max=int(acc.max()))
    return requantize_mlas(acc, mult, zy, dtype)


@fuser("GlobalAveragePool")
def fuse_gap(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    x = _act(fc, node.inputs[0], "input")
    if x.dtype != q.dtype:
        raise _NotFused("input and output have different integer types")

    def compute(vals, ex):
        return global_avg_pool_codes(vals[0], x.z(), x.s(), q.zp, q.scale, q.dtype, ex, node.name)

    return FusedOp("QLinearGlobalAveragePool", node.name, q.node, [x.codes], q.output, compute)


@fuser("AveragePool")
def fuse_avg_pool(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    x = _act(fc, node.inputs[0], "input")
    if x.dtype != q.dtype:
        raise _NotFused("input and output have different integer types")
    if any(int(d) != 1 for d in (node.attr("dilations") or [])):
        raise _NotFused("dilated AveragePool")
    kernel = list(node.attr("kernel_shape"))
    include_pad = bool(node.attr("count_include_pad", 0))
    sh = _u8_shift(fc, q.dtype, x)

    def compute(vals, ex):
        xq = vals[0]
        begin, end, out = ic.geometry(xq.shape[2:], kernel, node.attr("strides"), None, node.attr("pads"),
                                      node.attr("auto_pad", "NOTSET"), bool(node.attr("ceil_mode", 0)))
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
        return _saturate(v, q.dtype, sh)

    return FusedOp("QLinearAveragePool", node.name, q.node, [x.codes], q.output, compute)


@fuser("MaxPool")
def fuse_max_pool(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = _need(fc.q_out(node))
    x = _act(fc, node.inputs[0], "input")
    if x.dtype != q.dtype or x.s() != q.scale or x.z() != q.zp:
        raise _NotFused("input and output quantisation differ (the float path is exact)")
    if len([o for o in node.outputs if o]) != 1:
        raise _NotFused("Indices output")
    kernel = list(node.attr("kernel_shape"))

    def compute(vals, ex):
        xq = vals[0]
        begin, end, out = ic.geometry(xq.shape[2:], kernel, node.attr("strides"), node.attr("dilations"),
                                      node.attr("pads"), node.attr("auto_pad", "NOTSET"),
                                      bool(node.attr("ceil_mode", 0)))
        w = ic.windows(xq, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out,
                       int_range(xq.dtype)[0])
        y = w.max(axis=tuple(range(-len(kernel), 0))).astype(q.dtype)
        ex.record(node.name, "MaxPool(int)", outputs=y.size)
        return y

    return FusedOp("MaxPool(int)", node.name, q.node, [x.codes], q.output, compute)
