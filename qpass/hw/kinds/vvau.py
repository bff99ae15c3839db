"""Vector-vector unit: a depthwise integer Conv (weights per channel, e.g. the all-ones window sum of an average
pool), fed by a depthwise-ordered sliding window; a MultiThreshold reading only its accumulator is fused in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.analysis.intinfo import const, signed_bits
from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw import memory_costs as mc
from qpass.hw import weight_memory as wm
from qpass.hw.inttype import IntType
from qpass.hw.kinds.base import HwKind
from qpass.hw.kinds.mvtu import MVTU, acc_type, bipolar, conv_host_reason, fused_threshold, output_stage
from qpass.hw.kinds.swg import add_sliding_window
from qpass.hw.layers import Resources
from qpass.hw.nodes import attr, data_inputs, is_bipolar, sample_shape, window_geometry
from qpass.hw.orders import image_out_order, nhwc_order


@dataclass(frozen=True)
class VVAU(MVTU):
    """Vector-vector unit: a depthwise convolution (``reduce="dot"``, per-channel weights) or a window maximum
    (``reduce="max"``) over ``kernel_elems`` window positions of ``channels`` channels at ``pixels`` output pixels,
    PE channels per word, fed by a depthwise-ordered SlidingWindow. For the shared cycle and FIFO models it is
    the MVTU whose loop nest it runs (NF = 1 row fold, SF = kernel_elems window steps per channel fold): MW =
    kernel_elems * PE, MH = SIMD = PE, num_vectors = pixels * channels / PE; its resources are those of an MVTU
    with SIMD 1 and PE lanes (dot) or of PE comparators (max)."""

    channels: int = 1
    kernel_elems: int = 1
    pixels: int = 1
    reduce: str = "dot"
    kind: ClassVar[str] = "VVAU"

    def __post_init__(self):
        if self.channels % self.pe:
            raise QpassError(f"{self.name}: PE={self.pe} must divide channels={self.channels}")
        set_ = object.__setattr__
        set_(self, "mw", self.kernel_elems * self.pe)
        set_(self, "mh", self.pe)
        set_(self, "simd", self.pe)
        set_(self, "num_vectors", self.pixels * self.channels // self.pe)
        super().__post_init__()

    @property
    def fold(self) -> tuple[int, int]:
        return (self.pe, 1)

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def legal_simd(self) -> list[int]:
        return [1]

    def pipeline_depth(self) -> int:
        return cm.PIPELINE_DEPTH  # no adder tree across SIMD lanes

    def resources(self) -> Resources:
        """The emitted unit: an MVTU of MW = kernel_elems, MH = channels, SIMD 1 (``memory_costs.matrix_unit``)."""
        if self.reduce == "max":
            return Resources(lut=cm.pool_lut("max", self.channels, 1, 1, self.pe, self.a_bits))
        w = 1 if self.w_bipolar else self.w_bits
        return Resources(*mc.matrix_unit(
            self.kernel_elems, self.channels, self.pe, 1, w, self.a_bits, a_signed=self.a_signed, binary=False,
            w_store_bits=w, thresholds=self.thresholds, acc_bits=self.acc_bits,
            ram_style=wm.weight_style(self.mem_mode, self.ram_style), ram_style_thresholds=self.ram_style_thresholds,
            res_type=self.res_type, mem=wm.pricing(self.mem_mode)))

    def resolved_styles(self) -> dict:
        if self.reduce == "max":
            return {}
        return {"ram_style": mc.resolve_ram_style(self.kernel_elems * self.channels // self.pe,
                                                  wm.weight_style(self.mem_mode, self.ram_style)),
                "ram_style_thresholds": mc.resolve_ram_style(self.channels // self.pe, self.ram_style_thresholds)}

    def finn_resources(self) -> Resources:
        if self.reduce == "max":
            return self.resources()
        a = (self.kernel_elems, self.channels, self.pe, 1, self.w_bits)
        return Resources(
            lut=cm.mvtu_lut(*a, self.a_bits, a_signed=self.a_signed, thresholds=self.thresholds,
                            acc_bits=self.acc_bits, ram_style=self.ram_style,
                            ram_style_thresholds=self.ram_style_thresholds, res_type=self.res_type),
            bram18=cm.mvtu_bram18(*a, self.ram_style), uram=cm.mvtu_uram(*a, self.ram_style),
            dsp=cm.mvtu_dsp(self.pe, 1, self.w_bits, self.a_bits, self.res_type))


class VvauKind(HwKind):
    name = "vvau"
    ops = ("Conv",)
    window_pair = True
    model = VVAU

    def match(self, node, data, outs):
        why = conv_host_reason(node, data)
        if why is not None:
            return None, why
        g, x, w = int(attr(node, "group", 1)), sample_shape(data[0]), const(node.inputs[1])
        if g != 1 and g == x[0] and w.shape[0] == g and w.shape[1] == 1:
            return "vvau", "depthwise convolution: sliding-window generator + vector-vector unit"
        return None

    def out_order(self, node, in_orders):
        return image_out_order(sample_shape(data_inputs(node)[0]), sample_shape(node.outputs[0]), in_orders[0])

    def build(self, node, b):
        x = data_inputs(node)[0]
        xs, src = sample_shape(x), b.in_stream(x)
        w = np.asarray(const(node.inputs[1]), np.float64)  # (C, 1, KH, KW)
        c, _, kh, kw = w.shape
        s, pad = window_geometry(node)
        acc = node.outputs[0]
        ys = sample_shape(acc)
        swg = add_sliding_window(b, node, src, xs, (kh, kw), s, pad, True, 0)
        wm = w.reshape(c, kh * kw)
        w_t = IntType.of_range(wm.min(), wm.max())
        acc_t, (f_lo, f_hi) = acc_type(wm, *b.rng(x))
        nodes = [node.name]
        params = dict(weights=wm.astype(np.int64), w_type=w_t, acc_type=acc_t, in_type=src.dtype)
        mt = fused_threshold(b, acc, 0)
        out_t, out_tensor, nthr = output_stage(b, mt, c, acc, f_lo, f_hi, params, nodes)
        acc_bits = signed_bits(f_lo, f_hi)[0]
        layer = lambda nm: VVAU(nm, channels=c, kernel_elems=kh * kw, pixels=ys[1] * ys[2], w_bits=w_t.bits,  # noqa
                                a_bits=src.dtype.bits, w_signed=w_t.signed, a_signed=src.dtype.signed,
                                thresholds=nthr, acc_bits=acc_bits, w_bipolar=bipolar(wm),
                                res_type=mc.choose_res_type(w_t.bits, src.dtype.bits, bipolar(wm) or is_bipolar(x)))
        b.add_layer(self.name, node.name, layer, [swg.output], out_tensor.name, out_t, ys, nhwc_order(ys), nodes,
                    params)
