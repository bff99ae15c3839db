"""The quantize_qdq pass: calibrated float graph -> QDQ graph for onnxruntime's integer kernels."""
from __future__ import annotations

from collections import Counter

import onnx

from qpass.errors import PipelineError
from qpass.formats.qdq_params import activation_params
from qpass.ir.graph import from_gs, main_opset, to_gs
from qpass.ir.ort_session import OrtError
from qpass.ops.common import refuse_if_quantized
from qpass.analysis.layer_errors import join_outputs
from qpass.pipeline.analyses import Calibration, values_for
from qpass.pipeline.pass_base import Pass, PassResult
from . import guard, log_ranges, smooth_lstm
from .bodies import all_names, bodies_innermost_first
from .options import QuantizeQDQOptions
from .recurrent import MS_DOMAIN
from .rewrite import quantize_graph
from .target import resolve_target


class QuantizeQDQ(Pass):
    name = "quantize_qdq"
    requires = (Calibration,)
    Options = QuantizeQDQOptions

    def run(self, model, ctx):
        refuse_if_quantized(model, "quantize_qdq")
        if main_opset(model) < 13:
            raise PipelineError("quantize_qdq needs opset >= 13 (run 'normalize' first)")
        cal = ctx.analyses.get(Calibration, model)
        ranges = _with_powers(cal)
        opts = guard.with_options(self.opts, target_cpu=resolve_target(self.opts.target_cpu))
        samples = getattr(ctx.inputs, "calibration_data", None)
        smoothed = {}
        if opts.dynamic_lstm and opts.smooth_lstm:
            model, smoothed = smooth_lstm.smooth(model, samples, opts.lstm_copies_budget)
        out, plan, qc, guard_note = self._quantize_checked(opts, model, ranges, samples)
        # the search starts from this very quantization where the guard kept it (not made a second time)
        ranges, log_note = _log_ranges(opts, model, ranges, qc, samples, out if guard_note is None else None,
                                       ctx.analyses)
        if log_note:
            out, plan, qc, guard_note = self._quantize_checked(opts, model, ranges, samples)
        quantized = [n for n in plan.nodes if n not in plan.float_reasons and n not in plan.fused_activations]
        ctx.report.results["quantization"] = {
            "quantized_nodes": quantized,
            "fused_activations": list(plan.fused_activations),
            "float_nodes": dict(plan.float_reasons),
            "tensor_params": {k: v.as_dict() for k, v in qc.params.items()},
            "target_cpu": opts.target_cpu,
            "weight_encodings": dict(qc.encodings),
            "smooth_lstm": smoothed,
        }
        compute = sum(1 for n in out.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear"))
        notes = [f"{len(quantized)} nodes quantized ({len(plan.fused_activations)} activations fused), "
                 f"{compute} compute nodes in the result, for {opts.target_cpu} CPUs"]
        remedied = Counter(e for e in qc.encodings.values() if e != "int8")
        if remedied:
            notes.append(f"for {opts.target_cpu} CPUs: " + ", ".join(f"{v} x {k}" for k, v in remedied.items()))
        if smoothed and any("copies" in v for v in smoothed.values()):
            notes.append("LSTM inputs dithered: " + ", ".join(f"{v['copies']} copies" for v in smoothed.values()))
        elif smoothed:
            notes.append(f"{sum(v['smoothed'] for v in smoothed.values())} of {len(smoothed)} LSTM inputs given "
                         "equal channel ranges")
        if log_note:
            notes.append(log_note)
        if guard_note:
            notes.append(guard_note)
            ctx.report.results["quantization"]["remedy_check"] = guard_note
        return PassResult(out, True, notes)


    @staticmethod
    def _quantize_checked(opts, model, ranges, samples):
        """(model, plan, rewriter, note): the quantization, re-done with uint8+128 weights where a lossy remedy for
        CPUs without VNNI costs more than ``avx2_max_loss_db`` (``guard``)."""
        out, plan, qc = _quantize(model, ranges, opts)
        if not guard.needs_check(opts, qc.encodings, samples):
            return out, plan, qc, None
        full = _quantize(model, ranges, guard.with_options(opts, target_cpu="vnni"))[0]
        loss = guard.remedy_loss_db(model, out, full, samples)
        note = f"{opts.avx2_remedy} costs {loss:.2f} dB of output SQNR against full int8"
        if loss <= opts.avx2_max_loss_db:
            return out, plan, qc, note
        out, plan, qc = _quantize(model, ranges, guard.with_options(opts, avx2_remedy="uint8_offset"))
        return out, plan, qc, note + f" (> {opts.avx2_max_loss_db:g}): exact uint8+128 weights instead"


def _log_ranges(opts, model, ranges, qc, samples, quantized=None, analyses=None):
    """(ranges, note): the ranges ``log_ranges.choose`` picks for the tensors a Log reads whose calibrated range
    reaches ``max_range`` (note None: nothing changed, or the search could not run: an optional improvement).
    ``analyses``: where the calibrate pass's float values of this model are read (its outputs: the search's float
    reference, not run again)."""
    if not opts.log_ranges or samples is None or len(samples) < 2:
        return ranges, None
    wide = [t for t in qc.params if t in qc.log_fed and t not in qc.shared_from and t in ranges
            and max(abs(v) for v in ranges[t]) >= opts.max_range]
    if not wide:
        return ranges, None
    try:
        n = log_ranges.search_samples(samples)
        return log_ranges.choose(model, ranges, wide, opts.log_range_shifts, samples.subset(slice(0, n)),
                                 lambda r: _quantize(model, r, opts)[0], opts.log_range_step, opts.log_range_coarse,
                                 lambda lo, hi: activation_params(lo, hi, opts.activation_dtype,
                                                                  opts.symmetric_activations),
                                 quantized=quantized, ref=_float_outputs(analyses, model, samples, n))
    except (OrtError, ValueError, ArithmeticError, KeyError):  # min/max ranges then
        return ranges, None


def _float_outputs(analyses, model, samples, n: int):
    """``joined_outputs`` of ``model`` on the first ``n`` of ``samples`` from the calibrate pass's kept float values
    (``FloatValues``, when it holds this model's outputs on these samples), else None."""
    outs = [o.name for o in model.graph.output]
    fv = values_for(analyses, model, samples, outs) if analyses is not None else None
    return None if fv is None else join_outputs(fv.stacked(outs, range(n)))


def _with_powers(cal) -> dict:
    """The calibrated ranges, carrying each tensor's mean power (``RangeTable.powers``) for the noise checks."""
    from .rewrite import RangeTable

    powers = {t: obs["minmax"].power() for t, obs in cal.observers.items() if "minmax" in obs and obs["minmax"].seen}
    return RangeTable(cal.ranges, powers)


def _quantize(model, ranges, opts):
    graph = to_gs(model)
    names = all_names(graph)
    inner = [quantize_graph(g, ranges, opts, names, top=graph) for g in bodies_innermost_first(graph)]
    plan, qc = quantize_graph(graph, ranges, opts, names)
    for p, q in inner:  # one report: the bodies' nodes and tensors with the main graph's
        plan.nodes.extend(p.nodes)
        plan.fused_activations.extend(p.fused_activations)
        plan.float_reasons.update(p.float_reasons)
        qc.params.update(q.params)
        qc.encodings.update(q.encodings)
    out = from_gs(graph, model)
    if any(n.domain == MS_DOMAIN for n in out.graph.node) and MS_DOMAIN not in {o.domain for o in out.opset_import}:
        out.opset_import.append(onnx.helper.make_opsetid(MS_DOMAIN, 1))
    return out, plan, qc
