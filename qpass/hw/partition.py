"""Dataflow partitioning of a streamlined (integer-only) QONNX graph.

Every node with a streaming hardware implementation is marked (``analyse``):

- ``mvtu``: an integer Conv (group 1) / Gemm / MatMul (a matrix-vector-threshold unit; a following
  MultiThreshold is fused into it later, or none when the accumulator leaves, e.g. into the float head); a
  convolution is fed by a sliding-window generator.
- ``vvau``: a depthwise integer Conv (weights per channel, e.g. the all-ones window sum of an average pool).
- ``maxpool`` (non-overlapping), ``window_max`` (any other MaxPool: sliding window + window maximum),
  ``global_sum`` (ReduceSum over H, W: a global average pool whose division lives in the next thresholds).
- ``threshold`` (a MultiThreshold on its own), ``channelwise`` (Mul / Add / Sub by an integer constant),
  ``add`` (Add / Sub of two integer streams, the residual join), ``concat`` (channel concatenation).
- ``reorder``: layout-only ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity, Dropout); they cost
  nothing in hardware: the stream keeps its order and the consumer absorbs the permutation (an FC layer permutes
  its weight columns, a threshold permutes its channel table).

Streams are NHWC (pixels in raster order, channels innermost) and carry one sample per frame; the order of every
stream is tracked as a permutation of the tensor's per-sample elements (``orders``), and a node that would need a
real reordering (a sliding window after a Transpose, two differently ordered inputs of an Add) stays on the host.

Everything else stays on the host: the input quantiser (``Div`` + ``Quant`` / ``BipolarQuant`` turning float
data into integer codes), the float head (``Mul``/``Add`` by float scales after the last integer layer),
Softmax, Resize, and any op whose data is not integer. ``explain`` says why for each host node.

``partition`` splits the marked nodes into maximal connected partitions whose contraction keeps the graph acyclic
(grouping by the number of host nodes on the longest path from the inputs, which is convex by construction,
then merging adjacent groups greedily while the quotient graph stays a DAG; networkx). Each partition becomes its
own ONNX model, referenced from a ``qpass::StreamingDataflowPartition`` node (attributes ``model``: the relative
path of the partition file, saved next to the parent; ``model_sha256``; ``partition_id``). The golden simulator
runs such a node by running the partition model found in the ``PartitionedModel.store`` (``qpass.ops.partition``);
``lower_partitions`` inlines the partitions back and lowers the result for plain onnxruntime.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from qpass.ir.datatypes import get_annotations
from ..errors import QpassError
from qpass.ir.graph import topo_order
from qpass.analysis.intinfo import LINEAR_OPS, const, int_range, is_bipolar_codes, is_int_quant
from qpass.ops.common import QONNX_DOMAINS, mt_channel_axis

from qpass.ops.partition import PARTITION_DOMAIN, PARTITION_OP, PartitionStore, model_sha256 as _sha, partition_ref
REORDER_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout")
COMPUTE_KINDS = ("mvtu", "vvau", "maxpool", "window_max", "global_sum", "threshold", "channelwise", "add", "concat")


# ---------------------------------------------------------------------------------------- stream orders

def nhwc_order(chw) -> np.ndarray:
    """Stream order of a (C, H, W) sample streamed pixel by pixel, channels innermost."""
    c, h, w = (int(v) for v in chw)
    return np.arange(c * h * w, dtype=np.int64).reshape(c, h, w).transpose(1, 2, 0).ravel()


def natural_order(sample_shape) -> np.ndarray:
    """The order a stream entering a partition gets: NHWC for image tensors, row-major otherwise."""
    if len(sample_shape) == 3:
        return nhwc_order(sample_shape)
    return np.arange(int(np.prod(sample_shape, dtype=np.int64)), dtype=np.int64)


def channel_slots(order: np.ndarray, sample_shape, axis: int) -> np.ndarray:
    """Channel index (along per-sample ``axis``) of the element at each of the first P stream positions, where P
    is the smallest period of the channel sequence along the stream (C for an NHWC stream)."""
    shape = tuple(int(v) for v in sample_shape)
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    chan = (order // inner) % shape[axis]
    n = len(chan)
    c = shape[axis]
    for p in sorted({d for d in range(1, n + 1) if n % d == 0 and d % c == 0} or {n}):
        rows = chan.reshape(-1, p)
        if np.all(rows == rows[0]):
            return rows[0].copy()
    return chan.copy()


def vector_perm(order: np.ndarray, nvec: int) -> np.ndarray | None:
    """For a stream of ``nvec`` vectors of K elements: the per-vector element permutation (stream slot -> vector
    element) when every vector is contiguous and permuted the same way, else None."""
    k = len(order) // nvec
    o = order.reshape(nvec, k)
    if not np.all(o // k == np.arange(nvec)[:, None]):
        return None
    p = o % k
    return p[0].copy() if np.all(p == p[0]) else None


# ------------------------------------------------------------------------------------------- analysis

@dataclass
class Decision:
    node: str
    op: str
    kind: str | None  # hardware kind, None: host
    reason: str


@dataclass
class Analysis:
    """Per-node hardware decisions on a streamlined graph, with per-sample shapes and integer ranges."""

    model: onnx.ModelProto
    graph: gs.Graph
    decisions: dict[str, Decision]
    shapes: dict[str, tuple | None]
    ranges: dict[str, tuple[float, float] | None]
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    #: where the reference interpreter and ``inline_partitions`` find the partition models
    store: PartitionStore = field(default_factory=PartitionStore)
    memo: dict = field(default_factory=dict)  # int_range memo (seeded with the graph inputs' ranges)

    def node(self, name: str) -> gs.Node:
        return self._by_name[name]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.graph.nodes}


def _attr(node: gs.Node, name, default=None):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _sample_shape(t: gs.Tensor) -> tuple | None:
    shape = t.shape
    if shape is None or len(shape) < 1 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        return None
    return tuple(int(d) for d in shape[1:])


def _ensure_names(model: onnx.ModelProto) -> onnx.ModelProto:
    names = [n.name for n in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen: set[str] = set()
    for i, n in enumerate(out.graph.node):
        base = n.name or f"{n.op_type}_{i}"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        n.name = name
        seen.add(name)
    return out


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    return [t for t in node.inputs if t is not None and t.name and not isinstance(t, gs.Constant)]


def _is_integral(v: np.ndarray | None) -> bool:
    return v is not None and v.size > 0 and bool(np.all(np.isfinite(v))) and bool(np.all(v == np.round(v)))


def _broadcast_channel(v: np.ndarray, sample_shape: tuple, axis: int) -> bool:
    """A constant that is a scalar or varies only along per-sample ``axis`` (broadcast from the right)."""
    full = (1,) + tuple(sample_shape)
    if v.ndim > len(full):
        return False
    vs = (1,) * (len(full) - v.ndim) + tuple(v.shape)
    return all(d == 1 or (i == axis + 1 and d == full[i]) for i, d in enumerate(vs))


RANGES_KEY = "qpass_stream_ranges"


def _seed_ranges(model: onnx.ModelProto, graph: gs.Graph) -> dict:
    """Integer ranges of graph inputs: exact ones recorded by ``partition`` (metadata ``qpass_stream_ranges``), else
    the range of their datatype annotation (e.g. UINT4), so a partition model alone knows its inputs are integer."""
    import json

    from qpass.ir.datatypes import int_type_from_name

    memo: dict = {}
    anns = get_annotations(model)
    for t in graph.inputs:
        dt = int_type_from_name(anns.get(t.name, ""))
        if dt is not None:
            memo[t.name] = (float(dt.lo), float(dt.hi))
    for p in model.metadata_props:
        if p.key == RANGES_KEY:
            for k, v in json.loads(p.value).items():
                memo[k] = (float(v[0]), float(v[1]))
    return memo


class _Classifier:
    def __init__(self, graph: gs.Graph, memo: dict | None = None):
        self.graph = graph
        self.memo: dict = dict(memo or {})
        self.outputs = {t.name for t in graph.outputs}

    def rng(self, t: gs.Tensor):
        return int_range(t, self.memo)

    def classify(self, node: gs.Node) -> tuple[str | None, str]:
        op = node.op
        data = _data_inputs(node)
        outs = [o for o in node.outputs if o is not None and o.name]
        if node.domain in QONNX_DOMAINS and op in ("Quant", "BipolarQuant", "Trunc"):
            if is_int_quant(node) or is_bipolar_codes(node):
                if data and self.rng(data[0]) is None:
                    return None, "input quantiser: rounds float data to integer codes (host)"
            return None, f"{op} on float data: a quantiser with a float scale runs on the host"
        if op == "Div" and outs and any(is_int_quant(r) or is_bipolar_codes(r) for r in outs[0].outputs):
            return None, "input quantiser: scales float data before rounding to integer codes (host)"
        dom = node.domain or ""
        if dom in QONNX_DOMAINS and op != "MultiThreshold":
            return None, f"{op} has no streaming hardware implementation"
        if dom not in ("", "ai.onnx") and dom not in QONNX_DOMAINS:
            return None, f"{dom}::{op} has no streaming hardware implementation"
        if op not in LINEAR_OPS + ("MultiThreshold", "MaxPool", "ReduceSum", "Add", "Sub", "Mul", "Concat") + \
                REORDER_OPS:
            return None, f"{op} has no streaming hardware implementation"
        if not data:
            return None, "no streamed input (constant computation)"
        for t in data:
            if self.rng(t) is None:
                return None, f"input {t.name!r} is not an integer tensor (float data stays on the host)"
            if _sample_shape(t) is None:
                return None, f"input {t.name!r} has no static per-sample shape"
        for o in outs:
            if self.rng(o) is None:
                if op in ("Mul", "Add", "Sub", "Div"):
                    return None, "dequantises integer codes to float (float head / float op)"
                return None, f"output {o.name!r} is not an integer tensor"
            if _sample_shape(o) is None:
                return None, f"output {o.name!r} has no static per-sample shape"
        kind, why = getattr(self, "_" + op.lower(), self._reorder)(node, data, outs)
        return kind, why

    # -- per op ---------------------------------------------------------------------------------------

    def _linear(self, node, data, outs):
        op = node.op
        if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
            return None, f"{op} with a bias input (streamlining leaves integer layers without bias)"
        w = const(node.inputs[1])
        if not _is_integral(w):
            return None, f"{op} weights are not constant integers"
        if len(data) != 1:
            return None, f"{op} with a non-constant weight"
        x = _sample_shape(data[0])
        if op == "Gemm":
            if int(_attr(node, "transA", 0)) or float(_attr(node, "alpha", 1.0)) != 1.0:
                return None, "Gemm with transA or alpha != 1"
            if len(x) != 1:
                return None, "Gemm input is not 2-D"
            return "mvtu", "matrix-vector-threshold unit (fully connected)"
        if op == "MatMul":
            if w.ndim != 2:
                return None, "MatMul with a weight that is not 2-D"
            return "mvtu", "matrix-vector-threshold unit (fully connected)"
        if op == "ConvTranspose":
            return None, "ConvTranspose has no streaming hardware implementation"
        # Conv
        if len(x) != 3 or w.ndim != 4:
            return None, "only 2-D convolutions (NCHW) are streamed"
        if any(int(d) != 1 for d in (_attr(node, "dilations") or [1, 1])):
            return None, "dilated convolution has no streaming hardware implementation"
        if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return None, "auto_pad SAME_* convolution: give explicit pads"
        pads = [int(p) for p in (_attr(node, "pads") or [0, 0, 0, 0])]
        if len(set(pads)) != 1:
            return None, f"asymmetric padding {pads} has no streaming implementation"
        g = int(_attr(node, "group", 1))
        if g == 1:
            return "mvtu", "convolution: sliding-window generator + matrix-vector-threshold unit"
        if g == x[0] and w.shape[0] == g and w.shape[1] == 1:
            return "vvau", "depthwise convolution: sliding-window generator + vector-vector unit"
        return None, f"grouped convolution (group={g}) has no streaming hardware implementation"

    _conv = _gemm = _matmul = _convtranspose = _linear

    def _multithreshold(self, node, data, outs):
        thr = const(node.inputs[1])
        s, b = float(_attr(node, "out_scale", 1.0)), float(_attr(node, "out_bias", 0.0))
        if thr is None or s != round(s) or b != round(b):
            return None, "MultiThreshold with non-constant thresholds or a non-integer out_scale/out_bias"
        if not np.all(np.isfinite(thr)):
            return None, "MultiThreshold with non-finite thresholds"
        x = _sample_shape(data[0])
        ax = _mt_axis(node, len(x) + 1)
        if ax is None or thr.ndim != 2 or thr.shape[0] not in (1, x[ax]):
            return None, "MultiThreshold thresholds do not match the channel count"
        return "threshold", "thresholding unit"

    def _maxpool(self, node, data, outs):
        x = _sample_shape(data[0])
        if len(x) != 3 or len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].name:
            return None, "only 2-D MaxPool without the Indices output is streamed"
        k = [int(v) for v in _attr(node, "kernel_shape")]
        s = [int(v) for v in (_attr(node, "strides") or [1, 1])]
        pads = [int(p) for p in (_attr(node, "pads") or [0, 0, 0, 0])]
        if any(int(d) != 1 for d in (_attr(node, "dilations") or [1, 1])) or int(_attr(node, "ceil_mode", 0)) \
                or int(_attr(node, "storage_order", 0)) or _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return None, "MaxPool with dilation, ceil_mode, storage_order or auto_pad has no streaming implementation"
        if k == s and not any(pads):
            return "maxpool", "streaming max pool (non-overlapping windows)"
        if len(set(pads)) != 1:
            return None, f"MaxPool with asymmetric padding {pads}"
        return "window_max", "sliding-window generator + window maximum"

    def _reducesum(self, node, data, outs):
        x = _sample_shape(data[0])
        axes = const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None \
            and node.inputs[1].name else None
        if axes is None and _attr(node, "axes") is not None:
            axes = np.asarray(_attr(node, "axes"))
        if len(x) != 3 or axes is None or sorted(int(a) % 4 for a in axes.reshape(-1)) != [2, 3]:
            return None, "ReduceSum other than over H and W of an NCHW tensor"
        return "global_sum", "global accumulation pool (sum over H, W)"

    def _binary(self, node, data, outs):
        op = node.op
        consts = [t for t in node.inputs if isinstance(t, gs.Constant)]
        if len(data) == 2 and not consts:
            if op == "Mul":
                return None, "Mul of two streams has no streaming hardware implementation"
            a, b = (_sample_shape(t) for t in data)
            if a != b or a != _sample_shape(outs[0]):
                return None, f"{op} of differently shaped streams (broadcasting is not streamed)"
            return "add", "element-wise add of two streams"
        if len(data) == 1 and len(consts) == 1:
            v = np.asarray(consts[0].values, np.float64)
            x = _sample_shape(data[0])
            if not _is_integral(v):
                return None, f"{op} by a non-integer constant (float arithmetic)"
            if op == "Sub" and node.inputs[0] is consts[0]:
                return None, "Sub of a stream from a constant"
            if not _broadcast_channel(v, x, 0 if len(x) == 3 or len(x) == 1 else len(x) - 1) \
                    and not _broadcast_channel(v, x, len(x) - 1):
                return None, f"{op} by a constant that is not per channel"
            return "channelwise", f"channel-wise {op} by integer constants"
        return None, f"{op} with unsupported inputs"

    _add = _sub = _mul = _binary

    def _concat(self, node, data, outs):
        if len(data) != len(node.inputs):
            return None, "Concat with a constant input"
        shapes = [_sample_shape(t) for t in data]
        axis = int(_attr(node, "axis", 1))
        rank = len(shapes[0]) + 1
        axis = axis % rank
        if rank == 4 and axis == 1:
            return "concat", "channel concatenation of streams"
        if rank == 2 and axis == 1:
            return "concat", "concatenation of vectors"
        return None, f"Concat along axis {axis} of rank-{rank} tensors is not streamed"

    def _reorder(self, node, data, outs):
        if node.op not in REORDER_OPS:
            return None, f"{node.op} has no streaming hardware implementation"
        if node.op == "Transpose":
            perm = _attr(node, "perm")
            if perm is None or int(perm[0]) != 0:
                return None, "Transpose that moves the batch axis"
        if np.prod(_sample_shape(data[0])) != np.prod(_sample_shape(outs[0])):
            return None, f"{node.op} changes the number of elements per sample"
        return "reorder", "layout only (absorbed by the consumer; no hardware)"


def _mt_axis(node: gs.Node, rank: int) -> int | None:
    """Per-sample channel axis of a MultiThreshold input of full rank ``rank``."""
    ax = mt_channel_axis(_attr(node, "data_layout", ""), rank)
    return None if ax == 0 else ax - 1


def output_order(node: gs.Node, kind: str, in_orders: list[np.ndarray]) -> tuple[np.ndarray | None, str | None]:
    """The stream order of a hardware node's output given its input orders, or (None, reason)."""
    x = _sample_shape(_data_inputs(node)[0])
    y = _sample_shape(node.outputs[0])
    o = in_orders[0]
    if kind in ("mvtu", "vvau", "maxpool", "window_max", "global_sum"):
        if node.op == "Conv" or kind in ("vvau", "maxpool", "window_max", "global_sum"):
            if not np.array_equal(o, nhwc_order(x)):
                return None, "its input stream is not in NHWC order (a real reordering would be needed)"
            return nhwc_order(y), None
        nvec = int(np.prod(x[:-1], dtype=np.int64)) if len(x) > 1 else 1
        if vector_perm(o, nvec) is None:
            return None, "its input stream does not hold whole input vectors one after another"
        return np.arange(int(np.prod(y)), dtype=np.int64), None
    if kind in ("threshold", "channelwise"):
        return o, None
    if kind == "add":
        if not np.array_equal(in_orders[0], in_orders[1]):
            return None, "its two input streams are in different orders"
        return o, None
    if kind == "concat":
        shapes = [_sample_shape(t) for t in _data_inputs(node)]
        if len(x) == 3:
            for s, oi in zip(shapes, in_orders):
                if not np.array_equal(oi, nhwc_order(s)):
                    return None, "an input stream is not in NHWC order"
            return nhwc_order(y), None
        offs = np.cumsum([0] + [int(np.prod(s)) for s in shapes])[:-1]
        return np.concatenate([oi + off for oi, off in zip(in_orders, offs)]), None
    if kind == "reorder":
        if node.op == "Transpose":
            perm = [int(p) for p in _attr(node, "perm")]
            sp = [p - 1 for p in perm[1:]]
            out_to_in = np.arange(int(np.prod(x)), dtype=np.int64).reshape(x).transpose(sp).ravel()
            in_to_out = np.argsort(out_to_in)
            return in_to_out[o], None
        return o, None
    raise QpassError(f"unknown hardware kind {kind!r}")


ELEMENTWISE_QOPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "MultiThreshold")


def _has_shape(v: onnx.ValueInfoProto) -> bool:
    t = v.type.tensor_type
    return v.type.HasField("tensor_type") and t.HasField("shape") and len(t.shape.dim) > 0


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with value_info for every tensor whose shape ONNX shape inference can find once the element-wise
    QONNX ops are stood in for by Identity (qonnx's make_shape_compatible_op). Existing shapes are kept; missing or
    rank-0 ones are filled in. The model is returned unchanged when every node output already has a shape."""
    g = model.graph
    known = {v.name for v in list(g.value_info) + list(g.output) if _has_shape(v)}
    if all(o in known for n in g.node for o in n.output if o):
        return model
    stand = onnx.ModelProto()
    stand.CopyFrom(model)
    del stand.graph.value_info[:]
    for o in stand.graph.output:
        if not _has_shape(o):
            o.type.tensor_type.ClearField("shape")
    for n in stand.graph.node:
        if n.domain in QONNX_DOMAINS and n.op_type in ELEMENTWISE_QOPS:
            first = n.input[0]
            del n.input[:]
            n.input.append(first)
            del n.attribute[:]
            n.op_type, n.domain = "Identity", ""
    try:
        inferred = onnx.shape_inference.infer_shapes(stand, data_prop=True)
    except Exception:  # noqa: BLE001 - best effort; nodes without shapes stay on the host
        return model
    got = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output) if _has_shape(v)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [v for v in out.graph.value_info if _has_shape(v)]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    for name, v in got.items():
        if name in known or name in {i.name for i in g.input}:
            continue
        if name in {o.name for o in g.output}:
            o = next(o for o in out.graph.output if o.name == name)
            o.type.tensor_type.shape.CopyFrom(v.type.tensor_type.shape)
            continue
        t = onnx.ValueInfoProto()
        t.CopyFrom(v)
        out.graph.value_info.append(t)
    return out


def analyse(model: onnx.ModelProto) -> Analysis:
    """Hardware decisions for every node of a streamlined QONNX model (no partitioning yet)."""
    model = with_shapes(_ensure_names(model))
    graph = gs.import_onnx(model)
    cls = _Classifier(graph, _seed_ranges(model, graph))
    decisions = {}
    for n in graph.nodes:
        kind, why = cls.classify(n)
        decisions[n.name] = Decision(n.name, n.op, kind, why)
    shapes, ranges = {}, {}
    for name, t in graph.tensors().items():
        if isinstance(t, gs.Constant):
            continue
        shapes[name] = _sample_shape(t)
        ranges[name] = int_range(t, cls.memo)
    an = Analysis(model, graph, decisions, shapes, ranges, memo=cls.memo)
    _refine_host_reasons(an)
    return an


def _refine_host_reasons(an: Analysis) -> None:
    """Name the float head as such: an element-wise host node downstream of integer hardware with no integer
    computation after it."""
    hw_up: dict[str, bool] = {}
    for n in an.graph.nodes:  # gs keeps the (topological) order of the model
        hw_up[n.name] = any(t.inputs and (an.decisions[t.inputs[0].name].kind is not None or
                                          hw_up.get(t.inputs[0].name, False)) for t in _data_inputs(n))
    int_downstream: dict[str, bool] = {}
    for n in reversed(an.graph.nodes):
        below = any(an.decisions[r.name].kind in COMPUTE_KINDS or int_downstream.get(r.name, False)
                    for o in n.outputs for r in o.outputs)
        int_downstream[n.name] = below
        d = an.decisions[n.name]
        if d.kind is None and not below and hw_up[n.name] and n.op in ("Mul", "Add", "Sub", "Div"):
            d.reason = "float head: dequantises the integer result after the last integer layer (host)"


# ------------------------------------------------------------------------------------------ grouping

def _node_graph(an: Analysis) -> nx.DiGraph:
    g = nx.DiGraph()
    for n in an.graph.nodes:
        g.add_node(n.name)
    for n in an.graph.nodes:
        for o in n.outputs:
            for r in o.outputs:
                g.add_edge(n.name, r.name)
    return g


def _quotient_is_dag(g: nx.DiGraph, group_of: dict[str, int]) -> bool:
    q = nx.DiGraph()
    for n in g.nodes:
        q.add_node(group_of.get(n, n))
    for a, b in g.edges:
        ga, gb = group_of.get(a, a), group_of.get(b, b)
        if ga != gb:
            q.add_edge(ga, gb)
    return nx.is_directed_acyclic_graph(q)


def _groups(an: Analysis, hw: set[str]) -> list[list[str]]:
    g = _node_graph(an)
    order = list(nx.topological_sort(g))
    h = {}
    for n in order:
        h[n] = max((h[p] + (0 if p in hw else 1) for p in g.predecessors(n)), default=0)
    u = nx.Graph()
    u.add_nodes_from(n for n in order if n in hw)
    for a, b in g.edges:
        if a in hw and b in hw and h[a] == h[b]:
            u.add_edge(a, b)
    comps = [set(c) for c in nx.connected_components(u)]
    group_of = {n: ("grp", i) for i, c in enumerate(comps) for n in c}
    # greedy merge of adjacent groups while the contraction stays acyclic
    changed = True
    while changed:
        changed = False
        pairs = sorted({(group_of[a], group_of[b]) for a, b in g.edges
                        if a in hw and b in hw and group_of[a] != group_of[b]})
        for ga, gb in pairs:
            trial = {n: (ga if k == gb else k) for n, k in group_of.items()}
            if _quotient_is_dag(g, trial):
                group_of = trial
                changed = True
                break
    pos = {n: i for i, n in enumerate(order)}
    groups: dict = {}
    for n in order:
        if n in hw:
            groups.setdefault(group_of[n], []).append(n)
    return sorted(groups.values(), key=lambda ns: pos[ns[0]])


def _check_orders(an: Analysis, group: list[str]) -> dict[str, str]:
    """Propagate stream orders through one partition; returns {node: reason} for nodes that cannot stream."""
    members = set(group)
    bad = {}
    for name in group:
        node = an.node(name)
        ins = []
        for t in _data_inputs(node):
            p = t.inputs[0].name if t.inputs else None
            if p in members and t.name in an.orders:
                ins.append(an.orders[t.name])
            else:
                ins.append(natural_order(an.shapes[t.name]))
        order, why = output_order(node, an.decisions[name].kind, ins)
        if order is None:
            bad[name] = why
            continue
        for o in node.outputs:
            if o is not None and o.name:
                an.orders[o.name] = order
    return bad


def plan(model: onnx.ModelProto) -> tuple[Analysis, list[list[str]]]:
    """Analyse and group: (analysis, partitions as lists of node names in topological order)."""
    an = analyse(model)
    for _ in range(100):
        hw = {n for n, d in an.decisions.items() if d.kind is not None}
        groups = _groups(an, hw)
        an.orders.clear()
        changed = False
        for grp in groups:
            kinds = {an.decisions[n].kind for n in grp}
            if not kinds & set(COMPUTE_KINDS):
                for n in grp:
                    d = an.decisions[n]
                    d.kind, d.reason = None, "layout-only op between host ops (nothing to stream)"
                changed = True
                continue
            for n, why in _check_orders(an, grp).items():
                d = an.decisions[n]
                d.kind, d.reason = None, f"{d.op}: {why}"
                changed = True
        if not changed:
            return an, groups
    raise QpassError("dataflow partitioning did not converge")


def explain(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(node, op, reason) for every node that stays on the host, in graph order (for ``qpass inspect --dataflow``)."""
    an, _ = plan(model)
    return [(d.node, d.op, d.reason) for d in an.decisions.values() if d.kind is None]


def describe(model: onnx.ModelProto) -> list[tuple[str, str, str, str]]:
    """(node, op, 'partition <i>' or 'host', reason / implementation) for every node."""
    an, groups = plan(model)
    where = {n: f"partition {i}" for i, g in enumerate(groups) for n in g}
    return [(d.node, d.op, where.get(d.node, "host"), d.reason) for d in an.decisions.values()]


# ----------------------------------------------------------------------------------- partitioned model

@dataclass
class PartitionedModel:
    """The parent model (host nodes + one partition node per dataflow partition) and the partition models,
    keyed by the relative file name the parent's partition nodes reference."""

    parent: onnx.ModelProto
    partitions: dict[str, onnx.ModelProto]
    decisions: list[Decision]
    groups: list[list[str]]
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    #: where the reference interpreter and ``inline_partitions`` find the partition models
    store: PartitionStore = field(default_factory=PartitionStore)

    @property
    def partition_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.parent.graph.node if n.op_type == PARTITION_OP and n.domain == PARTITION_DOMAIN]

    def host_nodes(self) -> list[tuple[str, str, str]]:
        return [(d.node, d.op, d.reason) for d in self.decisions if d.kind is None]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the parent to ``path`` and each partition next to it as ``<stem>.<partition file>``; the parent's
        ``model`` attributes are rewritten to those file names (relative to the parent's folder)."""
        from qpass.ir.model_io import save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = onnx.ModelProto()
        parent.CopyFrom(self.parent)
        renamed = {}
        for n in parent.graph.node:
            if n.op_type == PARTITION_OP and n.domain == PARTITION_DOMAIN:
                a = next(a for a in n.attribute if a.name == "model")
                rel = a.s.decode()
                new = f"{path.stem}.{rel}"
                save_model(self.partitions[rel], path.parent / new)
                a.s = new.encode()
                renamed[new] = self.partitions[rel]
        save_model(parent, path)
        self.store.add(renamed, path.parent)
        return path


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}


def _annotations_for(model: onnx.ModelProto, names: set[str]):
    return [a for a in model.graph.quantization_annotation if a.tensor_name in names]


def partition(model: onnx.ModelProto, prefix: str = "dataflow_partition") -> PartitionedModel:
    """Split a streamlined QONNX model into host nodes and dataflow partitions (see the module docstring).
    Models that the golden simulator and (after ``lower_partitions``) onnxruntime run end to end."""
    model = with_shapes(_ensure_names(model))
    an, groups = plan(model)
    g = model.graph
    protos = {n.name: n for n in g.node}
    inits = {i.name: i for i in g.initializer}
    vis = _value_infos(model)
    graph_outputs = [o.name for o in g.output]
    produced_by = {o: n.name for n in g.node for o in n.output if o}
    readers: dict[str, list[str]] = {}
    for n in g.node:
        for i in n.input:
            if i:
                readers.setdefault(i, []).append(n.name)
    group_of = {n: i for i, grp in enumerate(groups) for n in grp}
    parts: dict[str, onnx.ModelProto] = {}
    part_nodes: dict[int, onnx.NodeProto] = {}
    for i, grp in enumerate(groups):
        members = set(grp)
        nodes = [protos[n] for n in grp]
        ins, outs, used_inits, internal = [], [], [], set()
        for n in nodes:
            for t in n.input:
                if not t:
                    continue
                if t in inits:
                    if t not in used_inits:
                        used_inits.append(t)
                elif produced_by.get(t) not in members and t not in ins:
                    ins.append(t)
            for t in n.output:
                if not t:
                    continue
                internal.add(t)
                if t in graph_outputs or any(r not in members for r in readers.get(t, [])):
                    outs.append(t)
        rel = f"{prefix}_{i}.onnx"
        sub = helper.make_graph(
            [_copy_node(n) for n in nodes], f"{g.name or 'graph'}_{prefix}_{i}",
            [_vi(vis, t) for t in ins], [_vi(vis, t) for t in outs],
            [inits[t] for t in used_inits],
            value_info=[vis[t] for t in sorted(internal - set(outs)) if t in vis])
        pm = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                               producer_name="qpass")
        pm.graph.quantization_annotation.extend(_annotations_for(model, internal | set(ins)))
        rng = {t: [int(an.ranges[t][0]), int(an.ranges[t][1])] for t in ins if an.ranges.get(t) is not None}
        pm.metadata_props.add(key=RANGES_KEY, value=json.dumps(rng, sort_keys=True))
        parts[rel] = pm
        node = helper.make_node(PARTITION_OP, ins, outs, name=f"{prefix}_{i}", domain=PARTITION_DOMAIN,
                                model=rel, model_sha256=_sha(pm), partition_id=i)
        part_nodes[i] = node
    # parent graph: host nodes and partition nodes, topologically sorted
    new_nodes, placed = [], set()
    for n in g.node:
        if n.name in group_of:
            k = group_of[n.name]
            if k not in placed:
                placed.add(k)
                new_nodes.append(part_nodes[k])
        else:
            new_nodes.append(_copy_node(n))
    new_nodes = topo_order(new_nodes)
    live = {t for n in new_nodes for t in list(n.input) + list(n.output) if t}
    parent_graph = helper.make_graph(
        new_nodes, g.name, list(g.input), list(g.output),
        [inits[t] for t in inits if t in live],
        value_info=[v for v in g.value_info if v.name in live])
    parent = helper.make_model(parent_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                               producer_name=model.producer_name or "qpass")
    if groups and not any(o.domain == PARTITION_DOMAIN for o in parent.opset_import):
        parent.opset_import.append(helper.make_opsetid(PARTITION_DOMAIN, 1))
    parent.graph.quantization_annotation.extend(_annotations_for(model, live))
    parent.metadata_props.extend(model.metadata_props)
    return PartitionedModel(parent, parts, list(an.decisions.values()), groups, dict(an.orders),
                            PartitionStore(parts))


def _copy_node(n: onnx.NodeProto) -> onnx.NodeProto:
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def _vi(vis: dict, name: str) -> onnx.ValueInfoProto:
    if name in vis:
        return vis[name]
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def load_partitioned(path: str | os.PathLike) -> PartitionedModel:
    """Read a parent model saved by ``PartitionedModel.save`` together with its partition files."""
    from qpass.ir.model_io import parse_model

    path = Path(path)
    parent = onnx.load(str(path))
    parts = {}
    for n in parent.graph.node:
        if n.op_type == PARTITION_OP and n.domain == PARTITION_DOMAIN:
            rel, _ = partition_ref(n)
            parts[rel] = parse_model(path.parent / rel)
    return PartitionedModel(parent, parts, [], [], store=PartitionStore(parts, path.parent))


def inline_partitions(model: onnx.ModelProto | PartitionedModel, base_dir: str | os.PathLike | None = None) \
        -> onnx.ModelProto:
    """The parent with every partition node replaced by the partition's own nodes (the streamlined graph).
    Partition models come from the PartitionedModel's store, else from files relative to ``base_dir``."""
    store = PartitionStore(base_dir=base_dir)
    if isinstance(model, PartitionedModel):
        store = model.store
        model = model.parent
    g = model.graph
    nodes, inits, vis = [], {i.name: i for i in g.initializer}, {v.name: v for v in g.value_info}
    anns = {a.tensor_name: a for a in g.quantization_annotation}
    for n in g.node:
        if n.op_type == PARTITION_OP and n.domain == PARTITION_DOMAIN:
            sub = store.resolve(*partition_ref(n))
            nodes.extend(_copy_node(x) for x in sub.graph.node)
            for i in sub.graph.initializer:
                inits.setdefault(i.name, i)
            for v in sub.graph.value_info:
                vis.setdefault(v.name, v)
            for a in sub.graph.quantization_annotation:
                anns.setdefault(a.tensor_name, a)
        else:
            nodes.append(_copy_node(n))
    nodes = topo_order(nodes)
    out_graph = helper.make_graph(nodes, g.name, list(g.input), list(g.output), list(inits.values()),
                                  value_info=list(vis.values()))
    opsets = [o for o in model.opset_import if o.domain != PARTITION_DOMAIN]
    out = helper.make_model(out_graph, opset_imports=opsets, ir_version=model.ir_version,
                            producer_name=model.producer_name)
    out.graph.quantization_annotation.extend(anns.values())
    return out


def lower_partitions(model: onnx.ModelProto | PartitionedModel, base_dir: str | os.PathLike | None = None) \
        -> onnx.ModelProto:
    """Inline the partitions back and lower the QONNX ops with the ``lower_ort`` pass: a model plain
    onnxruntime runs end to end."""
    from qpass.pipeline.run import run_passes

    return run_passes(inline_partitions(model, base_dir), ["lower_ort"], snapshots=False).model
