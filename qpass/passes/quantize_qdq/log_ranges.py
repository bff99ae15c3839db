"""Ranges of the values a logarithm reads (``log_ranges``).

A log-mel front end computes STFT convolutions, squares them and takes the log of a filter-bank sum: the power it
takes the log of spans eight decades, and the model's answer is in decibels. On min/max ranges an 8-bit grid keeps
only the loudest bins; every quieter bin rounds to zero and comes out at the floor of the log (oww-melspectrogram:
5.5 dB of output SQNR, quantize_static's 5.0). A narrower range clips the few loudest values by a few decibels and
keeps the quiet ones, which is what the output in decibels weighs.

``log_fed`` names the tensors from which a Log is reachable. ``choose`` takes them in graph order and, for each,
tries its calibrated range halved 0..``shifts`` times: the model is quantized with that range, the later candidates'
ranges are re-measured on the quantized model (what they read once the earlier range clips), and the output SQNR
against the float model on the calibration samples picks the halving. Deterministic: onnxruntime runs, no timing.
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from qpass.analysis.layer_errors import joined_outputs, tensor_values
from qpass.analysis.metrics import sqnr_db
from qpass.ir.graph import consumers


def log_fed(graph: gs.Graph) -> set[str]:
    """Names of the tensors of ``graph`` from which a Log node is reachable (its inputs and their producers' inputs,
    up to the graph inputs)."""
    todo = [t for n in graph.nodes if n.op == "Log" for t in n.inputs]
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        todo.extend(x for p in t.inputs for x in p.inputs)
    return seen


def _float_reads(model: onnx.ModelProto) -> dict[str, str]:
    """{tensor: the float tensor its QuantizeLinear reads} in a QDQ model (a quantized activation's value before
    its 8-bit step)."""
    readers = consumers(model.graph)
    out = {}
    for q in model.graph.node:
        if q.op_type != "QuantizeLinear":
            continue
        out.setdefault(q.input[0], q.input[0])
        for dq in readers.get(q.output[0], []):
            if dq.op_type == "DequantizeLinear":
                out[dq.output[0]] = q.input[0]
    return out


def _narrowed(rt, names, k: int):
    return rt.copy_with({t: (rt[t][0] / 2 ** k, rt[t][1] / 2 ** k) for t in names})


def _remeasured(rt, later: list[str], quantize, samples):
    """``rt`` with the ranges of ``later`` measured on the model quantized with ``rt`` (what they read there)."""
    q = quantize(rt)
    reads = _float_reads(q)
    vals = tensor_values(q, [reads.get(t, t) for t in later], samples)
    return rt.copy_with({t: (min(float(vals[reads.get(t, t)].min()), 0.0), max(float(vals[reads.get(t, t)].max()), 0.0))
                         for t in later})


def choose(model: onnx.ModelProto, ranges, candidates: list[str], shifts: int, samples, quantize, step: int = 2):
    """(ranges, note): ``ranges`` (a ``RangeTable``) with the ranges of ``candidates`` (graph order) narrowed where
    that measures closer to float on ``samples``; ``quantize(ranges)`` returns the QDQ model. Each candidate's
    halvings (0, ``step``, ..) are tried with the later candidates re-measured under it and narrowed together by
    a second count of halvings: a clipped STFT output makes the power after it narrower, and the power's best range
    is narrower again."""
    ref = joined_outputs(model, samples)
    best_ranges, best_db = ranges, sqnr_db(ref, joined_outputs(quantize(ranges), samples))
    start_db, changed = best_db, False
    for i, c in enumerate(candidates):
        later, base = candidates[i + 1:], best_ranges
        for k in range(0, shifts + 1, step):
            trial = _narrowed(base, [c], k)
            if later:
                trial = _remeasured(trial, later, quantize, samples)
            for j in range(0, shifts + 1 if later else 1, step):
                if k == j == 0:
                    continue
                cand = _narrowed(trial, later, j)
                db = sqnr_db(ref, joined_outputs(quantize(cand), samples))
                if db > best_db:
                    best_ranges, best_db, changed = cand, db, True
    if not changed:
        return ranges, None
    ratios = {c: _span(ranges[c]) / max(_span(best_ranges[c]), 1e-30) for c in candidates}
    return best_ranges, (f"{len(candidates)} ranges read by a Log narrowed on the output "
                         f"({', '.join(f'{c} /{r:.3g}' for c, r in ratios.items())}): output SQNR {start_db:.2f} -> "
                         f"{best_db:.2f} dB on {len(samples)} calibration samples")


def _span(r) -> float:
    return float(r[1]) - float(r[0])
