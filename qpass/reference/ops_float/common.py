"""Helpers shared by the float kernels: output dtype, float64 working copies, axes given as attribute or input."""
from __future__ import annotations

import numpy as np

F32, F64 = np.float32, np.float64


def out_dtype(*xs):
    for x in xs:
        if x is not None and np.asarray(x).dtype.kind == "f":
            return np.asarray(x).dtype
    return np.dtype(F32)


def wide(x):
    """float64 working copy for accurate reductions (other dtypes unchanged)."""
    x = np.asarray(x)
    return x.astype(F64) if x.dtype.kind == "f" else x


def axes_arg(node, axes_input, attr="axes", since=13):
    """Axes given as an attribute before opset ``since`` and as an optional input from then on."""
    if node.opset >= since:
        return None if axes_input is None else [int(a) for a in np.asarray(axes_input).reshape(-1)]
    v = node.attr(attr)
    return None if v is None else [int(a) for a in v]
