"""Fusion planning: which DequantizeLinear -> op -> QuantizeLinear layers run as one integer kernel.

``FusionContext`` answers the graph queries (constants, DQ producers, the single Q consumer); a planner registered
with ``@fuser(op_type)`` returns a ``FusedOp`` or raises ``NotFused`` with the reason the node stays float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..numerics import F32, F64, I64
from ..registry import NodeInfo

ACT_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int16, np.uint16))
WIDE_EXACT = ("QLinearMove", "MaxPool(int)")  # fused kinds whose codes equal the float path's at any width


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
    """Decorator: register ``fn(fc, node) -> FusedOp`` as the fusion planner of the ONNX ``ops``."""
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
                plans[n.name] = self._ort_16bit(n, FUSERS[n.op_type](self, n))
            except NotFused as exc:
                plans[n.name] = str(exc)
        return plans

    def _ort_16bit(self, node: NodeInfo, op: FusedOp) -> FusedOp:
        """``op``, or NotFused where it reads or writes 16-bit codes and computes: onnxruntime's CPU kernels run
        DequantizeLinear -> Conv / MatMul / Gemm / Add / Mul / pools / activations -> QuantizeLinear in float
        at 16 bits (onnxruntime 1.32; tests/test_reference_16bit.py), so the reference does too. Kept: data
        movement and MaxPool (equal codes either way), and an executor modelling accumulator widths
        (``acc_bits``: the integer layer is the point)."""
        if op.kind in WIDE_EXACT or self.ex.acc_bits is not None:
            return op
        dqs = [self.dq(x) for x in node.inputs if x and x in self.producer]
        wide = [d.dtype for d in dqs if isinstance(d, DQ) and d.dtype in ACT_DTYPES[2:]]  # not the int32 biases
        q = self.q_out(node)
        if wide or (isinstance(q, QOut) and np.dtype(q.dtype) in ACT_DTYPES[2:]):
            raise NotFused(f"16-bit codes: onnxruntime runs {node.op_type} on them in float")
        return op


class NotFused(Exception):
    """The node runs in float; the message says why."""


def need(v, what=None):
    """``v``, or NotFused when a FusionContext query answered with a reason string."""
    if isinstance(v, str):
        raise NotFused(v if what is None else f"{what}: {v}")
    return v


def act_dq(fc: FusionContext, name: str, what: str) -> DQ:
    """The per-tensor DQ of an activation operand (8 or 16 bit), or NotFused."""
    d = need(fc.dq(name), what)
    if not d.per_tensor:
        raise NotFused(f"{what} is quantised per axis")
    if d.dtype not in ACT_DTYPES:
        raise NotFused(f"{what} has type {d.dtype}")
    return d


def weight_dq(fc: FusionContext, name: str, axis: int, channels: int, ndim: int, what="weight") -> DQ:
    """The DQ of a weight operand, per tensor or per output channel along ``axis``, or NotFused."""
    d = need(fc.dq(name), what)
    if d.dtype not in ACT_DTYPES:
        raise NotFused(f"{what} has type {d.dtype}")
    if not d.per_tensor:
        if d.scale.ndim != 1 or d.scale.size != channels or d.axis % ndim != axis % ndim:
            raise NotFused(f"{what} is quantised along axis {d.axis}, not per output channel")
    return d


def per_channel(v: np.ndarray, channels: int) -> np.ndarray:
    """A per-tensor or per-channel parameter as a 1-D array of ``channels`` values."""
    v = np.asarray(v).reshape(-1)
    return np.broadcast_to(v, (channels,)).copy() if v.size == 1 else v


def bias_codes(fc: FusionContext, node: NodeInfo, idx: int, s_in: np.ndarray, channels: int) -> np.ndarray | None:
    """int32 bias codes of a DQ(int32, zp 0) whose scale equals s_in (per channel); else not fused."""
    if not node.has_input(idx):
        return None
    d = need(fc.dq(node.inputs[idx]), "bias")
    if d.const_codes is None or d.dtype != np.dtype(np.int32):
        raise NotFused("bias is not a constant int32 DequantizeLinear")
    if np.any(d.zp != 0):
        raise NotFused("bias zero point is not 0")
    sb = per_channel(d.scale, channels).astype(F64)
    want = per_channel(s_in, channels).astype(F64)
    if not np.allclose(sb, want, rtol=1e-6, atol=0):
        raise NotFused("bias scale differs from input scale * weight scale")
    return d.const_codes.astype(I64)


def u8_shift(fc: FusionContext, dtype: np.dtype, *dqs: DQ, q: QOut | None = None) -> int:
    """+128 when onnxruntime runs these int8 codes as uint8 (x86: QDQS8ToU8Transformer moves int8 Q -> DQ pairs
    to uint8; int8 codes fed directly, graph inputs or initializers, stay int8). With ``q``, the output's type
    must match: onnxruntime fuses an op only when its operands and output share one type after that rewrite,
    else NotFused (the op then runs in float)."""
    if np.dtype(dtype) != np.dtype(np.int8):
        return 0
    kinds = {_runs_as_u8(fc, d.codes) for d in dqs}
    if q is not None:
        kinds.add(_q_to_u8(fc, fc.producer[q.output]))
    if len(kinds) != 1:
        raise NotFused("onnxruntime runs the int8 operands and output as different types (int8 / uint8)")
    return 128 if kinds.pop() else 0


def _runs_as_u8(fc: FusionContext, codes: str) -> bool:
    """Whether onnxruntime reads these int8 codes as uint8: they come from a QuantizeLinear that the S8 -> U8
    rewrite converts, once the DequantizeLinear -> QuantizeLinear pairs with equal parameters are gone (onnxruntime
    drops those at its basic level, before the rewrite)."""
    p = fc.producer.get(codes)
    while p is not None and p.op_type == "QuantizeLinear" and p.domain == "":
        d = fc.producer.get(p.inputs[0])
        if d is None or not _dq_q_removed(fc, d, p):
            return _q_to_u8(fc, p)
        p = fc.producer.get(d.inputs[0])
    return False


def _q_to_u8(fc: FusionContext, q: NodeInfo) -> bool:
    """QDQS8ToU8Transformer's test: an int8 QuantizeLinear whose output feeds exactly one node, no graph output,
    a DequantizeLinear, both with an explicit constant scalar zero point of one value."""
    cons = _after_dq_q(fc, q.outputs[0])
    if q.outputs[0] in fc.graph_outputs or len(cons) != 1 or cons[0].op_type != "DequantizeLinear":
        return False
    za, zb = (fc.const(n.inputs[2]) if n.has_input(2) else None for n in (q, cons[0]))
    return (za is not None and zb is not None and za.dtype == zb.dtype == np.dtype(np.int8)
            and za.size == zb.size == 1 and int(za.reshape(-1)[0]) == int(zb.reshape(-1)[0]))


def _after_dq_q(fc: FusionContext, name: str) -> list[NodeInfo]:
    """The consumers of ``name`` once removable DequantizeLinear -> QuantizeLinear pairs are gone."""
    out = []
    for c in fc.consumers.get(name, []):
        nxt = fc.consumers.get(c.outputs[0], []) if c.op_type == "DequantizeLinear" and c.domain == "" else []
        if len(nxt) == 1 and nxt[0].op_type == "QuantizeLinear" and _dq_q_removed(fc, c, nxt[0]):
            out += _after_dq_q(fc, nxt[0].outputs[0])
        else:
            out.append(c)
    return out


def _dq_q_removed(fc: FusionContext, dq: NodeInfo, q: NodeInfo) -> bool:
    """onnxruntime drops DequantizeLinear -> QuantizeLinear when the DQ feeds only that Q (and no graph output)
    and both carry equal constant scalar scales and zero points (type and value)."""
    if dq.op_type != "DequantizeLinear" or dq.domain != "" or q.domain != "":
        return False
    if dq.outputs[0] in fc.graph_outputs or len(fc.consumers.get(dq.outputs[0], [])) != 1:
        return False
    if q.outputs[0] in fc.graph_outputs and fc.consumers.get(q.outputs[0]):
        return False
    for i in (1, 2):
        a = fc.const(dq.inputs[i]) if dq.has_input(i) else None
        b = fc.const(q.inputs[i]) if q.has_input(i) else None
        if a is None or b is None or a.size != 1 or b.size != 1 or a.dtype != b.dtype:
            return False
        if a.reshape(-1)[0] != b.reshape(-1)[0]:
            return False
    return True
