"""The quantize_qdq pass: calibrated float graph -> QDQ graph for onnxruntime's integer kernels."""
from __future__ import annotations

from collections import Counter

from qpass.errors import PipelineError
from qpass.ir.graph import from_gs, main_opset, to_gs
from qpass.ops.common import refuse_if_quantized
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from .options import QuantizeQDQOptions
from .rewrite import quantize_graph


class QuantizeQDQ(Pass):
    name = "quantize_qdq"
    requires = (Calibration,)
    Options = QuantizeQDQOptions

    def run(self, model, ctx):
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
            "target_cpu": self.opts.target_cpu,
            "weight_encodings": dict(qc.encodings),
        }
        compute = sum(1 for n in out.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
        notes = [f"{len(quantized)} nodes quantized ({len(plan.fused_activations)} activations fused), "
                 f"{compute} compute nodes in the result"]
        remedied = Counter(e for e in qc.encodings.values() if e != "int8")
        if remedied:
            notes.append(f"for {self.opts.target_cpu} CPUs: " + ", ".join(f"{v} x {k}" for k, v in remedied.items()))
        return PassResult(out, True, notes)
