"""Orchestration: data split, sites, probe, sensitivity, optimiser, accumulators, verification, result.

``run_search`` runs one step after the other on a ``SearchRun`` (result.py) that each step fills in."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from qpass.ir.samples import SampleSet
from ..errors import QpassError
from qpass.analysis.metrics import top1
from .artifact import build, fakequant_options
from .cost import CostModel
from .latency import latency_table
from .optimize import Optimizer
from .probe import Probe
from .report import Assignment
from .options import BitwidthOptions, check_template
from .holdout import choose_samples, split as _split  # noqa: F401 - _split: mixed_int8's import
from .result import SearchRun, Verification, build_assignment, fakequant_rules
from .sensitivity import Space, analyse
from .sites import find_sites
from .targets import MIN_HELD_OUT, describe_metrics, output_metrics, parse_target, risk_met  # noqa: F401

UNIFORM = (8, 6, 4)
#: the held-out check counts lost (disagreeing) samples at their 1-sigma Wilson upper bound, like the search does:
#: "met" means the held-out samples establish the target, not that it sits on its edge
VERIFY_MARGIN = 1.0


# ---------------------------------------------------------------------------------------------- verification
def _verify(model: onnx.ModelProto, calibration, fq_opts: dict, data: SampleSet, reference: np.ndarray,
            threads: int, intrinsic: bool):
    """The real thing: fakequant (with the rules) + lower_ort, run through onnxruntime on ``data``."""
    from qpass.ir.ort_session import run_samples

    qonnx, lowered, ctx = build(model, calibration, fq_opts)
    out_name = lowered.graph.output[0].name
    out = run_samples(lowered, data, threads, outputs=[out_name], sess=faithful_session(lowered, threads))[out_name]
    out = np.asarray(out, np.float32).reshape(len(data), -1)
    default = run_samples(lowered, data, threads, outputs=[out_name])[out_name]  # qpass's usual session
    saturation = {"_ort_default": np.asarray(default, np.float32).reshape(len(data), -1)}
    if intrinsic:
        from qpass.ops import Quant, op_of
        from qpass.reference import GoldenExecutor
        from qpass.reference import run_samples as golden_run

        ex = GoldenExecutor(qonnx)
        golden_run(qonnx, data, outputs=[out_name], executor=ex)
        readers: dict[str, list[str]] = {}
        for n in qonnx.graph.node:
            for x in n.input:
                readers.setdefault(x, []).append(n)
        for node in (ctx.report.results.get("fakequant") or {}).get("accumulators", {}):
            lin = next((n for n in qonnx.graph.node if n.name == node), None)
            quants = [r for r in readers.get(lin.output[0], []) if op_of(r) is Quant] if lin is not None else []
            if quants:
                saturation[node] = int(ex.stats.get(quants[0].name, {}).get("saturated", 0))
    return out, qonnx, lowered, saturation


# onnxruntime (>= 1.20) quantises the float weight of a Conv / Gemm that sits between QDQ activations to int8 on its
# own ("WeightBiasQuantization"); lower_ort leaves weights wider than 8 bits in float on purpose, so that rewrite
# changes the model. Verification runs without it; the default session is measured too and differences noted.
ORT_UNFAITHFUL_OPTIMIZERS = ("WeightBiasQuantization",)


def faithful_session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    from qpass.ir.ort_session import make_session
    from qpass.ir.model_io import serialize

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(serialize(model), so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(ORT_UNFAITHFUL_OPTIMIZERS))
    except Exception:  # noqa: BLE001 - an onnxruntime without that keyword: no graph optimisation at all
        return make_session(model, threads, optimize=False)


def _float_reference(model: onnx.ModelProto, data: SampleSet, threads: int) -> np.ndarray:
    from qpass.ir.ort_session import run_samples

    out_name = model.graph.output[0].name
    out = run_samples(model, data, threads, outputs=[out_name])[out_name]
    return np.asarray(out, np.float32).reshape(len(data), -1)


# ---------------------------------------------------------------------------------------------- search
def file_storage(opts: BitwidthOptions, model: onnx.ModelProto) -> BitwidthOptions:
    """``opts`` with ``storage="onnx4"`` (no INT2 class) when the installed onnxruntime cannot run ``model`` at
    opset 25, where lower_ort stores <= 2-bit weights as INT2 (``int2_storage``)."""
    from dataclasses import replace

    from ..passes.int2_storage import model_takes_int2

    return replace(opts, storage="onnx4") if opts.storage == "onnx" and not model_takes_int2(model) else opts


def run_search(model: onnx.ModelProto, calibration, calib: SampleSet, eval_data: SampleSet | None,
               opts: BitwidthOptions, progress: bool = False, engine=None) -> Assignment:
    """The search on a normalised, BN-folded, calibrated model (``calibration``: the calibrate pass's analysis);
    ``engine`` (``qpass.pipeline.engines``) runs the per-site sensitivity runs in parallel, same results."""
    t_start = time.perf_counter()
    opts = file_storage(opts, model)
    run = SearchRun(opts, parse_target(opts.target) if opts.target is not None else None)
    if not calibration.observers:
        raise QpassError("bitwidth: no calibrated ranges (run the calibrate pass before bitwidth)")
    run.data = choose_samples(run, calib, eval_data)
    if run.data.folds:
        from .kfold import run_kfold

        return run_kfold(run, model, calibration, progress, engine, t_start)
    ver = search_and_verify(run, model, calibration, progress, engine)
    if run.data.held_out:
        run.held_out_space = held_out_space(run, model, run.data.verify)
    run.secs["total"] = time.perf_counter() - t_start
    search_metric = run.opt.measure(run.chosen, "final", run.acc or None)
    return build_assignment(run, ver, is_met(run, ver.metric), search_metric)


def search_and_verify(run: SearchRun, model: onnx.ModelProto, calibration, progress: bool,
                      engine=None) -> Verification:
    """Sites, sensitivity, the optimiser, baselines, accumulators, then verification (backing off until the
    held-out samples confirm the target) on ``run.data``."""
    opts = run.opts
    _measure_sites(run, model, calibration, progress, engine)
    t0 = time.perf_counter()
    if run.budget_mode:
        _optimise_for_budget(run, progress)
    else:
        _optimise_for_target(run, progress)
    _uniform_baselines(run)
    _accumulators(run)
    run.secs["search"] = time.perf_counter() - t0
    if run.opt.evals >= opts.max_evals:
        run.notes.append(f"the search stopped after max_evals={opts.max_evals} measured assignments")
    t0 = time.perf_counter()
    ver = _verify_until_met(run, model, calibration)
    run.secs["verify"] = time.perf_counter() - t0
    _note_ort_default(run, ver)
    return ver


def held_out_space(run: SearchRun, model: onnx.ModelProto, data: SampleSet) -> Space:
    """The search's sites and candidates measured on ``data`` (the Pareto front's held-out figures)."""
    opts = run.opts
    probe = Probe(model, run.sites, data, batch_size=opts.batch_size, threads=opts.threads)
    return Space(run.sites, probe, opts.weights, opts.activations, opts.weight_granularity, run.space.candidates,
                 data.labels)


def is_met(run: SearchRun, metric: dict) -> bool:
    """Budget form: the weights as stored fit avg_bits; target form: ``metric`` establishes the target."""
    opts = run.opts
    if run.budget_mode:
        return CostModel("memory", run.sites, storage=opts.storage).total(run.chosen) <= opts.avg_bits * sum(
            s.size for s in run.sites if s.kind == "weight") + 1e-9
    return verified(run.target, metric)


def _measure_sites(run: SearchRun, model: onnx.ModelProto, calibration, progress: bool, engine=None) -> None:
    """Sites and their candidate widths, the cost, the probe, and every site's sensitivity alone."""
    opts = run.opts
    sites, excluded, site_notes = find_sites(model, calibration.observers, opts.calibrator, opts.placement,
                                             opts.weight_granularity, opts.exclude)
    run.notes += site_notes
    if not sites:
        raise QpassError("bitwidth: the model has no quantisable layer or activation to assign widths to")
    run.sites, run.excluded = sites, excluded
    candidates = {}
    for s in sites:
        if s.kind == "weight":
            candidates[s.key] = list(opts.weight_candidates)
        elif run.budget_mode or (opts.storage != "exact" and opts.cost in ("memory", "latency")):
            candidates[s.key] = [int(opts.activation_bits)]  # narrower: nothing saved in the file, a Clip more
        else:
            candidates[s.key] = list(opts.activation_candidates)
    acc_sites = [s for s in sites if s.kind == "weight"] if opts.placement == "intrinsic" else []
    if opts.cost != "latency":
        run.cost = CostModel(opts.cost, sites, opts.cost_options, opts.storage)  # before any work (resources)
    t0 = time.perf_counter()
    probe = Probe(model, sites, run.data.search, acc_sites, batch_size=opts.batch_size, threads=opts.threads)
    run.space = Space(sites, probe, opts.weights, opts.activations, opts.weight_granularity, candidates,
                      run.data.search.labels)
    run.secs["float run"] = time.perf_counter() - t0
    if opts.cost == "latency":
        t0 = time.perf_counter()
        table = latency_table(model, calibration, sites, candidates,
                              lambda w: fakequant_rules(sites, excluded, w, {}, opts, run.space), opts,
                              run.data.search.feed(0))
        run.cost = CostModel("latency", sites, dict(opts.cost_options, table=table), opts.storage)
        run.notes += [f"latency: onnxruntime cannot run {k} ({v}); not chosen" for k, v in table["failed"].items()]
        run.secs["latency"] = time.perf_counter() - t0
    run.sens = analyse(run.space, progress, engine)
    run.secs["sensitivity"] = run.sens.seconds


@dataclass
class Plan:
    """Target form: the sites the cost sees (primary) and the others, where the others start, and whether the
    target is smooth (SQNR only) or counts samples."""

    primary: list[str]
    secondary: list[str]
    free: dict[str, int]
    smooth: bool


def _optimise_for_target(run: SearchRun, progress: bool) -> None:
    """The cheapest assignment the search samples say meets the target (the widest when none does)."""
    opts, target = run.opts, run.target
    opt = run.opt = Optimizer(run.space, run.sens, run.cost, target, opts.max_evals, progress, float(opts.margin))
    primary = [k for k in run.keys if run.cost.touches(k)]
    secondary = [k for k in run.keys if k not in primary]
    # sites the cost does not see (activations under memory) start at activation_bits, not the widest
    free = {k: max([W for W in opt.cands[k] if W <= opts.activation_bits] or opt.cands[k][:1]) for k in secondary}
    run.plan = Plan(primary, secondary, free, all(c.metric == "sqnr" for c in target.constraints))
    chosen = run.chosen = _search_once(run)
    m_final = opt.measure(chosen, "final")
    if not opt.ok(m_final) and target.met(m_final):
        run.notes.append(f"{len(run.data.search)} search samples cannot establish {target} with a "
                         f"{opt.margin:g}-sigma margin (lost samples are checked against their Wilson upper bound, "
                         f"which zero losses already exceed): using the widest candidates; give more samples or "
                         f"margin=0")
    elif not opt.ok(m_final):
        run.notes.append(f"the target {target} is not met even with the widest candidates "
                         f"({describe_metrics(m_final)}): using them")
    elif any(chosen[k] > free[k] for k in free):
        run.notes.append(f"activations outside the cost at {opts.activation_bits} bits missed the target: "
                         f"started them at the widest candidate")


def _search_once(run: SearchRun) -> dict:
    """Widest start, Lagrangian path down to the first failure, then measured refinement."""
    opt, plan, keys = run.opt, run.plan, run.keys
    opt.noise_cap = None
    top = opt.top(keys, plan.free)
    m_top = opt.measure(top, "widest")
    if not opt.ok(m_top) and plan.free:
        top = opt.top(keys)
        m_top = opt.measure(top, "widest")
    if not opt.ok(m_top):
        return top
    path = opt.path(top, plan.primary)
    start, fail = opt.select(path)
    start = start or top
    if not plan.smooth and fail is not None:  # the noise budget: halfway (in dB) to the first failure
        n_ok, n_fail = opt.measure(start, "path")["noise"], opt.measure(fail, "path")["noise"]
        opt.noise_cap = float(np.sqrt(max(n_ok, 1e-300) * max(n_fail, n_ok, 1e-300)))
    return opt.refine(start, plan.primary, plan.secondary)


def _optimise_for_budget(run: SearchRun, progress: bool) -> None:
    """The least output noise within avg_bits of weight memory (activations at activation_bits)."""
    opts = run.opts
    mem = CostModel("memory", run.sites, storage=opts.storage)
    opt = run.opt = Optimizer(run.space, run.sens, mem, None, opts.max_evals, progress)
    wkeys = run.keys_of("weight")
    base = {k: int(opts.activation_bits) for k in run.keys_of("activation")}
    budget = opts.avg_bits * sum(s.size for s in run.sites if s.kind == "weight")
    top = dict(base)
    top.update(opt.top(wkeys))
    path = opt.path(top, wkeys)
    start = opt.knapsack(base, wkeys, budget)
    if start is None:
        raise QpassError(f"bitwidth: no assignment fits avg_bits={opts.avg_bits:g}")
    best_noise = opt.measure(start, "knapsack")["noise"]
    for w in path:
        m = opt.measured(w)
        if m is not None and mem.total(w) <= budget + 1e-9 and m["noise"] < best_noise:
            start, best_noise = dict(w), m["noise"]
    run.chosen = opt.minimise_noise(start, wkeys, budget)


def _uniform_baselines(run: SearchRun) -> None:
    """Uniform W-bit weights and activations (activations at activation_bits where they are not searched),
    measured on the search samples."""
    opts = run.opts
    fixed = all(run.space.candidates[k] == [int(opts.activation_bits)] for k in run.keys_of("activation"))
    acts = int(opts.activation_bits) if fixed else None
    for W in UNIFORM:
        if W not in opts.weight_candidates or (acts or W) not in ([acts] if fixed else opts.activation_candidates):
            continue  # a width outside the candidates has no measured sensitivity
        try:
            check_template(opts.weights, "weight", [W])
            check_template(opts.activations, "activation", [acts or W])
        except QpassError:
            continue
        u = {k: W for k in run.keys_of("weight")}
        u.update({k: acts or W for k in run.keys_of("activation")})
        m = run.opt.measure(u, f"uniform:{W}")
        run.uniform.append((W, acts or W, u, m))


def _accumulators(run: SearchRun) -> None:
    """Exact accumulator widths of the chosen weights and activations; intrinsic placement: narrower ones that
    saturate but keep the target."""
    run.exact = _exact_accumulators(run.space, run.chosen)
    if run.opts.placement == "intrinsic":
        run.acc = {n: e["exact_bits"] for n, e in run.exact.items() if run.space.probe.has_accumulator(n)}
        if not run.budget_mode and run.opt.ok(run.opt.measure(run.chosen, "accumulators", run.acc)):
            run.acc = _narrow_accumulators(run.opt, run.space, run.chosen, run.acc, run.opts.min_accumulator_bits)


# ---------------------------------------------------------------------------------------------- verification loop
def verified(target, metric: dict, margin: float = VERIFY_MARGIN) -> bool:
    """Whether the held-out metrics establish ``target``: lost samples at their ``margin``-sigma upper bound and,
    measured as agreement, the expected disagreement (``targets.flip_risk``) within it too."""
    return target.met(metric, conservative=margin > 0, margin=margin) and risk_met(target, metric)


def _verify_until_met(run: SearchRun, model: onnx.ModelProto, calibration) -> Verification:
    """Verify with the real pipeline (fakequant + lower_ort through onnxruntime); while the target is missed,
    search again with a wider margin (twice at most), else back off one site."""
    opts, target = run.opts, run.target
    reference = _float_reference(model, run.data.verify, opts.threads)
    fa = output_metrics(reference, reference, run.data.verify.labels).get("accuracy")
    backoffs = escalations = 0
    while True:
        ver = _verify_once(run, model, calibration, reference, fa)
        if not run.searched:
            short = {s.key: s.short for s in run.sites}
            run.searched = {"widths": {short[k]: v for k, v in run.chosen.items()},
                            "search_metric": run.opt.measure(run.chosen, "final", run.acc or None),
                            "held_out_metric": ver.metric}
        if run.budget_mode or verified(target, ver.metric, run.verify_margin):
            return ver
        if backoffs >= opts.max_backoff:
            run.notes.append(f"target {target} missed on the verification samples after {backoffs} back-off steps "
                             f"({describe_metrics(ver.metric)})")
            return ver
        backoffs += 1
        missed = f"verification missed the target ({describe_metrics(ver.metric)})"
        redone = None
        if escalations < 2:  # the search over-fitted its samples: search again, demanding a wider margin
            escalations += 1
            run.opt.margin += 1.0
            redone = _search_once(run)
            if redone == run.chosen or not run.opt.ok(run.opt.measure(redone, "final")):
                redone = None
        if redone is not None:
            what = ", ".join(f"{run.space.by_key[k].short} {run.chosen[k]} -> {redone[k]}" for k in run.keys
                             if redone[k] != run.chosen[k])
            run.notes.append(f"{missed}; searched again with a {run.opt.margin:g}-sigma margin: {what} bits")
            run.chosen = redone
        else:
            step = run.opt.backoff(run.chosen, run.keys, run.acc)
            if step is None:
                run.notes.append(f"target {target} missed on the verification samples and every site is at its "
                                 f"widest candidate ({describe_metrics(ver.metric)})")
                return ver
            run.chosen, what = step
            run.notes.append(f"{missed}; backed off: {what}")
        run.exact = _exact_accumulators(run.space, run.chosen)
        if run.acc:
            run.acc = {n: e["exact_bits"] for n, e in run.exact.items() if run.space.probe.has_accumulator(n)}


def _verify_once(run: SearchRun, model: onnx.ModelProto, calibration, reference: np.ndarray,
                 float_accuracy) -> Verification:
    opts = run.opts
    rules = fakequant_rules(run.sites, run.excluded, run.chosen, run.acc, opts, run.space)
    fq_opts = fakequant_options(opts, rules)
    out, qonnx, lowered, saturation = _verify(model, calibration, fq_opts, run.data.verify, reference, opts.threads,
                                              opts.placement == "intrinsic" and bool(run.acc))
    labels = run.data.verify.labels
    verified = output_metrics(reference, out, labels, float_accuracy)
    default_out = saturation.pop("_ort_default")
    ort_default = output_metrics(reference, default_out, labels, float_accuracy)
    ort_default["agreement_with_verified"] = float(np.mean(top1(default_out) == top1(out)))
    return Verification(verified, ort_default, saturation, rules, qonnx, lowered, out, reference)


def _note_ort_default(run: SearchRun, ver: Verification) -> None:
    d, v = ver.ort_default, ver.metric
    if d["agreement_with_verified"] < 1.0 or abs(d["sqnr"] - v["sqnr"]) > 0.5:
        wide = sorted({s.node for s in run.sites if s.kind == "weight" and run.chosen[s.key] > 8})
        run.notes.append(f"onnxruntime's default session (graph optimisations on) computes this model differently: "
                         f"{describe_metrics(d)}, against {describe_metrics(v)} with its "
                         f"{', '.join(ORT_UNFAITHFUL_OPTIMIZERS)} rewrite disabled"
                         + (f" (it re-quantises the float weights of {', '.join(wide)} to int8)" if wide else ""))


def _exact_accumulators(space: Space, widths: dict) -> dict[str, dict]:
    out = {}
    for s in space.sites:
        if s.kind == "weight":
            info = space.accumulator(s.node, widths)
            if info is not None:
                out[s.node] = info
    return out


def _narrow_accumulators(opt: Optimizer, space: Space, widths: dict, acc: dict, floor: int) -> dict:
    """Per layer (most MACs first), the narrowest accumulator that keeps the target (binary search)."""
    acc = dict(acc)
    layers = sorted((s for s in space.sites if s.kind == "weight" and s.node in acc), key=lambda s: (-s.macs, s.order))
    opt.set_anchor(widths, acc)
    for s in layers:
        lo, hi = min(floor, acc[s.node]), acc[s.node]
        while lo < hi and opt.budget_left():
            mid = (lo + hi) // 2
            trial = dict(acc)
            trial[s.node] = mid
            if opt.ok(opt.measure(widths, "accumulators", trial)):
                hi = mid
                opt.set_anchor(widths, trial)
            else:
                lo = mid + 1
        acc[s.node] = hi
    return acc


# ---------------------------------------------------------------------------------------------- public API
def search(model, calib, eval=None, target: str | None = None, cost: str = "memory", avg_bits: float | None = None,
           seed: int = 0, progress: bool = False, **options) -> Assignment:
    """Choose a width per layer (weights, activations; accumulators with ``placement="intrinsic"``).

    ``model``: a ModelProto or a path; ``calib``: calibration data (npz path, dict of arrays or SampleSet);
    ``eval``: evaluation data (with ``labels`` for accuracy targets) used by the search and to verify the result
    (without it, the calibration data). ``target`` like ``"relative_accuracy>=0.99"`` or ``"sqnr>=30"`` (minimise
    ``cost``: memory, bops or resources), or ``avg_bits`` (minimise the error within that average weight width).
    Other options: see ``BitwidthOptions``. Returns an ``Assignment``; its ``rules`` go into fakequant.
    """
    from qpass.ir.model_io import parse_model
    from qpass.ir.samples import as_samples
    from qpass.pipeline.analyses import Calibration
    from qpass.pipeline.context import PassContext, PassInputs
    from qpass.pipeline.run import run_passes

    opts = BitwidthOptions(target=target, cost=cost, avg_bits=avg_bits, seed=seed, **options)
    if not isinstance(model, onnx.ModelProto):
        model = parse_model(model)
    calib_set = as_samples(calib, model)
    eval_set = as_samples(eval, model) if eval is not None else None
    methods = [opts.calibrator] if opts.calibrator == "minmax" else [opts.calibrator, "minmax"]
    t0 = time.perf_counter()
    ctx = PassContext(inputs=PassInputs(calibration_data=calib_set), progress=progress)
    prep = run_passes(model, ["normalize", "fold_batchnorm", {"calibrate": {"method": methods}}], ctx)
    prepared = time.perf_counter() - t0
    a = run_search(prep.model, prep.analyses.cached(Calibration), calib_set, eval_set, opts, progress)
    a.seconds = {"prepare": prepared, **a.seconds}
    a.seconds["total"] += prepared
    return a
