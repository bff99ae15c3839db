"""Layout-only ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Dropout): no hardware. The stream
keeps its order and the consumer absorbs the permutation (an FC layer permutes its weight columns, a threshold
permutes its channel table)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import Layer
from qpass.hw.nodes import attr, data_inputs, sample_shape


@dataclass(frozen=True)
class Reorder(Layer):
    """Layout-only change (reshape/flatten/transpose handled by the producer's write order): zero
    cycles, zero resources; the FIFO simulation treats it as a wire. ``elems`` (0 = unchecked)."""

    elems: int = 0
    kind: ClassVar[str] = "Reorder"
    wire: ClassVar[bool] = True

    def cycles(self) -> int:
        return 0

    def pipeline_depth(self) -> int:
        return 0

    def in_elems(self):
        return [self.elems]

    def out_elems(self):
        return self.elems

    def in_words(self):
        return [self.elems]

    def out_words(self):
        return self.elems


class ReorderKind(HwKind):
    name = "reorder"
    ops = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout")
    compute = False
    model = Reorder

    def match(self, node, data, outs):
        if node.op == "Transpose":
            perm = attr(node, "perm")
            if perm is None or int(perm[0]) != 0:
                return None, "Transpose that moves the batch axis"
        if np.prod(sample_shape(data[0])) != np.prod(sample_shape(outs[0])):
            return None, f"{node.op} changes the number of elements per sample"
        return "reorder", "layout only (absorbed by the consumer; no hardware)"

    def out_order(self, node, in_orders):
        o = in_orders[0]
        if node.op == "Transpose":
            x = sample_shape(data_inputs(node)[0])
            perm = [int(p) for p in attr(node, "perm")]
            sp = [p - 1 for p in perm[1:]]
            out_to_in = np.arange(int(np.prod(x)), dtype=np.int64).reshape(x).transpose(sp).ravel()
            in_to_out = np.argsort(out_to_in)
            return in_to_out[o], None
        return o, None

    def build(self, node, b):
        x = data_inputs(node)[0]
        order, why = self.out_order(node, [b.tensor_order(x)])
        if order is None:
            raise QpassError(f"{node.name}: {why}")
        out = node.outputs[0]
        b.stream_of[out.name] = b.stream_of[x.name]
        b.orders[out.name] = order
