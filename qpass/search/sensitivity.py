"""Per-site sensitivity: quantise one site alone at each candidate width and measure the network output.

For every site and width the site's quantiser is the only one enabled; the sub-graph downstream of it runs from the
captured float activations (``Probe.run_site``: one onnxruntime session per site, built once). Recorded per
(site, width): the output noise (mean squared error against the float output, per sample -- the additive quantity
the optimiser budgets), output SQNR, top-1 agreement and, with labels, accuracy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from .accumulators import accumulator_scale, exact_range, signed_width, weight_grid
from .probe import Probe
from .sites import Site, activation_grid, format_spec, quantize_weight
from .targets import output_metrics


class Space:
    """Sites, their candidate widths, and the probe feeds that quantise a site at a width (cached)."""

    def __init__(self, sites: list[Site], probe: Probe, weights: str, activations: str, granularity: str,
                 candidates: dict[str, list[int]], labels=None):
        self.sites = sites
        self.by_key = {s.key: s for s in sites}
        self.probe = probe
        self.weights, self.activations, self.granularity = weights, activations, granularity
        self.candidates = candidates  # key -> ascending widths
        self.labels = labels
        self._w: dict = {}
        self._a: dict = {}
        self._b: dict = {}
        self.reference = probe.reference
        self.float_metrics = output_metrics(self.reference, self.reference, labels)

    def spec(self, key: str, W: int) -> str:
        s = self.by_key[key]
        return format_spec(self.weights if s.kind == "weight" else self.activations, W)

    def weight(self, key: str, W: int):
        k = (key, W)
        if k not in self._w:
            self._w[k] = quantize_weight(self.by_key[key], self.weights, W, self.granularity)
        return self._w[k]

    def act(self, key: str, W: int):
        k = (key, W)
        if k not in self._a:
            lo, hi = self.by_key[key].range
            self._a[k] = activation_grid(self.activations, W, lo, hi)
        return self._a[k]

    def bias(self, key: str, W: int, A: int) -> np.ndarray | None:
        """The bias as fakequant stores it: int32 codes at s_in * s_w (None where it stays float)."""
        k = (key, W, A)
        if k not in self._b:
            s = self.by_key[key]
            grid = weight_grid(s, self.weight(key, W)[1])
            out = None
            if grid is not None:
                s_b = (np.float32(self.act(s.input_site, A).scale) * grid[1]).astype(np.float32)
                b = s.bias.astype(np.float64)
                if s_b.size in (1, b.size):
                    s_b = np.broadcast_to(s_b.reshape(-1) if s_b.size > 1 else s_b, b.shape).astype(np.float64)
                    codes = np.clip(np.round(b / s_b), -(2**31), 2**31 - 1)
                    out = (codes * s_b).astype(np.float32)
            self._b[k] = out
        return self._b[k]

    def feed(self, key: str, W: int) -> dict:
        s = self.by_key[key]
        if s.kind == "weight":
            return self.probe.weight_feed(key, self.weight(key, W)[0])
        g = self.act(key, W)
        return self.probe.activation_feed(key, float(g.scale), g.zero_point, g.qmin, g.qmax)

    def feeds(self, widths: dict, acc: dict | None = None) -> dict:
        f = {}
        for key, W in widths.items():
            if key in self.by_key and W is not None:
                f.update(self.feed(key, W))
        for s in self.sites:  # int32 bias at s_in * s_w where a layer's weight and input are both quantised
            if s.kind == "weight" and s.bias is not None and widths.get(s.key) is not None \
                    and s.input_site and widths.get(s.input_site) is not None:
                b = self.bias(s.key, widths[s.key], widths[s.input_site])
                if b is not None:
                    f.update(self.probe.bias_feed(s.key, b))
        for node, bits in (acc or {}).items():
            info = self.accumulator(node, widths)
            if info is not None:
                f.update(self.probe.accumulator_feed(node, info["scale"], bits))
        return f

    def accumulator(self, node: str, widths: dict) -> dict | None:
        """Exact accumulator range / width and grid scale of a linear layer under ``widths``, or None."""
        s = self.by_key.get("w:" + node)
        if s is None or widths.get(s.key) is None:
            return None
        if not s.input_site or widths.get(s.input_site) is None:
            return None
        grid = weight_grid(s, self.weight(s.key, widths[s.key])[1])
        if grid is None:
            return None
        codes, s_w = grid
        act = self.act(s.input_site, widths[s.input_site])
        rng = exact_range(s, codes, s_w, act)
        if rng is None:
            return None
        return {"range": rng, "exact_bits": signed_width(*rng),
                "scale": accumulator_scale(act.scale, s_w, int(s.layer_shape["mh"]))}

    def evaluate(self, widths: dict, acc: dict | None = None, base: tuple | None = None):
        """(metrics, captured state) of an assignment. From ``base`` = (widths, acc, state) of another
        assignment, only the sub-graphs downstream of the sites that differ are re-run."""
        feeds = self.feeds(widths, acc)
        acc = acc or {}
        state = None
        if base is not None:
            bw, bacc, bstate = base
            diff = [k for k in set(widths) | set(bw) if widths.get(k) != bw.get(k)]
            diff += ["c:" + n for n in set(acc) | set(bacc) if acc.get(n) != bacc.get(n)]
            if len(diff) <= max(2, len(self.sites) // 3):
                state = self.probe.advance(bstate, diff, feeds)
        if state is None:
            state = self.probe.capture(feeds)
        m = output_metrics(self.reference, state.output, self.labels, self.float_metrics.get("accuracy"))
        return m, state

    def measure(self, widths: dict, acc: dict | None = None) -> dict:
        return self.evaluate(widths, acc)[0]


@dataclass
class Sensitivity:
    noise: dict[str, dict[int, float]] = field(default_factory=dict)
    metrics: dict[str, dict[int, dict]] = field(default_factory=dict)
    runs: int = 0
    seconds: float = 0.0
    signal: float = 0.0

    def rows(self) -> list[dict]:
        out = []
        for key, per in self.metrics.items():
            for W, m in sorted(per.items()):
                row = {"site": key, "bits": W, "noise": m["noise"], "sqnr_db": m["sqnr"], "agreement": m["agreement"]}
                if "accuracy" in m:
                    row["accuracy"] = m["accuracy"]
                out.append(row)
        return out


def site_metrics(job: tuple) -> list[dict]:
    """Output metrics of one site at each candidate width: ``job`` = (SiteRuns, feeds per width, reference output,
    labels, float accuracy). The unit an engine fans out."""
    runs, feeds, reference, labels, fa = job
    return [output_metrics(reference, out, labels, fa) for out in runs.outputs(feeds)]


def _fan_out(space: Space, engine, fa) -> dict:
    """Every site's metrics per width, computed on ``engine`` (one call per site); {} without an engine."""
    if engine is None or engine.name == "local":
        return {}
    keys = [s.key for s in space.sites if space.probe.reaches_output(s.key)]
    jobs = [(space.probe.site_runs(k), [space.feed(k, W) for W in space.candidates[k]], space.reference,
             space.labels, fa) for k in keys]
    return {k: dict(zip(space.candidates[k], ms)) for k, ms in zip(keys, engine.map(site_metrics, jobs))}


def analyse(space: Space, progress: bool = False, engine=None) -> Sensitivity:
    """Every site alone at every candidate width; with an ``engine`` (``qpass.pipeline.engines``) the sites run
    there in parallel, with the same numbers."""
    t0 = time.perf_counter()
    ref = space.reference.astype(np.float64)
    sens = Sensitivity(signal=float(np.sum(ref * ref) / max(len(ref), 1)))
    total = sum(len(space.candidates[s.key]) for s in space.sites)
    fa = space.float_metrics.get("accuracy")
    fanned = _fan_out(space, engine, fa)
    with tqdm(total=total, desc="bitwidth sensitivity", unit="run", disable=not progress or None,
              leave=False) as bar:
        for s in space.sites:
            sens.noise[s.key], sens.metrics[s.key] = {}, {}
            for W in space.candidates[s.key]:
                if s.key in fanned:
                    m = fanned[s.key][W]
                    sens.runs += 1
                elif space.probe.reaches_output(s.key):
                    out = space.probe.run_site(s.key, space.feed(s.key, W))
                    sens.runs += 1
                    m = output_metrics(space.reference, out, space.labels, fa)
                else:
                    m = output_metrics(space.reference, space.reference, space.labels, fa)
                sens.noise[s.key][W] = m["noise"]
                sens.metrics[s.key][W] = m
                bar.update(1)
    sens.seconds = time.perf_counter() - t0
    return sens
