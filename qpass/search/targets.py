"""Accuracy targets ("relative_accuracy>=0.99", "sqnr>=30") and the metrics they are checked against.

Grammar (case-insensitive, spaces ignored)::

    target     := constraint { ("," | "and") constraint }
    constraint := metric op number [ "%" | "dB" ]
    op         := ">=" | ">" | "=>"          (every metric is a lower bound)

    metric                          meaning                                       needs
    ------------------------------  --------------------------------------------  ---------------
    relative_accuracy (rel_acc)     quantised top-1 accuracy / float accuracy     labels (*)
    accuracy (acc, top1)            quantised top-1 accuracy                      labels
    agreement                       top-1 agreement with the float model          --
    sqnr (sqnr_db)                  output SQNR against the float model, dB       --

(*) without labels ``relative_accuracy`` is measured as top-1 agreement with the float model (noted). A value
with ``%`` is divided by 100; accuracies must lie in (0, 1].

The search checks targets conservatively (``Target.met(..., conservative=True, margin=z)``): an accuracy is the
float accuracy minus the samples the quantised model *loses* (float right, quantised wrong), so lost samples cannot
be paid for with ones gained by chance, and the lost (or, for agreement, disagreeing) fraction is replaced by its
z-sigma Wilson score upper bound over the N samples, so that the choice does not sit on the edge of what N samples
can tell apart (with N = 360 and z = 1, a 1% relative-accuracy budget then allows one lost sample, not three).
The final verification uses the plain metrics.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from qpass.analysis.metrics import sqnr_db, top1

METRICS = ("relative_accuracy", "accuracy", "agreement", "sqnr")
ALIASES = {"rel_acc": "relative_accuracy", "relative_acc": "relative_accuracy", "relacc": "relative_accuracy",
           "acc": "accuracy", "top1": "accuracy", "top1_accuracy": "accuracy", "sqnr_db": "sqnr",
           "top1_agreement": "agreement"}
MIN_HELD_OUT = 20  # held-out samples at least, for any target (an SQNR's average needs some samples too)
UNITS = {"relative_accuracy": "", "accuracy": "", "agreement": "", "sqnr": " dB"}

_CONSTRAINT = re.compile(r"^(?P<metric>[a-z][a-z0-9_]*)(?P<op>>=|=>|>|<=|=<|<|==|=)(?P<value>[-+0-9.e]+)"
                         r"(?P<unit>%|db)?$")


@dataclass(frozen=True)
class Constraint:
    metric: str
    value: float
    strict: bool = False

    def met(self, metrics: dict, conservative: bool = False, margin: float = 0.0) -> bool:
        v = metrics.get(self.metric)
        if conservative:
            v = conservative_value(metrics, self.metric, margin)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return False
        return v > self.value if self.strict else v >= self.value - 1e-12

    def __str__(self) -> str:
        return f"{self.metric}{'>' if self.strict else '>='}{self.value:g}"


@dataclass(frozen=True)
class Target:
    constraints: tuple[Constraint, ...]
    text: str = ""

    @property
    def primary(self) -> str:
        """The metric the Pareto front is drawn against: the first constraint's."""
        return self.constraints[0].metric

    def met(self, metrics: dict, conservative: bool = False, margin: float = 0.0) -> bool:
        """Whether every constraint holds. ``conservative`` (what the search uses): accuracies count only the
        samples the quantised model loses (float right, quantised wrong), never those it gains by chance, and
        rates of lost / disagreeing samples are replaced by their ``margin``-sigma binomial upper bound."""
        return all(c.met(metrics, conservative, margin) for c in self.constraints)

    def min_samples(self) -> int:
        """Held-out samples that can resolve the target: for a rate bound t (accuracies, agreement) one sample must
        weigh no more than the slack 1 - t, so ceil(1 / (1 - t)); at least MIN_HELD_OUT."""
        need = MIN_HELD_OUT
        for c in self.constraints:
            if c.metric != "sqnr" and c.value < 1.0:
                need = max(need, int(math.ceil(1.0 / (1.0 - c.value) - 1e-9)))
        return need

    def needs_labels(self) -> bool:
        return any(c.metric == "accuracy" for c in self.constraints)

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.constraints)


def parse_target(text) -> Target:
    """A Target from 'relative_accuracy>=0.99', 'sqnr>=30dB', 'accuracy>=97%,sqnr>=20'; QpassError when bad."""
    if isinstance(text, Target):
        return text
    if not isinstance(text, str) or not text.strip():
        raise QpassError(f"a bitwidth target is a string such as 'relative_accuracy>=0.99' or 'sqnr>=30', "
                         f"not {text!r}")
    parts = [p for p in re.split(r",|\band\b|&&", text.strip().lower()) if p.strip()]
    if not parts:
        raise QpassError(f"bad bitwidth target {text!r}: no constraint in it")
    out = []
    for part in parts:
        p = "".join(part.split())
        m = _CONSTRAINT.match(p)
        if not m:
            raise QpassError(f"bad bitwidth target {part.strip()!r}: expected METRIC>=VALUE with METRIC one of "
                             f"{', '.join(METRICS)} (e.g. relative_accuracy>=0.99, sqnr>=30)")
        metric = ALIASES.get(m["metric"], m["metric"])
        if metric not in METRICS:
            raise QpassError(f"bad bitwidth target {part.strip()!r}: unknown metric {m['metric']!r} "
                             f"(known: {', '.join(METRICS)})")
        op = m["op"]
        if op not in (">=", "=>", ">"):
            raise QpassError(f"bad bitwidth target {part.strip()!r}: a target is a lower bound on {metric}; "
                             f"write {metric}>=VALUE")
        try:
            value = float(m["value"])
        except ValueError:
            raise QpassError(f"bad bitwidth target {part.strip()!r}: {m['value']!r} is not a number") from None
        unit = m["unit"]
        if not math.isfinite(value):
            raise QpassError(f"bad bitwidth target {part.strip()!r}: the value must be finite")
        if metric == "sqnr":
            if unit == "%":
                raise QpassError(f"bad bitwidth target {part.strip()!r}: SQNR is in dB, not %")
        else:
            if unit == "db":
                raise QpassError(f"bad bitwidth target {part.strip()!r}: {metric} is a fraction, not dB")
            if unit == "%":
                value /= 100.0
            if not 0.0 < value <= 1.0:
                raise QpassError(f"bad bitwidth target {part.strip()!r}: {metric} must be in (0, 1] "
                                 f"(or (0, 100]%), got {value:g}")
        out.append(Constraint(metric, value, op == ">"))
    return Target(tuple(out), text.strip())


def _upper(count: int, n: int, z: float) -> float:
    """Wilson score upper bound of a binomial rate (informative at zero counts, unlike p + z sigma)."""
    if not n:
        return 0.0
    p = count / n
    if z <= 0:
        return p
    z2 = z * z
    return float((p + z2 / (2 * n) + z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n))


def conservative_value(m: dict, metric: str, margin: float = 0.0):
    """A metric as the search checks it: losses only, rates at their ``margin``-sigma upper bound."""
    n = m.get("samples", 0)
    if metric == "agreement" or (metric == "relative_accuracy" and "accuracy" not in m):
        return 1.0 - _upper(m.get("disagree", 0), n, margin) if n else m.get("agreement")
    if metric in ("accuracy", "relative_accuracy") and "accuracy" in m:
        fa = m["float_accuracy"]
        kept = fa - _upper(m.get("lost", 0), n, margin)
        return kept if metric == "accuracy" else (kept / fa if fa > 0 else 1.0)
    return m.get(metric)


def output_metrics(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None,
                   float_accuracy: float | None = None) -> dict:
    """SQNR, agreement and (with labels) accuracy / relative accuracy of ``out`` against float ``ref``.

    Both are (N, ...) per-sample outputs. ``noise`` is the mean squared output error per sample (the additive
    quantity the search budgets), ``relative_accuracy`` falls back to agreement without labels."""
    ref64 = np.asarray(ref, np.float64).reshape(len(ref), -1)
    out64 = np.asarray(out, np.float64).reshape(len(out), -1)
    err = ref64 - out64
    same = top1(ref64) == top1(out64)
    m = {"sqnr": sqnr_db(ref64, out64), "noise": float(np.sum(err * err) / max(len(ref64), 1)),
         "agreement": float(np.mean(same)), "samples": int(len(ref64)), "disagree": int(np.sum(~same))}
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        right_q = top1(out64) == lab
        right_f = top1(ref64) == lab
        acc = float(np.mean(right_q))
        fa = float(np.mean(right_f)) if float_accuracy is None else float_accuracy
        m["accuracy"] = acc
        m["float_accuracy"] = fa
        m["relative_accuracy"] = acc / fa if fa > 0 else (1.0 if acc == 0 else float("inf"))
        m["lost"] = int(np.sum(right_f & ~right_q))
        m["gained"] = int(np.sum(~right_f & right_q))
    else:
        m["relative_accuracy"] = m["agreement"]
    m["flip_risk"] = flip_risk(ref64, out64)
    return m


def flip_risk(ref: np.ndarray, out: np.ndarray) -> float:
    """Expected top-1 disagreement rate on samples like these: each sample's float margins (top-1 logit minus every
    other) against the spread of the quantisation's change to those margins (RMS over the samples), a sample
    flipping with probability 1 - prod_j Phi(margin_j / sigma). Unlike the count of disagreeing samples it sees
    samples that kept their class by a hair, so a hundred samples can tell a 1% risk from a 3% one."""
    n = len(ref)
    if n == 0 or ref.shape[1] < 2:
        return 0.0
    rows = np.arange(n)
    t = np.argmax(ref, axis=1)
    margin = ref[rows, t][:, None] - ref
    change = (out[rows, t][:, None] - out) - margin
    others = np.ones_like(margin, bool)
    others[rows, t] = False
    sigma = float(np.sqrt(np.mean(change[others] ** 2)))
    if sigma == 0.0:
        return 0.0
    keep = _phi(margin / sigma)
    return float(np.mean(1.0 - np.prod(np.where(others, keep, 1.0), axis=1)))


def _phi(x: np.ndarray) -> np.ndarray:
    """The standard normal CDF."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x, np.float64) / math.sqrt(2.0)))


#: the flip risk a rate target measured as agreement may spend: a tenth of its slack (1 - t). Calibration samples
#: sit farther from the decision boundaries than unseen ones: on the digits models the risk estimated on them is
#: 3x to 1000x below the one on the evaluation sets (e.g. 0.99% against 3.1% at uniform 3 bits)
RISK_SHARE = 0.1


def risk_met(target: Target, m: dict) -> bool:
    """Constraints measured as top-1 agreement (no labels) also keep ``flip_risk`` within RISK_SHARE of their
    slack."""
    for c in target.constraints:
        if c.metric == "agreement" or (c.metric == "relative_accuracy" and "accuracy" not in m):
            if m.get("flip_risk", 0.0) > RISK_SHARE * (1.0 - c.value):
                return False
    return True


def describe_metrics(m: dict) -> str:
    parts = []
    if "accuracy" in m:
        parts.append(f"accuracy {100 * m['accuracy']:.2f}% (float {100 * m['float_accuracy']:.2f}%, "
                     f"relative {m['relative_accuracy']:.4f})")
    parts.append(f"agreement {100 * m['agreement']:.2f}%")
    parts.append(f"SQNR {m['sqnr']:.1f} dB")
    return ", ".join(parts)
