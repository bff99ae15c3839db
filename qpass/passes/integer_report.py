"""Streamlining, part 3: datatype annotations, minimal accumulator widths, and the integer-only proof.

Every integer tensor is annotated with its exact QONNX datatype (INTn / UINTn from its exact range); every linear
layer's accumulator gets the minimal width that holds its exact range computed from the actual weights and input
range (so no overflow is possible). The pass then checks that everything between the input quantisers and the
float head is integer, and lists each remaining float op with the reason it stayed.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from qpass.ir.datatypes import set_annotation
from qpass.ir.graph import from_gs, to_gs
from qpass.analysis.intinfo import LINEAR_OPS, TRANSPARENT_OPS, const, int_range, is_int_quant, linear_bounds, signed_bits
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult


def _type_name(lo: float, hi: float) -> str:
    bits, signed = signed_bits(lo, hi)
    if (lo, hi) == (-1, 1):
        return "TERNARY" if lo != hi else "INT2"
    return f"{'INT' if signed else 'UINT'}{bits}"


def _is_float_head(node: gs.Node, memo: dict) -> bool:
    """No integer tensor is computed downstream of this node."""
    if node.name in memo:
        return memo[node.name]
    memo[node.name] = True
    for out in node.outputs:
        for r in out.outputs:
            if r.op == "MultiThreshold" or (r.op in LINEAR_OPS and int_range(r.outputs[0]) is not None) \
                    or is_int_quant(r) or not _is_float_head(r, memo):
                memo[node.name] = False
                return False
    return True


def _reason(node: gs.Node, notes: dict, memo: dict) -> str:
    if node.name in notes:
        return notes[node.name]
    readers = [r for o in node.outputs for r in o.outputs]
    if node.op == "Mul" and node.inputs and int_range(node.inputs[0], memo) is not None:
        why = next((notes[r.name] for r in readers if r.name in notes), None)
        return "dequantises integer codes for a float op" + (f" ({why})" if why else "")
    if node.op == "Div" and any(is_int_quant(r) for r in readers):
        return "scales a float result into the next quantiser"
    x = node.inputs[0] if node.inputs else None
    prod = x.inputs[0] if x is not None and not isinstance(x, gs.Constant) and x.inputs else None
    if prod is not None and prod.name in notes:
        return f"after {prod.op} {prod.name!r}: {notes[prod.name]}"
    return "its inputs are not integer"


class IntegerReport(Pass):
    name = "integer_report"
    preserves = (Calibration,)  # it only annotates tensor types

    def run(self, model, ctx):
        graph = to_gs(model)
        memo: dict = {}
        layers, float_ops = [], []
        annotations = {}
        notes = ctx.report.streamline_notes
        inputs = {t.name for t in graph.inputs}
        head_memo: dict = {}
        for node in graph.nodes:
            outs = [o for o in node.outputs if o is not None]
            ranges = [int_range(o, memo) for o in outs]
            for o, r in zip(outs, ranges):
                if r is not None:
                    annotations[o.name] = _type_name(*r)
            if node.op in LINEAR_OPS and ranges and ranges[0] is not None:
                b = linear_bounds(node, memo)
                lo, hi = (float(b[0].min()), float(b[1].max())) if b is not None else ranges[0]
                acc_bits, _ = signed_bits(lo, hi)
                w = const(node.inputs[1])
                wr = (float(w.min()), float(w.max())) if w is not None else None
                ar = int_range(node.inputs[0], memo)
                reader = outs[0].outputs[0] if outs[0].outputs else None
                thr = const(reader.inputs[1]) if reader is not None and reader.op == "MultiThreshold" else None
                layers.append({
                    "layer": node.name, "op": node.op,
                    "weight_type": _type_name(*wr) if wr else "?",
                    "input_type": _type_name(*ar) if ar else "?", "input_range": list(ar) if ar else None,
                    "accumulator_bits": acc_bits, "accumulator_range": [lo, hi],
                    "thresholds": int(thr.shape[-1]) if thr is not None else 0,
                    "output": "MultiThreshold" if thr is not None else (reader.op if reader is not None else "output"),
                })
            if all(r is not None for r in ranges) and ranges:
                continue  # integer op
            if is_int_quant(node):
                continue
            if node.op in TRANSPARENT_OPS:
                continue
            reason = None
            x = node.inputs[0] if node.inputs else None
            if node.op == "Div" and x is not None and x.name in inputs:
                continue  # the input quantiser's scaling: part of the input quantiser
            if _is_float_head(node, head_memo):
                reason = "float head (dequantised output after the last integer layer)"
                float_ops.append({"node": node.name, "op": node.op, "reason": reason, "allowed": True})
                continue
            float_ops.append({"node": node.name, "op": node.op, "allowed": False,
                              "reason": _reason(node, notes, memo)})
        out = model
        if annotations:
            out = from_gs(graph, model)
            for name, dt in annotations.items():
                set_annotation(out, name, dt)
        inside = [f for f in float_ops if not f["allowed"]]
        ctx.report.results["integer_report"] = {"layers": layers, "float_ops": float_ops, "integer_only": not inside}
        verdict = "integer-only between input quantisers and float head" if not inside else \
            f"{len(inside)} float ops inside the integer region"
        return PassResult(out, bool(annotations), [verdict])
