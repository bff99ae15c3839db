"""GraphBuilder: adds constants, tensors and nodes to an onnx-graphsurgeon graph under fresh names.

Every pass that grows a graph uses it, so names are chosen one way everywhere:

    b = GraphBuilder(graph)                      # names taken: every tensor and node already in the graph
    s = b.const(0.5, name="conv1_s")             # "conv1_s", or "conv1_s_1", "conv1_s_2", ... when taken
    y = b.at("q0").op("Mul", [x, s])             # node "q0_Mul" writing a new tensor "q0_mul"

Names given explicitly are used as bases; everything created without a name derives it from the builder's
``base`` (``at(base)`` returns a builder for another base sharing the graph and the taken names).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.graph import NameAllocator


class GraphBuilder:
    def __init__(self, graph: gs.Graph, names: NameAllocator | None = None, base: str = "node"):
        self.graph = graph
        self.names = names if names is not None else NameAllocator.for_gs(graph)
        self.base = base

    def at(self, base: str) -> "GraphBuilder":
        """A builder on the same graph and names whose unnamed constants and ops derive their names from ``base``."""
        return GraphBuilder(self.graph, self.names, base)

    def const(self, value, dtype=np.float32, name: str | None = None) -> gs.Constant:
        """A constant holding ``value`` as ``dtype`` (None: the value's own type), named ``name`` or ``{base}_c``."""
        return gs.Constant(self.names(name or f"{self.base}_c"), np.asarray(value, dtype))

    def var(self, name: str, like: gs.Tensor | None = None, dtype=np.float32, shape=None) -> gs.Variable:
        """A new tensor named after ``name``, shaped like ``like`` (or ``shape``)."""
        return gs.Variable(self.names(name), dtype=dtype, shape=like.shape if like is not None else shape)

    def node(self, op_type: str, inputs, outputs, attrs=None, domain: str | None = None,
             name: str | None = None) -> gs.Node:
        """Append a node, named ``name`` or ``{first output}_{op_type}``."""
        n = gs.Node(op_type, self.names(name or f"{outputs[0].name}_{op_type}"), attrs=attrs or {},
                    inputs=list(inputs), outputs=list(outputs), domain=domain)
        self.graph.nodes.append(n)
        return n

    def op(self, op_type: str, inputs, attrs=None, out: gs.Variable | None = None, dtype=np.float32) -> gs.Variable:
        """Append node ``{base}_{op_type}``; return its output, ``out`` or a new tensor ``{base}_{op_type lower}``."""
        out = out if out is not None else gs.Variable(self.names(f"{self.base}_{op_type.lower()}"), dtype=dtype)
        self.node(op_type, inputs, [out], attrs, name=f"{self.base}_{op_type}")
        return out
