"""Global accumulation pool (FINN GlobalAccPool): ReduceSum over H and W of an NCHW integer tensor, i.e. a global
average pool whose division lives in the next thresholds."""
from __future__ import annotations

import numpy as np

from qpass.analysis.intinfo import const
from qpass.hw.kinds.base import HwKind
from qpass.hw.kinds.maxpool import Pool, image_order
from qpass.hw.nodes import attr, sample_shape
from qpass.hw.orders import row_major


class GlobalSumKind(HwKind):
    name = "global_sum"
    ops = ("ReduceSum",)
    model = Pool

    def match(self, node, data, outs):
        x = sample_shape(data[0])
        axes = const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None \
            and node.inputs[1].name else None
        if axes is None and attr(node, "axes") is not None:
            axes = np.asarray(attr(node, "axes"))
        if len(x) != 3 or axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [2, 3]:
            return None, "ReduceSum other than over H and W of an NCHW tensor"
        return "global_sum", "global accumulation pool (sum over H, W)"

    def out_order(self, node, in_orders):
        return image_order(node, in_orders)

    def build(self, node, b):
        xs, src, y, ys = b.single_io(node)
        out_t = b.dtype(y)
        params = dict(channels=xs[0], pixels=xs[1] * xs[2], in_type=src.dtype, out_type=out_t)
        layer = lambda nm: Pool(nm, channels=xs[0], ifm_dim=xs[1:], pool="global_avg",  # noqa: E731
                                a_bits=src.dtype.bits)
        b.add_layer(self.name, node.name, layer, [src.name], y.name, out_t, ys, row_major(ys), [node.name], params)
