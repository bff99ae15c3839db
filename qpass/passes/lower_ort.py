"""Lowering of quantisation ops to standard ONNX, so that any qpass model runs in plain onnxruntime.

Every node in the QONNX or qpass domain is rewritten by its op class's ``lower`` (``qpass.ops``): Quant becomes
QuantizeLinear -> (Clip) -> DequantizeLinear where onnxruntime's integer kernels compute the same values, and
everything else is emulated exactly in float32 with standard ops, in the op's own operation order, so the
reference interpreter and onnxruntime compute the same bits. An op without a lowering is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedOpError
from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, main_opset, to_gs
from qpass.ops import get_op
from qpass.ops.common import QONNX_DOMAINS, QPASS_DOMAIN
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult

CUSTOM_DOMAINS = QONNX_DOMAINS + (QPASS_DOMAIN,)


@dataclass
class LowerOptions:
    keep_native_qdq: bool = True


class LowerOrt(Pass):
    name = "lower_ort"
    preserves = (Calibration,)  # as before the analysis manager: lowering kept the calibrated ranges
    Options = LowerOptions

    def run(self, model, ctx):
        graph = to_gs(model)
        opset = main_opset(model)
        custom = [(n, get_op(n.domain, n.op)) for n in graph.nodes if n.domain in CUSTOM_DOMAINS]
        missing = sorted({f"{n.domain}::{n.op}" for n, op in custom if op is None or op.lower is None})
        if missing:
            raise UnsupportedOpError(f"no ONNX lowering for {', '.join(missing)}")
        for node, op in custom:
            reason = op.check(node)
            if reason:
                raise UnsupportedOpError(f"{node.domain}::{node.op} node {node.name!r}: {reason}")
        b = GraphBuilder(graph)
        for node, op in custom:
            op.lower(b.at(node.name or node.op), node, opset)
            node.outputs.clear()
            node.inputs.clear()
        if not custom:
            return PassResult(model, False)
        out = from_gs(graph, model)
        keep = [o for o in out.opset_import if o.domain not in CUSTOM_DOMAINS]
        del out.opset_import[:]
        out.opset_import.extend(keep)
        return PassResult(out, True, [f"lowered {len(custom)} quantisation ops to standard ONNX"])
