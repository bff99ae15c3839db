"""The ``bitwidth`` pass: choose a width per layer (weights, activations, accumulators) under an accuracy target or
a weight-memory budget, and hand the result to the following ``fakequant`` pass as rules.

    - calibrate: {method: minmax}
    - bitwidth: {target: "relative_accuracy>=0.99", cost: memory}     # or avg_bits: 4
    - fakequant                                          # applies ctx.report.results["bitwidth"]["rules"]

It reads the calibration samples (``ctx.inputs.calibration_data``) and, when present, evaluation samples with
labels (``ctx.inputs.eval_data``, a SampleSet) for the search and its verification; the calibrate pass's
observers (the ``Calibration`` analysis) give the activation scales. The model is not changed.
``ctx.report.results["bitwidth"]`` receives ``rules``
(fakequant rules that reproduce the chosen assignment: append them to fakequant's own, later rules win),
``placement`` (``intrinsic`` when accumulators were searched), ``table``, ``pareto``, ``points``, ``cost``,
``metric`` (verified through onnxruntime), ``compression`` and ``notes``. Options: ``qpass.search.BitwidthOptions``.
"""
from __future__ import annotations

from qpass.search.options import BitwidthOptions
from qpass.pipeline.analyses import PRESERVES_ALL, Calibration
from qpass.pipeline.pass_base import Pass, PassResult


class Bitwidth(Pass):
    name = "bitwidth"
    inputs = ("calibration_data",)
    requires = (Calibration,)
    preserves = PRESERVES_ALL
    Options = BitwidthOptions

    def run(self, model, ctx):
        from qpass.search.core import run_search

        a = run_search(model, ctx.analyses.get(Calibration, model), ctx.inputs.calibration_data,
                       ctx.inputs.eval_data, self.opts, progress=ctx.progress, engine=ctx.engine)
        notes = []
        if not self.opts.report_dir and ctx.dump_dir is not None:
            notes += a.write(ctx.dump_dir)
        summary = a.facts()
        summary["notes"] = summary["notes"] + notes
        ctx.report.results["bitwidth"] = summary
        c = a.compression
        goal = f"target {a.target}" if a.target else f"avg_bits <= {a.avg_bits:g}"
        where = (f"on {a.samples['verify']} held-out samples" if a.samples.get("held_out")
                 else "on the search samples (not held out)")
        head = (f"{goal} {'met' if a.met else 'MISSED'} {where}: weights {c['avg_weight_bits']:.2f} bits on average "
                f"({c['float32']:.2f}x smaller than float32, {c['int8']:.2f}x than int8), "
                f"cost {a.cost:.6g} {a.cost_unit}, held out: " + _metric_text(a.metric) +
                f", searched on {a.samples['search']}: " + _metric_text(a.search_metric)
                + _stored_text(a.artifact) + f"; {len(a.rules)} fakequant rules in facts['bitwidth']")
        for line in summary["notes"]:
            ctx.log(f"bitwidth: {line}")
        return PassResult(model, False, [head] + a.notes[-3:])


def _metric_text(m: dict) -> str:
    if m.get("accuracy") is not None:
        return f"accuracy {100 * m['accuracy']:.2f}% (relative {m['relative_accuracy']:.4f})"
    return f"agreement {100 * m['agreement']:.2f}%, SQNR {m['sqnr']:.1f} dB"


def _stored_text(f: dict) -> str:
    if not f.get("avg_stored_weight_bits"):
        return ""
    return (f"; the file stores weights in {f['avg_stored_weight_bits']:.2f} bits on average "
            f"({f['float32_stored']:.2f}x smaller than float32), {f['file_bytes'] / 1000:.1f} kB, "
            f"{f['latency_us']:.1f} us per sample in onnxruntime ({f['latency_threads']} thread)")
