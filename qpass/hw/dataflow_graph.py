"""The hardware side of one dataflow partition: ``HwLayer``s (one per hardware unit, with its cost model and what
code generation needs) connected by ``Stream``s (element type, stream order), and the partition's input and output
streams. Built by ``qpass.hw.builder.build``; folded and sized by ``qpass.hw.design``."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from qpass.hw.fifo_sim import FifoResult
from qpass.hw.folding import FoldingResult
from qpass.hw.inttype import IntType
from qpass.hw.layers import Layer


@dataclass
class Stream:
    """A stream of one tensor: ``elems`` per frame of ``dtype``; stream position j holds per-sample element
    ``order[j]`` of ``tensor`` (shape ``shape`` without the batch axis)."""

    name: str
    tensor: str
    dtype: IntType
    shape: tuple
    order: np.ndarray
    producer: str | None = None  # layer name, None for a partition input
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer, port)

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class HwLayer:
    name: str
    kind: str  # a qpass.hw.kinds name: swg, mvtu, vvau, window_max, maxpool, global_sum, threshold, ...
    layer: Layer
    inputs: list[str]  # stream names, by port
    output: str  # stream name
    nodes: list[str]  # ONNX nodes implemented
    params: dict = field(default_factory=dict)

    @property
    def in_fold(self) -> list[int]:
        """Elements per input word, per port."""
        L = self.layer
        return [e // w for e, w in zip(L.in_elems(), L.in_words())]

    @property
    def out_fold(self) -> int:
        return self.layer.out_elems() // self.layer.out_words()


@dataclass
class DataflowGraph:
    name: str
    layers: list[HwLayer]
    streams: dict[str, Stream]
    inputs: list[str]  # partition input stream names (= tensor names)
    outputs: list[tuple[str, str]]  # (tensor name, stream name)
    notes: list[str] = field(default_factory=list)
    output_orders: dict[str, np.ndarray] = field(default_factory=dict)
    #: per-sample shape of each output tensor (differs from its stream's when a layout op is folded into the order)
    output_shapes: dict[str, tuple] = field(default_factory=dict)
    folding: FoldingResult | None = None
    fifos: FifoResult | None = None
    fifo_notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> HwLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(producer layer, consumer layer) per layer input port, in port order (graph inputs omitted)."""
        out = []
        for l in self.layers:
            for s in l.inputs:
                p = self.streams[s].producer
                if p is not None:
                    out.append((p, l.name))
        return out

    def stream_edges(self) -> list[tuple[str, str]]:
        """``edges`` with the partition inputs too, as ('<input>' + stream name, consumer layer): the FIFO
        simulation forks an input read by several ports (``qpass.hw.fifo_graph.InputFork``)."""
        return [(self.streams[s].producer or f"<input>{s}", l.name) for l in self.layers for s in l.inputs]

    def cost_layers(self) -> list[Layer]:
        return [l.layer for l in self.layers]

    def apply(self, layers: list[Layer]) -> None:
        by = {L.name: L for L in layers}
        for l in self.layers:
            l.layer = by[l.name]


def c_ident(name: str, taken: set[str]) -> str:
    """A C identifier made from ``name``, not in ``taken`` (and added to it)."""
    base = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "layer"
    base = re.sub(r"_+", "_", base)
    if base[0].isdigit():
        base = "L" + base
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out
