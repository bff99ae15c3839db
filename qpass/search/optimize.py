"""The optimiser: widths per site that minimise a cost under an accuracy target, or the error under a budget.

Model. Each site s at width b adds output noise e_s(b) (measured alone, ``sensitivity``); the noise of an
assignment is predicted as the sum (the additive-noise model of Zhou et al. 2018 / HAWQ). Costs are sums of
per-layer terms (``cost``). Every prediction is then checked by *measurement*: a whole assignment is one run of
the probe model over the search samples, and acceptance always uses the measured metric.

Target mode (``target``):

1. **Lagrangian path.** From the widest candidates, repeatedly take the move (site s: b -> b' < b) with the least
   predicted noise added per unit of cost saved, (e_s(b') - e_s(b)) / (cost saved), until every site is at its
   narrowest. For a separable cost (memory) this is the lower convex hull of the per-site (cost, noise) fronts, i.e.
   the solutions of min cost + lambda * noise for every lambda; for coupled costs (BOPs: w x a) the saving is
   recomputed against the current widths. Every point of the path is measured: this is the Pareto front.
2. **Selection.** Walking the path from the widest end, the last point before the first one that misses the target
   (checked conservatively, see ``targets``). For accuracy / agreement targets these two points also calibrate an
   *output-noise budget*: halfway in dB between their measured noises. Accuracy on N samples is a step function
   that saturates; a search measuring hundreds of candidates would otherwise find ones that pass by luck at far
   higher noise.
3. **Refinement by measurement.** Greedy single-site narrowing moves in order of predicted efficiency, each kept
   only if the measured metric still meets the target and the noise budget (a failed move (s, b') also rules out
   narrower widths of s), then exchange moves (widen one site, narrow another for a net saving), then the same
   greedy pass over sites the cost does not see (activations under ``memory``: a second objective, bits per
   sample).

Budget mode (``avg_bits``): minimise the predicted noise subject to weight memory <= avg_bits x parameters, solved
exactly as a multiple-choice knapsack by dynamic programming over the per-site fronts; then measured exchange moves
that lower the measured noise within the budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .cost import CostModel
from .sensitivity import Sensitivity, Space
from .targets import Target


@dataclass
class Point:
    widths: dict
    cost: float
    secondary: float
    metrics: dict
    source: str
    predicted_noise: float
    acc: dict = field(default_factory=dict)


class Optimizer:
    def __init__(self, space: Space, sens: Sensitivity, cost: CostModel, target: Target | None,
                 max_evals: int = 1500, progress: bool = False, margin: float = 1.0):
        self.space, self.sens, self.cost, self.target = space, sens, cost, target
        self.cands = space.candidates
        self.order = {s.key: i for i, s in enumerate(space.sites)}
        self.max_evals = max_evals
        self.margin = margin
        self.noise_cap: float | None = None  # refinement: measured output noise must stay below this
        self.evals = 0
        self.points: list[Point] = []
        self._cache: dict = {}
        self.anchor: tuple | None = None  # (widths, acc, captured state) measurements start from
        self._last: tuple | None = None
        self.notes: list[str] = []
        self._bar = tqdm(total=0, desc="bitwidth search", unit="run", disable=not progress or None, leave=False)

    def close(self) -> None:
        self._bar.close()

    # ------------------------------------------------------------------ measurement
    @staticmethod
    def key(widths: dict, acc: dict | None = None) -> tuple:
        """The identity of an assignment (widths and accumulator widths) among the measured points."""
        return tuple(sorted(widths.items())) + (("acc",) + tuple(sorted((acc or {}).items())) if acc else ())

    def measured(self, widths: dict, acc: dict | None = None) -> dict | None:
        """The metrics of an assignment measured before, or None."""
        return self._cache.get(self.key(widths, acc))

    def noise(self, widths: dict) -> float:
        return float(sum(self.sens.noise[k][w] for k, w in widths.items() if k in self.sens.noise))

    def measure(self, widths: dict, source: str, acc: dict | None = None) -> dict:
        k = self.key(widths, acc)
        if k in self._cache:
            return self._cache[k]
        self._bar.total += 1
        m, state = self.space.evaluate(widths, acc, self.anchor)
        self._last = (k, state)
        self._bar.update(1)
        self.evals += 1
        self._cache[k] = m
        self.points.append(Point(dict(widths), self.cost.total(widths, acc=acc), self.cost.secondary(widths), m,
                                 source, self.noise(widths), dict(acc or {})))
        return m

    def set_anchor(self, widths: dict, acc: dict | None = None) -> None:
        """Make ``widths`` the assignment later measurements start from (its captured tensors are reused)."""
        k = self.key(widths, acc)
        if self.anchor is not None and self.key(self.anchor[0], self.anchor[1]) == k:
            return
        if self._last is not None and self._last[0] == k:
            state = self._last[1]
        else:
            state = self.space.evaluate(widths, acc, self.anchor)[1]
        self.anchor = (dict(widths), dict(acc or {}), state)

    def ok(self, m: dict) -> bool:
        if self.noise_cap is not None and m["noise"] > self.noise_cap * (1 + 1e-9):
            return False
        return self.target.met(m, conservative=True, margin=self.margin)

    def budget_left(self) -> bool:
        return self.evals < self.max_evals

    # ------------------------------------------------------------------ moves
    def _down_moves(self, widths: dict, keys, primary: bool, floor: dict | None = None):
        """(ratio, -saving, order, key, width) of every narrowing move, most efficient first."""
        floor = floor or {}
        moves = []
        for k in keys:
            cur = widths[k]
            e0 = self.sens.noise[k][cur]
            for W in self.cands[k]:
                if W >= cur or W <= floor.get(k, -1):
                    continue
                saving = -self.cost.delta(widths, k, W) if primary else self.space.by_key[k].size * (cur - W)
                if saving <= 0:
                    continue
                dn = self.sens.noise[k][W] - e0
                moves.append((dn / saving, -saving, self.order[k], k, W))
        moves.sort()
        return moves

    def top(self, keys, free: dict | None = None) -> dict:
        """The widest candidates (``free``: sites the cost does not see -> their starting width)."""
        free = free or {}
        return {k: free.get(k, self.cands[k][-1]) for k in keys}

    # ------------------------------------------------------------------ target mode
    def path(self, start: dict, keys, cap: int = 240) -> list[dict]:
        """The Lagrangian descent path from ``start`` (every point measured, or ``cap`` evenly spaced ones)."""
        w = dict(start)
        pts = [dict(w)]
        while True:
            moves = self._down_moves(w, keys, primary=True)
            if not moves:
                break
            _, _, _, k, W = moves[0]
            w[k] = W
            pts.append(dict(w))
        idx = range(len(pts)) if len(pts) <= cap else sorted({int(round(i)) for i in np.linspace(0, len(pts) - 1,
                                                                                                   cap)})
        for i in idx:
            self.measure(pts[i], "path")
            self.set_anchor(pts[i])
        return pts

    def select(self, path: list[dict]) -> tuple[dict | None, dict | None]:
        """(last point of the path, widest first, before its first measured failure; that failure or None): along
        a non-monotone metric, the cheapest passing point would be a lucky one."""
        best = None
        for w in path:
            m = self.measured(w)
            if m is None:
                continue  # not measured (very long paths are sub-sampled)
            if not self.ok(m):
                return (None if best is None else dict(best)), dict(w)
            best = w
        return (None if best is None else dict(best)), None

    def greedy(self, widths: dict, keys, primary: bool, source: str) -> dict:
        w = dict(widths)
        self.set_anchor(w)
        floor: dict = {}
        while self.budget_left():
            accepted = False
            for _, _, _, k, W in self._down_moves(w, keys, primary, floor):
                if not self.budget_left():
                    break
                trial = dict(w)
                trial[k] = W
                if self.ok(self.measure(trial, source)):
                    w, accepted = trial, True
                    self.set_anchor(w)
                    break
                floor[k] = max(floor.get(k, -1), W)
            if not accepted:
                break
        return w

    def exchange(self, widths: dict, keys, tries: int = 40) -> dict | None:
        """One exchange move (widen one site a step, narrow another) with a net saving that meets the target."""
        w = dict(widths)
        self.set_anchor(w)
        cands = []
        for k1 in keys:
            higher = [W for W in self.cands[k1] if W > w[k1]]
            if not higher:
                continue
            up = higher[0]
            cost_up = self.cost.delta(w, k1, up)
            w_up = dict(w)
            w_up[k1] = up
            dn_up = self.sens.noise[k1][up] - self.sens.noise[k1][w[k1]]
            for k2 in keys:
                if k2 == k1:
                    continue
                for W2 in self.cands[k2]:
                    if W2 >= w[k2]:
                        continue
                    saving = -self.cost.delta(w_up, k2, W2) - cost_up
                    if saving <= 0:
                        continue
                    dn = dn_up + self.sens.noise[k2][W2] - self.sens.noise[k2][w[k2]]
                    cands.append((dn, -saving, self.order[k1], self.order[k2], k1, up, k2, W2))
        cands.sort()
        for *_, k1, up, k2, W2 in cands[:tries]:
            if not self.budget_left():
                break
            trial = dict(w)
            trial[k1], trial[k2] = up, W2
            if self.ok(self.measure(trial, "exchange")):
                return trial
        return None

    def refine(self, widths: dict, primary_keys, secondary_keys, rounds: int = 4) -> dict:
        w = self.greedy(widths, primary_keys, True, "refine")
        for _ in range(rounds):
            if not self.budget_left():
                break
            x = self.exchange(w, primary_keys)
            if x is None:
                break
            w = self.greedy(x, primary_keys, True, "refine")
        if secondary_keys:
            w = self.greedy(w, secondary_keys, False, "refine-secondary")
        return w

    def backoff(self, widths: dict, keys, acc: dict | None = None) -> tuple[dict, str] | None:
        """Widen the most sensitive site: each site one candidate wider is measured, and the one removing the most
        measured output noise per unit of extra cost (plus 1% of the total, so uncosted sites are not free) wins."""
        self.set_anchor(widths, acc)
        base = self.measure(widths, "backoff", acc)["noise"]
        floor = 0.01 * max(self.cost.total(widths), 1e-12)  # sites the cost does not see are not free to widen
        best = None
        for k in keys:
            higher = [W for W in self.cands[k] if W > widths[k]]
            if not higher:
                continue
            trial = dict(widths)
            trial[k] = higher[0]
            gain = base - self.measure(trial, "backoff", acc)["noise"]
            c = (-gain / (max(self.cost.delta(widths, k, higher[0]), 0.0) + floor), self.order[k])
            if best is None or c < best[0]:
                best = (c, k, higher[0])
        if best is None:
            return None
        _, k, W = best
        w = dict(widths)
        w[k] = W
        return w, f"{self.space.by_key[k].short} {widths[k]} -> {W} bits"

    # ------------------------------------------------------------------ budget mode
    def knapsack(self, base: dict, keys, budget: float, max_states: int = 200_000) -> dict | None:
        """Exact min predicted noise s.t. the primary cost of ``keys`` (separable, integer-valued) <= budget."""
        keys = list(keys)
        fixed_cost = self.cost.total({k: v for k, v in base.items() if k not in keys} |
                                     {k: self.cands[k][0] for k in keys})
        floor_cost = fixed_cost
        terms = {}
        for k in keys:
            w0 = dict(base)
            w0.update({kk: self.cands[kk][0] for kk in keys})
            terms[k] = [self.cost.delta(w0, k, W) for W in self.cands[k]]
        room = budget - floor_cost
        if room < -1e-9:
            return None
        costs = [np.asarray(terms[k], np.float64) for k in keys]
        ints = all(np.all(c == np.round(c)) for c in costs)
        g = 0
        if ints:
            for c in costs:
                for v in c:
                    g = math.gcd(g, int(v))
        unit = float(g) if g > 0 else 1.0
        if room / unit > max_states:
            unit = room / max_states
        cap = int(math.floor(room / unit + 1e-9))
        INF = float("inf")
        dp = np.full(cap + 1, INF)
        dp[0] = 0.0
        choice = np.zeros((len(keys), cap + 1), np.int16)
        for i, k in enumerate(keys):
            new = np.full(cap + 1, INF)
            arg = np.zeros(cap + 1, np.int16)
            for j, W in enumerate(self.cands[k]):
                c = int(math.ceil(costs[i][j] / unit - 1e-9))
                if c > cap:
                    continue
                e = self.sens.noise[k][W]
                shifted = np.full(cap + 1, INF)
                shifted[c:] = dp[:cap + 1 - c] + e
                better = shifted < new
                new[better] = shifted[better]
                arg[better] = j
            dp, choice[i] = new, arg
        # dp[c]: min noise with exactly c units used; take the best over all c <= cap
        c = int(np.argmin(dp))
        if not math.isfinite(dp[c]):
            return None
        w = dict(base)
        for i in range(len(keys) - 1, -1, -1):
            j = int(choice[i][c])
            W = self.cands[keys[i]][j]
            w[keys[i]] = W
            c -= int(math.ceil(costs[i][j] / unit - 1e-9))
        return w

    def minimise_noise(self, widths: dict, keys, budget: float, rounds: int = 6, tries: int = 40) -> dict:
        """Measured exchange / widening moves that lower the measured noise and keep the cost within budget."""
        w = dict(widths)
        cur = self.measure(w, "budget")["noise"]
        self.set_anchor(w)
        for _ in range(rounds):
            if not self.budget_left():
                break
            base_cost = self.cost.total(w)
            cands = []
            for k1 in keys:
                for up in [W for W in self.cands[k1] if W > w[k1]][:2]:
                    w_up = dict(w)
                    w_up[k1] = up
                    dn_up = self.sens.noise[k1][up] - self.sens.noise[k1][w[k1]]
                    c_up = base_cost + self.cost.delta(w, k1, up)
                    if c_up <= budget + 1e-9:
                        cands.append((dn_up, self.order[k1], -1, k1, up, None, None))
                    for k2 in keys:
                        if k2 == k1:
                            continue
                        for W2 in [W for W in self.cands[k2] if W < w[k2]][-2:]:
                            if c_up + self.cost.delta(w_up, k2, W2) > budget + 1e-9:
                                continue
                            dn = dn_up + self.sens.noise[k2][W2] - self.sens.noise[k2][w[k2]]
                            cands.append((dn, self.order[k1], self.order[k2], k1, up, k2, W2))
            cands.sort(key=lambda c: c[:3])
            improved = False
            for dn, _, _, k1, up, k2, W2 in cands[:tries]:
                if not self.budget_left():
                    break
                trial = dict(w)
                trial[k1] = up
                if k2 is not None:
                    trial[k2] = W2
                m = self.measure(trial, "budget")
                if m["noise"] < cur * (1 - 1e-9):
                    w, cur, improved = trial, m["noise"], True
                    self.set_anchor(w)
                    break
            if not improved:
                break
        return w
