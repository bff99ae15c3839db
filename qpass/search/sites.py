"""Quantisation sites the bitwidth search assigns widths to, found exactly where the fakequant pass puts them.

* a **weight** site per Conv / ConvTranspose / Gemm / MatMul whose weight is a float constant (fakequant's rule);
* an **activation** site per tensor that fakequant quantises (``activation_targets``: the inputs of compute ops,
  looked up through order-only ops; with intrinsic placement also the outputs of non-linear ops);
* an **accumulator** per linear layer (intrinsic placement only), whose width follows from its weights and input.

A site's candidate format is a spec template with ``{W}`` (``"sym:{W}"``, ``"uint{W}"``, ``"dfp:{W}"``); the scale or
fraction length of a width is chosen the way fakequant chooses it: from the weight itself (per output channel by
default) or from the activation's calibrated range (the calibrator's observer).
"""
from __future__ import annotations

import fnmatch
import types
from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import QpassError
from ..formats import parse_format
from ..formats.affine import Affine
from qpass.formats.fixed import DynamicFixedPoint, FixedPoint
from qpass.formats.rounding import int_bounds
from qpass.ir.graph import shapes as tensor_shapes
from qpass.ir.graph import to_gs
from ..passes.fakequant import LINEAR_OPS, TRANSPARENT_OPS, _with_granularity, activation_targets
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

    @property
    def short(self) -> str:
        return self.node if self.kind == "weight" else self.tensor


def glob_escape(name: str) -> str:
    """A glob matching exactly ``name`` (fnmatch has no escape function)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _gs_like(op: str, attrs: dict):
    return types.SimpleNamespace(op=op, attrs=attrs, name="")


def quantize_weight(site: Site, template: str, W: int, granularity: str | None):
    """(dequantised float32 values, QuantResult) of a weight at width W, exactly as fakequant quantises it."""
    fmt = parse_format(format_spec(template, W))
    fmt = _with_granularity(fmt, granularity, _gs_like(site.op, site.attrs), site.value.ndim)
    res = fmt.quantize(site.value.astype(np.float64), "ROUND", "saturate")
    return np.asarray(res.values, np.float32), res, fmt


def activation_params(template: str, W: int, lo: float, hi: float):
    """(scale, zero point, qmin, qmax, signed, F or None) of an activation quantiser, as fakequant picks them."""
    fmt = parse_format(format_spec(template, W))
    if isinstance(fmt, FixedPoint):
        qmin, qmax = int_bounds(fmt.W, fmt.signed)
        return float(np.float32(2.0 ** -fmt.F)), 0, qmin, qmax, fmt.signed, fmt.F
    if isinstance(fmt, DynamicFixedPoint):
        signed = fmt.signed and not lo >= 0
        if signed != fmt.signed:
            fmt = DynamicFixedPoint(fmt.W, signed, fmt.max_overflow_rate, fmt.granularity, fmt.min_fraction,
                                    fmt.max_fraction)
        F = int(np.asarray(fmt.choose_fraction(np.array([lo, hi], np.float64))).reshape(-1)[0])
        qmin, qmax = int_bounds(fmt.W, signed)
        return float(np.float32(2.0 ** -F)), 0, qmin, qmax, signed, F
    if isinstance(fmt, Affine):
        s, z = fmt.params(None) if fmt.scale is not None else fmt.params_from_range(lo, hi)
        s = float(np.asarray(s, np.float32).reshape(-1)[0])
        z = int(np.asarray(z).reshape(-1)[0])
        F = None
        m, e = np.frexp(s)
        if m == 0.5:
            F = int(1 - e)
        return s, z, fmt.qmin, fmt.qmax, fmt.signed, F
    raise QpassError(f"bitwidth: activation format {fmt.name} is not supported by the search")


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
    import onnx_graphsurgeon as gs

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
        fmt = _with_granularity(parse_format("sym:8"), weight_granularity, _gs_like(node.op, attrs), w.ndim)
        channels = int(np.prod(fmt.granularity.param_shape(w.shape))) if hasattr(fmt, "granularity") else 1
        bias = None
        if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant):
            bias = np.asarray(node.inputs[2].values, np.float64)
        s = Site(f"w:{node.name}", "weight", node.name, node.inputs[1].name, node.op, int(w.size),
                 order.get(node.name, 0), macs=int(macs), channels=channels, value=w.astype(np.float32),
                 attrs=attrs, input_site=input_site(node), bias=bias, layer_shape=layout)
        s.layer_shape["feeds_output"] = node.outputs[0].name in outputs
        (excluded if _matches(exclude, node.name, node.inputs[1].name) else sites).append(s)
    sites.sort(key=lambda s: (s.order, s.kind != "activation", s.key))
    return sites, excluded, notes
