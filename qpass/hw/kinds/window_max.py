"""Window maximum: any MaxPool that is not non-overlapping (overlapping or padded windows), as a depthwise sliding
window (padding with the type's minimum) followed by a vector unit reducing with max instead of a dot product."""
from __future__ import annotations

from qpass.hw.kinds.base import HwKind
from qpass.hw.kinds.maxpool import image_order, maxpool_host_reason, non_overlapping
from qpass.hw.kinds.swg import add_sliding_window
from qpass.hw.kinds.vvau import VVAU
from qpass.hw.nodes import attr, window_geometry
from qpass.hw.orders import nhwc_order


class WindowMaxKind(HwKind):
    name = "window_max"
    ops = ("MaxPool",)
    window_pair = True
    model = VVAU

    def match(self, node, data, outs):
        why = maxpool_host_reason(node, data)
        if why is not None:
            return None, why
        if non_overlapping(node):
            return None
        pads = [int(p) for p in (attr(node, "pads") or [0, 0, 0, 0])]
        if len(set(pads)) != 1:
            return None, f"MaxPool with asymmetric padding {pads}"
        return "window_max", "sliding-window generator + window maximum"

    def out_order(self, node, in_orders):
        return image_order(node, in_orders)

    def build(self, node, b):
        xs, src, y, ys = b.single_io(node)
        k = tuple(int(v) for v in attr(node, "kernel_shape"))
        s, pad = window_geometry(node)
        swg = add_sliding_window(b, node, src, xs, k, s, pad, True, src.dtype.lo())
        c = xs[0]
        params = dict(in_type=src.dtype, out_type=src.dtype)
        layer = lambda nm: VVAU(nm, channels=c, kernel_elems=k[0] * k[1], pixels=ys[1] * ys[2], w_bits=1,  # noqa
                                a_bits=src.dtype.bits, a_signed=src.dtype.signed, reduce="max")
        b.add_layer(self.name, node.name, layer, [swg.output], y.name, src.dtype, ys, nhwc_order(ys), [node.name],
                    params)
