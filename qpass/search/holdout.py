"""Which samples the search measures on and which verify its result.

By default half of the samples (evaluation data when given, else calibration data) are held out of the search and
verify its result; that needs ``2 x Target.min_samples()`` samples. With fewer, k-fold: the samples are cut into k
folds (stratified by label when there are labels), the search runs k times on k - 1 of them with the remaining fold
held out, so that every sample verifies exactly one search and the pooled held-out figure counts all n samples; k is
the smallest that leaves each search ``min_samples`` samples (at most ``MAX_FOLDS``). Fewer still is a QpassError
saying how many are needed.
"""
from __future__ import annotations

import math

import numpy as np

from qpass.ir.samples import SampleSet
from ..errors import QpassError
from .result import Samples
from .targets import MIN_HELD_OUT

MAX_FOLDS = 10


def _order(data: SampleSet, seed: int) -> np.ndarray:
    """A seeded permutation of the samples; with labels, each class's samples spread evenly over it (so that
    contiguous slices are stratified)."""
    n = len(data)
    rng = np.random.default_rng(seed)
    if data.labels is None:
        return rng.permutation(n)
    lab = np.asarray(data.labels).reshape(-1)
    keys = np.empty(n)
    for c in np.unique(lab):
        idx = np.flatnonzero(lab == c)
        idx = idx[rng.permutation(idx.size)]
        keys[idx] = (np.arange(idx.size) + rng.random()) / idx.size
    return np.argsort(keys, kind="stable")


def split(data: SampleSet, fraction: float, seed: int) -> tuple[SampleSet, SampleSet]:
    """(search, verification) subsets; stratified by label when there are labels."""
    n = len(data)
    rng = np.random.default_rng(seed)
    if data.labels is not None:
        held = []
        lab = np.asarray(data.labels).reshape(-1)
        for c in np.unique(lab):
            idx = np.flatnonzero(lab == c)
            idx = idx[rng.permutation(idx.size)]
            held.extend(idx[:int(round(fraction * idx.size))].tolist())
        held = np.array(sorted(held), np.int64)
    else:
        held = np.sort(rng.permutation(n)[:int(round(fraction * n))])
    keep = np.setdiff1d(np.arange(n), held)
    if keep.size == 0 or held.size == 0:
        raise QpassError(f"bitwidth: holdout={fraction} leaves no samples on one side of {n}")
    return data.subset(keep), data.subset(held)


def folds(data: SampleSet, k: int, seed: int) -> list[tuple[SampleSet, SampleSet]]:
    """k (search, held-out) pairs; the held-out parts partition the samples (stratified by label)."""
    order = _order(data, seed)
    parts = np.array_split(order, k)
    out = []
    for i in range(k):
        held = np.sort(parts[i])
        keep = np.sort(np.concatenate([parts[j] for j in range(k) if j != i]))
        out.append((data.subset(keep), data.subset(held)))
    return out


def subsample(data: SampleSet, k: int, seed: int) -> SampleSet:
    if len(data) <= k:
        return data
    idx = np.sort(np.random.default_rng(seed + 1).permutation(len(data))[:k])
    return data.subset(idx)


def kfold_k(n: int, need: int) -> int | None:
    """The smallest k (2..MAX_FOLDS) whose searches get ``need`` samples each, or None."""
    for k in range(2, MAX_FOLDS + 1):
        if n - math.ceil(n / k) >= need:
            return k
    return None


def holdout_plan(n: int, holdout: float | None, target, source: str) -> tuple[float, int]:
    """(held-out fraction, folds): ``holdout``, or half by default, or k-fold (fraction 0, k > 1) when there are
    fewer than 2 x ``Target.min_samples`` samples; QpassError when no plan can resolve the target."""
    if holdout is not None and float(holdout) == 0.0:
        return 0.0, 0
    need = target.min_samples() if target is not None else MIN_HELD_OUT
    what = f"target {target}" if target is not None else "the result"
    if holdout is None:
        if n >= 2 * need:
            return 0.5, 0
        k = kfold_k(n, need)
        if k is None:
            least = next(m for m in range(need, 2 * need + 1) if kfold_k(m, need) is not None)
            raise QpassError(f"bitwidth: verifying {what} on held-out samples needs at least {least} {source} "
                             f"samples ({MAX_FOLDS}-fold: {need} to search on in each fold, every sample held out "
                             f"once; {2 * need} for a held-out half); got {n}. Give more samples (--calib, or "
                             f"--eval), or holdout=0 to verify on the search samples only")
        return 0.0, k
    if round(float(holdout) * n) < need:
        raise QpassError(f"bitwidth: holdout={float(holdout):g} of {n} {source} samples holds out "
                         f"{round(float(holdout) * n)}; {what} needs at least {need} held-out samples "
                         f"(holdout >= {need / n:.2f}, or more samples)")
    return float(holdout), 0


def choose_samples(run, calib: SampleSet, eval_data: SampleSet | None) -> Samples:
    """Search and verification samples (evaluation data when given, else calibration data): by default half of
    them held out of the search to verify its result, k-fold when that leaves too few; too few for either is an
    error."""
    opts, target = run.opts, run.target
    metric_data = eval_data if eval_data is not None else calib
    source = "evaluation" if eval_data is not None else "calibration"
    holdout, k = holdout_plan(len(metric_data), opts.holdout, target, source)
    fold_sets = None
    if k:
        fold_sets = [(subsample(s, opts.max_samples, opts.seed), v) for s, v in folds(metric_data, k, opts.seed)]
        search_data, verify_data = fold_sets[0]
    elif holdout > 0:
        search_data, verify_data = split(metric_data, holdout, opts.seed)
    else:
        search_data = verify_data = metric_data
        run.notes.append(f"holdout=0: the result is verified on the {len(metric_data)} samples it was searched on, "
                         f"not on held-out ones")
    search_data = subsample(search_data, opts.max_samples, opts.seed)
    labels = search_data.labels
    if target is not None and target.needs_labels() and (labels is None or verify_data.labels is None):
        raise QpassError(f"bitwidth: target {target} needs labels: give evaluation data with a 'labels' array "
                         f"(--eval NPZ)")
    if target is not None and labels is None and any(c.metric == "relative_accuracy" for c in target.constraints):
        run.notes.append(f"the {source} data has no labels: relative_accuracy is measured as top-1 agreement with "
                         f"the float model")
    return Samples(search_data, verify_data, source, holdout > 0 or bool(k), fold_sets, metric_data)
