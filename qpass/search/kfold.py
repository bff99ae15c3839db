"""k-fold verification, for when a held-out half would leave too few samples (``holdout.holdout_plan``).

Each fold runs the whole search (sensitivity, optimiser, verification with back-off) on the other k - 1 folds and
is verified on its own fold, through the real artifact (fakequant + lower_ort + int8_weights in onnxruntime). The
held-out figure is pooled over the folds: every sample judged once, by an assignment searched without it. The
result takes each site's widest width over the k verified assignments (target form; budget form: the fold
assignment with the best held-out SQNR, all of which fit the budget), is checked on all samples as well, and
"met" needs both the pooled held-out figure and that check to establish the target. A fold alone holds out too
few samples to establish the target with a margin: its back-off uses plain counts (``verify_margin`` 0), the pooled
figure the usual margin.
"""
from __future__ import annotations

import time

import numpy as np

from .result import Samples, SearchRun, build_assignment
from .targets import describe_metrics, output_metrics


def run_kfold(run: SearchRun, model, calibration, progress: bool, engine, t_start: float):
    from .core import _exact_accumulators, _float_reference, _verify_once, held_out_space, is_met, search_and_verify

    opts, data = run.opts, run.data
    k = len(data.folds)
    runs, vers = [], []
    for search_data, verify_data in data.folds:
        r = SearchRun(opts, run.target)
        r.verify_margin = 0.0  # one fold cannot establish the target with a margin; the pooled figure must
        r.data = Samples(search_data, verify_data, data.source, True)
        vers.append(search_and_verify(r, model, calibration, progress, engine))
        runs.append(r)
    ref = np.concatenate([v.reference for v in vers])
    out = np.concatenate([v.output for v in vers])
    labels = None if data.all.labels is None else np.concatenate([r.data.verify.labels for r in runs])
    fa = output_metrics(ref, ref, labels).get("accuracy")
    pooled = output_metrics(ref, out, labels, fa)
    base = runs[0]
    fold_notes = [[n for n in r.notes if n not in run.notes] for r in runs]
    if run.budget_mode:
        best = max(range(k), key=lambda i: vers[i].metric["sqnr"])
        base.chosen, base.acc = dict(runs[best].chosen), dict(runs[best].acc)
    else:
        base.chosen = {key: max(r.chosen[key] for r in runs) for key in base.chosen}
        base.acc = {n: max(r.acc.get(n, 0) for r in runs) for n in base.acc}
    base.exact = _exact_accumulators(base.space, base.chosen)
    base.notes = list(run.notes) + [f"k-fold ({k} folds, {len(data.all)} samples: each search on "
                                    f"{len(base.data.search)}, verified on its held-out fold): pooled held-out "
                                    f"{describe_metrics(pooled)}; each site at its widest fold width"]
    for i, notes in enumerate(fold_notes):
        base.notes += [f"fold {i + 1}: {n}" for n in notes]
    base.searched = {"folds": [dict(r.searched) for r in runs], "held_out_metric": pooled}
    fold0_verify, fold_search = runs[0].data.verify, len(runs[0].data.search)
    base.data = Samples(data.all, data.all, data.source, False)
    t0 = time.perf_counter()
    reference = _float_reference(model, data.all, opts.threads)
    fa_all = output_metrics(reference, reference, data.all.labels).get("accuracy")
    ver_all = _verify_once(base, model, calibration, reference, fa_all)
    base.held_out_space = held_out_space(base, model, fold0_verify)  # the front was measured on fold 1's search
    base.secs = {key: sum(r.secs.get(key, 0.0) for r in runs) for key in runs[0].secs}
    base.secs["verify"] += time.perf_counter() - t0
    base.secs["total"] = time.perf_counter() - t_start
    met = is_met(base, pooled) and is_met(base, ver_all.metric)
    if not met and not run.budget_mode:
        base.notes.append(f"target {run.target} not established: pooled held-out {describe_metrics(pooled)}, the "
                          f"result on all {len(data.all)} samples {describe_metrics(ver_all.metric)}")
    all_metric = dict(ver_all.metric)
    ver_all.metric = pooled
    a = build_assignment(base, ver_all, met, all_metric)
    a.samples.update({"search": fold_search, "verify": len(data.all), "held_out": True,
                      "holdout": 1.0 / k, "folds": k})
    return a

