"""The state of one search run (``SearchRun``, filled in step by step by ``core.run_search``), the fakequant rules
of an assignment, and the ``Assignment`` built from a finished run: per-site table, measured points, Pareto front,
uniform baselines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from qpass.ir.samples import SampleSet
from ..formats.grid import pow2_fraction
from .accumulators import weight_grid
from .artifact import artifact_summary, float_in_file, stored_bits
from .cost import CostModel
from .latency import artifact_latency
from .optimize import Optimizer
from .options import BitwidthOptions
from .report import Assignment, compression, pareto_flags
from .sensitivity import Sensitivity, Space
from .sites import glob_escape
from .targets import Target


@dataclass
class Samples:
    """The samples the search measures on, the ones that verify its result, and where they came from."""

    search: SampleSet
    verify: SampleSet
    source: str  # "evaluation" | "calibration"
    held_out: bool = True  # verify is disjoint from search
    folds: list | None = None  # k-fold: [(search, held out)] whose held-out parts partition ``all``
    all: SampleSet | None = None  # every sample (search and verification)


@dataclass
class Verification:
    """The chosen assignment through the real pipeline (fakequant + lower_ort, run by onnxruntime)."""

    metric: dict  # on the verification samples, with the faithful session
    ort_default: dict  # the same with onnxruntime's default session
    saturation: dict  # linear node -> saturated accumulator elements (intrinsic placement)
    rules: list[dict]  # the fakequant rules verified
    qonnx: onnx.ModelProto
    lowered: onnx.ModelProto
    output: np.ndarray | None = None  # the lowered model's output on the verification samples (faithful session)
    reference: np.ndarray | None = None  # the float model's


@dataclass
class SearchRun:
    """One search run; each step of ``core.run_search`` fills in its part."""

    opts: BitwidthOptions
    target: Target | None
    data: Samples | None = None
    sites: list = field(default_factory=list)  # searched sites in graph order
    excluded: list = field(default_factory=list)  # sites left in float
    cost: CostModel | None = None  # the user's cost
    space: Space | None = None  # sites x candidate widths -> probe feeds
    sens: Sensitivity | None = None  # every site alone at every candidate width
    opt: Optimizer | None = None  # the optimiser: measured points, evaluation count
    plan: Any = None  # target form: core.Plan (which sites the cost sees, where the search starts)
    chosen: dict = field(default_factory=dict)  # site key -> bits
    acc: dict = field(default_factory=dict)  # linear node -> accumulator bits (intrinsic placement)
    exact: dict = field(default_factory=dict)  # linear node -> exact accumulator range / width under ``chosen``
    uniform: list = field(default_factory=list)  # (weight bits, activation bits, widths, metrics) baselines
    notes: list = field(default_factory=list)
    secs: dict = field(default_factory=dict)
    searched: dict = field(default_factory=dict)  # the search's own choice before the held-out check: widths and
    #                                               its metrics on the search and on the held-out samples
    held_out_space: Any = None  # a Space over the held-out samples (the Pareto front measured on them)
    verify_margin: float = 1.0  # the held-out check's margin (core.VERIFY_MARGIN; a k-fold's fold: 0, plain counts)

    @property
    def budget_mode(self) -> bool:
        return self.opts.avg_bits is not None

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.sites]

    def keys_of(self, kind: str) -> list[str]:
        return [s.key for s in self.sites if s.kind == kind]


def fakequant_rules(sites, excluded, widths, acc, opts: BitwidthOptions, space: Space) -> list[dict]:
    """The fakequant rules that reproduce an assignment (appended to fakequant's own: later rules win)."""
    rules = []
    for s in sites:
        spec = space.spec(s.key, widths[s.key])
        if s.kind == "weight" and float_in_file(widths[s.key], opts.storage):
            rules.append({"role": "weight", "match": glob_escape(s.node), "format": "float"})
        elif s.kind == "weight":
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


def _single_pow2_fraction(scales) -> int | None:
    s = np.unique(np.asarray(scales, np.float64).reshape(-1))
    return pow2_fraction(s[0]) if s.size == 1 and s[0] > 0 else None


def _weight_row(run: SearchRun, s, W: int, saturation: dict) -> dict:
    _, res, fmt = run.space.weight(s.key, W)
    grid = weight_grid(s, res)
    sc = grid[1] if grid is not None else np.asarray(res.scale, np.float64).reshape(-1)
    e = run.exact.get(s.node)
    return {"site": s.key, "kind": "weight", "layer": s.node, "op": s.op, "tensor": s.tensor,
            "format": run.space.spec(s.key, W), "bits": W, "signed": bool(getattr(fmt, "signed", True)),
            "scale": "per-channel" if np.size(sc) > 1 else float(np.asarray(sc).reshape(-1)[0]),
            "scale_min": float(np.min(sc)), "scale_max": float(np.max(sc)), "zero_point": 0,
            "fraction_bits": _single_pow2_fraction(sc), "size": s.size, "macs": s.macs,
            "input_site": s.input_site, "acc_bits_exact": e["exact_bits"] if e else None,
            "acc_range": list(e["range"]) if e else None, "acc_bits": run.acc.get(s.node),
            "acc_saturated": saturation.get(s.node) if s.node in run.acc else None,
            "alone_sqnr_db": run.sens.metrics[s.key][W]["sqnr"]}


def _activation_row(run: SearchRun, s, W: int) -> dict:
    g = run.space.act(s.key, W)
    sc = float(g.scale)
    return {"site": s.key, "kind": "activation", "layer": s.node, "op": s.op, "tensor": s.tensor,
            "format": run.space.spec(s.key, W), "bits": W, "signed": bool(g.signed), "scale": sc,
            "scale_min": sc, "scale_max": sc, "zero_point": int(g.zero_point), "fraction_bits": g.fraction,
            "qmin": int(g.qmin), "qmax": int(g.qmax), "range": list(s.range), "size": s.size,
            "macs": None, "alone_sqnr_db": run.sens.metrics[s.key][W]["sqnr"]}


def site_table(run: SearchRun, saturation: dict) -> list[dict]:
    """One row per site: format, bits, scale / fraction length, signedness, accumulators; excluded sites last."""
    table = [_weight_row(run, s, run.chosen[s.key], saturation) if s.kind == "weight" else
             _activation_row(run, s, run.chosen[s.key]) for s in run.sites]
    for s in run.excluded:
        table.append({"site": s.key, "kind": s.kind, "layer": s.node, "op": s.op, "tensor": s.tensor,
                      "format": "float", "bits": 32, "signed": True, "scale": None, "size": s.size,
                      "macs": s.macs or None, "input_site": s.input_site})
    return table


def _weight_bits(run: SearchRun, widths: dict) -> float:
    """Weight memory in bits of an assignment as the artifact stores it (excluded weights at 32 bits)."""
    wsize = {s.key: s.size for s in run.sites if s.kind == "weight"}
    return sum(wsize[k] * stored_bits(v, run.opts.storage) for k, v in widths.items() if k in wsize) + \
        32 * sum(s.size for s in run.excluded if s.kind == "weight")


def measured_points(run: SearchRun, n_params: int, metric: str) -> list[dict]:
    """Every measured assignment, with its cost, metrics, and whether it is chosen / on the Pareto front."""
    short = {s.key: s.short for s in run.sites}
    opt, cost = run.opt, run.cost
    points = []
    for p in opt.points:
        wb = _weight_bits(run, p.widths)
        m = p.metrics
        points.append({"source": p.source, "cost": cost.total(p.widths, acc=p.acc),
                       "avg_weight_bits": wb / n_params if n_params else None,
                       "activation_bits": float(sum(s.size * p.widths.get(s.key, 32) for s in run.sites
                                                    if s.kind == "activation")),
                       "relative_accuracy": m.get("relative_accuracy"), "accuracy": m.get("accuracy"),
                       "agreement": m.get("agreement"), "sqnr_db": m.get("sqnr"), "noise": m.get("noise"),
                       "predicted_noise": p.predicted_noise, "widths": {short[k]: v for k, v in p.widths.items()},
                       "accumulators": dict(p.acc), "chosen": False, "_key": opt.key(p.widths, p.acc)})
    final_key = opt.key(run.chosen, run.acc)
    for p in points:
        p["chosen"] = p.pop("_key") == final_key
    flags = pareto_flags(points, metric, secondary=cost.kind == "memory")
    for p, f, q in zip(points, flags, opt.points):
        p["pareto"] = bool(f)
        if run.held_out_space is not None and (f or p["chosen"]):
            m = run.held_out_space.evaluate(q.widths, q.acc or None)[0]
            p.update({f"held_out_{k}": m.get(k) for k in HELD_OUT_COLUMNS})
            p["held_out_sqnr_db"] = p.pop("held_out_sqnr")
    measured = [p for p in points if "held_out_sqnr_db" in p]
    renamed = [{"cost": p["cost"], "activation_bits": p["activation_bits"],
                **{k: p.get("held_out_" + k) for k in (metric, "sqnr_db")}} for p in measured]
    for p, f in zip(measured, pareto_flags(renamed, metric, secondary=cost.kind == "memory")):
        p["held_out_pareto"] = bool(f)  # on the front by the held-out figures too
    return points


#: the metrics of a Pareto point measured again on the held-out samples (``held_out_<metric>``; sqnr -> sqnr_db)
HELD_OUT_COLUMNS = ("relative_accuracy", "accuracy", "agreement", "sqnr")


def uniform_rows(run: SearchRun, n_params: int) -> list[dict]:
    uni = []
    for W, A, u, m in run.uniform:
        wb = _weight_bits(run, {k: W for k in run.keys_of("weight")})
        uni.append({"name": f"W{W}/A{A}", "weight_bits": W, "activation_bits": A, "cost": run.cost.total(u),
                    "avg_weight_bits": wb / n_params if n_params else None,
                    "relative_accuracy": m.get("relative_accuracy"), "accuracy": m.get("accuracy"),
                    "agreement": m.get("agreement"), "sqnr_db": m.get("sqnr")})
    return uni


def build_assignment(run: SearchRun, ver: Verification, met: bool, search_metric: dict) -> Assignment:
    """The ``Assignment`` of a finished run (and its report files when ``report_dir`` is set)."""
    opts, target = run.opts, run.target
    comp = compression(run.sites, run.excluded, run.chosen, stored=lambda w: stored_bits(w, opts.storage))
    metric = {"relative_accuracy": "relative_accuracy", "accuracy": "accuracy", "agreement": "agreement",
              "sqnr": "sqnr_db"}[target.primary] if target is not None else "sqnr_db"
    table = site_table(run, ver.saturation)
    points = measured_points(run, comp["params"], metric)
    pareto = sorted((p for p in points if p["pareto"]), key=lambda p: p["cost"])
    short = {s.key: s.short for s in run.sites}
    sens_rows = [{**r, "site": short[r["site"]]} for r in run.sens.rows()]
    accs = {node: {"exact_bits": e["exact_bits"], "range": list(e["range"]), "bits": run.acc.get(node),
                   "saturated": ver.saturation.get(node) if node in run.acc else None}
            for node, e in run.exact.items()}
    a = Assignment(widths=dict(run.chosen), rules=ver.rules, table=table, compression=comp,
                   cost=run.cost.total(run.chosen, acc=run.acc), cost_kind=run.cost.kind, cost_unit=run.cost.unit,
                   metric=ver.metric, search_metric=search_metric, target=str(target) if target else None,
                   avg_bits=opts.avg_bits, met=bool(met), pareto=pareto, points=points,
                   uniform=uniform_rows(run, comp["params"]), sensitivity=sens_rows, accumulators=accs,
                   placement=opts.placement, notes=run.notes, seconds=run.secs, evaluations=run.opt.evals,
                   samples={"source": run.data.source, "search": len(run.data.search),
                            "verify": len(run.data.verify), "held_out": run.data.held_out,
                            "holdout": float(opts.holdout) if opts.holdout is not None else 0.5},
                   artifact=dict(artifact_summary(ver.lowered), latency_us=artifact_latency(
                       ver.lowered, run.data.verify.feed(0), opts.threads), latency_threads=opts.threads), searched=dict(run.searched), model=ver.lowered, qonnx=ver.qonnx)
    run.opt.close()
    if opts.report_dir:
        a.notes += a.write(opts.report_dir)
    a.metric_ort_default = ver.ort_default
    return a
