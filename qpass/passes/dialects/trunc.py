"""QONNX ``Trunc`` <-> its integer form: the input code, an exact shift (floor division by 2^k), a clip, and a
DequantizeLinear:

    c = Cast(Round(x / s), int32)                        Trunc's round(x / s + z) for z = 0
    y = (c - Mod(c, 2^k)) / 2^k                          floor(c / 2^k): the arithmetic shift right by k
    y = Clip(y, lo, hi)                                  v2's output grid (v1 has none)
    out = DequantizeLinear(y, s_out)                     v1: s_out = s; v2: out_scale

Exact for FLOOR (Trunc's default, Brevitas' TruncAvgPool) with zero point 0, constant scalar scales and widths,
``k >= 0`` (v2: ``k = round(log2(out_scale / s))``) and ``|x / s| < 2^31``; other nodes are refused naming them.
The widths go into qonnx datatype annotations on ``c`` and ``y`` so the way back restores them.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import UnsupportedOpError
from qpass.ops import Trunc
from qpass.ops.base import const_value as const, scalar
from qpass.ops.common import QONNX_DOMAIN, int_bounds
from .grid import grid_of

I32 = np.int32


def _refuse(node, why: str):
    raise UnsupportedOpError(f"Trunc node {node.name!r} has no exact integer (shift + clip) form: {why}")


def trunc_to_integer(b, node: gs.Node, out) -> dict[str, str]:
    """Write the integer form of ``node`` into ``out``; the datatype annotations {tensor: INTn} it wants."""
    n = len(node.inputs)
    consts = [const(t) for t in node.inputs]
    if n not in (5, 6, 7) or any(c is None for c in consts[1:]):
        _refuse(node, "its scales, zero point and widths must be constants (5 to 7 inputs)")
    if Trunc.attr(node, "rounding_mode") != "FLOOR":
        _refuse(node, f"rounding mode {Trunc.attr(node, 'rounding_mode')} (only FLOOR is a shift)")
    s, z = consts[1], consts[2]
    if np.any(z != 0) or np.size(s) != 1 or not s.reshape(-1)[0] > 0:
        _refuse(node, "it needs zero point 0 and one positive scale")
    in_bw = int(scalar(consts[3]))
    if n == 5:
        out_bw, s_out, k = int(scalar(consts[4])), s, in_bw - int(scalar(consts[4]))
    else:
        s_out, out_bw = consts[4], int(scalar(consts[-1]))
        if np.size(s_out) != 1:
            _refuse(node, "its output scale is not one value")
        k = int(np.round(np.log2(float(scalar(s_out)) / float(scalar(s)))))
    if k < 0 or k > 30:
        _refuse(node, f"a shift by {k} bits")
    x = node.inputs[0]
    c = b.op("Cast", [b.op("Round", [b.op("Div", [x, b.const(np.float32(scalar(s)))])])], {"to": 6}, dtype=I32)
    kk = b.const(I32(2 ** k), I32)
    y = b.op("Div", [b.op("Sub", [c, b.op("Mod", [c, kk], dtype=I32)], dtype=I32), kk], dtype=I32)
    notes = {c.name: f"INT{in_bw}"}
    if n != 5:
        lo, hi = Trunc.grid(node, out_bw)
        y = b.op("Clip", [y, b.const(I32(lo), I32), b.const(I32(hi), I32)], dtype=I32)
    notes[y.name] = f"INT{out_bw}"
    b.op("DequantizeLinear", [y, b.const(np.float32(scalar(s_out))), b.const(I32(0), I32)], out=out)
    return notes


def _producer(t, op):
    p = t.inputs[0] if t.inputs else None
    return p if p is not None and p.op == op else None


def integer_to_trunc(b, dq: gs.Node, annotations: dict[str, str]) -> bool:
    """The integer form above (ending in ``dq``) back to the Trunc it came from; False when it is not that."""
    y = dq.inputs[0]
    clip = _producer(y, "Clip")
    div = _producer(clip.inputs[0] if clip is not None else y, "Div")
    sub = _producer(div.inputs[0], "Sub") if div is not None else None
    mod = _producer(sub.inputs[1], "Mod") if sub is not None else None
    cast = _producer(sub.inputs[0], "Cast") if sub is not None else None
    rnd = _producer(cast.inputs[0], "Round") if cast is not None else None
    fdiv = _producer(rnd.inputs[0], "Div") if rnd is not None else None
    if fdiv is None or mod is None or mod.inputs[0] is not sub.inputs[0] or const(fdiv.inputs[1]) is None:
        return False
    kk, s_out = const(div.inputs[1]), const(dq.inputs[1])
    if kk is None or const(mod.inputs[1]) is None or not np.array_equal(kk, const(mod.inputs[1])) or s_out is None:
        return False
    k = int(np.log2(int(kk)))
    s = np.float32(scalar(const(fdiv.inputs[1])))
    bits = lambda t, d: int(annotations.get(t.name, f"INT{d}")[3:])  # noqa: E731
    out_name = (clip.outputs[0] if clip is not None else div.outputs[0])
    out_bw = bits(out_name, 32 - k)
    in_bw = bits(sub.inputs[0], out_bw + k)
    out = dq.outputs[0]
    dq.outputs = []
    f = np.float32
    ins = [fdiv.inputs[0], b.const(s), b.const(f(0)), b.const(f(in_bw))]
    attrs = {"rounding_mode": "FLOOR"}
    if clip is None:
        ins.append(b.const(f(out_bw)))
    else:
        lo, hi = (int(scalar(const(t))) for t in clip.inputs[1:3])
        same = [(out_bw, sg, nw) for sg in (True, False) for nw in (False, True) if int_bounds(out_bw, sg, nw) == (lo, hi)]
        g = same[0] if same else grid_of(lo, hi)
        if g is None:
            return False
        attrs.update(signed=int(g[1]), narrow=int(g[2]))
        ins += [b.const(f(scalar(s_out))), b.const(f(g[0]))]
    b.node("Trunc", ins, [out], attrs, domain=QONNX_DOMAIN, name=f"{out.name}_Trunc")
    return True
