"""Channel-wise operation (FINN ChannelwiseOp): Mul / Add / Sub of an integer stream by an integer constant that
is a scalar or per channel. Its parameter table follows the stream order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.hw import cost_models as cm
from qpass.hw.inttype import IntType
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import PerChannel, Resources, check_choice
from qpass.hw.nodes import broadcast_channel, constant_inputs, data_inputs, is_integral, sample_shape


@dataclass(frozen=True)
class ChannelwiseOp(PerChannel):
    """Per-channel Mul or Add with constant parameters (FINN ChannelwiseOp)."""

    op: str = "mul"
    ram_style: str = "distributed"
    kind: ClassVar[str] = "ChannelwiseOp"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.name, "op", self.op, ("mul", "add"))
        check_choice(self.name, "ram_style", self.ram_style, ("distributed", "block"))

    def resources(self) -> Resources:
        # FINN ChannelwiseOp_hls uses the Thresholding estimate verbatim
        return Resources(lut=cm.thresholding_lut(self.channels, self.pe, self.a_bits, self.ram_style),
                         bram18=cm.thresholding_bram18(self.channels, self.pe, self.a_bits, self.ram_style))


class ChannelwiseKind(HwKind):
    name = "channelwise"
    ops = ("Add", "Sub", "Mul")
    model = ChannelwiseOp

    def match(self, node, data, outs):
        op, consts = node.op, constant_inputs(node)
        if len(data) == 2 and not consts:
            return None  # two streams: the ``add`` kind's
        if len(data) != 1 or len(consts) != 1:
            return None, f"{op} with unsupported inputs"
        v = np.asarray(consts[0].values, np.float64)
        x = sample_shape(data[0])
        if not is_integral(v):
            return None, f"{op} by a non-integer constant (float arithmetic)"
        if op == "Sub" and node.inputs[0] is consts[0]:
            return None, "Sub of a stream from a constant"
        if not broadcast_channel(v, x, 0 if len(x) == 3 or len(x) == 1 else len(x) - 1) \
                and not broadcast_channel(v, x, len(x) - 1):
            return None, f"{op} by a constant that is not per channel"
        return "channelwise", f"channel-wise {op} by integer constants"

    def out_order(self, node, in_orders):
        return in_orders[0], None

    def build(self, node, b):
        x = data_inputs(node)[0]
        xs, src = sample_shape(x), b.in_stream(x)
        v = np.asarray(constant_inputs(node)[0].values, np.float64)
        full = np.broadcast_to(v, (1,) + tuple(xs))[0].ravel()
        order = b.tensor_order(x)
        seq = full[order]
        slots, nslot, npix = b.slots(x)
        per = seq.reshape(npix, nslot)
        if not np.all(per == per[0]):
            nslot, npix = len(seq), 1
            per = seq.reshape(1, -1)
        vals = per[0].astype(np.int64)
        op = "mul" if node.op == "Mul" else "add"
        if node.op == "Sub":
            vals = -vals
        y = node.outputs[0]
        out_t = b.dtype(y)
        params = dict(op=op, values=vals, p_type=IntType.of_range(min(0, vals.min()), max(0, vals.max())),
                      in_type=src.dtype, out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: ChannelwiseOp(nm, channels=nslot, pixels=npix, a_bits=src.dtype.bits, op=op)  # noqa
        b.add_layer(self.name, node.name, layer, [src.name], y.name, out_t, xs, order, [node.name], params)
