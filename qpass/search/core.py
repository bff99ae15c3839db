"""Orchestration: data split, sites, probe, sensitivity, optimiser, accumulators, verification, result."""
from __future__ import annotations

import time

import numpy as np
import onnx

from qpass.ir.samples import SampleSet
from ..errors import QpassError
from qpass.analysis.metrics import top1
from .accumulators import weight_grid
from .cost import CostModel
from .optimize import Optimizer
from .probe import Probe
from .report import Assignment, compression, pareto_flags
from .options import BitwidthOptions, check_template, format_spec
from .sensitivity import Space, analyse
from .sites import find_sites, glob_escape
from .targets import describe_metrics, output_metrics, parse_target

UNIFORM = (8, 6, 4)


# ---------------------------------------------------------------------------------------------- data
def _split(data: SampleSet, fraction: float, seed: int) -> tuple[SampleSet, SampleSet]:
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


def _subsample(data: SampleSet, k: int, seed: int) -> SampleSet:
    if len(data) <= k:
        return data
    idx = np.sort(np.random.default_rng(seed + 1).permutation(len(data))[:k])
    return data.subset(idx)


# ---------------------------------------------------------------------------------------------- verification
def _verify(model: onnx.ModelProto, calibration, fq_opts: dict, data: SampleSet, reference: np.ndarray,
            threads: int, intrinsic: bool):
    """The real thing: fakequant (with the rules) + lower_ort, run through onnxruntime on ``data``."""
    from qpass.ir.ort_session import run_samples
    from qpass.pipeline.context import PassContext
    from qpass.pipeline.manager import PassManager, Pipeline
    from ..passes.fakequant import FakeQuant
    from ..passes.lower_ort import LowerOrt

    ctx = PassContext(progress=False)
    ctx.analyses.put(calibration)
    qonnx = PassManager(Pipeline("bitwidth-verify", [FakeQuant(**fq_opts)]), ctx).run(model)
    lowered = PassManager(Pipeline("bitwidth-verify", [LowerOrt()]), ctx).run(qonnx)
    out_name = lowered.graph.output[0].name
    out = run_samples(lowered, data, threads, outputs=[out_name], sess=faithful_session(lowered, threads))[out_name]
    out = np.asarray(out, np.float32).reshape(len(data), -1)
    default = run_samples(lowered, data, threads, outputs=[out_name])[out_name]  # qpass's usual session
    saturation = {"_ort_default": np.asarray(default, np.float32).reshape(len(data), -1)}
    if intrinsic:
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
            quants = [r for r in readers.get(lin.output[0], []) if r.op_type == "Quant"] if lin is not None else []
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
def run_search(model: onnx.ModelProto, calibration, calib: SampleSet, eval_data: SampleSet | None,
               opts: BitwidthOptions, progress: bool = False) -> Assignment:
    """The search on a normalised, BN-folded, calibrated model (``calibration``: the calibrate pass's analysis)."""
    t_start = time.perf_counter()
    secs: dict[str, float] = {}
    notes: list[str] = []
    target = parse_target(opts.target) if opts.target is not None else None
    observers = calibration.observers
    if not observers:
        raise QpassError("bitwidth: no calibrated ranges (run the calibrate pass before bitwidth)")

    # data
    metric_data = eval_data if eval_data is not None else calib
    source = "evaluation" if eval_data is not None else "calibration"
    if opts.holdout > 0:
        search_data, verify_data = _split(metric_data, float(opts.holdout), opts.seed)
    else:
        search_data = verify_data = metric_data
    search_data = _subsample(search_data, opts.max_samples, opts.seed)
    labels = search_data.labels
    if target is not None and target.needs_labels() and (labels is None or verify_data.labels is None):
        raise QpassError(f"bitwidth: target {target} needs labels: give evaluation data with a 'labels' array "
                         f"(--eval NPZ)")
    if target is not None and labels is None and any(c.metric == "relative_accuracy" for c in target.constraints):
        notes.append(f"the {source} data has no labels: relative_accuracy is measured as top-1 agreement with the "
                     f"float model")

    # sites and probe
    sites, excluded, site_notes = find_sites(model, observers, opts.calibrator, opts.placement,
                                             opts.weight_granularity, opts.exclude)
    notes += site_notes
    if not sites:
        raise QpassError("bitwidth: the model has no quantisable layer or activation to assign widths to")
    budget_mode = opts.avg_bits is not None
    candidates = {}
    for s in sites:
        if s.kind == "weight":
            candidates[s.key] = list(opts.weight_candidates)
        else:
            candidates[s.key] = [int(opts.activation_bits)] if budget_mode else list(opts.activation_candidates)
    acc_sites = [s for s in sites if s.kind == "weight"] if opts.placement == "intrinsic" else []
    user_cost = CostModel(opts.cost, sites, opts.cost_options)  # before any work: resources may be unavailable
    t0 = time.perf_counter()
    probe = Probe(model, sites, search_data, acc_sites, batch_size=opts.batch_size, threads=opts.threads)
    space = Space(sites, probe, opts.weights, opts.activations, opts.weight_granularity, candidates, labels)
    secs["float run"] = time.perf_counter() - t0
    sens = analyse(space, progress)
    secs["sensitivity"] = sens.seconds

    # optimise
    t0 = time.perf_counter()
    keys = [s.key for s in sites]
    wkeys = [s.key for s in sites if s.kind == "weight"]
    akeys = [s.key for s in sites if s.kind == "activation"]
    acc: dict[str, int] = {}
    if not budget_mode:
        opt = Optimizer(space, sens, user_cost, target, opts.max_evals, progress, float(opts.margin))
        primary = [k for k in keys if user_cost.touches(k)]
        secondary = [k for k in keys if k not in primary]
        # sites the cost does not see (activations under memory) start at activation_bits, not the widest
        free = {k: max([W for W in opt.cands[k] if W <= opts.activation_bits] or opt.cands[k][:1])
                for k in secondary}

        smooth = all(c.metric == "sqnr" for c in target.constraints)

        def search_once() -> dict:
            opt.noise_cap = None
            top = opt.top(keys, free)
            m_top = opt.measure(top, "widest")
            if not opt.ok(m_top) and free:
                top = opt.top(keys)
                m_top = opt.measure(top, "widest")
            if not opt.ok(m_top):
                return top
            path = opt.path(top, primary)
            start, fail = opt.select(path)
            start = start or top
            if not smooth and fail is not None:  # the noise budget: halfway (in dB) to the first failure
                n_ok, n_fail = opt.measure(start, "path")["noise"], opt.measure(fail, "path")["noise"]
                opt.noise_cap = float(np.sqrt(max(n_ok, 1e-300) * max(n_fail, n_ok, 1e-300)))
            return opt.refine(start, primary, secondary)

        chosen = search_once()
        m_final = opt.measure(chosen, "final")
        if not opt.ok(m_final) and target.met(m_final):
            notes.append(f"{len(search_data)} search samples cannot establish {target} with a {opt.margin:g}-sigma "
                         f"margin (lost samples are checked against their Wilson upper bound, which zero losses "
                         f"already exceed): using the widest candidates; give more samples or margin=0")
        elif not opt.ok(m_final):
            notes.append(f"the target {target} is not met even with the widest candidates "
                         f"({describe_metrics(m_final)}): using them")
        elif any(chosen[k] > free[k] for k in free):
            notes.append(f"activations outside the cost at {opts.activation_bits} bits missed the target: "
                         f"started them at the widest candidate")
        uniform_acts = None
    else:
        mem = CostModel("memory", sites)
        opt = Optimizer(space, sens, mem, None, opts.max_evals, progress)
        base = {k: int(opts.activation_bits) for k in akeys}
        n_params = sum(s.size for s in sites if s.kind == "weight")
        budget = opts.avg_bits * n_params
        top = dict(base)
        top.update(opt.top(wkeys))
        path = opt.path(top, wkeys)
        start = opt.knapsack(base, wkeys, budget)
        if start is None:
            raise QpassError(f"bitwidth: no assignment fits avg_bits={opts.avg_bits:g}")
        best_noise = opt.measure(start, "knapsack")["noise"]
        for w in path:
            m = opt._cache.get(opt._key(w))
            if m is not None and mem.total(w) <= budget + 1e-9 and m["noise"] < best_noise:
                start, best_noise = dict(w), m["noise"]
        chosen = opt.minimise_noise(start, wkeys, budget)
        uniform_acts = int(opts.activation_bits)
    # uniform baselines (measured on the search samples)
    uniform = []
    for W in UNIFORM:
        if W not in range(opts.weight_candidates[0], 33):
            continue
        try:
            check_template(opts.weights, "weight", [W])
            check_template(opts.activations, "activation", [uniform_acts or W])
        except QpassError:
            continue
        u = {k: W for k in wkeys}
        u.update({k: uniform_acts or W for k in akeys})
        m = opt.measure(u, f"uniform:{W}")
        uniform.append((W, uniform_acts or W, u, m))
    # accumulators: exact widths from the chosen weights and activations; intrinsic: narrower ones that saturate
    exact = _exact_accumulators(space, chosen)
    if opts.placement == "intrinsic":
        acc = {n: e["exact_bits"] for n, e in exact.items() if probe.has_accumulator(n)}
        if not budget_mode and opt.ok(opt.measure(chosen, "accumulators", acc)):
            acc = _narrow_accumulators(opt, space, chosen, acc, opts.min_accumulator_bits)
    secs["search"] = time.perf_counter() - t0
    if opt.evals >= opts.max_evals:
        notes.append(f"the search stopped after max_evals={opts.max_evals} measured assignments")

    # verify with the real pipeline (fakequant + lower_ort through onnxruntime), back off if the target is missed
    t0 = time.perf_counter()
    reference = _float_reference(model, verify_data, opts.threads)
    v_labels = verify_data.labels
    fa = output_metrics(reference, reference, v_labels).get("accuracy")
    backoffs = escalations = 0
    while True:
        rules = _rules(sites, excluded, chosen, acc, opts, space)
        fq_opts = {"weights": format_spec(opts.weights, 8), "activations": format_spec(opts.activations, 8),
                   "weight_granularity": opts.weight_granularity, "calibrator": opts.calibrator,
                   "placement": opts.placement, "rules": rules}
        out, qonnx, lowered, saturation = _verify(model, calibration, fq_opts, verify_data, reference, opts.threads,
                                                  opts.placement == "intrinsic" and bool(acc))
        verified = output_metrics(reference, out, v_labels, fa)
        default_out = saturation.pop("_ort_default")
        ort_default = output_metrics(reference, default_out, v_labels, fa)
        ort_default["agreement_with_verified"] = float(np.mean(top1(default_out) == top1(out)))
        if budget_mode or target.met(verified):
            break
        if backoffs >= opts.max_backoff:
            notes.append(f"target {target} missed on the verification samples after {backoffs} back-off steps "
                         f"({describe_metrics(verified)})")
            break
        backoffs += 1
        missed = f"verification missed the target ({describe_metrics(verified)})"
        redone = None
        if escalations < 2:  # the search over-fitted its samples: search again, demanding a wider margin
            escalations += 1
            opt.margin += 1.0
            redone = search_once()
            if redone == chosen or not opt.ok(opt.measure(redone, "final")):
                redone = None
        if redone is not None:
            what = ", ".join(f"{space.by_key[k].short} {chosen[k]} -> {redone[k]}" for k in keys
                             if redone[k] != chosen[k])
            notes.append(f"{missed}; searched again with a {opt.margin:g}-sigma margin: {what} bits")
            chosen = redone
        else:
            step = opt.backoff(chosen, keys, acc)
            if step is None:
                notes.append(f"target {target} missed on the verification samples and every site is at its widest "
                             f"candidate ({describe_metrics(verified)})")
                break
            chosen, what = step
            notes.append(f"{missed}; backed off: {what}")
        exact = _exact_accumulators(space, chosen)
        if acc:
            acc = {n: e["exact_bits"] for n, e in exact.items() if probe.has_accumulator(n)}
    secs["verify"] = time.perf_counter() - t0
    if ort_default["agreement_with_verified"] < 1.0 or abs(ort_default["sqnr"] - verified["sqnr"]) > 0.5:
        wide = sorted({s.node for s in sites if s.kind == "weight" and chosen[s.key] > 8})
        notes.append(f"onnxruntime's default session (graph optimisations on) computes this model differently: "
                     f"{describe_metrics(ort_default)}, against {describe_metrics(verified)} with its "
                     f"{', '.join(ORT_UNFAITHFUL_OPTIMIZERS)} rewrite disabled"
                     + (f" (it re-quantises the float weights of {', '.join(wide)} to int8)" if wide else ""))
    secs["total"] = time.perf_counter() - t_start
    if budget_mode:
        met = CostModel("memory", sites).total(chosen) <= opts.avg_bits * sum(
            s.size for s in sites if s.kind == "weight") + 1e-9
    else:
        met = target.met(verified)
    search_metric = opt.measure(chosen, "final", acc or None)
    a = _result(sites, excluded, chosen, acc, exact, saturation, opts, space, sens, opt, user_cost, target,
                verified, search_metric, rules, uniform, notes, secs, met, search_data, verify_data, source, qonnx,
                lowered)
    a.metric_ort_default = ort_default
    return a


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


def _rules(sites, excluded, widths, acc, opts: BitwidthOptions, space: Space) -> list[dict]:
    rules = []
    for s in sites:
        spec = space.spec(s.key, widths[s.key])
        if s.kind == "weight":
            rules.append({"role": "weight", "match": glob_escape(s.node), "format": spec,
                          "granularity": opts.weight_granularity, "rounding": "ROUND"})
        else:
            rules.append({"role": "activation", "match": glob_escape(s.tensor), "format": spec,
                          "calibrator": opts.calibrator, "rounding": "ROUND"})
    for s in excluded:
        rules.append({"role": s.kind, "match": glob_escape(s.node if s.kind == "weight" else s.tensor),
                      "format": "float"})
    for node, bits in acc.items():
        rules.append({"role": "accumulator", "match": glob_escape(node), "format": f"int{int(bits)}"})
    return rules


def _pow2_fraction(scales: np.ndarray) -> int | None:
    s = np.unique(np.asarray(scales, np.float64).reshape(-1))
    if s.size != 1 or s[0] <= 0:
        return None
    m, e = np.frexp(s[0])
    return int(1 - e) if m == 0.5 else None


def _result(sites, excluded, chosen, acc, exact, saturation, opts, space, sens, opt, user_cost, target, verified,
            search_metric, rules, uniform, notes, secs, met, search_data, verify_data, source, qonnx, lowered) -> Assignment:
    table = []
    for s in sites:
        W = chosen[s.key]
        alone = sens.metrics[s.key][W]["sqnr"]
        if s.kind == "weight":
            _, res, fmt = space.weight(s.key, W)
            grid = weight_grid(s, res)
            sc = grid[1] if grid is not None else np.asarray(res.scale, np.float64).reshape(-1)
            e = exact.get(s.node)
            table.append({"site": s.key, "kind": "weight", "layer": s.node, "op": s.op, "tensor": s.tensor,
                          "format": space.spec(s.key, W), "bits": W, "signed": bool(getattr(fmt, "signed", True)),
                          "scale": "per-channel" if np.size(sc) > 1 else float(np.asarray(sc).reshape(-1)[0]),
                          "scale_min": float(np.min(sc)), "scale_max": float(np.max(sc)), "zero_point": 0,
                          "fraction_bits": _pow2_fraction(sc), "size": s.size, "macs": s.macs,
                          "input_site": s.input_site, "acc_bits_exact": e["exact_bits"] if e else None,
                          "acc_range": list(e["range"]) if e else None, "acc_bits": acc.get(s.node),
                          "acc_saturated": saturation.get(s.node) if s.node in acc else None,
                          "alone_sqnr_db": alone})
        else:
            sc, z, qmin, qmax, signed, F = space.act(s.key, W)
            table.append({"site": s.key, "kind": "activation", "layer": s.node, "op": s.op, "tensor": s.tensor,
                          "format": space.spec(s.key, W), "bits": W, "signed": bool(signed), "scale": float(sc),
                          "scale_min": float(sc), "scale_max": float(sc), "zero_point": int(z), "fraction_bits": F,
                          "qmin": int(qmin), "qmax": int(qmax), "range": list(s.range), "size": s.size,
                          "macs": None, "alone_sqnr_db": alone})
    for s in excluded:
        table.append({"site": s.key, "kind": s.kind, "layer": s.node, "op": s.op, "tensor": s.tensor,
                      "format": "float", "bits": 32, "signed": True, "scale": None, "size": s.size,
                      "macs": s.macs or None, "input_site": s.input_site})
    comp = compression(sites, excluded, chosen)
    n_params = comp["params"]
    metric = {"relative_accuracy": "relative_accuracy", "accuracy": "accuracy", "agreement": "agreement",
              "sqnr": "sqnr_db"}[target.primary] if target is not None else "sqnr_db"
    short = {s.key: s.short for s in sites}
    points = []
    wsize = {s.key: s.size for s in sites if s.kind == "weight"}
    ex_bits = 32 * sum(s.size for s in excluded if s.kind == "weight")
    for p in opt.points:
        wb = sum(wsize[k] * v for k, v in p.widths.items() if k in wsize) + ex_bits
        m = p.metrics
        points.append({"source": p.source, "cost": user_cost.total(p.widths, acc=p.acc),
                       "avg_weight_bits": wb / n_params if n_params else None,
                       "activation_bits": float(sum(s.size * p.widths.get(s.key, 32) for s in sites
                                                    if s.kind == "activation")),
                       "relative_accuracy": m.get("relative_accuracy"), "accuracy": m.get("accuracy"),
                       "agreement": m.get("agreement"), "sqnr_db": m.get("sqnr"), "noise": m.get("noise"),
                       "predicted_noise": p.predicted_noise, "widths": {short[k]: v for k, v in p.widths.items()},
                       "accumulators": dict(p.acc), "chosen": False, "_key": opt._key(p.widths, p.acc)})
    final_key = opt._key(chosen, acc)
    for p in points:
        p["chosen"] = p.pop("_key") == final_key
    flags = pareto_flags(points, metric, secondary=user_cost.kind == "memory")
    for p, f in zip(points, flags):
        p["pareto"] = bool(f)
    pareto = sorted((p for p in points if p["pareto"]), key=lambda p: p["cost"])
    uni = []
    for W, A, u, m in uniform:
        wb = sum(wsize[k] * W for k in wsize) + ex_bits
        uni.append({"name": f"W{W}/A{A}", "weight_bits": W, "activation_bits": A, "cost": user_cost.total(u),
                    "avg_weight_bits": wb / n_params if n_params else None,
                    "relative_accuracy": m.get("relative_accuracy"), "accuracy": m.get("accuracy"),
                    "agreement": m.get("agreement"), "sqnr_db": m.get("sqnr")})
    sens_rows = [{**r, "site": short[r["site"]]} for r in sens.rows()]
    accs = {}
    for node, e in exact.items():
        accs[node] = {"exact_bits": e["exact_bits"], "range": list(e["range"]), "bits": acc.get(node),
                      "saturated": saturation.get(node) if node in acc else None}
    a = Assignment(widths=dict(chosen), rules=rules, table=table, compression=comp, cost=user_cost.total(chosen,
                   acc=acc), cost_kind=user_cost.kind, cost_unit=user_cost.unit, metric=verified,
                   search_metric=search_metric, target=str(target) if target else None,
                   avg_bits=opts.avg_bits, met=bool(met), pareto=pareto, points=points, uniform=uni,
                   sensitivity=sens_rows, accumulators=accs, placement=opts.placement, notes=notes, seconds=secs,
                   evaluations=opt.evals, samples={"source": source, "search": len(search_data),
                                                  "verify": len(verify_data), "holdout": float(opts.holdout)},
                   model=lowered, qonnx=qonnx)
    opt.close()
    if opts.report_dir:
        a.notes += a.write(opts.report_dir)
    return a


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
