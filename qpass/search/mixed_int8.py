"""The ``mixed_precision`` pass: the default int8 pipeline under an accuracy target (``qpass optimize MODEL --target
"sqnr>=35"``, or ``relative_accuracy>=0.99`` with labels).

After ``quantize_qdq``, if the int8 model misses the target on the search half of the samples, activation
quantizers (QuantizeLinear -> DequantizeLinear pairs) are moved to 16-bit activations (``qpass.passes.qdq_moves``:
the same range on a 257x finer grid, opset 21 Q/DQ, which onnxruntime runs) or to float, fewest and cheapest
first. Each pair's sensitivity at each precision is the output metric gained when it alone moves (measured on the
search samples, int16 tried first); the cost of a move is read from the graph, not a clock
(``qdq_moves.graph_cost``: MACs that leave an integer kernel, bytes through standalone Q/DQ kernels, kernel count;
as a fraction of the int8 model's), so the same inputs give the same file on any machine and load; onnxruntime's
measured time is opt-in (``cost: measured``). Moves are taken by gain per unit of cost (int16 before float when as
good and no dearer) until the target holds on the search samples and on the held-out half (the bitwidth search's
split, ``qpass.search.core``).
An integer LSTM may move back to float too (``lstm_precision``), and when the first round of moves misses the
target, a second round probes the moves left on top of the ones taken.
The report says which tensors moved, to what, what each gained and cost, and the int8 and final metrics; when
even every pair in float misses the target, one line says what was reached and which layers could not be fixed.
On x86 CPUs onnxruntime has no 16-bit integer kernels: a 16-bit pair runs as Q/DQ around the float kernel, so it
costs more than float there (measured, and so in ``graph_cost``) and float usually wins; int16 wins where it is as
cheap (an accelerator execution provider with A16W8 kernels, or ``precisions: [int16]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.analysis.layer_errors import activation_pairs, call_ms, isolated_errors, joined_outputs
from qpass.analysis.metrics import sqnr_db
from qpass.errors import QpassError
from qpass.ir.graph import consumers, producers, shapes
from qpass.ir.ort_session import OrtError, run_samples
from qpass.passes.ptq_layers import split_samples
from qpass.passes.qdq_moves import (FLOAT_OUT, at_16bit_opset, bypass, float_segment, graph_cost, integer_layers,
                                     sample_shapes, tensor_dims, widen)
from qpass.pipeline.analyses import float_outputs, graph_outputs
from qpass.pipeline.pass_base import Pass, PassResult
from .branch_precision import float_branches, quantized_branches
from .core import MIN_HELD_OUT, _split
from .lstm_precision import is_lstm_key, label, lstm_keys
from .lstm_precision import to_float as lstm_to_float
from .targets import describe_metrics, output_metrics, parse_target


@dataclass
class MixedPrecisionOptions:
    #: accuracy target, e.g. "sqnr>=35" or "relative_accuracy>=0.99"; None: the pass does nothing
    target: str | None = None
    holdout: float = 0.5
    seed: int = 0
    #: the most pairs whose sensitivity is measured one by one (the rest are ranked by their own error)
    max_probes: int = 64
    #: precisions a quantizer may move to, in the order tried: int16 (16-bit QDQ, opset 21) and float
    precisions: tuple = ("int16", "float")
    #: what a move costs: "graph" (``qdq_moves.graph_cost``, deterministic: the default) or "measured"
    #: (onnxruntime's time for the model with the move against the int8 model's: machine- and load-dependent)
    cost: str = "graph"
    #: with cost "measured": candidate moves timed (largest gain first; the rest after them, by gain) and calls per
    #: measurement (the fastest counts)
    max_timed: int = 16
    timing_runs: int = 20

    def __post_init__(self):
        bad = [p for p in self.precisions if p not in ("int16", "float")]
        if bad or not self.precisions:
            raise ValueError(f"precisions must be a list of int16 and float, not {list(self.precisions)!r}")
        if self.cost not in ("graph", "measured"):
            raise ValueError(f"cost must be graph or measured, not {self.cost!r}")


class MixedPrecision(Pass):
    name = "mixed_precision"
    inputs = ("calibration_data",)
    Options = MixedPrecisionOptions

    def run(self, model, ctx):
        if not self.opts.target:
            return PassResult(model, False, [])
        target = parse_target(self.opts.target)
        float_m = self.float_m = ctx.report.snapshots.get("quantize_qdq")
        if float_m is None:
            raise QpassError("mixed_precision needs quantize_qdq before it in the pipeline")
        data = ctx.inputs.eval_data if ctx.inputs.eval_data is not None else ctx.inputs.calibration_data
        if target.needs_labels() and data.labels is None:
            raise QpassError(f"--target {target} needs labels: give evaluation data with a 'labels' array (--eval)")
        if len(data) < 2 * MIN_HELD_OUT:
            raise QpassError(f"--target needs at least {2 * MIN_HELD_OUT} samples ({MIN_HELD_OUT} to search on and "
                             f"{MIN_HELD_OUT} held out); got {len(data)}")
        search, held = _split(data, self.opts.holdout, self.opts.seed)
        s_ref, h_ref = run_samples(float_m, search), run_samples(float_m, held)
        key = next(k for k, v in s_ref.items() if v.dtype.kind == "f")

        def metrics(m, which="search"):
            samples, ref = (search, s_ref) if which == "search" else (held, h_ref)
            return output_metrics(ref[key], run_samples(m, samples)[key], samples.labels)

        base = metrics(model)
        result = {"target": str(target), "int8": base, "moved": []}
        ctx.report.results["mixed_precision"] = result
        held0 = metrics(model, "held")
        if target.met(base) and target.met(held0):
            result.update(final=held0, met=True)
            return PassResult(model, False, [f"target {target} met by int8 alone: {describe_metrics(held0)} on "
                                             f"{len(held)} held-out samples"])
        self.timing, self.int8 = held, model
        self.base16 = at_16bit_opset(model) if "int16" in self.opts.precisions else None
        self.dims = tensor_dims(model, float_m, inputs=sample_shapes(data))
        chosen = self._greedy(model, target, base, metrics, result)
        out = self.apply(chosen)
        held_m = metrics(out, "held")
        result.update(final=held_m, met=target.met(held_m), cost=round(self.relative_cost(out), 4))
        if self.opts.cost == "measured":
            result["latency_ms"] = {"int8": call_ms(model, held), "final": call_ms(out, held)}
        return PassResult(out, bool(chosen), [self._note(target, chosen, result, base, len(held), ctx)])

    def apply(self, chosen: dict[str, str]) -> onnx.ModelProto:
        """The int8 model with the pairs of ``chosen`` ({tensor: "int16" | "float"}) moved (at opset 21 when
        some move to int16)."""
        wide = {t for t, p in chosen.items() if p == "int16"}
        lstms = [t for t in chosen if is_lstm_key(t)]
        out = bypass(self.base16 if wide else self.int8, {t for t, p in chosen.items() if p == "float"
                                                          and not is_lstm_key(t)}, self.float_m)
        out = widen(out, wide) if wide else out
        return lstm_to_float(out, self.float_m, lstms) if lstms else out

    def relative_cost(self, m: onnx.ModelProto) -> float:
        """``graph_cost`` of ``m`` as a fraction of the int8 model's."""
        if not hasattr(self, "cost0"):
            self.cost0 = max(graph_cost(self.int8, self.dims), 1.0)
        return graph_cost(m, self.dims) / self.cost0

    @staticmethod
    def _note(target, chosen: dict, result: dict, base: dict, n_held: int, ctx) -> str:
        held_m, lat = result["final"], result.get("latency_ms")
        speed = (f"latency {lat['final']:.3g} ms against int8's {lat['int8']:.3g} ms" if lat else
                 f"estimated cost x{result['cost']:.3g} of int8's")
        moved = ", ".join(f"{label(t)} ({p})" for t, p in list(chosen.items())[:6]) + \
            (" ..." if len(chosen) > 6 else "")
        n16, n_lstm = sum(p == "int16" for p in chosen.values()), sum(map(is_lstm_key, chosen))
        what = f"{len(chosen) - n_lstm} activation quantizers" + (f" and {n_lstm} LSTMs" if n_lstm else "")
        note = (f"target {target} {'met' if result['met'] else 'MISSED'} on {n_held} held-out samples with "
                f"{what} moved ({n16} to int16, {len(chosen) - n16} to float: {moved}):"
                f" {describe_metrics(held_m)} (int8: {describe_metrics(base)} on the search samples); {speed}")
        if not result["met"]:
            note = (f"target {target} not reached: {describe_metrics(held_m)} on {n_held} held-out samples with "
                    f"{what} moved; could not fix: "
                    f"{', '.join(result.get('unfixed', [])[:6]) or 'the weights (every activation in float)'}")
        ctx.report.log.append(note)
        return note

    def _moves(self, model) -> list[tuple[str, str]]:
        """(tensor, precision) of every move probed: the first ``max_probes`` activation pairs at each precision,
        and each integer LSTM to float (``lstm_precision``)."""
        moves = [(p["tensor"], prec) for p in activation_pairs(model)[:self.opts.max_probes]
                 for prec in self.opts.precisions if prec != "int16" or self.base16 is not None]
        if "float" in self.opts.precisions:
            moves += [(k, "float") for k in lstm_keys(model, self.float_m)]
        return moves

    def _candidates(self, model, target, base: dict, metrics, on: dict | None = None) -> list[dict]:
        """Every probed (tensor, precision) move with a positive gain, its cost attached: ``relative_cost`` - 1 (at
        least 1e-4), or with cost "measured" onnxruntime's added milliseconds (``max_timed`` of them, the rest inf).
        ``on``: moves already taken (gains and costs are then over the model with them, ``base`` its metrics)."""
        on = dict(on or {})
        start = self.apply(on) if on else model
        cost0 = self.relative_cost(start) if on else 1.0
        cands = []
        for tensor, prec in self._moves(model):
            if tensor in on:
                continue
            m = self.apply({**on, tensor: prec})
            gain = _score(metrics(m), base, target)
            if gain > 0:
                cands.append({"tensor": tensor, "precision": prec, "gain": gain,
                              "cost": max(round(self.relative_cost(m) - cost0, 6), 1e-4)})
        if self.opts.cost == "measured":
            timed = sorted(cands, key=lambda c: -c["gain"])[:self.opts.max_timed]
            t0 = call_ms(start, self.timing, self.opts.timing_runs, np.min)
            for c in cands:  # beyond max_timed: after every timed one, largest gain first
                c["cost"], c["measured"] = float("inf"), True
            for c in timed:
                m = self.apply({**on, c["tensor"]: c["precision"]})
                c["cost"] = max(call_ms(m, self.timing, self.opts.timing_runs, np.min) - t0, 1e-4)
        return cands

    def _greedy(self, model, target, base: dict, metrics, result: dict) -> dict[str, str]:
        """Moves by gain per cost until the target holds on the search and the held-out samples; short of it, a
        second round probes the moves left on top of those taken (a second LSTM gains only once the first is float:
        oww-hey-mycroft)."""
        met = lambda ch, m: target.met(m) and target.met(metrics(self.apply(ch), "held"))  # noqa: E731
        cands = self._candidates(model, target, base, metrics)
        # met on the search samples is not enough: the moves go on (same order) until the held-out ones meet it too
        chosen, m = choose_moves(cands, target, lambda ch: metrics(self.apply(ch)), base, result["moved"], done=met)
        if not met(chosen, m) and chosen:
            more = self._candidates(model, target, m, metrics, on=chosen)
            extra, m = choose_moves(more, target, lambda ch: metrics(self.apply({**chosen, **ch})), m,
                                    result["moved"], done=lambda ch, mm: met({**chosen, **ch}, mm),
                                    alone="after the first round's moves")
            cands, chosen = cands + more, {**chosen, **extra}
        if not met(chosen, m):
            pairs = {p["tensor"] for p in activation_pairs(model)} | set(lstm_keys(model, self.float_m))
            weights = sorted({n.name for n in model.graph.node for x in n.input if x.endswith("_dequantized")
                              and x not in pairs})
            gained = {c["tensor"] for c in cands}
            result["unfixed"] = [f"the int8 weights of {len(weights)} layers ({', '.join(weights[:4])}"
                                 f"{' ...' if len(weights) > 4 else ''})"] + [label(t) for t in sorted(pairs - gained)[:5]]
        return chosen


def choose_moves(cands: list[dict], target, evaluate, base: dict, log: list, done=None,
                 alone: str = "alone") -> tuple[dict[str, str], dict]:
    """Greedy: moves by gain per unit of ``cost`` (int16 before float on ties, then the tensor's name: no order
    left to chance), one per tensor, until ``evaluate(chosen)`` meets ``target`` (and ``done(chosen, metrics)``
    holds, when given). Returns ({tensor: precision}, last metrics); ``log`` gets one entry per move taken, with
    why."""
    order = sorted(cands, key=lambda c: (-c["gain"] / c["cost"] if np.isfinite(c["cost"]) else float("inf"),
                                         -c["gain"] if not np.isfinite(c["cost"]) else 0.0,
                                         c["precision"] != "int16", c["tensor"]))
    chosen, m = {}, base
    for c in order:
        if c["tensor"] in chosen:
            continue
        chosen[c["tensor"]] = c["precision"]
        m = evaluate(chosen)
        other = [o for o in cands if o["tensor"] == c["tensor"] and o is not c]
        why = f"{alone} at {c['precision']}: +{c['gain']:.3g} toward the target for {_cost(c)}"
        if other:
            why += f" (at {other[0]['precision']}: +{other[0]['gain']:.3g} for {_cost(other[0])})"
        log.append({"tensor": c["tensor"], "precision": c["precision"], "gain": round(c["gain"], 4),
                    "cost": c["cost"], "reason": why})
        if target.met(m) and (done is None or done(chosen, m)):
            break
    return chosen, m


def _cost(c: dict) -> str:
    return f"{c['cost']:.3g} ms measured" if c.get("measured") else f"+{100 * c['cost']:.3g}% estimated cost"


def _score(m: dict, base: dict, target) -> float:
    """How much ``m`` improves on ``base`` in the target's first metric (dB for SQNR, points for rates)."""
    k = target.constraints[0].metric
    a, b = m.get(k), base.get(k)
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
        return float("inf") if a is not None and not np.isfinite(a) and a > 0 else 0.0
    return float(a - b)


@dataclass
class AutoPrecisionOptions:
    #: the most latency the moves may add, as a fraction of the int8 model's (each move's cost measured in
    #: onnxruntime); None: no timing (the default: every allowed move keeps all integer kernels, so its measured
    #: cost is noise, and the result stays reproducible)
    latency_budget: float | None = None
    #: a move is taken only if alone it gains this much output SQNR (dB) on the search samples
    min_gain_db: float = 0.5
    #: quantizers probed one by one: the lowest isolated SQNR first (``layer_errors``)
    max_probes: int = 8
    precisions: tuple = ("float",)
    samples: int = 64
    timing_runs: int = 10
    #: what the probes may cost in all, in ``qdq_moves.graph_cost`` units (float-MAC equivalents) summed over the
    #: scoring runs: fewer probes on big models, decided from the graph (about 30 s on one avx512 core)
    work_budget: float = 3e11
    #: moves that take a layer off its integer kernel (or add a standalone Q/DQ) may add this fraction of the int8
    #: model's ``qdq_moves.graph_cost`` in all (0, the default: only moves that keep every integer kernel; at
    #: 0.02, with the fitted Conv cost table, mtcnn-pnet's first two Convs in float cost less than int8 and gain
    #: 2.7-3.4 dB); read from the graph, so the output does not depend on the machine. ``costly_probes`` such
    #: quantizers, lowest isolated SQNR first, at each of ``costly_precisions``, by forward selection (``_forward``)
    cost_budget: float = 0.0
    costly_probes: int = 4
    costly_precisions: tuple = ("float",)
    #: an If branch that ``quantize_qdq`` quantized goes back to float when alone that gains this much output SQNR
    #: (dB) on the search samples (half of it on the held-out ones; None: never) ...
    branch_min_gain_db: float | None = 3.0
    #: ... while the float branches add at most this fraction of the int8 model's expected ``graph_cost`` (each
    #: branch's extra cost times the share of calibration samples that take it; ``branch_precision``)
    branch_cost_budget: float = 0.05


class AutoPrecision(MixedPrecision):
    """The default pipeline's cheap moves (no target): activation quantizers whose move to float (or int16) buys
    at least ``min_gain_db`` of output SQNR alone, taken by gain per measured millisecond while the measured
    latency they add stays within ``latency_budget`` of the int8 model's, kept only if the held-out calibration
    samples gain half ``min_gain_db`` too. Typical find: a transformer's FFN output with outlier channels, whose
    float output costs nothing (onnxruntime's MatMulIntegerToFloat writes float anyway)."""

    name = "auto_precision"
    Options = AutoPrecisionOptions

    def run(self, model, ctx):
        try:
            return self._moves(model, ctx)
        except (OrtError, ValueError, ArithmeticError, IndexError) as exc:  # an optional improvement: never fatal
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
            ctx.report.results[self.name] = {"moved": [], "skipped": why}
            return PassResult(model, False, [f"skipped: {why}"])

    def _moves(self, model, ctx):
        self.float_m = ctx.report.snapshots.get("quantize_qdq")
        data = ctx.inputs.calibration_data
        pairs = activation_pairs(model)
        if self.float_m is None or data is None or len(data) < 4 or not (pairs or quantized_branches(model)):
            return PassResult(model, False, ["nothing to measure"])
        fit, held = split_samples(data, self.opts.samples, 0.5)
        given = model

        def score(m, s=fit):  # the float reference on first use (a run with nothing to probe needs none)
            # the int8 model as given: its outputs shared with choose_dynamic (which scored it unless it changed it)
            out = graph_outputs(ctx.analyses, m, s) if m is given else joined_outputs(m, s)
            return sqnr_db(float_outputs(ctx.analyses, self.float_m, s), out)

        model, records = self._branches(model, fit, held, score, data)
        res = self._pair_moves(model, ctx, pairs, data, fit, held, score) if pairs else \
            PassResult(model, False, [])
        if records:
            ctx.report.results.setdefault(self.name, {"moved": []})["branches"] = records
        taken = [f"If {r['node']} {r['branch']} in float: {r['reason']}" for r in records if r["float"]]
        return PassResult(res.model, res.changed or bool(taken), taken + res.notes) if taken else res

    def _pair_moves(self, model, ctx, pairs, data, fit, held, score):
        """The activation quantizers' moves (the pass before branches were added)."""
        self.timing, self.int8 = held, model
        free = keeps_integer_kernels(model, {p["tensor"] for p in pairs})
        if not self.opts.cost_budget and not any(p["tensor"] in free for p in pairs):
            # no move to probe (each would lose an integer kernel) and none to weigh by cost: nothing to measure
            # (mtcnn-pnet: the float reference, isolated errors and the int8 score were 40 ms for no decision)
            ctx.report.results[self.name] = {"probed": [], "probed_costly": [], "moved": []}
            return PassResult(model, False, ["no quantizer moves to float while every integer kernel stays integer"])
        wants16 = "int16" in self.opts.precisions or (self.opts.cost_budget and "int16" in self.opts.costly_precisions)
        self.base16 = at_16bit_opset(model) if wants16 else None
        self.dims = tensor_dims(model, self.float_m, inputs=sample_shapes(data))
        # as many probes as the work budget pays for at the graph cost of one scoring run
        per_run = max(self.relative_cost(model) * self.cost0 * len(fit), 1.0)
        n_probes = max(1, min(self.opts.max_probes, int(self.opts.work_budget / per_run)))
        probe = [t for t in dict.fromkeys(p["tensor"] for p in pairs) if t in free]
        # the isolated errors rank the quantizers to probe: a float run of the model, only where some are left out
        # (magika: 2 of 9 quantizers free to move, 0.19 s of isolated errors to order two probes)
        errs = isolated_errors(self.float_m, model, fit) if self.opts.cost_budget or len(probe) > n_probes else {}
        # the lowest isolated SQNR first; quantizers of graph inputs (no float name to compare) after them; only
        # moves that keep every integer kernel (issue 12's coverage: ``free``)
        probe = sorted(probe, key=lambda t: (t not in errs, errs.get(t) if errs.get(t) is not None else float("inf")))
        base = score(model)
        scores, models = {}, {}  # {frozenset of moves: score on ``fit`` / the model}: each set scored and built once

        def model_of(moves: dict) -> onnx.ModelProto:
            key = frozenset(moves.items())
            if key not in models:
                models[key] = self.apply(moves)
            return models[key]

        def score_moves(moves: dict, m=None) -> float:
            key = frozenset(moves.items())
            if key not in scores:
                scores[key] = score(m if m is not None else model_of(moves)) if moves else base
            return scores[key]

        costly = self._costly(pairs, free, errs)
        probe = probe[:n_probes]
        cands = [{"tensor": t, "precision": prec, "gain": score_moves({t: prec}) - base}
                 for t in probe for prec in self.opts.precisions if prec != "int16" or self.base16 is not None]
        cands = [c for c in cands if c["gain"] >= self.opts.min_gain_db]
        keep = {frozenset({(c["tensor"], c["precision"])}) for c in cands}
        models = {k: m for k, m in models.items() if k in keep}  # the probes that lost: not kept in memory
        # what onnxruntime's optimizer makes of it: no more float matrix kernels than the int8 model (e.g. MatMul +
        # bias Add fused to a float Gemm once the MatMul's output quantizer is gone)
        n_float = float_matrix_ops(model) if cands else 0
        cands = [c for c in cands if float_matrix_ops(model_of({c["tensor"]: c["precision"]})) <= n_float]
        result = {"int8_db": base, "probed": probe, "probed_costly": costly, "moved": []}
        ctx.report.results[self.name] = result
        if not cands and not costly:
            return PassResult(model, False, [f"no quantizer gains {self.opts.min_gain_db:g} dB alone"])
        chosen = self._within_budget(cands, score_moves, base, result) if cands else {}
        chosen = self._forward(costly, chosen, score_moves, result, max(2, n_probes))
        h8, hf = score(model, held), score(model_of(chosen), held) if chosen else None
        result.update(held_out_int8_db=h8, held_out_db=hf)
        if not chosen or not hf >= h8 + self.opts.min_gain_db / 2:
            result["moved"] = []
            return PassResult(model, False, ["no move within the latency budget improves the held-out samples"])
        moved = ", ".join(f"{t} ({p})" for t, p in chosen.items())
        return PassResult(model_of(chosen), True, [f"{len(chosen)} activation quantizers moved ({moved}): output "
                                                     f"SQNR {h8:.2f} -> {hf:.2f} dB on {len(held)} held-out samples"])

    def _branches(self, model, fit, held, score, data):
        """(``model`` with the If branches ``branch_precision.float_branches`` restores to float, its records)."""
        if self.opts.branch_min_gain_db is None:
            return model, []
        return float_branches(model, self.float_m, fit, held, score, self.opts.branch_min_gain_db,
                              self.opts.branch_cost_budget, sample_shapes(data))

    def _costly(self, pairs: list[dict], free: set[str], errs: dict) -> list[str]:
        """Quantizers whose move leaves an integer kernel or adds a Q/DQ kernel, to probe within ``cost_budget``:
        the ``costly_probes`` with the lowest isolated SQNR."""
        if not self.opts.cost_budget:
            return []
        rest = [t for t in dict.fromkeys(p["tensor"] for p in pairs) if t not in free and errs.get(t) is not None]
        return sorted(rest, key=lambda t: (errs[t], t))[:self.opts.costly_probes]

    def _forward(self, tensors: list[str], chosen: dict[str, str], score_moves, result: dict,
                 runs: int) -> dict[str, str]:
        """Forward selection over the costly moves of ``tensors``, on top of ``chosen``: each round adds the move
        that scores best with the ones taken, while the whole set's graph cost stays within ``cost_budget`` and the
        round gains ``min_gain_db`` / 2. Pairs count: mtcnn-pnet's first two Conv outputs in float gain 3.6 dB on
        its eval samples together (x0.93 graph cost), while the first alone loses 0.7 and the second gains 0.4.
        At most ``runs`` x 2 scoring runs (the work budget's probes). ``score_moves(moves[, model])``: the
        output SQNR with ``moves``, each set scored once."""
        pairs = {p["tensor"] for p in activation_pairs(self.int8)}
        # a move: one quantizer, or it with the ones after it up to the next matrix op (``float_segment``)
        groups = list(dict.fromkeys(tuple(g) for t in tensors for g in ([t], float_segment(self.int8, t, pairs))))
        moves = [(g, p) for g in groups for p in self.opts.costly_precisions
                 if p != "int16" or self.base16 is not None]
        best = score_moves(chosen) if chosen else result["int8_db"]
        runs *= 2
        while moves and runs > 0 and np.isfinite(best):  # an exact int8 output (unidic's tags): nothing to gain
            trials = []
            for g, p in moves:
                moved = {**chosen, **{t: p for t in g}}
                m = self.apply(moved)
                extra = self.relative_cost(m) - 1.0
                if extra <= self.opts.cost_budget and runs > 0:
                    trials.append((np.nan_to_num(score_moves(moved, m), nan=-np.inf), g, p, extra))
                    runs -= 1
            if not trials:
                break
            s, g, p, extra = max(trials, key=lambda x: (x[0], -len(x[1]), x[1]))
            if not s >= best + self.opts.min_gain_db / 2:  # also NaN
                break
            result["moved"].append({"tensor": ", ".join(g), "precision": p, "gain": s - best, "graph_cost": extra,
                                    "reason": f"+{s - best:.2f} dB with the moves before it, graph cost "
                                              f"{100 * extra:+.2g}% in all"})
            chosen, best = {**chosen, **{t: p for t in g}}, s
            moves = [(h, q) for h, q in moves if not set(h) & set(g)]
        return chosen

    def _within_budget(self, cands: list[dict], score_moves, base: float, result: dict) -> dict[str, str]:
        timed = self.opts.latency_budget is not None
        runs = self.opts.timing_runs
        t0 = call_ms(self.int8, self.timing, runs, np.min) if timed else 1.0
        for c in cands:
            t = call_ms(self.apply({c["tensor"]: c["precision"]}), self.timing, runs, np.min) if timed else t0
            c["latency_cost_ms"] = max(t - t0, 0.0)
        budget = self.opts.latency_budget * t0 if timed else float("inf")
        spent, best, chosen = 0.0, base, {}
        # largest gain per measured millisecond first (all equal without timing: largest gain first)
        order = sorted(cands, key=lambda c: (-c["gain"] / max(c["latency_cost_ms"], 1e-3 * t0), c["tensor"]))
        for c in order:
            if c["tensor"] in chosen or spent + c["latency_cost_ms"] > budget:
                continue
            s = score_moves({**chosen, c["tensor"]: c["precision"]})
            if s > best:
                chosen[c["tensor"]], best, spent = c["precision"], s, spent + c["latency_cost_ms"]
                cost = f"{c['latency_cost_ms']:.3g} ms measured (int8 model {t0:.3g} ms)" if timed else \
                    "no integer kernel lost"
                result["moved"].append({**c, "reason": f"alone +{c['gain']:.2f} dB for {cost}"})
        if timed:
            result["latency_ms"] = {"int8": t0, "added": spent}
        return chosen


def keeps_integer_kernels(model: onnx.ModelProto, tensors: set[str]) -> set[str]:
    """The activation quantizers of ``tensors`` whose move to float leaves every integer kernel integer: the value's
    producer is not an integer layer (``qdq_moves.integer_layers``), or is one that writes float anyway
    (``FLOAT_OUT``), and no reader of the pair is an integer layer."""
    ints = integer_layers(model)
    prod, readers = producers(model.graph), consumers(model.graph)
    out = set()
    for t in tensors:
        dq = prod.get(t)
        q = prod.get(dq.input[0]) if dq is not None else None
        src = prod.get(q.input[0]) if q is not None else None
        if src is not None and src.op_type not in FLOAT_OUT and tuple(src.output) in ints:
            continue
        if q is not None and any(tuple(r.output) in ints for d in readers.get(q.output[0], [])
                                 for r in readers.get(d.output[0], [])):
            continue
        out.add(t)
    return out


def float_matrix_ops(model: onnx.ModelProto) -> int:
    """Conv / MatMul / Gemm nodes left on float kernels in the graph onnxruntime runs (its optimizer applied)."""
    from qpass.ir.ort_session import optimized_graph

    ops = [n.op_type for n in optimized_graph(model).node]
    return sum(op in ("Conv", "ConvTranspose", "MatMul", "Gemm", "FusedGemm", "FusedConv", "FusedMatMul")
               for op in ops)
