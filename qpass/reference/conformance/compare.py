"""Outputs compared as onnx's backend test runner compares them (``Runner.assert_similar_outputs``): equal counts,
shapes and dtypes, strings equal, numbers within the case's rtol / atol (bfloat16 at least two ulps)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _worst(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    if not bad.any():
        return "values differ"
    err = np.where(bad, np.abs(g - w), -1.0)
    err = np.where(np.isnan(err), np.inf, err)
    at = np.unravel_index(int(np.argmax(err)), g.shape) if g.ndim else ()
    return f"{int(bad.sum())} of {g.size} values differ, e.g. at {tuple(int(i) for i in at)} got {g[at]:.6g} " \
           f"want {w[at]:.6g}"


def compare(want: Sequence[Any], got: Sequence[Any], rtol: float, atol: float, where: str = "output") -> str | None:
    """None when ``got`` matches ``want`` as onnx's backend test runner decides (``assert_similar_outputs``);
    otherwise one line saying what differs."""
    if len(got) != len(want):
        return f"{len(got)} {where}s, expected {len(want)}"
    for i, (w, g) in enumerate(zip(want, got)):
        label = f"{where} {i}"
        if isinstance(g, (list, tuple)) or isinstance(w, (list, tuple)):
            if not isinstance(g, (list, tuple)) or not isinstance(w, (list, tuple)):
                return f"{label}: got {type(g).__name__}, expected {type(w).__name__}"
            why = compare(w, g, rtol, atol, where=f"{label} item")
            if why:
                return why
            continue
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"{label}: shape {g.shape}, expected {w.shape}"
        if w.dtype == object:
            if not np.array_equal(g, w):
                return f"{label}: strings differ"
            continue
        if g.dtype != w.dtype:
            return f"{label}: dtype {g.dtype}, expected {w.dtype}"
        r = max(rtol, 2 ** -6) if w.dtype.name == "bfloat16" else rtol
        if w.dtype.name == "bfloat16":
            g, w = g.astype(np.float32), w.astype(np.float32)
        try:
            np.testing.assert_allclose(g, w, rtol=r, atol=atol)
        except AssertionError:
            return f"{label}: {_worst(g, w, r, atol)}"
    return None

