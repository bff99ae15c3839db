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

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from qpass.analysis.layer_errors import joined_outputs, tensor_values
from qpass.analysis.metrics import sqnr_db
from qpass.formats.qdq_params import activation_params
from qpass.ir.fed_inputs import FedSession
from qpass.ir.graph import consumers, elem_types, producers
from qpass.ir.ort_session import OrtError
from qpass.analysis.fed_outputs import OutputMemo
from .log_reads import ReadMemo


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


#: the search runs on the first calibration samples that hold at most this many input values in all (at least
#: MIN_SEARCH_SAMPLES, at most MAX_SEARCH_SAMPLES): each of its ~60-80 models runs on every one of them, one sample
#: per call where a sample-coupling op (a spectrogram's ReduceMax over the batch) forbids stacking them.
#: oww-melspectrogram (40000 audio samples per clip): 3 clips, the search in 0.22 s instead of 0.47 s CPU, and the
#: same ranges as from 4 clips; on the 8 held-out clips 13.59 dB against 13.67 dB chosen on all 8.
SEARCH_VALUES = 1 << 17
MIN_SEARCH_SAMPLES, MAX_SEARCH_SAMPLES = 2, 16


def search_samples(samples) -> int:
    """How many of ``samples`` (from the first) the search runs on (see SEARCH_VALUES)."""
    per = sum(int(np.prod(v.shape[1:])) for v in samples.arrays.values()) or 1
    return int(min(len(samples), MAX_SEARCH_SAMPLES, max(MIN_SEARCH_SAMPLES, SEARCH_VALUES // per)))


#: samples the fed sessions are checked on against a rewritten model (two: a batched call is checked too)
CHECK_SAMPLES = 2


def _narrowed(rt, names, k: int):
    return rt.copy_with({t: (rt[t][0] / 2 ** k, rt[t][1] / 2 ** k) for t in names})


class _Trials:
    """Evaluations of range tables that differ from ``base`` only in the ranges of ``tensors``: ``outputs(rt)`` (the
    model's joined outputs on ``samples``) and ``reads(rt, names)`` (the float values the QuantizeLinears of
    ``names`` read). The first model is quantized in full; the rest differ from it only in the scale / zero-point
    initializers of those tensors' QuantizeLinear / DequantizeLinear (checked once against a second full
    quantization, else every trial is quantized in full), so they are fed to one session per kind of run
    (``FedSession``: the outputs, optimized; the reads, unoptimized as ``tensor_values`` runs them), checked once
    against a rewritten copy (else every trial is such a copy, run in a session of its own). ``count``: models
    evaluated. ``model``: ``quantize(base)`` where the caller has it already (not quantized again)."""

    def __init__(self, base, tensors: list[str], quantize, params, samples, model=None):
        self.quantize, self.params, self.samples = quantize, params, samples
        self._made: dict[tuple, tuple] = {}
        self.model = quantize(base) if model is None else model
        self.count = 1  # the first model, made here or by the caller
        self.slots = _param_slots(self.model, tensors)
        self.reads_of = _float_reads(self.model)
        self.fed = None
        probe = _narrowed(base, tensors, 1)
        if self.slots is not None and not _same_model(self._full(probe), self._patched(probe)):
            self.slots = None
        if self.slots is not None:
            self.fed = self._fed(tensors, probe)
        if self.fed is not None:
            self.memo = ReadMemo(self.model, self.slots, self.reads_of, self.fed[1], self.samples)
            try:
                self.scores = OutputMemo(self.fed[0], self.samples)
            except (OrtError, ValueError, OSError):  # onnxruntime's optimized graph not to be had: the fed session
                self.scores = None

    def _full(self, rt) -> onnx.ModelProto:
        self.count += 1
        return self.quantize(rt)

    def _values(self, rt) -> dict[str, np.ndarray]:
        out = {}
        for t, (s_name, z_name) in self.slots.items():
            lo, hi = rt[t]
            at = lo, hi, type(lo), type(hi)  # a range's parameters, made once (the search asks for each many times)
            if at not in self._made:
                p = self.params(lo, hi)
                self._made[at] = np.asarray(p.scale), np.asarray(p.zero_point)
            out[s_name], out[z_name] = self._made[at]
        return out

    def _patched(self, rt) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        inits = {i.name: i for i in m.graph.initializer}
        for name, v in self._values(rt).items():
            inits[name].CopyFrom(numpy_helper.from_array(v, name))
        return m

    def _fed(self, tensors: list[str], probe):
        """(outputs session, reads session) with the slots fed, if both give ``probe``'s numbers exactly."""
        names = [n for pair in self.slots.values() for n in pair]
        reads = [self.reads_of.get(t, t) for t in tensors]
        try:
            fed = (FedSession(self.model, names, keep_optimized=True),
                   FedSession(self.model, names, optimize=False, outputs=reads, types=elem_types(self.model)))
        except (OrtError, KeyError):
            return None
        m, values, few = self._patched(probe), self._values(probe), self.samples.subset(slice(0, CHECK_SAMPLES))
        same = np.array_equal(joined_outputs(m, few), self._fed_outputs(fed[0], values, few))
        want, got = tensor_values(m, reads, few), fed[1].run(few, values, reads)
        return fed if same and all(np.array_equal(want[r], got[r]) for r in reads) else None

    def _fed_outputs(self, sess: FedSession, values, samples=None) -> np.ndarray:
        samples = self.samples if samples is None else samples
        return joined_outputs(sess.model, sess.samples(samples, values), sess=sess.sess)

    def key(self, rt) -> bytes | None:
        """What makes two range tables give the same model here (their candidates' scales and zero points), or None
        where trials are quantized in full."""
        return None if self.slots is None else b"".join(v.tobytes() for v in self._values(rt).values())

    def _model(self, rt) -> onnx.ModelProto:
        if self.slots is None:
            return self._full(rt)
        self.count += 1
        return self._patched(rt)

    def outputs(self, rt) -> np.ndarray:
        """The joined outputs (``joined_outputs``) of the model quantized with ``rt`` on the samples."""
        if self.fed is None:
            return joined_outputs(self._model(rt), self.samples)
        self.count += 1
        if self.scores is None:
            return self._fed_outputs(self.fed[0], self._values(rt))
        return self.scores.joined(self._values(rt))

    def reads(self, rt, names: list[str]) -> dict[str, np.ndarray]:
        """{name: the float values its QuantizeLinear reads in the model quantized with ``rt``} on the samples."""
        if self.fed is None:
            m = self._model(rt)
            reads = _float_reads(m)
            vals = tensor_values(m, [reads.get(t, t) for t in names], self.samples)
            return {t: vals[reads.get(t, t)] for t in names}
        self.count += 1
        return self.memo.reads(self._values(rt), names)


def _param_slots(model: onnx.ModelProto, tensors: list[str]) -> dict | None:
    """{tensor: (scale, zero-point initializer)} of the QuantizeLinear reading each tensor and the DequantizeLinear
    after it, when each pair is that tensor's alone (None otherwise: the trials are quantized in full)."""
    inits = {i.name for i in model.graph.initializer}
    uses: dict[str, set] = {}
    for n in model.graph.node:
        for x in n.input:
            uses.setdefault(x, set()).add(n.name or id(n))
    readers = consumers(model.graph)
    made = producers(model.graph)
    slots = {}
    for t in tensors:
        dq = made.get(t)  # the rewrite keeps a quantized tensor's name on its DequantizeLinear's output
        q = made.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3:
            qs = [n for n in readers.get(t, []) if n.op_type == "QuantizeLinear"]
            if len(qs) != 1 or len(qs[0].input) < 3:
                return None
            q = qs[0]
        s, z = q.input[1], q.input[2]
        pair = {q.name or id(q)} | {d.name or id(d) for d in readers.get(q.output[0], []) if
                                    d.op_type == "DequantizeLinear" and list(d.input[1:3]) == [s, z]}
        if s not in inits or z not in inits or uses.get(s) != pair or uses.get(z) != pair:
            return None
        slots[t] = (s, z)
    return slots


def _same_model(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _remeasured(rt, later: list[str], trials: _Trials):
    """``rt`` with the ranges of ``later`` measured on the model quantized with ``rt`` (what they read there)."""
    vals = trials.reads(rt, later)
    return rt.copy_with({t: (min(float(vals[t].min()), 0.0), max(float(vals[t].max()), 0.0)) for t in later})


def _coarse_fine(top: int, coarse: int, fine: int) -> tuple[list[int], callable]:
    """The coarse halving counts 0, ``coarse``, .. below ``top``, and the fine neighbours of a count (+-``fine``,
    within 0..``top``). ``top`` itself is on the coarse grid only where that is the fine grid (``coarse`` ==
    ``fine``): elsewhere the climb reaches it from the coarse best (oww-melspectrogram: every point with a count of
    12 scored below the coarse best of its candidate, -9.4 dB where the later ranges are cut 4096-fold; 16 of the
    80 models and one float re-measure, the same choice)."""
    grid = list(range(0, top + 1 if coarse <= fine else top, coarse)) or [0]
    if coarse <= fine and grid[-1] != top:
        grid.append(top)
    return grid, lambda k: [x for x in (k - fine, k + fine) if 0 <= x <= top]


def choose(model: onnx.ModelProto, ranges, candidates: list[str], shifts: int, samples, quantize, step: int = 2,
           coarse: int = 6, params=None, stats: dict | None = None, quantized: onnx.ModelProto | None = None,
           ref: np.ndarray | None = None):
    """(ranges, note): ``ranges`` (a ``RangeTable``) with the ranges of ``candidates`` (graph order) narrowed where
    that measures closer to float on ``samples``; ``quantize(ranges)`` returns the QDQ model and ``params(lo, hi)``
    a tensor's ``AffineParams`` there (default: uint8 asymmetric). For each candidate, its halving count k and a second count j by which the later candidates (re-measured under k: a clipped STFT
    output makes the power after it narrower, and the power's best range is narrower again) are narrowed together
    are searched coarse to fine: every point of the grid of step ``coarse`` in both counts, then, from the best point
    so far, its neighbours at +-``step`` in each count, again from the best while that moves it (a hill climb on the
    step-``step`` grid: the narrowing of the input and of the power trade along a ridge, k + j about constant, which
    single-count moves miss). The full step-``step`` grid is (shifts / step + 1)^2 trials per candidate (49 at the
    defaults; oww-melspectrogram: 174 models in all, here 61 (80 with the top count on the coarse grid), the same choice). Trials after the first copy its
    quantized model with the candidates' scales and zero points rewritten (``_Trials``). ``stats`` (a dict, if
    given) gets ``trials`` (models evaluated) and ``patched`` (whether trials were copies). ``quantized``:
    ``quantize(ranges)`` if the caller has made it (it is not made again; it is not changed). ``ref``: the float
    model's ``joined_outputs`` on ``samples`` where the caller has them (not run again)."""
    ref = joined_outputs(model, samples) if ref is None else ref
    trials = _Trials(ranges, candidates, quantize, params or (lambda lo, hi: activation_params(lo, hi, "uint8")),
                     samples, quantized)
    scored: dict[bytes, float] = {}

    def score(rt) -> float:
        """Output SQNR of ``rt``'s model; a table whose quantizers are the same as an earlier one's is not run again
        (it counts as a model tried all the same)."""
        key = trials.key(rt)
        if key is None or key not in scored:
            db = sqnr_db(ref, trials.outputs(rt))
            if key is None:
                return db
            scored[key] = db
        else:
            trials.count += 1
        return scored[key]

    best_ranges, best_db = ranges, score(ranges)
    start_db, changed = best_db, False
    grid, near = _coarse_fine(shifts, max(coarse, step), step)
    for i, c in enumerate(candidates):
        later, base = candidates[i + 1:], best_ranges
        remeasured: dict[int, object] = {}
        tried: dict[tuple, float] = {(0, 0): None}

        def trial(k: int, j: int):
            nonlocal best_ranges, best_db, changed
            if (k, j) in tried:
                return
            if k not in remeasured:
                t = _narrowed(base, [c], k)
                remeasured[k] = _remeasured(t, later, trials) if later else t
            cand = _narrowed(remeasured[k], later, j)
            tried[(k, j)] = db = score(cand)
            if db > best_db:
                best_ranges, best_db, changed = cand, db, True

        js = grid if later else [0]
        for k in grid:
            for j in js:
                trial(k, j)
        climbed = None  # then up the best point's neighbours (both counts +-step) while that finds a better one
        while True:
            done = {kj: db for kj, db in tried.items() if db is not None}
            if not done:
                break
            top = max(done, key=lambda kj: (done[kj], -kj[0], -kj[1]))  # ties: the fewest halvings
            if top == climbed:
                break
            climbed = top
            for k in [top[0]] + near(top[0]):
                for j in ([top[1]] + near(top[1]) if later else [0]):
                    trial(k, j)
    if stats is not None:
        stats.update(trials=trials.count, patched=trials.slots is not None, fed=trials.fed is not None,
                     read_runs=dict(trials.memo.runs) if trials.fed is not None else None,
                     output_runs=dict(trials.scores.runs) if getattr(trials, "scores", None) else None)
    if not changed:
        return ranges, None
    ratios = {c: _span(ranges[c]) / max(_span(best_ranges[c]), 1e-30) for c in candidates}
    return best_ranges, (f"{len(candidates)} ranges read by a Log narrowed on the output "
                         f"({', '.join(f'{c} /{r:.3g}' for c, r in ratios.items())}): output SQNR {start_db:.2f} -> "
                         f"{best_db:.2f} dB on {len(samples)} calibration samples, {trials.count} models tried")


def _span(r) -> float:
    return float(r[1]) - float(r[0])
