"""What streamlining knows about integer tensors: quantiser parameters and exact integer ranges.

An *integer tensor* holds integer values (in a float container, as QONNX does): the centred codes of an activation
quantiser written as ``Quant(x / s, scale=1, zeropt=z)`` (values q - z), a MultiThreshold output, the accumulator
of a linear op over integer inputs and integer weights, or an order-only op / integer Add of those.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ops import BipolarQuant, Quant, op_of
from qpass.ops.base import const_value as const
from qpass.ops.common import LINEAR_OPS, ORDER_ONLY_OPS

#: ops that only move values (an integer input gives an integer output with the same range)
TRANSPARENT_OPS = ORDER_ONLY_OPS


def _consts(node: gs.Node) -> list:
    return [const(t) for t in node.inputs]


def is_quant(node: gs.Node, op: str = "Quant") -> bool:
    """``node`` is an instance of the op class named ``op`` (Quant also as IntQuant; any QONNX or qpass domain)."""
    cls = op_of(node)
    return cls is not None and cls.op_type == op


def quant_params(node: gs.Node):
    """(scale, zp, bits, signed, narrow, rounding) of a Quant node with constant parameters, else None."""
    return Quant.params(node, _consts(node)) if is_quant(node) else None


def is_int_quant(node: gs.Node) -> bool:
    """A Quant whose output is integer codes (scale 1, integral zero point)."""
    return is_quant(node) and Quant.is_codes(node, _consts(node))


def is_bipolar_codes(node: gs.Node) -> bool:
    """A BipolarQuant with scale 1: its output is the code +-1."""
    return is_quant(node, "BipolarQuant") and BipolarQuant.is_codes(node, _consts(node))


def is_pow2(v) -> bool:
    v = np.asarray(v, np.float64)
    if v.size == 0 or np.any(v <= 0):
        return False
    m, _ = np.frexp(v)
    return bool(np.all(m == 0.5))


def weight_codes(t) -> tuple[np.ndarray, np.ndarray] | None:
    """(integer codes, per-output-broadcastable scale) of a linear op's weight input, when it lies on a grid.

    The weight is either a Quant over a constant (zero point 0) or an integral constant (scale 1).
    """
    if isinstance(t, gs.Constant):
        v = np.asarray(t.values, np.float64)
        if np.all(v == np.round(v)):
            return v, np.ones(1, np.float32)
        return None
    if not t.inputs:
        return None
    q = t.inputs[0]
    if is_quant(q, "BipolarQuant"):  # binary weights: codes +-1 with per-channel alpha
        vals, s = const(q.inputs[0]), const(q.inputs[1])
        if vals is None or s is None:
            return None
        return BipolarQuant.codes(vals).astype(np.float64), s.astype(np.float32)
    p = quant_params(q)
    vals = const(q.inputs[0])
    if p is None or vals is None or np.any(p[1] != 0):
        return None
    s = p[0]
    lo, hi = Quant.grid(q, p[2])
    codes = np.clip(np.round(vals.astype(np.float32) / s), lo, hi).astype(np.float64)
    return codes, s


def int_range(t: gs.Tensor, memo: dict | None = None) -> tuple[float, float] | None:
    """Exact [lo, hi] of an integer tensor, or None if ``t`` is not known to be integer."""
    memo = {} if memo is None else memo
    if t.name in memo:
        return memo[t.name]
    memo[t.name] = None  # cycles cannot happen in a DAG, but be safe
    r = _int_range(t, memo)
    memo[t.name] = r
    return r


def _int_range(t, memo):
    if isinstance(t, gs.Constant):
        v = np.asarray(t.values, np.float64)
        if v.size and np.all(v == np.round(v)):
            return float(v.min()), float(v.max())
        return None
    if not t.inputs:
        return None
    node = t.inputs[0]
    op = op_of(node)
    if op is not None:  # the quantisers, MultiThreshold, ...: their class knows
        return op.int_range(node, _consts(node))
    if node.op in TRANSPARENT_OPS:
        return int_range(node.inputs[0], memo)
    if node.op == "Cast":
        return int_range(node.inputs[0], memo)
    if node.op == "Clip" and len(node.inputs) == 3:
        a = int_range(node.inputs[0], memo)
        b = [const(t) for t in node.inputs[1:3]]
        if a is None or any(v is None for v in b):
            return None
        return max(a[0], float(b[0])), min(a[1], float(b[1]))
    if node.op in ("Mod", "Div") and len(node.inputs) == 2 and _is_int_dtype(node.inputs[0]):
        a, d = int_range(node.inputs[0], memo), const(node.inputs[1])
        if a is None or d is None or d.dtype.kind not in "iu" or np.any(d <= 0):
            return None
        if node.op == "Mod":
            return 0.0, float(d.max() - 1)
        # integer Div truncates toward zero in onnxruntime; these bounds hold for truncation and for floor
        lo = np.floor(a[0] / d.max()) if a[0] >= 0 else np.floor(a[0] / d.min())
        hi = np.trunc(a[1] / d.min()) if a[1] >= 0 else np.ceil(a[1] / d.max())
        return float(lo), float(hi)
    if node.op == "Concat":
        rs = [int_range(i, memo) for i in node.inputs]
        if any(r is None for r in rs):
            return None
        return min(r[0] for r in rs), max(r[1] for r in rs)
    if node.op in ("Add", "Sub") and len(node.inputs) == 2:
        a, b = (int_range(i, memo) for i in node.inputs)
        if a is None or b is None:
            return None
        return (a[0] + b[0], a[1] + b[1]) if node.op == "Add" else (a[0] - b[1], a[1] - b[0])
    if node.op == "Mul" and len(node.inputs) == 2:
        a, b = (int_range(i, memo) for i in node.inputs)
        if a is None or b is None:
            return None
        prods = [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
        return min(prods), max(prods)
    if node.op == "ReduceSum" and len(node.inputs) == 2:
        a = int_range(node.inputs[0], memo)
        axes, shape = const(node.inputs[1]), node.inputs[0].shape
        if a is None or axes is None or shape is None or not all(isinstance(shape[int(i)], int) for i in axes):
            return None
        n = int(np.prod([shape[int(i)] for i in axes]))
        return a[0] * n, a[1] * n
    if node.op in LINEAR_OPS:
        bounds = linear_bounds(node, memo)
        return None if bounds is None else (float(bounds[0].min()), float(bounds[1].max()))
    return None


def _is_int_dtype(t) -> bool:
    try:
        return t.dtype is not None and np.dtype(t.dtype).kind in "iu"
    except TypeError:
        return False


def linear_bounds(node: gs.Node, memo=None) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-output-channel exact accumulator bounds of an integer linear op (no bias), from its weights."""
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
        return None
    r = int_range(node.inputs[0], memo)
    w = const(node.inputs[1])
    if r is None or w is None or not np.all(w == np.round(w)):
        return None
    lo, hi = r
    w = w.astype(np.float64)
    contrib_lo = np.minimum(w * lo, w * hi)
    contrib_hi = np.maximum(w * lo, w * hi)
    if node.op in ("Conv",):
        axes = tuple(range(1, w.ndim))
    elif node.op == "ConvTranspose":
        return None if int(node.attrs.get("group", 1)) != 1 else \
            (contrib_lo.sum(axis=(0,) + tuple(range(2, w.ndim))), contrib_hi.sum(axis=(0,) + tuple(range(2, w.ndim))))
    elif node.op == "Gemm":
        axes = (1,) if int(node.attrs.get("transB", 0)) else (0,)
    else:  # MatMul with a 2-D weight (K, N)
        if w.ndim != 2:
            return None
        axes = (0,)
    return contrib_lo.sum(axis=axes), contrib_hi.sum(axis=axes)


def signed_bits(lo: float, hi: float) -> tuple[int, bool]:
    """Minimal width (and signedness) holding every integer in [lo, hi] (FINN's rule)."""
    lo, hi = int(np.floor(lo)), int(np.ceil(hi))
    if lo >= 0:
        return max(1, int(hi).bit_length()), False
    m = max(-lo, hi + 1)
    return int(np.ceil(np.log2(m))) + 1, True
