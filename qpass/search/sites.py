"""Quantisation sites the bitwidth search assigns widths to, found exactly where the fakequant pass puts them.

* a **weight** site per Conv / ConvTranspose / Gemm / MatMul whose weight is a float constant (fakequant's rule);
* an **activation** site per tensor that fakequant quantises (``activation_targets``: the inputs of compute ops,
  looked up through order-only ops; with intrinsic placement also the outputs of non-linear ops);
* an **accumulator** per linear layer (intrinsic placement only), whose width follows from its weights and input.

A site's candidate format is a spec template with ``{W}`` (``"sym:{W}"``, ``"uint{W}"``, ``"dfp:{W}"``); the scale or
fraction length of a width is chosen by the same code fakequant calls: the format's ``for_weight`` / ``quantize`` on
the weight itself (per output channel by default) and its ``quant_params`` on the activation's calibrated range.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import QpassError
from ..formats import Granularity, IntGrid, parse_format
from qpass.ir.graph import shapes as tensor_shapes
from qpass.ir.graph import to_gs
from ..passes.fakequant import LINEAR_OPS, TRANSPARENT_OPS, activation_targets, weight_axes
from .options import format_spec


@dataclass
class Site:
    key: str  # "w:<node>" | "a:<tensor>"
    kind: str  # "weight" | "activation"
    node: str  # the linear node (weight) / the compute node that decides the quantiser (activation)
    tensor: str  # weight initializer / activation tensor
    op: str  # op type of ``node``
    size: int  # parameters (weight) / elements per sample (activation)
    order: int  # graph order
    macs: int = 0  # weight sites: multiply-accumulates per sample
    channels: int = 1  # weight sites: number of scales (output channels for per-channel granularity)
    value: np.ndarray | None = None  # weight sites: the float weight
    attrs: dict = field(default_factory=dict)  # weight sites: node attributes that fix the weight layout
    range: tuple[float, float] | None = None  # activation sites: calibrated (lo, hi)
    graph_input: bool = False  # activation sites: a graph input (quantised for all readers)
    input_site: str | None = None  # weight sites: the activation site feeding the layer's data input
    bias: np.ndarray | None = None  # weight sites: the float bias (accumulator bounds)
    layer_shape: dict = field(default_factory=dict)  # weight sites: mw, mh, num_vectors (dataflow estimate)
    axes: tuple[int, int] = (0, 1)  # weight sites: (output-channel axis, reduction axis) of the weight

    @property
    def short(self) -> str:
        return self.node if self.kind == "weight" else self.tensor


def glob_escape(name: str) -> str:
    """A glob matching exactly ``name`` (fnmatch has no escape function)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def quantize_weight(site: Site, template: str, W: int, granularity: str | None):
    """(dequantised float32 values, QuantResult, format) of a weight at width W, exactly as fakequant quantises it."""
    fmt = parse_format(format_spec(template, W)).for_weight(granularity, *site.axes)
    res = fmt.quantize(site.value.astype(np.float64), "ROUND", "saturate")
    return np.asarray(res.values, np.float32), res, fmt


def activation_grid(template: str, W: int, lo: float, hi: float) -> IntGrid:
    """The grid of an activation quantiser at width W for the range [lo, hi], as fakequant picks it."""
    fmt = parse_format(format_spec(template, W))
    grid = fmt.quant_params(lo, hi)
    if grid is None or fmt.word_width is None:
        raise QpassError(f"bitwidth: activation format {fmt.name} is not supported by the search")
    return grid


def _per_sample(shape) -> list[int] | None:
    if shape is None:
        return None
    return [d if isinstance(d, int) and d > 0 else 1 for d in shape]


def _macs_and_layout(node, w: np.ndarray, in_shape, out_shape) -> tuple[int, dict]:
    """MACs per sample and the (mw, mh, num_vectors) matrix-vector view of a linear layer."""
    out, inp = _per_sample(out_shape), _per_sample(in_shape)
    op = node.op
    if op in ("Conv", "ConvTranspose"):
        group = int(node.attrs.get("group", 1))
        k = int(np.prod(w.shape[2:]))
        if op == "Conv":  # every output pixel: Cout x (Cin/g x K)
            pixels = int(np.prod(out[2:])) if out else 1
            mw, mh = int(np.prod(w.shape[1:])), int(w.shape[0])
        else:  # every input pixel scatters Cin x (Cout/g x K)
            pixels = int(np.prod(inp[2:])) if inp else 1
            mw, mh = int(w.shape[0]) // max(group, 1) * k, int(w.shape[1]) * group
        return pixels * int(w.size), {"mw": mw, "mh": mh, "num_vectors": max(1, pixels), "group": group}
    if op == "Gemm":
        tb = int(node.attrs.get("transB", 0))
        k, n = (int(w.shape[1]), int(w.shape[0])) if tb else (int(w.shape[0]), int(w.shape[1]))
        rows = out[0] if out else 1
        return rows * n * k, {"mw": k, "mh": n, "num_vectors": max(1, rows)}
    k, n = int(w.shape[-2]), int(w.shape[-1])  # MatMul with a constant (..., K, N) weight
    rows = int(np.prod(out[:-1])) if out else 1
    return rows * n * k, {"mw": k, "mh": n, "num_vectors": max(1, rows)}


def _matches(patterns, *names) -> bool:
    return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names if n)


def find_sites(model: onnx.ModelProto, observers: dict, calibrator: str = "minmax", placement: str = "extrinsic",
               weight_granularity: str = "channel", exclude=()) -> tuple[list[Site], list[Site], list[str]]:
    """(searched sites in graph order, excluded sites, notes) of a normalised, calibrated model."""
    graph = to_gs(model)
    graph.toposort()
    shp = tensor_shapes(model)
    notes: list[str] = []
    sites: list[Site] = []
    excluded: list[Site] = []
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    outputs = {t.name for t in graph.outputs}
    act_of: dict[str, str] = {}
    for t, node in activation_targets(graph, placement):
        obs = observers.get(t.name)
        rng = None
        if obs is not None:
            ob = obs.get(calibrator) if isinstance(obs, dict) else obs
            if ob is None:
                raise QpassError(f"bitwidth: calibrator {calibrator!r} was not run for tensor {t.name!r}: add it to "
                                 f"the calibrate pass (calibrate: {{method: [{calibrator}]}})")
            rng = tuple(float(v) for v in ob.range())
        if rng is None:
            notes.append(f"activation {t.name!r} has no calibrated range: left to fakequant's defaults")
            continue
        size = int(np.prod(_per_sample(shp.get(t.name)) or [1]))
        s = Site(f"a:{t.name}", "activation", node.name, t.name, node.op, size, order.get(node.name, 0),
                 range=rng, graph_input=not t.inputs)
        act_of[t.name] = s.key
        (excluded if _matches(exclude, t.name, node.name) else sites).append(s)

    def input_site(node) -> str | None:
        t = node.inputs[0]
        for _ in range(64):
            if t.name in act_of:
                return act_of[t.name]
            if not t.inputs or t.inputs[0].op not in TRANSPARENT_OPS:
                return None
            t = t.inputs[0].inputs[0]
        return None

    for node in graph.nodes:
        if node.op not in LINEAR_OPS or len(node.inputs) < 2 or not isinstance(node.inputs[1], gs.Constant):
            continue
        w = np.asarray(node.inputs[1].values)
        if w.dtype.kind != "f":
            continue
        attrs = {k: v for k, v in node.attrs.items() if k in ("transB", "transA", "group")}
        macs, layout = _macs_and_layout(node, w, shp.get(node.inputs[0].name), shp.get(node.outputs[0].name))
        axes = weight_axes(node.op, attrs, w.ndim)
        channels = int(np.prod(Granularity.for_weight(weight_granularity, *axes).param_shape(w.shape)))
        bias = None
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            bias = np.asarray(node.inputs[2].values, np.float64)
        s = Site(f"w:{node.name}", "weight", node.name, node.inputs[1].name, node.op, int(w.size),
                 order.get(node.name, 0), macs=int(macs), channels=channels, value=w.astype(np.float32),
                 attrs=attrs, input_site=input_site(node), bias=bias, layer_shape=layout, axes=axes)
        s.layer_shape["feeds_output"] = node.outputs[0].name in outputs
        (excluded if _matches(exclude, node.name, node.inputs[1].name) else sites).append(s)
    sites.sort(key=lambda s: (s.order, s.kind != "activation", s.key))
    return sites, excluded, notes
