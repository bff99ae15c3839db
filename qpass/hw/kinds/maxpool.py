"""Streaming max pool (FINN StreamingMaxPool): a 2-D MaxPool with non-overlapping windows (stride == kernel, no
padding). Its cost model ``Pool`` also serves the global sum (``global_sum``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import Layer, Resources, StreamProgram, check_choice, check_fold, check_positive, pair
from qpass.hw.nodes import attr, data_inputs, sample_shape
from qpass.hw.orders import image_out_order, nhwc_order


@dataclass(frozen=True)
class Pool(Layer):
    """MaxPool / AvgPool (non-overlapping, stride == kernel) or GlobalAvgPool over ``channels``."""

    channels: int = 1
    ifm_dim: tuple[int, int] | int = 1
    kernel: tuple[int, int] | int = 2
    pool: str = "max"
    a_bits: int = 8
    pe: int = 1
    ofm_dim: tuple[int, int] = field(default=(1, 1), init=False)
    kind: ClassVar[str] = "Pool"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "ifm_dim", pair(self.ifm_dim, "ifm_dim", self.name))
        check_choice(self.name, "pool", self.pool, ("max", "avg", "global_avg"))
        if self.pool == "global_avg":
            set_(self, "kernel", self.ifm_dim)
        set_(self, "kernel", pair(self.kernel, "kernel", self.name))
        check_positive(self.name, channels=self.channels, a_bits=self.a_bits)
        check_fold(self.name, "PE", self.pe, self.channels, "channels")
        ofm = tuple(i // k for i, k in zip(self.ifm_dim, self.kernel))
        if min(ofm) < 1:
            raise QpassError(f"{self.name}: pool kernel {self.kernel} larger than the input {self.ifm_dim}")
        set_(self, "ofm_dim", ofm)

    def cycles(self) -> int:
        return cm.pool_cycles(self.pool, self.channels, self.ifm_dim, self.ofm_dim, self.pe)

    def resources(self) -> Resources:
        return Resources(lut=cm.pool_lut(self.pool, self.channels, self.ifm_dim[1], self.ofm_dim[1], self.pe,
                                         self.a_bits))

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def program(self) -> StreamProgram:
        """One iteration per input word, plus OW*C/PE output iterations after each K-th input row; a global
        pool emits C/PE words after the whole frame."""
        (ih, iw), (oh, ow), (kh, _) = self.ifm_dim, self.ofm_dim, self.kernel
        cf, lat = self.channels // self.pe, self.pipeline_depth()
        if self.pool == "global_avg":
            n_in = ih * iw * cf
            i = np.arange(n_in + cf)
            return StreamProgram(len(i), (i[:n_in],), i[n_in:], lat)
        # per input row: iw*cf reads; after every kh-th row (while output rows remain): ow*cf writes
        kinds = []
        for y in range(ih):
            kinds.append(np.zeros(iw * cf, dtype=bool))
            if (y + 1) % kh == 0 and (y + 1) // kh <= oh:
                kinds.append(np.ones(ow * cf, dtype=bool))
        is_write = np.concatenate(kinds)
        i = np.arange(len(is_write))
        return StreamProgram(len(i), (i[~is_write],), i[is_write], lat)

    def in_elems(self):
        return [self.ifm_dim[0] * self.ifm_dim[1] * self.channels]

    def out_elems(self):
        return self.ofm_dim[0] * self.ofm_dim[1] * self.channels

    def in_words(self):
        return [self.in_elems()[0] // self.pe]

    def out_words(self):
        return self.out_elems() // self.pe


def maxpool_host_reason(node, data) -> str | None:
    """Why a MaxPool cannot be streamed in any form, or None."""
    x = sample_shape(data[0])
    if len(x) != 3 or len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].name:
        return "only 2-D MaxPool without the Indices output is streamed"
    if any(int(d) != 1 for d in (attr(node, "dilations") or [1, 1])) or int(attr(node, "ceil_mode", 0)) \
            or int(attr(node, "storage_order", 0)) or attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "MaxPool with dilation, ceil_mode, storage_order or auto_pad has no streaming implementation"
    return None


def non_overlapping(node) -> bool:
    k = [int(v) for v in attr(node, "kernel_shape")]
    s = [int(v) for v in (attr(node, "strides") or [1, 1])]
    return k == s and not any(int(p) for p in (attr(node, "pads") or [0, 0, 0, 0]))


def image_order(node, in_orders):
    """The output order of a single-input image layer (it reads and writes NHWC streams)."""
    return image_out_order(sample_shape(data_inputs(node)[0]), sample_shape(node.outputs[0]), in_orders[0])


class MaxPoolKind(HwKind):
    name = "maxpool"
    ops = ("MaxPool",)
    model = Pool

    def match(self, node, data, outs):
        why = maxpool_host_reason(node, data)
        if why is not None:
            return None, why
        if non_overlapping(node):
            return "maxpool", "streaming max pool (non-overlapping windows)"
        return None

    def out_order(self, node, in_orders):
        return image_order(node, in_orders)

    def build(self, node, b):
        xs, src, y, ys = b.single_io(node)
        k = tuple(int(v) for v in attr(node, "kernel_shape"))
        params = dict(channels=xs[0], ifm=xs[1:], kernel=k, type=src.dtype)
        layer = lambda nm: Pool(nm, channels=xs[0], ifm_dim=xs[1:], kernel=k, pool="max",  # noqa: E731
                                a_bits=src.dtype.bits)
        b.add_layer(self.name, node.name, layer, [src.name], y.name, src.dtype, ys, nhwc_order(ys), [node.name],
                    params)
