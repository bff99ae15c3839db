"""Human-readable summaries of a pipeline run."""
from __future__ import annotations

from collections import Counter

import onnx

from .graph_utils import op_histogram

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def summary_lines(src: onnx.ModelProto, result) -> list[str]:
    lines = [f"pipeline: {result.pipeline.name if result.pipeline else '?'}"]
    lines.append(f"{'pass':<28}{'time':>9}{'nodes':>14}  notes")
    for r in result.records:
        it = f" #{r.iteration}" if r.iteration else ""
        nodes = f"{r.nodes_before}->{r.nodes_after}"
        lines.append(f"{(r.name + it)[:27]:<28}{r.seconds * 1000:>7.0f}ms{nodes:>14}  {'; '.join(r.notes)}")
    q = result.facts.get("quantization")
    if q:
        lines.append(f"nodes quantized: {len(q['quantized_nodes'])} "
                     f"(+{len(q['fused_activations'])} activations fused)")
        hist = op_histogram(result.model.graph)
        floats = {k: v for k, v in hist.items() if k not in QDQ_OPS}
        reasons = Counter(q["float_nodes"].values())
        if q["float_nodes"]:
            lines.append(f"ops left in float: {len(q['float_nodes'])}")
            for reason, count in reasons.most_common():
                lines.append(f"  {count} x {reason}")
        lines.append("ops in result: " + ", ".join(f"{k} {v}" for k, v in hist.items()))
        del floats
    return lines
