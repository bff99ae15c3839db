"""Where the QDQ pass puts integer tensors: one initializer per distinct array however many nodes read it, a
DequantizeLinear per reader, QuantizeLinear -> DequantizeLinear pairs on activations."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import INT_RANGES, AffineParams
from qpass.ir.builder import GraphBuilder


LONG_NAME = 32


def short(name: str) -> str:
    """A base for the names generated from tensor or node ``name``: the name itself, or for a long one (exporters
    write names of hundreds of characters, which every Q/DQ node and tensor would repeat) its start and a digest."""
    if len(name) <= LONG_NAME:
        return name
    return f"{name[:LONG_NAME // 2]}_{hashlib.sha1(name.encode()).hexdigest()[:10]}"


def _content_key(a: np.ndarray) -> tuple:
    return a.dtype.str, a.shape, hashlib.sha1(np.ascontiguousarray(a).tobytes()).digest()


class ConstPool:
    """Constants by content: an array (more than one element) equal to one added before, in dtype, shape and bytes,
    is that constant; scalars get their own, named after their tensor."""

    def __init__(self, b: GraphBuilder):
        self.b = b
        self._by_key: dict[tuple, gs.Constant] = {}

    def get(self, value, name: str) -> gs.Constant:
        a = np.asarray(value)
        if a.size <= 1:
            return self.b.const(a, None, name=name)
        key = _content_key(a)
        if key not in self._by_key:
            self._by_key[key] = self.b.const(a, None, name=name)
        return self._by_key[key]


def dequantize_input(pool: ConstPool, node: gs.Node, idx: int, codes: np.ndarray, p: AffineParams) -> gs.Variable:
    """Replace the constant input ``idx`` of ``node`` by DequantizeLinear(codes) (the codes stored once)."""
    base = short(node.inputs[idx].name)
    b = pool.b
    qt = pool.get(codes, base + "_quantized")
    scale = pool.get(p.scale, base + "_scale")
    zp = pool.get(p.zero_point, base + "_zero_point")
    out = b.var(base + "_dequantized", shape=list(np.shape(codes)))
    attrs = {"axis": p.axis} if p.axis is not None and np.ndim(p.scale) == 1 else {}
    b.node("DequantizeLinear", [qt, scale, zp], [out], attrs, name=base + "_DequantizeLinear")
    node.inputs[idx] = out
    return out


def insert_qdq(b: GraphBuilder, graph: gs.Graph, t: gs.Variable, p: AffineParams, local: set | None = None,
               outer: GraphBuilder | None = None) -> None:
    """Route every reader of ``t`` through QuantizeLinear -> DequantizeLinear (graph I/O names are preserved).

    Each reading node gets its own DequantizeLinear: onnxruntime fuses a DQ -> op -> Q group into an integer kernel
    only when the DQ feeds that op alone. ``local`` (a body: ids of its nodes and of nested ones): only those
    readers are rerouted, and a value produced outside them is read as an input of the body; one the main graph
    computes or is fed (``outer``, its builder) is quantized there, once per run rather than every iteration.
    """
    base = short(t.name)
    scale = b.const(p.scale, None, name=base + "_scale")
    zp = b.const(p.zero_point, None, name=base + "_zero_point")
    q_out = b.var(base + "_quantized", dtype=np.dtype(INT_RANGES[p.dtype][2]), shape=t.shape)
    readers, hoisted = [], []
    for r in t.outputs:
        if not any(r is seen for seen in readers + hoisted) and (local is None or id(r) in local):
            (hoisted if local is None and _body_quantizer(r, graph) else readers).append(r)

    def dequantize_to(out: gs.Variable) -> None:
        b.node("DequantizeLinear", [q_out, scale, zp], [out], name=base + "_DequantizeLinear")

    if t.inputs and (local is None or id(t.inputs[0]) in local):  # produced here: ``t`` becomes the first DQ output
        pre = b.var(base + "_float", dtype=t.dtype, shape=t.shape)
        prod = t.inputs[0]
        prod.outputs[prod.outputs.index(t)] = pre
        b.node("QuantizeLinear", [pre, scale, zp], [q_out], name=base + "_QuantizeLinear")
        dequantize_to(t)
        rewire = readers[0 if t in graph.outputs else 1:]
        for r in hoisted:
            r.inputs[0] = pre
    else:  # an input of this graph, or of the main graph: every reader switches to a DQ output
        made = [n for n in outer.graph.nodes if t.inputs and t.inputs[0] is n] if outer is not None else []
        at_top = outer is not None and (bool(made) or any(t is i for i in outer.graph.inputs))
        q = outer if at_top else b
        q.node("QuantizeLinear", [t, q.const(p.scale, None, name=base + "_scale"),
                                  q.const(p.zero_point, None, name=base + "_zero_point")], [q_out],
               name=base + "_QuantizeLinear")
        rewire = readers
    for r in rewire:
        dq = b.var(base + "_dequantized", dtype=t.dtype, shape=t.shape)
        dequantize_to(dq)
        for i, inp in enumerate(r.inputs):
            if inp is t:
                r.inputs[i] = dq


def _body_quantizer(node: gs.Node, graph: gs.Graph) -> bool:
    """A QuantizeLinear that a body's outer-scope read put in the main ``graph`` (``insert_qdq``'s ``outer``): its
    codes are read only inside bodies. It keeps reading the float value when the main graph quantizes that value
    too: onnxruntime (1.32) aborts building a session whose main graph has Q -> DQ -> Q read by an If only (its
    double-Q/DQ remover indexes the If's inputs), and the body's grid is then met by one rounding, not two."""
    if node.op != "QuantizeLinear":
        return False
    mine = {id(n) for n in graph.nodes}
    readers = [r for o in node.outputs for r in o.outputs]
    return bool(readers) and not any(id(r) in mine for r in readers)


def dedupe_constants(graph: gs.Graph) -> int:
    """Make every node read one constant per distinct array (float tables left in float included); the number of
    duplicate constants dropped."""
    canon: dict[tuple, gs.Constant] = {}
    dropped: set[str] = set()
    for node in graph.nodes:
        for i, t in enumerate(node.inputs):
            if not isinstance(t, gs.Constant) or np.size(t.values) <= 1:
                continue
            first = canon.setdefault(_content_key(np.asarray(t.values)), t)
            if first is not t:
                node.inputs[i] = first
                dropped.add(t.name)
    return len(dropped)
