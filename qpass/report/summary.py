"""Human-readable summaries of a pipeline run."""
from __future__ import annotations

from collections import Counter

import onnx

from qpass.ir.graph import op_histogram


def _pass_formats(p) -> tuple[str, str, bool] | None:
    """(weights, activations, searched) a quantising pass will use, from its options; None for other passes."""
    opts = getattr(p, "opts", None)
    if p.name == "fakequant":
        return opts.weights, opts.activations, False
    if p.name == "quantize_qdq":
        return f"{opts.weight_dtype} {'per-channel' if opts.per_channel else 'per-tensor'}", opts.activation_dtype, False
    if p.name == "bitwidth":
        return opts.weights, opts.activations, True
    return None


def format_line(pipeline, given: set[str]) -> str | None:
    """One line naming the weight and activation formats ``pipeline`` quantises to, and which of them are the
    pipeline's own defaults rather than ``given`` (``{"weights", "activations"}`` set by the user)."""
    found = next((f for f in map(_pass_formats, pipeline.flat_passes()) if f is not None), None)
    if found is None:
        return None
    weights, activations, searched = found
    if searched:
        return f"formats: weights {weights}, activations {activations}, the width W searched per layer"
    parts = [f"{what} {fmt}" + ("" if what in given else " (default)")
             for what, fmt in (("weights", weights), ("activations", activations))]
    line = f"formats: {', '.join(parts)}"
    if len(given) < 2:
        line += f"; defaults of pipeline '{pipeline.name}', set --weights / --activations or --bits N to change them"
    return line


def summary_lines(src: onnx.ModelProto, result) -> list[str]:
    lines = [f"pipeline: {result.pipeline.name if result.pipeline else '?'}"]
    lines.append(f"{'pass':<28}{'time':>9}{'nodes':>14}  notes")
    for r in result.records:
        it = f" #{r.iteration}" if r.iteration else ""
        nodes = f"{r.nodes_before}->{r.nodes_after}"
        lines.append(f"{(r.name + it)[:27]:<28}{r.seconds * 1000:>7.0f}ms{nodes:>14}  {'; '.join(r.notes)}")
    q = result.report.results.get("quantization")
    if q:
        lines.append(f"nodes quantized: {len(q['quantized_nodes'])} "
                     f"(+{len(q['fused_activations'])} activations fused)")
        hist = op_histogram(result.model.graph)
        # quantize_qdq's plan, counted on the final graph (prelu_split / prelu_max / prelu_lut take PRelus later)
        names = {n.name for n in result.model.graph.node}
        left = {k: v for k, v in q["float_nodes"].items() if k in names}
        reasons = Counter(left.values())
        if left:
            lines.append(f"ops left in float: {len(left)}")
            for reason, count in reasons.most_common():
                lines.append(f"  {count} x {reason}")
        lines.append("ops in result: " + ", ".join(f"{k} {v}" for k, v in hist.items()))
    fq = result.report.results.get("fakequant")
    if fq:
        lines += fakequant_lines(fq)
    bw = result.report.results.get("bitwidth")
    if bw and bw.get("table"):
        from qpass.search.report import table_lines

        lines += ["bitwidth assignment:"] + table_lines(bw["table"])
    ir = result.report.results.get("integer_report")
    if ir:
        lines += integer_lines(ir)
    return lines


def fakequant_lines(fq: dict) -> list[str]:
    lines = [f"fake-quant placement: {fq['placement']}"]
    lines.append(f"  {'weight':<40}{'format':<24}{'saturated':>10}")
    for name, w in fq.get("weights", {}).items():
        lines.append(f"  {w['node'][:39]:<40}{w['format'][:23]:<24}{w['saturated']:>10}")
    acts = fq.get("activations", {})
    kinds = {}
    for a in acts.values():
        key = f"{'' if a['signed'] else 'u'}{a['op']}<{a['bits']}>"
        kinds[key] = kinds.get(key, 0) + 1
    lines.append(f"  activation quantisers: {len(acts)} (" + ", ".join(f"{k} x{v}" for k, v in kinds.items()) + ")")
    for key, label in (("float_bias", "biases left float"), ("uncalibrated", "tensors without a calibrated range"),
                       ("float_accumulators", "accumulators left unquantised")):
        if fq.get(key):
            lines.append(f"  {label}: {', '.join(fq[key][:6])}{' ...' if len(fq[key]) > 6 else ''}")
    if fq.get("accumulators"):
        lines.append(f"  accumulators quantised to: {sorted(set(fq['accumulators'].values()))} bits")
    return lines


def integer_lines(ir: dict) -> list[str]:
    lines = [f"{'layer':<32}{'op':<7}{'weights':<9}{'input':<8}{'acc bits':>9}{'thresholds':>11}  output"]
    for L in ir["layers"]:
        lines.append(f"{L['layer'][:31]:<32}{L['op']:<7}{L['weight_type']:<9}{L['input_type']:<8}"
                     f"{L['accumulator_bits']:>9}{L['thresholds']:>11}  {L['output']}")
    inside = [f for f in ir["float_ops"] if not f["allowed"]]
    head = [f for f in ir["float_ops"] if f["allowed"]]
    lines.append("integer-only between the input quantisers and the float head: "
                 + ("yes" if ir["integer_only"] else f"no, {len(inside)} float ops inside"))
    for f in inside:
        lines.append(f"  float {f['op']} {f['node']}: {f['reason']}")
    if head:
        lines.append(f"  float head: {', '.join(f['op'] for f in head)}")
    return lines
