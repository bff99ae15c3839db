"""Range observers ("calibrators"): each streams over activations and ends with a (lo, hi) clipping range.

Every observer keeps bounded state (running extrema, fixed-size histograms), never the activations.
"""
from __future__ import annotations

import numpy as np

from .errors import PipelineError


class Observer:
    method = ""

    def __init__(self, **opts):
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = np.asarray(x)
        finite = x if np.isfinite(x).all() else x[np.isfinite(x)]
        if finite.size == 0:
            return
        self.lo = min(self.lo, float(finite.min()))
        self.hi = max(self.hi, float(finite.max()))
        self.count += finite.size
        self._update(finite)

    def _update(self, x: np.ndarray) -> None:
        pass

    @property
    def seen(self) -> bool:
        return self.count > 0

    def range(self) -> tuple[float, float]:
        return (self.lo, self.hi) if self.seen else (0.0, 0.0)


class MinMaxObserver(Observer):
    method = "minmax"


CALIBRATORS: dict[str, type[Observer]] = {"minmax": MinMaxObserver}


def make_observer(method: str, **opts) -> Observer:
    try:
        cls = CALIBRATORS[method]
    except KeyError:
        raise PipelineError(f"unknown calibration method {method!r} (known: {', '.join(sorted(CALIBRATORS))})") from None
    return cls(**opts)
