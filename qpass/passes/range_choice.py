"""The choose_ranges pass: per activation tensor that ``quantize_qdq`` will quantize, the clipping range (min/max,
percentile, entropy, MSE, shrunken min/max) whose quantization least disturbs the output of the layers reading it
(``qpass.analysis.range_choice``). It rewrites the ``Calibration`` ranges; the graph is unchanged.

Needs the calibrate pass to have kept a histogram (``method: [minmax, percentile]``, as the default pipeline does);
without one only the min/max-derived candidates are tried.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from qpass.analysis.calibrators import HistogramObserver
from qpass.analysis.range_choice import PERCENTILES, SHRINK, ConsumerRunner, choose_range, histogram_candidates
from qpass.analysis.metrics import sqnr_db
from qpass.ir.graph import from_gs, to_gs
from qpass.ir.ort_session import make_session, run_samples
from qpass.pipeline.analyses import PRESERVES_ALL, Calibration, TensorTypes, values_for
from qpass.pipeline.pass_base import Pass, PassResult
from .calibrate import _with_outputs
from .qdq_moves import per_sample_cost
from .quantize_qdq import QuantizeQDQOptions, quantize_graph


@dataclass
class ChooseRangesOptions:
    #: candidate families besides min/max
    #: candidate families besides min/max: percentile, shrink (min/max * 0.9 ... 0.5), entropy, mse (the last two
    #: cost a second or more per tensor on 2048-bin histograms)
    methods: list = field(default_factory=lambda: ["percentile", "shrink"])
    activation_dtype: str = "uint8"  # the grid quantize_qdq will use
    max_samples: int = 32  # calibration samples the consumers are run on
    #: the fraction of the calibration samples (the last ones) the choice never sees: ``verify`` checks on them
    holdout: float = 0.5
    max_bytes: int = 256 * 2**20  # captured float values, all samples together
    #: keep min/max unless a candidate lowers the consumer-output error by this fraction
    min_gain: float = 0.02
    threads: int = 1
    #: keep the chosen ranges only if the whole model's output SQNR on the calibration samples not used for the
    #: choice is higher than with min/max everywhere (False: always keep them)
    verify: bool = True
    #: the chosen ranges are kept only if they gain at least this much output SQNR (dB) there: less is within the
    #: noise of a few held-out samples, and min/max is the plainer file
    min_check_gain_db: float = 0.2
    max_check_samples: int = 64
    #: tensors whose range is chosen (graph order; the rest keep min/max): a bound read from the graph, so the
    #: output does not depend on the machine's load
    max_tensors: int = 512
    #: opt-in: also stop choosing after this many seconds (None: no clock)
    max_seconds: float | None = None
    #: leave alone the tensors quantize_qdq's ``log_ranges`` chooses again on the model's output (a Log reads them,
    #: their calibrated range reaches its ``max_range``): oww-melspectrogram's four STFT / power ranges, whose
    #: consumer-output choice was measured and dropped on every run (min/max kept), same output file
    skip_log_ranges: bool = True
    #: work bound read from the graph: over it (``qdq_moves.graph_cost`` x samples x (candidates + 1), in
    #: multiply-adds), the pass keeps min/max everywhere and runs nothing (None: no bound)
    max_work: float | None = None


def quantized_tensors(model, ranges: dict, dtype: str, graph=None, skip_log_ranges: bool = False) -> list[str]:
    """The activation tensors quantize_qdq gives their own parameters from a calibrated range, graph order
    (``graph``: a ``to_gs(model)`` to quantize in place, else a fresh one); ``skip_log_ranges``: without those its
    ``log_ranges`` chooses on the model's output."""
    _, qc = quantize_graph(to_gs(model) if graph is None else graph, ranges, QuantizeQDQOptions(activation_dtype=dtype))
    own = [t.name for t in qc.targets if t.name not in qc.shared_from and t.name in qc.params
           and not (skip_log_ranges and t.name in qc.log_fed and t.name in ranges
                    and max(abs(v) for v in ranges[t.name]) >= qc.opts.max_range)]
    fixed = {k for k, p in qc.params.items() if np.ndim(p.scale) == 0 and float(p.scale) == 1 / 256
             and k not in ranges}
    return [t for t in own if t in ranges and t not in fixed and ranges[t][1] > ranges[t][0]]


class ChooseRanges(Pass):
    name = "choose_ranges"
    inputs = ("calibration_data",)
    requires = (Calibration,)
    preserves = PRESERVES_ALL  # rewrites the Calibration ranges in place (put), the graph is unchanged
    Options = ChooseRangesOptions

    def run(self, model, ctx):
        cal = ctx.analyses.get(Calibration, model)
        o = self.opts
        work = self._work(model, ctx)  # first: over the bound, the graph is not even quantized to list tensors
        if o.max_work is not None and work > o.max_work:
            ctx.report.results["range_choice"] = {"skipped": f"work {work:.3g} > max_work {o.max_work:.3g}"}
            return PassResult(model, False, [f"min/max kept: choosing would take about {work:.3g} multiply-adds of "
                                             f"consumer runs (max_work {o.max_work:.3g})"])
        base_graph = to_gs(model)  # quantized with the calibrated ranges: the min/max side of ``_verify``
        tensors = quantized_tensors(model, cal.ranges, o.activation_dtype, base_graph, o.skip_log_ranges)
        if not tensors:
            return PassResult(model, False, ["no calibrated tensor to choose a range for"])
        runner = ConsumerRunner(model, ctx.analyses.get(TensorTypes, model).types, o.threads)
        needed = list(dict.fromkeys(tensors + [x for t in tensors for n in runner.readers.get(t, [])
                                               for x in n.input if x and x not in runner.inits]))
        has_hist = {t for t in tensors
                    if any(isinstance(ob, HistogramObserver) for ob in cal.observers.get(t, {}).values())}
        want = [t for t in tensors if t not in has_hist] if "percentile" in o.methods else []
        values, used, hists = self._capture(model, ctx, needed, want)
        ranges = dict(cal.ranges)
        choices = []
        start = time.perf_counter()
        for t in tensors[:o.max_tensors]:
            if o.max_seconds is not None and time.perf_counter() - start > o.max_seconds:
                break
            hist = next((ob for ob in cal.observers.get(t, {}).values() if isinstance(ob, HistogramObserver)),
                        hists.get(t))
            lo, hi = cal.ranges[t]
            cands = histogram_candidates(lo, hi, hist, 8, tuple(o.methods))
            c = choose_range(runner, t, cands, values, o.activation_dtype, o.min_gain)
            ranges[t] = c.range if c.method != "minmax" else cal.ranges[t]
            choices.append(c)
        moved = [c for c in choices if c.method != "minmax"]
        check = self._verify(model, ctx, base_graph, ranges, used) if moved and o.verify else None
        kept = check is None or check[1] >= check[0] + o.min_check_gain_db
        ctx.analyses.put(Calibration(ranges if kept else dict(cal.ranges), cal.observers))
        ctx.report.results["range_choice"] = {
            "samples": len(values), "kept": kept,
            "check_sqnr_db": None if check is None else {"minmax": check[0], "chosen": check[1]},
            "tensors": {c.tensor: {"method": c.method, "range": list(c.range), "consumer_error": c.error,
                                   "minmax_error": c.minmax_error, "gain_db": round(c.gain_db, 3)}
                        for c in choices}}
        by = Counter(c.method.split("*")[0].split(" ")[0] for c in moved)
        notes = [f"{len(moved)} of {len(choices)} tensors off min/max on {len(values)} samples"
                 + (f" ({', '.join(f'{k} x{v}' for k, v in sorted(by.items()))}); consumer-output error "
                    f"{np.mean([c.gain_db for c in moved]):.2f} dB lower on average there" if moved else "")]
        if len(choices) < len(tensors):
            notes.append(f"budget ({o.max_tensors} tensors, {o.max_seconds} s) spent: {len(tensors) - len(choices)} "
                         f"tensors keep min/max")
        if check is not None:
            notes.append(f"output SQNR on {check[2]} other calibration samples: min/max {check[0]:.2f} dB, chosen "
                         f"{check[1]:.2f} dB: {'chosen ranges kept' if kept else 'min/max kept'}")
        return PassResult(model, False, notes)

    def _work(self, model, ctx) -> float:
        """Multiply-adds of the consumer runs, from the graph: one model run per candidate and sample."""
        samples = ctx.inputs.calibration_data
        usable = len(samples) - (int(round(len(samples) * self.opts.holdout)) if len(samples) >= 4 else 0)
        n_cands = 1 + len(SHRINK) * ("shrink" in self.opts.methods) + len(PERCENTILES) * ("percentile" in
                                                                                          self.opts.methods)
        return per_sample_cost(model, samples) * min(self.opts.max_samples, usable) * (n_cands + 1)

    def _verify(self, model, ctx, base_graph, chosen: dict, used) -> tuple[float, float, int]:
        """(output SQNR with the calibrated ranges (``base_graph``: the model quantized with them), with
        ``chosen``, samples): on calibration samples the choice did not see (all of them when it saw every one),
        quantized as quantize_qdq does by default."""
        samples = ctx.inputs.calibration_data
        held = np.setdiff1d(np.arange(len(samples)), used)
        held = (held if held.size else np.arange(len(samples)))[:self.opts.max_check_samples]
        sub = samples.subset(held)
        ref = run_samples(model, sub, self.opts.threads)
        opts = QuantizeQDQOptions(activation_dtype=self.opts.activation_dtype)
        out = []
        for g in (base_graph, None):
            if g is None:
                g = to_gs(model)
                quantize_graph(g, chosen, opts)
            got = run_samples(from_gs(g, model), sub, self.opts.threads)
            out.append(float(np.mean([sqnr_db(ref[k], got[k]) for k in ref if ref[k].dtype.kind == "f"] or [0.0])))
        return out[0], out[1], len(held)

    def _capture(self, model, ctx, names: list[str], hist_of: list[str]) -> tuple[list[dict], np.ndarray, dict]:
        """(per-sample dicts of the float values of ``names`` and the inputs, within ``max_bytes``; the sample
        indices; {tensor of ``hist_of``: its histogram over every calibration sample}: with min/max calibration,
        the percentile candidates' histograms, from the same runs plus the samples not captured, in chunks
        within ``max_bytes``)."""
        samples = ctx.inputs.calibration_data
        types = ctx.analyses.get(TensorTypes, model).types
        typed = [n for n in names if n in types]
        feeds_names = list(dict.fromkeys([o.name for o in model.graph.output] + names))  # the outputs of ``aug``
        # the calibrate pass's values of this graph on these samples (same session options): read, not re-run
        kept = values_for(ctx.analyses, model, samples, feeds_names)
        if kept is not None:
            def run(sub_idx, outputs):
                return kept.stacked(outputs, sub_idx)
        else:
            aug = _with_outputs(model, typed, [n for n in names if n not in types], types)
            sess = make_session(aug, self.opts.threads, optimize=False)
            feeds_names = [i.name for i in sess.get_outputs()]

            def run(sub_idx, outputs):
                return run_samples(aug, samples.subset(sub_idx), outputs=outputs, sess=sess)
        first = run(np.arange(1), feeds_names)
        per = sum(a.nbytes for a in first.values()) or 1
        usable = len(samples) - (int(round(len(samples) * self.opts.holdout)) if len(samples) >= 4 else 0)
        k = int(max(1, min(self.opts.max_samples, usable, self.opts.max_bytes // per)))
        idx = np.unique(np.linspace(0, usable - 1, k).round().astype(int))
        sub = samples.subset(idx)
        got = run(idx, feeds_names)
        out = [{**feed, **{n: got[n][i] for n in feeds_names}} for i, feed in enumerate(sub.feeds())]
        hists = {t: HistogramObserver() for t in hist_of if t in got}
        rest = np.setdiff1d(np.arange(len(samples)), idx)
        chunks = [idx] + (np.array_split(rest, -(-len(rest) * per // self.opts.max_bytes)) if len(rest) else [])
        for i, chunk in enumerate(chunks if hists else []):
            vals = got if i == 0 else run(chunk, list(hists))
            for t, h in hists.items():
                h.update(np.asarray(vals[t], np.float32))
        return out, idx, hists
