"""The quantize_dynamic pass (``qpass optimize --mode dynamic``): MatMul and Gemm on integers with activation ranges
measured at run time, as onnxruntime's ``quantize_dynamic`` writes them.

Every float input of a MatMul / Gemm goes through ``DynamicQuantizeLinear`` (uint8, its own min/max per call);
constant weights become int8, symmetric max-abs per output column (narrow range, zero point 0); then
``MatMulInteger -> Cast(float) -> Mul(x_scale * w_scale) [-> Add(bias)]``, which onnxruntime fuses into
``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat``. A MatMul of two activations (attention's Q.K^T and P.V)
quantizes both. No calibration: ranges follow each input, so outlier tokens and activations whose range moves
from sample to sample cost nothing. LayerNorm, Softmax and GELU stay float: onnxruntime has no integer kernel for
them outside its own fused Attention, so attention blocks are as integer as onnxruntime allows (every matrix
product). Gemm with transA or alpha != 1 on activations stays float.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import quantize, symmetric_weight_params
from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, main_opset, to_gs
from qpass.ops.common import refuse_if_quantized
from qpass.errors import PipelineError
from qpass.pipeline.pass_base import Pass, PassResult
from .quantize_qdq.op_table import is_const, is_float


@dataclass
class QuantizeDynamicOptions:
    op_types: list = field(default_factory=lambda: ["MatMul", "Gemm"])
    exclude: list = field(default_factory=list)  # node-name glob patterns left in float


def _why_float(node: gs.Node) -> str | None:
    if len(node.inputs) < 2 or not all(is_float(t) for t in node.inputs[:2]):
        return "non-float inputs"
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)) or float(node.attrs.get("alpha", 1.0)) != 1.0 \
                or float(node.attrs.get("beta", 1.0)) != 1.0:
            return "Gemm with transA or alpha/beta != 1"
        if not is_const(node.inputs[1]):
            return "Gemm weight is not a constant"
    if is_const(node.inputs[0]):
        return "constant first input"
    w = node.inputs[1]
    if is_const(w) and np.asarray(w.values).ndim != 2:
        return "weight is not 2-D"
    return None


class QuantizeDynamic(Pass):
    name = "quantize_dynamic"
    Options = QuantizeDynamicOptions

    def run(self, model, ctx):
        refuse_if_quantized(model, "quantize_dynamic")
        if main_opset(model) < 13:
            raise PipelineError("quantize_dynamic needs opset >= 13 (run 'normalize' first)")
        graph = to_gs(model)
        b = GraphBuilder(graph, base="dyn")
        done, float_reasons, cache = [], {}, {}
        for node in list(graph.nodes):
            if node.op not in self.opts.op_types:
                continue
            why = "excluded by name pattern" if any(fnmatch.fnmatchcase(node.name, p) for p in self.opts.exclude) \
                else _why_float(node)
            if why:
                float_reasons[node.name] = why
                continue
            _rewrite(b.at(node.name), node, cache)
            done.append(node.name)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        ctx.report.results["quantization"] = {"mode": "dynamic", "quantized_nodes": done, "fused_activations": [],
                                              "float_nodes": float_reasons, "tensor_params": {},
                                              "target_cpu": "any", "weight_encodings": {n: "int8" for n in done}}
        return PassResult(from_gs(graph, model), bool(done),
                          [f"{len(done)} MatMul/Gemm on DynamicQuantizeLinear + MatMulInteger, "
                           f"{len(float_reasons)} left float"])


def _dynamic_input(b: GraphBuilder, x: gs.Tensor, cache: dict):
    """(uint8 codes, scale, zero point) of ``x`` by DynamicQuantizeLinear, once per tensor."""
    if x.name not in cache:
        q = b.var(x.name + "_dq_codes", dtype=np.uint8)
        s = b.var(x.name + "_dq_scale", dtype=np.float32, shape=[])
        z = b.var(x.name + "_dq_zero_point", dtype=np.uint8, shape=[])
        b.node("DynamicQuantizeLinear", [x], [q, s, z])
        cache[x.name] = (q, s, z)
    return cache[x.name]


def _rewrite(b: GraphBuilder, node: gs.Node, cache: dict) -> None:
    x, w = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2].name else None
    y = node.outputs[0]
    xq, xs, xz = _dynamic_input(b, x, cache)
    if is_const(w):
        wv = np.asarray(w.values, np.float32)
        if node.op == "Gemm" and int(node.attrs.get("transB", 0)):
            wv = wv.T
        p = symmetric_weight_params(wv, 1, 127)
        wq = b.const(quantize(wv, p, -127, 127).astype(np.int8), None, name=w.name + "_int8")
        wz = b.const(np.zeros(wv.shape[1], np.int8), None, name=w.name + "_int8_zero_point")
        scale = b.op("Mul", [xs, b.const(np.asarray(p.scale, np.float32), name=w.name + "_int8_scale")])
    else:
        wq, ws, wz = _dynamic_input(b, w, cache)
        scale = b.op("Mul", [xs, ws])
    acc = b.op("MatMulInteger", [xq, wq, xz, wz], dtype=np.int32)
    f = b.op("Cast", [acc], {"to": 1})
    if bias is None:
        b.node("Mul", [f, scale], [y])
    else:
        m = b.op("Mul", [f, scale])
        b.node("Add", [m, bias], [y])
    node.inputs.clear()
    node.outputs.clear()
