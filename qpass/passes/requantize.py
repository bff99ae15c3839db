"""Integer-only requantisation for CPUs (Jacob et al. 2018), the alternative to thresholds.

An integer accumulator followed by scale, bias, an optional Relu / Clip(0, m) and an activation quantiser becomes

    c_out = clip(floor(((acc + b_q) * M0 + 2^(n-1)) / 2^n) + z_out, lo, hi)

with the int32 bias b_q = round(b / (s_in s_w)), the real multiplier M = s_in s_w / s_out written as the 31-bit
fixed-point M0 * 2^-n (M0 in [2^30, 2^31)), per output channel, and the activation folded into the clip bounds.
Everything runs in int64 with standard ONNX ops (Cast, Add, Mul, Mod, Sub, Div of an exact multiple, Clip), so
onnxruntime and the golden simulator agree bit for bit; against the fake-quant graph it is within one step
(the multiplier is rounded to 31 bits and ties round up).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpass.analysis.intinfo import const, quant_params
from qpass.ops.common import int_bounds
from .thresholds import ChainRewrite, channel_axis_of


def quantize_multiplier(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M = M0 * 2^-n with M0 in [2^30, 2^31) (gemmlowp's QuantizeMultiplier, without its saturation corner)."""
    m = np.asarray(m, np.float64)
    frac, exp = np.frexp(m)  # m = frac * 2^exp, frac in [0.5, 1)
    m0 = np.round(frac * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, 2**30, m0)
    exp = np.where(carry, exp + 1, exp)
    n = 31 - exp
    return m0, n.astype(np.int64)


@dataclass
class RequantOptions:
    min_shift: int = 1


class Requantize(ChainRewrite):
    name = "requantize"
    Options = RequantOptions

    def convert(self, graph, node, acc, chain):
        return self.requant(graph, node, acc, chain)

    def requant(self, graph, node, acc, chain):
        ops = [n.op for n in chain]
        if len(ops) < 3 or ops[-2:] != ["Div", "Quant"]:
            return False, "requantisation needs the chain Mul/Div(scale)... [Add(bias)] [Relu|Clip] Div Quant"
        rank = len(acc.shape) if acc.shape is not None else 2
        axis = channel_axis_of(acc)
        channels = acc.shape[axis]
        s_comb = np.ones(1)
        i = 0
        while i < len(chain) - 2 and ops[i] in ("Mul", "Div"):
            v = np.asarray(const(chain[i].inputs[1]), np.float64).reshape(-1)
            s_comb = s_comb * v if ops[i] == "Mul" else s_comb / v
            i += 1
        if i == 0:
            return False, "no scale before the quantiser"
        bias = np.zeros(1)
        if i < len(chain) - 2 and ops[i] == "Add":
            bias = np.asarray(const(chain[i].inputs[1]), np.float64).reshape(-1)
            i += 1
        if len(chain) - 2 - i > 1 or (i < len(chain) - 2 and ops[i] not in ("Relu", "Clip")):
            return False, f"{'/'.join(ops[i:-2])} between scale and quantiser cannot be an integer clamp"
        s_out = float(np.asarray(const(chain[-2].inputs[1])).reshape(-1)[0])
        qp = quant_params(chain[-1])
        if qp[5] not in ("ROUND", "HALF_EVEN", "HALF_UP"):
            return False, f"rounding mode {qp[5]} has no integer requantisation"
        qlo, qhi = int_bounds(qp[2], qp[3], qp[4])
        z = float(np.asarray(qp[1]).reshape(-1)[0])
        lo, hi = qlo - z, qhi - z
        act = chain[i] if i < len(chain) - 2 else None
        if s_comb.size not in (1, channels) or bias.size not in (1, channels):
            return False, "scale or bias is not per channel"
        if act is not None:
            a_lo = 0.0
            a_hi = None
            if act.op == "Clip":
                b0 = const(act.inputs[1]) if len(act.inputs) > 1 and act.inputs[1].name else None
                b1 = const(act.inputs[2]) if len(act.inputs) > 2 and act.inputs[2].name else None
                a_lo = float(b0) if b0 is not None else -np.inf
                a_hi = float(b1) if b1 is not None else None
            if a_lo > -np.inf:
                lo = max(lo, float(np.round(a_lo / s_out)))
            if a_hi is not None:
                hi = min(hi, float(np.round(a_hi / s_out)))
        s = np.broadcast_to(s_comb, (channels,))
        b_q = np.round(np.broadcast_to(bias, (channels,)) / s).astype(np.int64)
        m0, n = quantize_multiplier(s / s_out)
        if np.any(n < self.opts.min_shift) or np.any(n > 62):
            return False, "requantisation multiplier out of range"
        shape = [1] * rank
        shape[axis] = channels
        r = lambda v: np.asarray(v, np.int64).reshape(shape)  # noqa: E731
        out = chain[-1].outputs[0]
        t = self.b.var(f"{acc.name}_i64", dtype=np.int64)
        self.b.node("Cast", [acc], [t], {"to": 7})
        t2 = self.b.var(f"{acc.name}_biased", dtype=np.int64)
        self.b.node("Add", [t, self.b.const(r(b_q), np.int64, name=f"{node.name}_bq")], [t2])
        t3 = self.b.var(f"{acc.name}_scaled", dtype=np.int64)
        self.b.node("Mul", [t2, self.b.const(r(m0), np.int64, name=f"{node.name}_m0")], [t3])
        t4 = self.b.var(f"{acc.name}_rounded", dtype=np.int64)
        self.b.node("Add", [t3, self.b.const(r(2 ** (n - 1)), np.int64, name=f"{node.name}_half")], [t4])
        d = self.b.const(r(2**n), np.int64, name=f"{node.name}_div")
        t5 = self.b.var(f"{acc.name}_mod", dtype=np.int64)
        self.b.node("Mod", [t4, d], [t5], {"fmod": 0})
        t6 = self.b.var(f"{acc.name}_exact", dtype=np.int64)
        self.b.node("Sub", [t4, t5], [t6])
        t7 = self.b.var(f"{acc.name}_shifted", dtype=np.int64)
        self.b.node("Div", [t6, d], [t7])
        t8 = self.b.var(f"{acc.name}_clipped", dtype=np.int64)
        self.b.node("Clip", [t7, self.b.const(int(lo), np.int64, name=f"{node.name}_lo"),
                           self.b.const(int(hi), np.int64, name=f"{node.name}_hi")], [t8])
        self.b.node("Cast", [t8], [out], {"to": 1})
        for c in chain:
            c.inputs.clear()
            c.outputs.clear()
        return True, None
