"""Thresholding unit: a MultiThreshold with constant integer thresholds on its own (one that reads only a matrix
layer's accumulator is fused into that layer instead, see ``mvtu``). Its channel table follows the stream order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.analysis.intinfo import const
from qpass.hw import cost_models as cm
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import PerChannel, Resources, check_choice
from qpass.hw.nodes import data_inputs, mt_axis, sample_shape
from qpass.ops import MultiThreshold


@dataclass(frozen=True)
class Thresholding(PerChannel):
    """A standalone MultiThreshold: ``steps`` thresholds per channel (2^out_bits - 1)."""

    steps: int = 1
    ram_style: str = "distributed"
    a_signed: bool = False  # a signed input (the RTL comparators' width: qpass.hw.calibration)
    kind: ClassVar[str] = "Thresholding"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.name, "ram_style", self.ram_style, ("distributed", "block"))

    def resources(self) -> Resources:
        return Resources(lut=cm.thresholding_lut(self.channels, self.pe, self.a_bits, self.ram_style),
                         bram18=cm.thresholding_bram18(self.channels, self.pe, self.a_bits, self.ram_style))


def threshold_params(mt, channels: int) -> dict:
    """The thresholds (one row per channel), out_scale and out_bias of MultiThreshold node ``mt``."""
    thr = np.asarray(const(mt.inputs[1]), np.float64)
    if thr.shape[0] == 1 and channels > 1:
        thr = np.repeat(thr, channels, axis=0)
    out_scale, out_bias = MultiThreshold.affine(mt)
    return dict(thresholds=thr.astype(np.int64) if np.all(thr == np.round(thr)) else thr,
                out_scale=int(round(out_scale)), out_bias=int(round(out_bias)))


def int_thresholds(thr: np.ndarray) -> np.ndarray:
    """acc >= t  <=>  acc >= ceil(t) for integer acc."""
    return np.ceil(np.asarray(thr, np.float64)).astype(np.int64)


class ThresholdKind(HwKind):
    name = "threshold"
    ops = ("MultiThreshold",)
    model = Thresholding

    def match(self, node, data, outs):
        thr = const(node.inputs[1])
        s, b = MultiThreshold.affine(node)
        if thr is None or s != round(s) or b != round(b):
            return None, "MultiThreshold with non-constant thresholds or a non-integer out_scale/out_bias"
        if not np.all(np.isfinite(thr)):
            return None, "MultiThreshold with non-finite thresholds"
        x = sample_shape(data[0])
        ax = mt_axis(node, len(x) + 1)
        if ax is None or thr.ndim != 2 or thr.shape[0] not in (1, x[ax]):
            return None, "MultiThreshold thresholds do not match the channel count"
        return "threshold", "thresholding unit"

    def out_order(self, node, in_orders):
        return in_orders[0], None

    def build(self, node, b):
        x = data_inputs(node)[0]
        xs, src = sample_shape(x), b.in_stream(x)
        axis = mt_axis(node, len(xs) + 1)
        slots, nslot, npix = b.slots(x, axis)
        tp = threshold_params(node, xs[axis])
        thr = int_thresholds(tp["thresholds"])[slots]
        y = node.outputs[0]
        out_t = b.dtype(y)
        params = dict(thresholds=thr, out_scale=tp["out_scale"], out_bias=tp["out_bias"], in_type=src.dtype,
                      out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: Thresholding(nm, channels=nslot, pixels=npix, a_bits=src.dtype.bits,  # noqa: E731
                                        steps=thr.shape[1], a_signed=bool(src.dtype.signed))
        b.add_layer(self.name, node.name, layer, [src.name], y.name, out_t, xs, b.tensor_order(x), [node.name],
                    params)
