"""From a dataflow partition (an ONNX model of streamable integer nodes) to hardware layers.

``build(partition_model)`` returns a ``DataflowGraph``: every node's kind (``qpass.hw.classify``) builds its
``HwLayer``s through the ``Builder``, which keeps the streams and their orders (FINN's mapping, with qpass' stream
order bookkeeping: a layout-only node changes the order of its tensor along the stream, and the consumer absorbs
it). Element types come from exact integer ranges.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qpass.analysis.intinfo import int_range
from qpass.errors import QpassError
from qpass.hw.classify import analyse
from qpass.hw.dataflow_graph import DataflowGraph, HwLayer, Stream, c_ident
from qpass.hw.inttype import IntType
from qpass.hw.kinds import KIND_BY_NAME, KINDS
from qpass.hw.nodes import data_inputs, sample_shape
from qpass.hw.orders import channel_slots, natural_order


class Builder:
    """The streams and layers of one partition under construction; the kinds' ``build`` methods add to it."""

    def __init__(self, model: onnx.ModelProto, name: str):
        self.an = analyse(model)
        self.graph = self.an.graph
        self.name = name
        self.taken: set[str] = set()
        self.layers: list[HwLayer] = []
        self.streams: dict[str, Stream] = {}
        self.stream_of: dict[str, str] = {}  # tensor -> stream name (aliases through layout ops)
        self.orders: dict[str, np.ndarray] = {}  # tensor -> order along its stream, where it differs
        self.fused: set[str] = set()  # nodes implemented by another node's layer
        self.state: dict[str, object] = {}  # per kind name: what its ``prepare`` found
        self.out_orders: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.memo: dict = dict(self.an.memo)
        self.graph_outputs = {t.name for t in self.graph.outputs}

    # -- what the kinds ask ---------------------------------------------------------------------------
    def kind_of(self, node: gs.Node) -> str | None:
        return self.an.decisions[node.name].kind

    def rng(self, t: gs.Tensor):
        r = int_range(t, self.memo)
        if r is None:
            raise QpassError(f"{t.name}: not an integer tensor")
        return r

    def dtype(self, t: gs.Tensor) -> IntType:
        return IntType.of_range(*self.rng(t))

    def in_stream(self, t: gs.Tensor) -> Stream:
        return self.streams[self.stream_of[t.name]]

    def sole_reader(self, t: gs.Tensor) -> gs.Node | None:
        r = list(t.outputs)
        if len(r) == 1 and t.name not in self.graph_outputs:
            return r[0]
        return None

    def tensor_order(self, t: gs.Tensor) -> np.ndarray:
        """Order of tensor ``t`` along its stream (differs from the stream's own after layout ops)."""
        if t.name in self.orders:
            return self.orders[t.name]
        return self.in_stream(t).order

    def slots(self, t: gs.Tensor, axis: int | None = None) -> tuple[np.ndarray, int, int]:
        """(channel index per slot, slots, pixels) of the elementwise view of tensor t's stream."""
        xs = sample_shape(t)
        if axis is None:
            axis = 0 if len(xs) in (1, 3) else len(xs) - 1
        order = self.tensor_order(t)
        slots = channel_slots(order, xs, axis)
        return slots, len(slots), len(order) // len(slots)

    def single_io(self, node: gs.Node):
        """(input sample shape, input stream, output tensor, output sample shape) of a single-input layer."""
        x = data_inputs(node)[0]
        y = node.outputs[0]
        return sample_shape(x), self.in_stream(x), y, sample_shape(y)

    # -- what the kinds add ---------------------------------------------------------------------------
    def new_stream(self, tensor: str, dtype: IntType, shape, order, producer, name=None) -> Stream:
        sname = name or tensor
        s = Stream(sname, tensor, dtype, tuple(shape), np.asarray(order, np.int64), producer)
        self.streams[sname] = s
        return s

    def add_layer(self, kind: str, base: str, layer_fn, inputs: list[str], out_tensor: str, out_dtype: IntType,
                  out_shape, out_order, nodes, params, out_name=None) -> HwLayer:
        """A layer named after ``base`` (``layer_fn(name)`` its cost model) reading streams ``inputs`` and writing
        a new stream of ``out_tensor`` (named ``out_name``, default the tensor's name)."""
        name = c_ident(base, self.taken)
        layer = layer_fn(name)
        out = self.new_stream(out_tensor, out_dtype, out_shape, out_order, name, out_name)
        hl = HwLayer(name, kind, layer, list(inputs), out.name, list(nodes), params)
        for p, s in enumerate(inputs):
            self.streams[s].consumers.append((name, p))
        self.layers.append(hl)
        self.stream_of[out_tensor] = out.name
        return hl

    # -- main -----------------------------------------------------------------------------------------
    def run(self) -> DataflowGraph:
        for d in self.an.decisions.values():
            if d.kind is None:
                raise QpassError(f"partition {self.name}: node {d.node!r} ({d.op}) cannot be streamed: {d.reason}")
        inputs = []
        for t in self.graph.inputs:
            shape = sample_shape(t)
            if shape is None:
                raise QpassError(f"partition input {t.name!r} has no static per-sample shape")
            s = self.new_stream(t.name, self.dtype(t), shape, natural_order(shape), None)
            self.stream_of[t.name] = s.name
            inputs.append(s.name)
        for kind in KINDS:
            kind.prepare(self)
        for node in self.graph.nodes:
            if node.name not in self.fused:
                KIND_BY_NAME[self.kind_of(node)].build(node, self)
        outputs, shapes = [], {}
        for t in self.graph.outputs:
            if self.stream_of[t.name] in inputs:
                raise QpassError(f"partition output {t.name!r} is a partition input (nothing computed)")
            outputs.append((t.name, self.stream_of[t.name]))
            self.out_orders[t.name] = self.tensor_order(t)
            shapes[t.name] = tuple(sample_shape(t) or self.streams[self.stream_of[t.name]].shape)
        for sname in inputs:
            if not self.streams[sname].consumers and sname not in {s for _, s in outputs}:
                self.notes.append(f"partition input {sname!r} is not read")
        return DataflowGraph(self.name, self.layers, self.streams, inputs, outputs, self.notes,
                             output_orders=self.out_orders, output_shapes=shapes)


def build(model: onnx.ModelProto, name: str = "partition") -> DataflowGraph:
    """Hardware layers of one dataflow partition model (every node must be streamable)."""
    return Builder(model, name).run()
