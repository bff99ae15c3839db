"""The search result: per-layer table, compression, Pareto front; text, CSV and (with matplotlib) a plot."""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qpass.ir.atomic import write_bytes as atomic_write
from .targets import describe_metrics

FLOAT_BITS = 32
#: the Pareto front's (and the chosen point's) metrics on the held-out samples; empty for other points
HELD_OUT = ["held_out_pareto", "held_out_relative_accuracy", "held_out_accuracy", "held_out_agreement", "held_out_sqnr_db"]


@dataclass
class Assignment:
    """What ``qpass.search.search`` returns (and the ``bitwidth`` pass stores as ``ctx.report.results['bitwidth']``)."""

    widths: dict[str, int]  # site key ("w:<node>" / "a:<tensor>") -> bits
    rules: list[dict]  # fakequant rules reproducing the assignment (append to fakequant's rules; later win)
    table: list[dict]  # one row per site: format, bits, scale / fraction length, signedness, accumulators
    compression: dict
    cost: float
    cost_kind: str
    cost_unit: str
    metric: dict  # verified: the fake-quant model through onnxruntime on the verification samples (faithful)
    search_metric: dict  # the probe's measurement on the search samples
    target: str | None
    avg_bits: float | None
    met: bool
    pareto: list[dict]
    points: list[dict]  # every measured assignment (the Pareto front is the non-dominated subset)
    uniform: list[dict]
    sensitivity: list[dict]
    accumulators: dict[str, dict]
    placement: str = "extrinsic"
    metric_ort_default: dict = field(default_factory=dict)  # the same with qpass's default onnxruntime session
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    evaluations: int = 0
    samples: dict = field(default_factory=dict)
    artifact: dict = field(default_factory=dict)  # the lowered file as stored (search.artifact.artifact_summary)
    searched: dict = field(default_factory=dict)  # before the held-out check: widths, search and held-out metrics
    model: onnx.ModelProto | None = field(default=None, repr=False)  # the verified model (lowered for onnxruntime)
    qonnx: onnx.ModelProto | None = field(default=None, repr=False)  # the same before lowering (QONNX Quant nodes)

    # ------------------------------------------------------------------ views
    def fakequant_options(self) -> dict:
        """Options for a ``fakequant`` pass that reproduces this assignment."""
        return {"rules": [dict(r) for r in self.rules], "placement": self.placement}

    def facts(self) -> dict:
        """JSON-serialisable summary (what the pass puts in ``ctx.report.results['bitwidth']``)."""
        return {"rules": [dict(r) for r in self.rules], "placement": self.placement, "table": self.table,
                "pareto": self.pareto, "points": self.points, "uniform": self.uniform, "cost": self.cost,
                "cost_kind": self.cost_kind, "cost_unit": self.cost_unit, "metric": self.metric,
                "search_metric": self.search_metric, "metric_ort_default": self.metric_ort_default,
                "target": self.target, "avg_bits": self.avg_bits,
                "met": self.met, "compression": self.compression, "widths": dict(self.widths),
                "accumulators": self.accumulators, "notes": list(self.notes), "seconds": dict(self.seconds),
                "evaluations": self.evaluations, "samples": dict(self.samples), "artifact": dict(self.artifact),
                "searched": dict(self.searched)}

    def lines(self) -> list[str]:
        c = self.compression
        goal = f"target {self.target}" if self.target else f"avg_bits <= {self.avg_bits:g}"
        where = (f"on {self.samples.get('verify')} held-out samples" if self.samples.get("held_out")
                 else "on the search samples (not held out)")
        out = [f"bitwidth search ({goal}, cost {self.cost_kind}): "
               f"{'met' if self.met else 'NOT met'} {where} -- {describe_metrics(self.metric)}; "
               f"on the {self.samples.get('search')} search samples -- {describe_metrics(self.search_metric)}",
               f"cost {_fmt(self.cost)} {self.cost_unit}; weights {c['avg_weight_bits']:.2f} bits on average "
               f"({c['params']} parameters): {c['float32']:.2f}x smaller than float32, {c['int8']:.2f}x than int8 "
               f"({c['float32_with_scales']:.2f}x / {c['int8_with_scales']:.2f}x counting per-channel scales)"]
        f = self.artifact
        if f.get("avg_stored_weight_bits"):
            out.append(f"as stored in the onnxruntime file: {f['file_bytes']} bytes, weights in "
                       f"{f['avg_stored_weight_bits']:.2f} bits on average ({f['float32_stored']:.2f}x smaller than "
                       f"float32, {f['int8_stored']:.2f}x than int8), {f.get('latency_us', float('nan')):.1f} us per "
                       f"sample in onnxruntime")
        out += table_lines(self.table)
        out += self.front_lines()
        secs = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        out.append(f"{self.evaluations} measured assignments, Pareto front of {len(self.pareto)} points; {secs}")
        out += [f"note: {n}" for n in self.notes]
        return out

    def front_lines(self, most: int = 12) -> list[str]:
        """The Pareto front, cheapest first: cost, average weight bits, the target's metric on the search samples
        and on the held-out ones (a point the held-out samples do not confirm is where the search over-fitted)."""
        m = _front_metric(self)
        key = "held_out_" + m
        front = self.pareto[:most]
        if not front:
            return []
        out = [f"Pareto front ({self.cost_kind} vs {m}; {len(self.pareto)} points{', cheapest ' + str(most) if len(self.pareto) > most else ''}):",
               f"  {'cost':>14}  {'w bits':>6}  {'search':>8}  {'held out':>8}  {'SQNR held out':>13}"]
        for p in front:
            out.append(f"  {_fmt(p['cost']):>14}  {_num(p.get('avg_weight_bits'))[:6]:>6}  {_num(p.get(m))[:8]:>8}  "
                       f"{_num(p.get(key))[:8]:>8}  {_num(p.get('held_out_sqnr_db'))[:8]:>13}"
                       + ("  chosen" if p.get("chosen") else ""))
        return out

    # ------------------------------------------------------------------ files
    def pareto_csv(self) -> str:
        keys = sorted({k for p in self.points for k in p["widths"]})
        cols = ["source", "pareto", "chosen", "cost", "avg_weight_bits", "activation_bits", "relative_accuracy",
                "accuracy", "agreement", "sqnr_db", "predicted_noise"] + HELD_OUT
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols + [f"bits[{k}]" for k in keys])
        for p in sorted(self.points, key=lambda p: (p["cost"], -p.get("sqnr_db", 0.0))):
            m = p
            w.writerow([p["source"], int(p["pareto"]), int(p["chosen"]), _num(p["cost"]), _num(m["avg_weight_bits"]),
                        _num(p.get("activation_bits")), _num(m.get("relative_accuracy")), _num(m.get("accuracy")), _num(m.get("agreement")),
                        _num(m.get("sqnr_db")), _num(p.get("predicted_noise"))] + [_num(_int(p.get(c))) for c in HELD_OUT] +
                       [p["widths"].get(k, "") for k in keys])
        return buf.getvalue()

    def table_csv(self) -> str:
        cols = ["kind", "layer", "op", "tensor", "format", "bits", "signed", "scale", "scale_min", "scale_max",
                "zero_point", "fraction_bits", "size", "macs", "acc_bits_exact", "acc_bits", "acc_saturated",
                "alone_sqnr_db"]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        for r in self.table:
            w.writerow([_num(r.get(c)) if isinstance(r.get(c), float) else ("" if r.get(c) is None else r.get(c))
                        for c in cols])
        return buf.getvalue()

    def write(self, directory: str | Path, stem: str = "bitwidth") -> list[str]:
        """Write ``<stem>_pareto.csv``, ``<stem>_table.csv``, ``<stem>_sensitivity.csv`` and ``<stem>_pareto.png``
        (when matplotlib is importable; else a note). Returns the notes about what was written."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / f"{stem}_pareto.csv", self.pareto_csv().encode())
        atomic_write(d / f"{stem}_table.csv", self.table_csv().encode())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["site", "bits", "noise", "sqnr_db", "agreement", "accuracy"])
        for r in self.sensitivity:
            w.writerow([r["site"], r["bits"], _num(r["noise"]), _num(r["sqnr_db"]), _num(r["agreement"]),
                        _num(r.get("accuracy"))])
        atomic_write(d / f"{stem}_sensitivity.csv", buf.getvalue().encode())
        written = [f"wrote {d / f'{stem}_pareto.csv'}, {d / f'{stem}_table.csv'}, {d / f'{stem}_sensitivity.csv'}"]
        written.append(plot_pareto(self, d / f"{stem}_pareto.png"))
        return written


def _int(v):
    return int(v) if isinstance(v, bool) else v


def _num(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.6g}"
    return str(v)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _front_metric(a: "Assignment") -> str:
    if a.target:
        for m in ("relative_accuracy", "accuracy", "agreement"):
            if a.target.startswith(m):
                return m
    return "sqnr_db"


def plot_pareto(a: Assignment, path: Path) -> str:
    """Cost against the target's metric (zoomed around the target) and against SQNR: every measured assignment,
    the Pareto front, the uniform baselines and the chosen point. A note instead when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 - optional dependency (pip install qpass[report])
        return f"matplotlib is not importable: skipped the plot {path.name} (pip install 'qpass[report]')"
    metric = _front_metric(a)
    panels = [metric] + (["sqnr_db"] if metric != "sqnr_db" else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    bound = None
    if a.target:
        for part in a.target.split(","):
            name, _, value = part.partition(">=")
            if name.strip() in (metric, metric.replace("_db", "")):
                bound = float(value)
    for ax, m in zip(axes[0], panels):
        pts = [p for p in a.points if p.get(m) is not None and np.isfinite(p[m])]
        ax.scatter([p["cost"] for p in pts], [p[m] for p in pts], s=9, c="0.7", label="measured")
        front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["cost"])
        ax.plot([p["cost"] for p in front], [p[m] for p in front], "o-", ms=3, c="C0", label="Pareto front")
        for u in a.uniform:
            if u.get(m) is not None:
                ax.scatter([u["cost"]], [u[m]], marker="s", c="C1", s=30, zorder=4)
                ax.annotate(u["name"], (u["cost"], u[m]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ch = [p for p in pts if p["chosen"]]
        if ch:
            ax.scatter([ch[0]["cost"]], [ch[0][m]], marker="*", c="C3", s=140, label="chosen", zorder=5)
        if m == metric and bound is not None:
            ax.axhline(bound, ls="--", c="C3", lw=0.8, label=f"target {bound:g}")
            vals = [p[m] for p in pts]
            ax.set_ylim(max(min(vals), bound - 3 * (max(vals) - bound) - 0.02), max(vals) + 0.005)
        ax.set_xlabel(f"{a.cost_kind} ({a.cost_unit})")
        ax.set_ylabel(m.replace("_db", " (dB)"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return f"wrote {path}"


def table_lines(table: list[dict]) -> list[str]:
    """Per layer: weight format (W, signedness, per-channel scale range or F), the input activation's format
    (W, signedness, scale and zero point or F) and the accumulator width (used / exact)."""
    out = [f"  {'layer':<26} {'op':<5} {'weight':<30} {'params':>7}  {'input activation':<34} {'acc used/exact':>14}"]
    acts = {r["site"]: r for r in table if r["kind"] == "activation"}
    shown = set()
    for r in table:
        if r["kind"] != "weight":
            continue
        a = acts.get(r.get("input_site") or "")
        if a:
            shown.add(a["site"])
        acc = ""
        if r.get("acc_bits_exact"):
            acc = f"{r.get('acc_bits') or r['acc_bits_exact']}/{r['acc_bits_exact']}"
            if r.get("acc_saturated"):
                acc += f" ({r['acc_saturated']} sat)"
        out.append(f"  {_short(r['layer'], 26):<26} {r['op'][:5]:<5} {_site_text(r):<30} {r['size']:>7}  "
                   f"{(_site_text(a) if a else 'float'):<34} {acc:>14}")
    for a in table:
        if a["kind"] == "activation" and a["site"] not in shown:
            out.append(f"  {_short('(' + a['tensor'] + ')', 26):<26} {'act':<5} {'':<30} {'':>7}  {_site_text(a):<34}")
    return out


def _short(name: str, n: int) -> str:
    return name if len(name) <= n else name[: n // 2 - 1] + ".." + name[-(n - n // 2 - 1):]


def _site_text(r: dict) -> str:
    """'<format> <s|u><bits> <grid>', the grid being F=<fraction bits> or the scale (a weight's per-channel range;
    an activation's scale and zero point)."""
    if r["format"] == "float":
        return "float"
    if r.get("fraction_bits") is not None:
        grid = f"F={r['fraction_bits']}"
    elif r["kind"] == "activation":
        grid = f"scale {r['scale']:.3g}" + (f" zp {r['zero_point']}" if r.get("zero_point") else "")
    elif r.get("scale") == "per-channel":
        grid = f"scale {r['scale_min']:.2g}..{r['scale_max']:.2g}"
    else:
        grid = f"scale {r['scale_min']:.3g}"
    return f"{r['format']} {'s' if r['signed'] else 'u'}{r['bits']} {grid}"


def compression(sites, excluded, widths: dict, channels_bits: int = FLOAT_BITS, stored=lambda w: w) -> dict:
    """Weight memory of the assignment against float32 and int8 (linear-layer weights; biases excluded), each
    weight at ``stored(width)`` bits (the artifact's storage, ``artifact.stored_bits``)."""
    ws = [s for s in sites if s.kind == "weight"]
    ex = [s for s in excluded if s.kind == "weight"]
    n = sum(s.size for s in ws) + sum(s.size for s in ex)
    bits = sum(s.size * stored(widths[s.key]) for s in ws) + FLOAT_BITS * sum(s.size for s in ex)
    scales = channels_bits * sum(s.channels for s in ws)
    acts = [s for s in sites if s.kind == "activation"]
    a_elems = sum(s.size for s in acts)
    out: dict[str, Any] = {
        "params": int(n), "weight_bits": int(bits), "avg_weight_bits": bits / n if n else float("nan"),
        "float32": FLOAT_BITS * n / bits if bits else float("nan"), "int8": 8 * n / bits if bits else float("nan"),
        "scale_bits": int(scales),
        "float32_with_scales": FLOAT_BITS * n / (bits + scales) if bits else float("nan"),
        "int8_with_scales": (8 * n + scales) / (bits + scales) if bits else float("nan"),
        "avg_activation_bits": (sum(s.size * widths[s.key] for s in acts) / a_elems) if a_elems else None,
        "float_weights": [s.node for s in ex]}
    return out


def pareto_flags(points: list[dict], metric: str, secondary: bool = False) -> list[bool]:
    """Non-dominated points over (cost: lower, ``metric``: higher, SQNR: higher[, activation bits: lower]); of exact
    ties the first is kept.

    SQNR is a coordinate because accuracy on N samples saturates: a cheap point that happens to score like an
    expensive one at a far lower SQNR is a lucky point, not a better trade-off. ``secondary``: the cost's second
    objective (activation bits under ``memory``) is one too."""
    keys = [metric] + (["sqnr_db"] if metric != "sqnr_db" else [])

    def vec(p):
        v = [-p["cost"]] + [(-np.inf if p.get(k) is None or np.isnan(p[k]) else p[k]) for k in keys]
        return v + ([-p["activation_bits"]] if secondary else [])

    vs = [vec(p) for p in points]
    flags = []
    for i, v in enumerate(vs):
        dominated = False
        for j, u in enumerate(vs):
            if j == i:
                continue
            if all(x >= y for x, y in zip(u, v)) and (any(x > y for x, y in zip(u, v)) or j < i):
                dominated = True
                break
        flags.append(not dominated)
    return flags


def as_float(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if not np.isnan(v) else None
