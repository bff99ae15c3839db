"""Stream addition (FINN AddStreams): Add / Sub of two equally shaped integer streams in the same order, the
residual join. A Mul by an integer scalar read only by the join is absorbed as that input's factor."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import PerChannel, Resources
from qpass.hw.nodes import constant_inputs, data_inputs, sample_shape


@dataclass(frozen=True)
class AddStreams(PerChannel):
    """Element-wise add of two equally shaped streams (residual join); input ports 0 and 1."""

    ka: int = 1  # the scale factors of the two inputs (y = ka * a + kb * b) and the output's bits (0: a_bits + 1)
    kb: int = 1
    out_bits: int = 0
    kind: ClassVar[str] = "AddStreams"

    def resources(self) -> Resources:
        return Resources(lut=cm.addstreams_lut(self.pe, self.a_bits))

    def in_elems(self):
        return [self.pixels * self.channels] * 2

    def in_words(self):
        return [self.pixels * self.channels // self.pe] * 2


class AddKind(HwKind):
    name = "add"
    ops = ("Add", "Sub", "Mul")
    model = AddStreams

    def match(self, node, data, outs):
        if len(data) != 2 or constant_inputs(node):
            return None
        if node.op == "Mul":
            return None, "Mul of two streams has no streaming hardware implementation"
        a, b = (sample_shape(t) for t in data)
        if a != b or a != sample_shape(outs[0]):
            return None, f"{node.op} of differently shaped streams (broadcasting is not streamed)"
        return "add", "element-wise add of two streams"

    def out_order(self, node, in_orders):
        if not np.array_equal(in_orders[0], in_orders[1]):
            return None, "its two input streams are in different orders"
        return in_orders[0], None

    def prepare(self, b):
        """Claim every channel-wise Mul by an integer scalar whose output only this kind's node reads."""
        scales = set()
        for node in b.graph.nodes:
            if b.kind_of(node) == "channelwise" and node.op == "Mul":
                r = b.sole_reader(node.outputs[0])
                cst = constant_inputs(node)
                if r is not None and b.kind_of(r) == self.name and cst and np.asarray(cst[0].values).size == 1:
                    scales.add(node.name)
        b.fused |= scales
        b.state[self.name] = scales

    def _scaled_input(self, t, b):
        """(source tensor, factor, absorbed Mul node or None) of input t."""
        if not t.inputs or t.inputs[0].name not in b.state[self.name]:
            return t, 1, None
        m = t.inputs[0]
        v = np.asarray(constant_inputs(m)[0].values)
        return data_inputs(m)[0], int(round(float(v.reshape(-1)[0]))), m

    def build(self, node, b):
        a, c = data_inputs(node)
        ka_src, ka, ma = self._scaled_input(a, b)
        kb_src, kb, mb = self._scaled_input(c, b)
        if node.op == "Sub":
            kb = -kb
        nodes = [node.name]
        for m in (ma, mb):
            if m is not None:
                nodes.insert(0, m.name)
        sa, sb = b.in_stream(ka_src), b.in_stream(kb_src)
        oa, ob = b.tensor_order(ka_src), b.tensor_order(kb_src)
        if not np.array_equal(oa, ob):
            raise QpassError(f"{node.name}: the two input streams are in different orders")
        xs = sample_shape(a)
        slots, nslot, npix = b.slots(ka_src)
        y = node.outputs[0]
        out_t = b.dtype(y)
        params = dict(ka=ka, kb=kb, a_type=sa.dtype, b_type=sb.dtype, out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: AddStreams(nm, channels=nslot, pixels=npix,  # noqa: E731
                                      a_bits=max(sa.dtype.bits, sb.dtype.bits), ka=ka, kb=kb,
                                      out_bits=out_t.bits)
        b.add_layer(self.name, node.name, layer, [sa.name, sb.name], y.name, out_t, xs, oa, nodes, params)
