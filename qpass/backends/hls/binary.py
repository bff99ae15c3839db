"""Binary (bipolar) data in the generated code: which streams carry only -1/+1 and are stored one bit per element
(``qpass::bipolar``: 1 = +1, 0 = -1), and the weights of binary layers (all -1/+1) stored the same way.

A stream is bipolar when its producer provably writes only -1 and +1 (a threshold unit with one threshold,
out_scale 2 and out_bias -1: y = -1 + 2 * [acc >= T]; or a max pool, window maximum or window generator whose
input is bipolar and whose pad, if any, is -1) and every reader works on bipolar elements (matrix and depthwise
units: XNOR-popcount or conditional negation; max pools and window generators pass the bit through). A partition
input or output port keeps its integer type (the host streams integer codes). An MVTU with bipolar weights and a
bipolar input computes the XNOR-popcount of finn-hlslib's BNN layers; with an 8-bit input (the first layer of a
BNN) it negates the input by the weight bit, without a multiplier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpass.hw.dataflow_graph import DataflowGraph, HwLayer
from qpass.hw.inttype import IntType

#: layers whose output elements are input elements (or a pad value)
PASS_KINDS = ("maxpool", "window_max", "swg")
#: layers that read bipolar elements
READ_KINDS = ("mvtu", "vvau") + PASS_KINDS


@dataclass(frozen=True)
class Bipolar:
    """The element type of a bipolar stream or weight: one bit, value -1 or +1."""

    bits: int = 1
    signed: bool = True
    name: str = "BIPOLAR"

    def lo(self) -> int:
        return -1

    def hi(self) -> int:
        return 1


BIPOLAR = Bipolar()


def is_pm1(values) -> bool:
    """All values are -1 or +1."""
    a = np.asarray(values)
    return a.size > 0 and bool(np.all(np.abs(a) == 1))


def writes_pm1(l: HwLayer) -> bool:
    """A threshold activation with one step from -1 to +1."""
    p = l.params
    if "thresholds" not in p:
        return False
    return np.asarray(p["thresholds"]).shape[1] == 1 and int(p["out_scale"]) == 2 and int(p["out_bias"]) == -1


def _pad_ok(dg: DataflowGraph, l: HwLayer) -> bool:
    if l.kind != "swg" or not l.params["pad"]:
        return True
    v = int(l.params["pad_value"])
    if v == -1:
        return True
    return v < -1 and all(dg.layer(c).kind == "window_max" for c, _ in dg.streams[l.output].consumers)


def element_types(dg: DataflowGraph) -> dict[str, IntType | Bipolar]:
    """The element type each stream is stored with: ``BIPOLAR`` or its integer type."""
    outs = {sname for _, sname in dg.outputs}
    cand: set[str] = set()
    for l in dg.layers:  # topological order
        if writes_pm1(l) or (l.kind in PASS_KINDS and l.inputs[0] in cand and _pad_ok(dg, l)):
            cand.add(l.output)

    def keeps(name: str) -> bool:
        s = dg.streams[name]
        if name in outs:
            return False
        prod = dg.layer(s.producer)
        if prod.kind in PASS_KINDS and prod.inputs[0] not in cand:
            return False
        for c, _ in s.consumers:
            r = dg.layer(c)
            if r.kind not in READ_KINDS or not _pad_ok(dg, r) or (r.kind in PASS_KINDS and r.output not in cand):
                return False
        return True

    changed = True
    while changed:
        drop = {n for n in cand if not keeps(n)}
        cand -= drop
        changed = bool(drop)
    return {n: (BIPOLAR if n in cand else s.dtype) for n, s in dg.streams.items()}


def weight_type(weights: np.ndarray, w_type: IntType) -> IntType | Bipolar:
    """``BIPOLAR`` for binary weights (all -1/+1), else their integer type."""
    return BIPOLAR if is_pm1(weights) else w_type


def storage_codes(values: np.ndarray, t) -> np.ndarray:
    """Integer values as stored: bipolar -1/+1 as bits 0/1, others unchanged."""
    v = np.asarray(values, np.int64)
    return (v + 1) // 2 if isinstance(t, Bipolar) else v


def xnor_thresholds(thr: np.ndarray, mw: int) -> np.ndarray:
    """Thresholds on the dot product d of MW +-1 products -> thresholds on the popcount p = (d + MW) / 2:
    d >= T exactly when p >= ceil((T + MW) / 2)."""
    t = np.asarray(thr, np.int64) + mw
    return -((-t) // 2)
