"""Folding (PE/SIMD selection) for a target frame rate or for a device budget.

``fold_for_target`` follows FINN's SetFolding contract (target_cycles = (1e9/clk_ns)/fps, divisor
walks, two-pass relaxation to the achieved bottleneck) but picks, per layer, the legal (PE, SIMD)
with the fewest estimated LUTs among those meeting the cycle budget. Because the budget is a
per-layer constraint and the cost is a sum over layers, this per-layer minimum is the global
minimum over all foldings meeting the target. FINN's own walk (strategy="finn") is kept as the
baseline; its LUT total is reported next to ours.

``fold_for_budget`` returns the fastest folding whose totals fit a device: the bottleneck of any
folding is one of the finitely many per-layer achievable cycle counts, so it scans those budgets
from the fastest, folding each with a few per-layer objectives (fewest LUT, fewest BRAM, least
utilisation-weighted sum) and keeps the first that fits.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qpass.hw import cost_models as cm
from qpass.hw.devices import Device, get_device
from qpass.hw.kinds.mvtu import MVTU
from qpass.hw.layers import Layer, Resources
from qpass.errors import QpassError

MVAU_WWIDTH_MAX = 36  # FINN SetFolding default: SIMD*W bits of weight stream per PE
#: a resource model of one folded layer (default ``layer_resources``: the layer's own ``resources()``;
#: ``qpass.hw.calibration.layer_resources``: the RTL modules' formulas calibrated against Yosys)
Estimator = Callable[[Layer], Resources]


def layer_resources(layer: Layer) -> Resources:
    return layer.resources()


@dataclass(frozen=True)
class LayerFold:
    name: str
    kind: str
    pe: int
    simd: int
    cycles: int
    res: Resources
    candidates: int = 0


@dataclass
class FoldingResult:
    """A folded design: the refolded layers, per-layer numbers, totals and pipeline performance."""

    layers: list[Layer]
    folds: list[LayerFold]
    clock_ns: float
    edges: list[tuple[str, str]] | None = None
    target_fps: float | None = None
    target_cycles: float | None = None
    strategy: str = "min_lut"
    candidates_tried: int = 0
    baseline_lut: int | None = None
    device: Device | None = None
    utilisation: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> Resources:
        t = Resources()
        for f in self.folds:
            t = t + f.res
        return t

    @property
    def max_cycles(self) -> int:
        return max((f.cycles for f in self.folds), default=0)

    @property
    def bottleneck(self) -> str:
        return max(self.folds, key=lambda f: f.cycles).name if self.folds else ""

    @property
    def fps(self) -> float:
        return cm.fps(self.max_cycles, self.clock_ns)

    @property
    def latency_cycles(self) -> int:
        return cm.critical_path_cycles({f.name: f.cycles for f in self.folds}, self.edges)

    @property
    def latency_us(self) -> float:
        return self.latency_cycles * self.clock_ns / 1e3

    @property
    def meets_target(self) -> bool:
        return self.target_cycles is None or self.max_cycles <= self.target_cycles

    def fits(self, device: Device | str | None = None, utilisation: float | None = None) -> bool:
        dev = get_device(device) if device is not None else self.device
        if dev is None:
            raise QpassError("fits() needs a device")
        cap = dev.capacity(utilisation if utilisation is not None else (self.utilisation or 1.0))
        return all(u <= c for u, c in zip(self.total.as_tuple(), cap))

    def fold_config(self) -> dict[str, dict[str, int]]:
        """{layer: {"PE": p, "SIMD": s}} in the spirit of FINN's folding_config.json."""
        return {f.name: {"PE": f.pe, "SIMD": f.simd} for f in self.folds}

    def table(self) -> str:
        head = ("layer", "kind", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM", "DSP")
        rows = [(f.name, f.kind, f.pe, f.simd, f.cycles, *f.res.as_tuple()) for f in self.folds]
        rows.append(("TOTAL", "", "", "", self.max_cycles, *self.total.as_tuple()))
        if self.device is not None:
            cap = self.device.capacity()
            pct = [f"{100.0 * u / c:.1f}%" if c else ("-" if u == 0 else "inf") for u, c in
                   zip(self.total.as_tuple(), cap)]
            rows.append((self.device.part, self.device.board, "", "", "", *pct))
        cells = [tuple(str(c) for c in r) for r in [head] + rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        summary = (f"bottleneck {self.bottleneck} ({self.max_cycles} cycles), {self.fps:,.1f} FPS at "
                   f"{1e3 / self.clock_ns:.1f} MHz, latency {self.latency_cycles} cycles "
                   f"({self.latency_us:.2f} us, critical path)")
        if self.target_fps is not None:
            summary += f"; target {self.target_fps:,.1f} FPS ({self.target_cycles:.1f} cycles)"
        if self.baseline_lut is not None:
            summary += f"; FINN-walk LUT {self.baseline_lut}"
        summary += f"; {self.candidates_tried} candidates tried"
        return "\n".join(lines + [summary] + self.notes)


# ------------------------------------------------------------------------ per-layer candidates

class _Candidates:
    """All legal (PE, SIMD) of one layer with cycles and resources, sorted by cycles ascending."""

    def __init__(self, layer: Layer, estimate: "Estimator | None" = None):
        self.layer = layer
        est = estimate or layer_resources
        opts = layer.fold_options()
        rows = []
        for pe, simd in opts:
            lay = layer.folded(pe, simd)
            rows.append((lay.cycles(), *est(lay).as_tuple(), pe, simd))
        rows.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4]))
        self.rows = rows
        self.cycles = np.array([r[0] for r in rows], dtype=np.int64)
        self.n = len(rows)
        self._pref: dict = {}

    def best(self, budget: float, key: Callable[[tuple], tuple]) -> int:
        """Index of the key-minimal candidate with cycles <= budget, or of the key-minimal among the
        fastest candidates when none meets it (the layer then becomes the bottleneck)."""
        hi = int(np.searchsorted(self.cycles, budget, side="right"))
        if hi == 0:
            hi = int(np.searchsorted(self.cycles, self.cycles[0], side="right"))
        return self._prefix_best(key)[hi - 1]

    def _prefix_best(self, key) -> list[int]:
        """pref[i] = key-minimal index among rows[0..i] (computed once per key)."""
        if key not in self._pref:
            pref, best, best_k = [], 0, None
            for i, r in enumerate(self.rows):
                k = key(r)
                if best_k is None or k < best_k:
                    best, best_k = i, k
                pref.append(best)
            self._pref[key] = pref
        return self._pref[key]

    def fold(self, i: int, counted: int) -> tuple[Layer, LayerFold]:
        c, lut, bram, uram, dsp, pe, simd = self.rows[i]
        lay = self.layer.folded(pe, simd)
        return lay, LayerFold(lay.name, lay.kind, pe, simd, c, Resources(lut, bram, uram, dsp), counted)


def _key_lut(r):
    # fewest LUT, then BRAM, URAM, DSP; on a tie the least parallel (most cycles) option
    return (r[1], r[2], r[3], r[4], -r[0])


def _key_bram(r):
    return (r[2], r[1], r[3], r[4], -r[0])


def _key_weighted(cap: tuple[int, int, int, int]):
    def key(r):
        w = sum((u / c) if c else (0.0 if u == 0 else float("inf")) for u, c in zip(r[1:5], cap))
        return (w, r[1], -r[0])
    return key


def _check_layers(layers: Sequence[Layer]) -> list[Layer]:
    layers = list(layers)
    if not layers:
        raise QpassError("no layers to fold")
    names = [l.name for l in layers]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise QpassError(f"duplicate layer names: {', '.join(sorted(dup))}")
    return layers


def _finn_walk(layer: Layer, budget: float, wwidth_max: int) -> Layer:
    """FINN SetFolding for one layer (with '<=' where FINN uses a strict '<'): MVTU walks SIMD over
    divisors of MW until the budget is met or SIMD*W exceeds wwidth_max (reverting that last step),
    then PE over divisors of MH; single-parameter layers walk their one parameter."""
    if isinstance(layer, MVTU):
        cur = layer.folded(1, 1)
        for s in layer.legal_simd():
            prev, cur = cur, cur.folded(1, s)
            if cur.cycles() <= budget:
                break
            if s * layer.w_bits > wwidth_max:
                cur = prev
                break
        simd = cur.simd
        for p in layer.legal_pe():
            cur = layer.folded(p, simd)
            if cur.cycles() <= budget:
                break
        return cur
    cur = layer.folded(1, 1)
    pes, simds = layer.legal_pe(), layer.legal_simd()
    for p, s in ([(p, 1) for p in pes] if len(pes) > 1 else [(1, s) for s in simds]):
        cur = layer.folded(p, s)
        if cur.cycles() <= budget:
            break
    return cur


def _fold_finn(layers, budget, wwidth_max, est: Estimator):
    out = [_finn_walk(l, budget, wwidth_max) for l in layers]
    folds = [LayerFold(l.name, l.kind, *l.fold, l.cycles(), est(l), 0) for l in out]
    return out, folds


def evaluate(layers: Sequence[Layer], clock_ns: float = 10.0, *, edges: Sequence[tuple[str, str]] | None = None,
             device: Device | str | None = None, estimate: Estimator | None = None) -> FoldingResult:
    """Cycles, resources, FPS and latency of layers as they are folded now (e.g. a hand folding)."""
    layers = _check_layers(layers)
    est = estimate or layer_resources
    folds = [LayerFold(l.name, l.kind, *l.fold, l.cycles(), est(l), 0) for l in layers]
    return FoldingResult(list(layers), folds, clock_ns, list(edges) if edges is not None else None,
                         strategy="given", device=get_device(device) if device is not None else None)


def fold_for_target(layers: Sequence[Layer], target_fps: float, clock_ns: float = 10.0, *,
                    edges: Sequence[tuple[str, str]] | None = None, strategy: str = "min_lut",
                    mvau_wwidth_max: int = MVAU_WWIDTH_MAX, two_pass_relaxation: bool = True,
                    estimate: Estimator | None = None) -> FoldingResult:
    """Fold every layer so that cycles <= (1e9/clock_ns)/target_fps, with the fewest LUTs
    (strategy "min_lut", ties: fewer BRAM/URAM/DSP, then less parallelism) or by FINN's divisor walk
    (strategy "finn"). If some layer cannot reach the target, the achieved bottleneck becomes the
    target of a second pass (FINN's two-pass relaxation) so no layer is faster than needed. ``estimate`` prices a
    folded layer (default: its own ``resources()``)."""
    layers = _check_layers(layers)
    est = estimate or layer_resources
    budget = cm.target_cycles(target_fps, clock_ns)
    if strategy not in ("min_lut", "finn"):
        raise QpassError(f"unknown folding strategy {strategy!r}; use min_lut or finn")
    res = FoldingResult([], [], clock_ns, list(edges) if edges is not None else None, target_fps, budget, strategy)
    f_layers, f_folds = _fold_finn(layers, budget, mvau_wwidth_max, est)
    if two_pass_relaxation and max(f.cycles for f in f_folds) > budget:
        f_layers, f_folds = _fold_finn(layers, max(f.cycles for f in f_folds), mvau_wwidth_max, est)
    res.baseline_lut = sum(f.res.lut for f in f_folds)
    if strategy == "finn":
        res.layers, res.folds = f_layers, f_folds
        res.candidates_tried = 0
        return res
    cands = [_Candidates(l, est) for l in layers]
    res.candidates_tried = sum(c.n for c in cands)
    eff = budget
    if two_pass_relaxation:
        eff = max(budget, max(int(c.cycles[0]) for c in cands))
        if eff > budget:
            slow = max(cands, key=lambda c: c.cycles[0])
            res.notes.append(f"target not reachable: {slow.layer.name} needs at least {eff} cycles; "
                             f"relaxed the other layers to {eff}")
    for c in cands:
        lay, lf = c.fold(c.best(eff, _key_lut), c.n)
        res.layers.append(lay)
        res.folds.append(lf)
    return res


def fold_for_budget(layers: Sequence[Layer], device: Device | str, clock_ns: float | None = None,
                    utilisation: float = 0.8, *, edges: Sequence[tuple[str, str]] | None = None,
                    estimate: Estimator | None = None) -> FoldingResult:
    """The fastest folding whose LUT/BRAM18/URAM/DSP totals fit ``utilisation`` of ``device`` (``estimate`` as in
    ``fold_for_target``)."""
    layers = _check_layers(layers)
    dev = get_device(device)
    clk = float(clock_ns if clock_ns is not None else dev.clock_ns)
    if not 0 < utilisation <= 1:
        raise QpassError(f"utilisation must be in (0, 1], got {utilisation}")
    cap = dev.capacity(utilisation)
    cands = [_Candidates(l, estimate) for l in layers]
    keys = [_key_lut, _key_bram, _key_weighted(cap)]
    floor = max(int(c.cycles[0]) for c in cands)
    budgets = sorted({int(x) for c in cands for x in c.cycles if x >= floor})
    tried = 0
    for b in budgets:
        for key in keys:
            idx = [c.best(b, key) for c in cands]
            tried += 1
            total = np.sum([c.rows[i][1:5] for c, i in zip(cands, idx)], axis=0)
            if all(int(u) <= cp for u, cp in zip(total, cap)):
                res = FoldingResult([], [], clk, list(edges) if edges is not None else None,
                                    strategy="budget", device=dev, utilisation=utilisation)
                for c, i in zip(cands, idx):
                    lay, lf = c.fold(i, c.n)
                    res.layers.append(lay)
                    res.folds.append(lf)
                res.candidates_tried = sum(c.n for c in cands)
                res.notes.append(f"scanned {tried} (budget, objective) foldings of {len(budgets)} budgets; "
                                 f"fits {utilisation:.0%} of {dev.part}")
                return res
    slowest = [c.best(float("inf"), _key_lut) for c in cands]
    need = np.sum([c.rows[i][1:5] for c, i in zip(cands, slowest)], axis=0)
    raise QpassError(f"design does not fit {dev.part} ({dev.board}) at {utilisation:.0%} even fully folded: "
                     f"needs LUT/BRAM18/URAM/DSP {tuple(int(x) for x in need)} of {cap}")
