"""Helpers shared by the float kernels: output dtype, float64 working copies, axes given as attribute or input,
values known at construction."""
from __future__ import annotations

import numpy as np

F32, F64 = np.float32, np.float64


def is_float(dtype) -> bool:
    """numpy's float types and ml_dtypes' (bfloat16, float8, float4, ...), which numpy lists as kind 'V'."""
    dt = np.dtype(dtype)
    return dt.kind == "f" or (dt.num >= 256 and dt.name.startswith(("bfloat", "float")))


def out_dtype(*xs):
    for x in xs:
        if x is not None and is_float(np.asarray(x).dtype):
            return np.asarray(x).dtype
    return np.dtype(F32)


def wide(x):
    """float64 working copy for accurate reductions (other dtypes unchanged)."""
    x = np.asarray(x)
    return x.astype(F64) if is_float(x.dtype) else x


def axes_arg(node, axes_input, attr="axes", since=13):
    """Axes given as an attribute before opset ``since`` and as an optional input from then on."""
    if node.opset >= since:
        return None if axes_input is None else [int(a) for a in np.asarray(axes_input).reshape(-1)]
    v = node.attr(attr)
    return None if v is None else [int(a) for a in v]


def constant_input(executor, name: str):
    """The value of tensor ``name`` when it is fixed at construction (an initializer no feed can override, or a
    Constant node's output), else None: lets a construction-time check look at an input's value."""
    if not name:
        return None
    if name in executor.initializers and name not in executor.overridable:
        return executor.initializers[name]
    for n in executor.nodes:
        if n.op_type == "Constant" and not n.domain and name in n.outputs and "value" in n.attrs:
            return np.asarray(n.attrs["value"])
    return None
