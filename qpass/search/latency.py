"""``cost="latency"``: onnxruntime's measured time of the artifact, per layer and weight storage class.

The artifact with every weight at 8 bits (activations at ``activation_bits``) is the base; for each linear layer and
each other storage class among its candidates (INT4, INT16, ...) the artifact differing in that layer alone is
built (fakequant + lower_ort, as the search's verification builds it) and timed. All variants run interleaved in
one loop after a warm-up (machine noise hits all alike), median per variant; a layer's term is its variant's median
minus the base's, in microseconds, and differences within the noise floor (``NOISE_FLOOR`` of the base) count as 0
so that equal kernels (an INT4 weight is cast to int8 at session load and runs the same QLinearConv) compare equal
and the search stays deterministic. Ties in time go to the smaller file (a term of ``TIE_BREAK`` us per stored
weight bit)."""
from __future__ import annotations


import numpy as np

from .artifact import build, fakequant_options, stored_bits

NOISE_FLOOR = 0.05  # of the base artifact's median time
TIE_BREAK = 1e-9  # microseconds per stored weight bit
MIN_ROUNDS, MAX_ROUNDS = 20, 400
#: the term of a variant onnxruntime cannot load (e.g. a 16-bit weight its QDQ fusion turns into an invalid
#: QLinearConv): a cost no assignment with it can win
UNRUNNABLE_US = 1e6


def latency_table(model, calibration, sites, candidates: dict, rules_of, opts, feed: dict,
                  budget_s: float = 3.0) -> dict:
    """{"base": us, "terms": {(layer key, stored bits): us}, "rounds": n, "threads": t}. ``rules_of(widths)``
    gives the fakequant rules of an assignment; ``feed`` one input batch."""
    from qpass.ir.ort_session import OrtError, make_session

    base = {s.key: (8 if 8 in candidates[s.key] else candidates[s.key][-1]) if s.kind == "weight"
            else int(opts.activation_bits) for s in sites}
    variants = {("base", 0): base}
    for s in sites:
        if s.kind != "weight":
            continue
        classes = {}
        for W in candidates[s.key]:
            classes.setdefault(stored_bits(W, opts.storage), W)
        for b, W in sorted(classes.items()):
            if b != stored_bits(base[s.key], opts.storage):
                variants[(s.key, b)] = dict(base, **{s.key: W})
    sessions, failed = {}, {}
    for k, w in variants.items():
        try:
            sessions[k] = make_session(build(model, calibration, fakequant_options(opts, rules_of(w)))[1],
                                       opts.threads)
        except OrtError as exc:
            if k[0] == "base":
                raise
            failed[k] = str(exc)
    times = _interleaved(sessions, feed, budget_s)
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    t0 = med[("base", 0)]
    terms = {}
    for k, t in med.items():
        if k[0] != "base":
            d = t - t0
            terms[k] = 0.0 if abs(d) < NOISE_FLOOR * t0 else d
    for k in failed:
        terms[k] = UNRUNNABLE_US
    return {"base": t0, "terms": terms, "rounds": len(times[("base", 0)]), "threads": opts.threads,
            "failed": {f"{k[0]} at {k[1]} bits": v for k, v in failed.items()}}


def _interleaved(sessions: dict, feed: dict, budget_s: float) -> dict:
    from qpass.ir.ort_session import interleaved_times

    return interleaved_times(sessions, feed, 3, budget_s=budget_s, min_rounds=MIN_ROUNDS, max_rounds=MAX_ROUNDS)


def artifact_latency(model, feed: dict, threads: int, budget_s: float = 0.5) -> float:
    """onnxruntime's median time of ``model`` on ``feed`` in microseconds (reported next to the stored widths)."""
    from qpass.ir.ort_session import make_session

    return float(np.median(_interleaved({0: make_session(model, threads)}, feed, budget_s)[0])) * 1e6


def latency_term(table: dict, layer, w: int, storage: str) -> float:
    """A layer's share of the latency cost at weight width ``w`` (0 at the base's class), plus the tie break."""
    b = stored_bits(w, storage)
    return table["terms"].get((layer.key, b), 0.0) + TIE_BREAK * layer.size * b
