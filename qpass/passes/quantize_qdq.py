"""QDQ insertion for ONNX Runtime: QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels.

- weights of Conv, ConvTranspose, Gemm, MatMul: int8, symmetric max-abs, per output channel, narrow range;
- activations: uint8 (default) or int8 affine from the calibrated range, one parameter set per tensor (with uint8
  weights onnxruntime rewrites int8 activations to uint8 itself, and skips the rewrite -- leaving the layer in
  float -- where one QuantizeLinear feeds several readers, e.g. a residual fork; uint8 avoids that);
- biases: int32 with scale s_in * s_w (Jacob et al. 2018), zero point 0;
- Relu and Clip(0, m) right after a quantised producer are removed: quantising their output range with the zero
  point at the bottom of the integer range saturates exactly where they would clip;
- layout ops and MaxPool reuse their input's parameters, so onnxruntime runs them on integers.

Weight encoding. The weight values are symmetric int8 in [-127, 127]. By default (``weight_encoding:
uint8_offset``) they are stored as uint8 with zero point 128 -- the same grid, the same numbers -- because
onnxruntime's x86 AVX2 kernels for int8 weights add pairs of products in int16 with saturation: measured on a
3x3 Conv with 32 input channels, 43-85% of outputs were off by up to 22 quantisation steps, while uint8-stored
weights matched the exact integer result. ``weight_encoding: int8`` stores plain int8 (exact on VNNI and ARM
CPUs); ``reduce_range: true`` limits weights to [-64, 64] instead, as onnxruntime's quantizer does.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import PipelineError
from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, to_gs
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.ops.common import refuse_if_quantized
from qpass.formats.qdq_params import AffineParams, INT_RANGES, activation_params, quantize, symmetric_weight_params

WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")  # weights W, R quantised; the recurrence itself runs in float
ACTIVATION_OPS = ("Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "Relu", "Clip")
LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
SHARED_PARAM_OPS = ("MaxPool",) + LAYOUT_OPS
FUSABLE_PRODUCERS = WEIGHT_OPS + ("Add",)
FLOAT_DTYPES = (np.float32, np.float16, np.float64)


@dataclass
class QuantizeQDQOptions:
    activation_dtype: str = "uint8"
    weight_dtype: str = "int8"
    per_channel: bool = True
    weight_encoding: str = "uint8_offset"
    reduce_range: bool = False
    symmetric_activations: bool = False
    op_types: list = field(default_factory=lambda: list(WEIGHT_OPS + ACTIVATION_OPS + LAYOUT_OPS + RECURRENT_OPS))
    exclude: list = field(default_factory=list)  # node-name glob patterns left in float
    fuse_relu: bool = True
    # activations whose calibrated range reaches this stay float: attention masks (-1e4, -3.4e38) and sentinels
    # would otherwise take every int8 step away from the real values
    max_range: float = 1e4

    def __post_init__(self):
        if self.activation_dtype not in ("int8", "uint8", "int16", "uint16"):
            raise ValueError(f"activation_dtype must be int8, uint8, int16 or uint16, not {self.activation_dtype!r}")
        if self.weight_dtype not in ("int8",):
            raise ValueError("weight_dtype must be int8 (other widths: see the fake-quant passes)")
        if self.weight_encoding not in ("uint8_offset", "int8"):
            raise ValueError("weight_encoding must be uint8_offset or int8")


@dataclass
class QuantPlan:
    """Which nodes get integer kernels, which tensors get QDQ pairs, and why other nodes stay float."""

    nodes: list[str] = field(default_factory=list)
    fused_activations: list[str] = field(default_factory=list)
    float_reasons: dict[str, str] = field(default_factory=dict)


def _is_const(t) -> bool:
    return isinstance(t, gs.Constant)


def _is_float(t) -> bool:
    dt = getattr(t, "dtype", None)
    if dt is None:
        return True  # unknown: assume float; calibration decides (no range -> not quantised)
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dt) if isinstance(dt, int) else dt) in map(np.dtype, FLOAT_DTYPES)
    except TypeError:
        return False


def _weight_axis(node: gs.Node, w: np.ndarray, per_channel: bool) -> int | None:
    if not per_channel:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if int(node.attrs.get("group", 1)) == 1 else None
    if node.op == "Gemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    if node.op == "MatMul":
        return 1 if w.ndim == 2 else None
    return None


def _clip_bounds(node: gs.Node):
    """(min, max) of a Clip node (None where unbounded), or ("dynamic", None) for run-time bounds."""
    bounds = []
    for idx, key in ((1, "min"), (2, "max")):
        t = node.inputs[idx] if len(node.inputs) > idx else None
        if t is not None and t.name:
            if not _is_const(t):
                return "dynamic", None
            bounds.append(float(np.asarray(t.values)))
        else:
            bounds.append(float(node.attrs[key]) if key in node.attrs else None)
    return tuple(bounds)


def plan_quantization(graph: gs.Graph, opts: QuantizeQDQOptions) -> QuantPlan:
    plan = QuantPlan()
    op_types = set(opts.op_types)
    for node in graph.nodes:
        reason = _float_reason(node, op_types, opts)
        if reason:
            plan.float_reasons[node.name] = reason
        else:
            plan.nodes.append(node.name)
    quantized = set(plan.nodes)
    if opts.fuse_relu:
        for node in graph.nodes:
            if node.op not in ("Relu", "Clip") or node.name not in quantized:
                continue
            x = node.inputs[0]
            if len(x.inputs) != 1 or len(x.outputs) != 1 or x in graph.outputs:
                continue
            prod = x.inputs[0]
            if prod.op not in FUSABLE_PRODUCERS or prod.name not in quantized:
                continue
            if node.op == "Clip":
                lo, _ = _clip_bounds(node)
                if lo != 0.0:
                    continue
            plan.fused_activations.append(node.name)
    return plan


def _float_reason(node: gs.Node, op_types: set, opts: QuantizeQDQOptions) -> str | None:
    if any(fnmatch.fnmatchcase(node.name, pat) for pat in opts.exclude):
        return "excluded by name pattern"
    if node.op not in op_types or node.domain not in ("", "ai.onnx", None):
        return f"{node.op} has no integer kernel in onnxruntime's QDQ path"
    if node.op in RECURRENT_OPS:
        if len(node.inputs) < 3 or not (_is_const(node.inputs[1]) and _is_const(node.inputs[2])):
            return f"{node.op} weights are not constants"
        return None
    if node.op in WEIGHT_OPS:
        if len(node.inputs) < 2 or not all(_is_float(t) for t in node.inputs[:2]):
            return "non-float inputs"
        if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
            return "Gemm with transA=1"
        if node.op == "Gemm" and (float(node.attrs.get("alpha", 1.0)) != 1 or float(node.attrs.get("beta", 1.0)) != 1):
            return "Gemm with alpha/beta != 1 on non-constant operands"
        if node.op in ("Conv", "ConvTranspose", "Gemm") and not _is_const(node.inputs[1]):
            return f"{node.op} weight is not a constant"
    if node.op == "Clip":
        lo, _ = _clip_bounds(node)
        if lo == "dynamic":
            return "Clip with run-time bounds"
    if not any(_is_float(t) and not _is_const(t) for t in node.inputs if t is not None and t.name):
        return "no float activation input"
    return None


@dataclass
class _Ctx:
    b: GraphBuilder
    ranges: dict
    opts: QuantizeQDQOptions
    params: dict = field(default_factory=dict)  # tensor name -> AffineParams
    shared_from: dict = field(default_factory=dict)  # tensor name -> tensor name whose params it reuses
    missing_range: list = field(default_factory=list)
    huge_range: dict = field(default_factory=dict)

    @property
    def graph(self) -> gs.Graph:
        return self.b.graph


def _act_params(qc: _Ctx, t: gs.Tensor) -> AffineParams | None:
    if t.name in qc.params:
        return qc.params[t.name]
    if t.name in qc.shared_from and qc.shared_from[t.name] in qc.params:
        p = qc.params[qc.shared_from[t.name]]
    elif _is_const(t):
        v = np.asarray(t.values, dtype=np.float64)
        p = activation_params(v.min() if v.size else 0, v.max() if v.size else 0, qc.opts.activation_dtype,
                              qc.opts.symmetric_activations)
    elif t.name in qc.ranges:
        lo, hi = qc.ranges[t.name]
        if max(abs(lo), abs(hi)) >= qc.opts.max_range:
            qc.huge_range[t.name] = max(abs(lo), abs(hi))
            return None
        p = activation_params(lo, hi, qc.opts.activation_dtype, qc.opts.symmetric_activations)
    else:
        qc.missing_range.append(t.name)
        return None
    qc.params[t.name] = p
    return p


def _insert_qdq(qc: _Ctx, t: gs.Variable, p: AffineParams) -> None:
    """Route every reader of ``t`` through QuantizeLinear -> DequantizeLinear (graph I/O names are preserved).

    Each reading node gets its own DequantizeLinear: onnxruntime fuses a DQ -> op -> Q group into an integer kernel
    only when the DQ feeds that op alone.
    """
    g = qc.graph
    scale = qc.b.const(p.scale, None, name=t.name + "_scale")
    zp = qc.b.const(p.zero_point, None, name=t.name + "_zero_point")
    q_out = qc.b.var(t.name + "_quantized", dtype=np.dtype(INT_RANGES[p.dtype][2]), shape=t.shape)
    readers = []
    for r in t.outputs:
        if r not in readers:
            readers.append(r)

    def dequantize_to(out: gs.Variable) -> None:
        qc.b.node("DequantizeLinear", [q_out, scale, zp], [out], name=t.name + "_DequantizeLinear")

    if t.inputs:  # produced inside the graph: rename the producer's output, ``t`` becomes the first DQ output
        pre = qc.b.var(t.name + "_float", dtype=t.dtype, shape=t.shape)
        prod = t.inputs[0]
        prod.outputs[prod.outputs.index(t)] = pre
        qc.b.node("QuantizeLinear", [pre, scale, zp], [q_out], name=t.name + "_QuantizeLinear")
        dequantize_to(t)
        keep_first = 0 if t in g.outputs else 1
        rewire = readers[keep_first:]
    else:  # a graph input: every reader switches to a DQ output
        qc.b.node("QuantizeLinear", [t, scale, zp], [q_out], name=t.name + "_QuantizeLinear")
        rewire = readers
    for r in rewire:
        dq = qc.b.var(t.name + "_dequantized", dtype=t.dtype, shape=t.shape)
        dequantize_to(dq)
        for i, inp in enumerate(r.inputs):
            if inp is t:
                r.inputs[i] = dq


def _quantize_const(qc: _Ctx, node: gs.Node, idx: int, q: np.ndarray, p: AffineParams) -> None:
    """Replace a constant input by an integer initializer followed by DequantizeLinear."""
    t = node.inputs[idx]
    qt = qc.b.const(q, None, name=t.name + "_quantized")
    scale = qc.b.const(p.scale, None, name=t.name + "_scale")
    zp = qc.b.const(p.zero_point, None, name=t.name + "_zero_point")
    out = qc.b.var(t.name + "_dequantized", shape=list(q.shape))
    attrs = {"axis": p.axis} if p.axis is not None and np.ndim(p.scale) == 1 else {}
    qc.b.node("DequantizeLinear", [qt, scale, zp], [out], attrs, name=t.name + "_DequantizeLinear")
    node.inputs[idx] = out


def _quantize_weights(qc: _Ctx, node: gs.Node, in_params: AffineParams | None) -> None:
    w_t = node.inputs[1]
    if not _is_const(w_t):
        return
    w = np.asarray(w_t.values)
    if w.dtype not in map(np.dtype, FLOAT_DTYPES):
        return
    qmax = 64 if qc.opts.reduce_range else 127
    p = symmetric_weight_params(w, _weight_axis(node, w, qc.opts.per_channel), qmax)
    q = quantize(w, p, -qmax, qmax)
    if qc.opts.weight_encoding == "uint8_offset":
        q = (q.astype(np.int16) + 128).astype(np.uint8)
        p = AffineParams(p.scale, np.full(np.shape(p.scale), 128, np.uint8), "uint8", p.axis)
    _quantize_const(qc, node, 1, q, p)
    qc.params[node.inputs[1].name] = p
    # bias: int32 with scale s_in * s_w
    if node.op in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) > 2 and _is_const(node.inputs[2]) \
            and in_params is not None and np.ndim(in_params.scale) == 0:
        b = np.asarray(node.inputs[2].values, dtype=np.float64)
        channels = w.shape[1 if node.op == "ConvTranspose" else 0] if node.op != "Gemm" else \
            (w.shape[0] if int(node.attrs.get("transB", 0)) else w.shape[1])
        if node.op == "ConvTranspose":
            channels *= int(node.attrs.get("group", 1))
        if b.ndim != 1 or b.shape[0] != channels:
            return
        s_w = np.broadcast_to(p.scale, (channels,)).astype(np.float32)
        s_b = (np.float32(in_params.scale) * s_w).astype(np.float32)
        if np.any(s_b == 0):
            return
        qb = np.clip(np.round(b / s_b.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        bp = AffineParams(s_b, np.zeros(channels, np.int32), "int32", 0)
        _quantize_const(qc, node, 2, qb, bp)


def _fuse_activation(graph: gs.Graph, act: gs.Node) -> None:
    """Drop a Relu/Clip whose clipping the output quantiser performs: its producer writes its output directly."""
    x = act.inputs[0]
    y = act.outputs[0]
    prod = x.inputs[0]
    prod.outputs[prod.outputs.index(x)] = y
    act.inputs.clear()
    act.outputs.clear()


def quantize_graph(graph: gs.Graph, ranges: dict, opts: QuantizeQDQOptions):
    plan = plan_quantization(graph, opts)
    qc = _Ctx(GraphBuilder(graph), ranges, opts)
    by_name = {n.name: n for n in graph.nodes}
    for name in plan.fused_activations:
        act = by_name[name]
        y = act.outputs[0]
        lo, hi = ranges.get(y.name, (None, None))
        if lo is None:
            continue
        if act.op == "Clip":
            _, cmax = _clip_bounds(act)
            hi = hi if cmax is None else min(hi, cmax)
        # the output range starts at 0, so the zero point sits at qmin and quantisation clips like the op
        qc.params[y.name] = activation_params(0.0, max(hi, 0.0), opts.activation_dtype, False)
        _fuse_activation(graph, act)
    quantized = [by_name[n] for n in plan.nodes if n not in plan.fused_activations]
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    # tensors to quantise, in graph order
    targets: list[gs.Tensor] = []
    seen: set[str] = set()

    def want(t):
        if t is not None and t.name and t.name not in seen and _is_float(t) and not _is_const(t):
            seen.add(t.name)
            targets.append(t)

    qset = {n.name for n in quantized}
    for node in graph.nodes:
        if node.name not in qset:
            continue
        if node.op in RECURRENT_OPS:
            continue  # weights only (below)
        if node.op in LAYOUT_OPS:
            # integer passthrough only between quantised tensors; otherwise it simply stays float
            if node.inputs[0].name not in seen:
                plan.float_reasons[node.name] = "input is not quantized"
                continue
        elif node.op in WEIGHT_OPS:
            want(node.inputs[0])
            if node.op == "MatMul" and not _is_const(node.inputs[1]):
                want(node.inputs[1])
        else:
            for t in node.inputs:
                want(t)
        if node.op in SHARED_PARAM_OPS and not _is_const(node.inputs[0]):
            qc.shared_from[node.outputs[0].name] = node.inputs[0].name
        want(node.outputs[0])
    for t in targets:
        _act_params(qc, t)
    # weights and biases (need the input's activation parameters for the bias scale)
    for node in quantized:
        if node.op in RECURRENT_OPS:
            for idx in (1, 2):  # W and R: [directions, gates * hidden, size], one scale per gate row
                w = np.asarray(node.inputs[idx].values)
                p = symmetric_weight_params(w, 1 if qc.opts.per_channel else None, 127)
                _quantize_const(qc, node, idx, quantize(w, p, -127, 127), p)
        elif node.op in WEIGHT_OPS:
            _quantize_weights(qc, node, qc.params.get(node.inputs[0].name))
        elif node.op in ("Add", "Mul", "Concat"):
            for i, t in enumerate(node.inputs):
                if _is_const(t) and _is_float(t):
                    p = _act_params(qc, t)
                    _quantize_const(qc, node, i, quantize(np.asarray(t.values), p), p)
    for t in targets:
        p = qc.params.get(t.name)
        if p is not None:
            _insert_qdq(qc, t, p)
    for name in plan.nodes:
        node = by_name[name]
        if name in plan.fused_activations:
            continue
        huge = [t.name for t in list(node.inputs) + list(node.outputs) if t is not None and t.name in qc.huge_range]
        if huge:
            plan.float_reasons[name] = (f"an input or output reaches |x| = {qc.huge_range[huge[0]]:.3g} "
                                        "(a mask or sentinel value int8 cannot share with real values)")
        elif any(t.name in qc.missing_range for t in list(node.inputs) + list(node.outputs) if t is not None):
            plan.float_reasons[name] = "no calibrated range for an input or output (not reached by calibration)"
    return plan, qc


class QuantizeQDQ(Pass):
    name = "quantize_qdq"
    requires = (Calibration,)
    Options = QuantizeQDQOptions

    def run(self, model, ctx):
        from qpass.ir.graph import main_opset

        refuse_if_quantized(model, "quantize_qdq")
        if main_opset(model) < 13:
            raise PipelineError("quantize_qdq needs opset >= 13 (run 'normalize' first)")
        graph = to_gs(model)
        plan, qc = quantize_graph(graph, ctx.analyses.get(Calibration, model).ranges, self.opts)
        out = from_gs(graph, model)
        quantized = [n for n in plan.nodes if n not in plan.float_reasons and n not in plan.fused_activations]
        ctx.report.results["quantization"] = {
            "quantized_nodes": quantized,
            "fused_activations": list(plan.fused_activations),
            "float_nodes": dict(plan.float_reasons),
            "tensor_params": {k: v.as_dict() for k, v in qc.params.items()},
        }
        notes = [f"{len(quantized)} nodes quantized ({len(plan.fused_activations)} activations fused), "
                 f"{sum(1 for n in out.graph.node if n.op_type not in ('QuantizeLinear', 'DequantizeLinear'))} "
                 f"compute nodes in the result"]
        return PassResult(out, True, notes)
