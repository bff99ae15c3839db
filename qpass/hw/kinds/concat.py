"""Stream concatenation (FINN StreamingConcat): Concat of integer streams along the channels of NCHW tensors or
of vectors."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import Layer, Resources, StreamProgram, check_fold, check_positive
from qpass.hw.nodes import attr, data_inputs, sample_shape
from qpass.hw.orders import nhwc_order


@dataclass(frozen=True)
class Concat(Layer):
    """Channel concatenation of len(channels) streams over ``pixels``; SIMD divides every input."""

    channels: tuple[int, ...] = (1,)
    pixels: int = 1
    a_bits: int = 8
    simd: int = 1
    kind: ClassVar[str] = "Concat"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or min(self.channels) < 1:
            raise QpassError(f"{self.name}: channels must be a non-empty tuple of positive ints")
        check_positive(self.name, pixels=self.pixels, a_bits=self.a_bits)
        check_fold(self.name, "SIMD", self.simd, math.gcd(*self.channels), "gcd(channels)")

    def cycles(self) -> int:
        return cm.streaming_cycles(sum(self.channels), self.pixels, self.simd)

    def resources(self) -> Resources:
        return Resources(lut=cm.concat_lut(self.simd, self.a_bits, len(self.channels)))

    def legal_simd(self) -> list[int]:
        return cm.divisors(math.gcd(*self.channels))

    def program(self) -> StreamProgram:
        """Per pixel, C_i/SIMD iterations reading input i in turn, each writing one word."""
        per_px = [c // self.simd for c in self.channels]
        port = np.repeat(np.arange(len(per_px)), per_px)
        port = np.tile(port, self.pixels)
        i = np.arange(len(port))
        return StreamProgram(len(i), tuple(i[port == p] for p in range(len(per_px))), i, self.pipeline_depth())

    def in_elems(self):
        return [self.pixels * c for c in self.channels]

    def out_elems(self):
        return self.pixels * sum(self.channels)

    def in_words(self):
        return [self.pixels * c // self.simd for c in self.channels]

    def out_words(self):
        return self.pixels * sum(self.channels) // self.simd


class ConcatKind(HwKind):
    name = "concat"
    ops = ("Concat",)
    model = Concat

    def match(self, node, data, outs):
        if len(data) != len(node.inputs):
            return None, "Concat with a constant input"
        shapes = [sample_shape(t) for t in data]
        rank = len(shapes[0]) + 1
        axis = int(attr(node, "axis", 1)) % rank
        if rank == 4 and axis == 1:
            return "concat", "channel concatenation of streams"
        if rank == 2 and axis == 1:
            return "concat", "concatenation of vectors"
        return None, f"Concat along axis {axis} of rank-{rank} tensors is not streamed"

    def out_order(self, node, in_orders):
        shapes = [sample_shape(t) for t in data_inputs(node)]
        if len(shapes[0]) == 3:
            for s, oi in zip(shapes, in_orders):
                if not np.array_equal(oi, nhwc_order(s)):
                    return None, "an input stream is not in NHWC order"
            return nhwc_order(sample_shape(node.outputs[0])), None
        offs = np.cumsum([0] + [int(np.prod(s)) for s in shapes])[:-1]
        return np.concatenate([oi + off for oi, off in zip(in_orders, offs)]), None

    def build(self, node, b):
        ins = data_inputs(node)
        srcs = [b.in_stream(t) for t in ins]
        shapes = [sample_shape(t) for t in ins]
        y = node.outputs[0]
        ys = sample_shape(y)
        out_t = b.dtype(y)
        if len(ys) == 3:
            chans, pix = [s[0] for s in shapes], ys[1] * ys[2]
        else:
            chans, pix = [int(np.prod(s)) for s in shapes], 1
        order, why = self.out_order(node, [b.tensor_order(t) for t in ins])
        if order is None:
            raise QpassError(f"{node.name}: {why}")
        params = dict(in_types=[s.dtype for s in srcs], out_type=out_t, channels=chans, pixels=pix)
        layer = lambda nm: Concat(nm, channels=tuple(chans), pixels=pix, a_bits=out_t.bits)  # noqa: E731
        b.add_layer(self.name, node.name, layer, [s.name for s in srcs], y.name, out_t, ys, order, [node.name],
                    params)
