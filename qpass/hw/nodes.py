"""Small questions about onnx-graphsurgeon nodes and tensors that the hardware classifier and builder ask."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ops import MultiThreshold


def attr(node: gs.Node, name, default=None):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def sample_shape(t: gs.Tensor) -> tuple | None:
    """The static shape without the batch axis, or None."""
    shape = t.shape
    if shape is None or len(shape) < 1 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:]):
        return None
    return tuple(int(d) for d in shape[1:])


def data_inputs(node: gs.Node) -> list[gs.Tensor]:
    """The streamed (non-constant, named) inputs."""
    return [t for t in node.inputs if t is not None and t.name and not isinstance(t, gs.Constant)]


def constant_inputs(node: gs.Node) -> list[gs.Constant]:
    return [t for t in node.inputs if isinstance(t, gs.Constant)]


def is_integral(v: np.ndarray | None) -> bool:
    return v is not None and v.size > 0 and bool(np.all(np.isfinite(v))) and bool(np.all(v == np.round(v)))


def broadcast_channel(v: np.ndarray, sample_shape: tuple, axis: int) -> bool:
    """A constant that is a scalar or varies only along per-sample ``axis`` (broadcast from the right)."""
    full = (1,) + tuple(sample_shape)
    if v.ndim > len(full):
        return False
    vs = (1,) * (len(full) - v.ndim) + tuple(v.shape)
    return all(d == 1 or (i == axis + 1 and d == full[i]) for i, d in enumerate(vs))


def mt_axis(node: gs.Node, rank: int) -> int | None:
    """Per-sample channel axis of a MultiThreshold input of full rank ``rank``."""
    ax = MultiThreshold.channel_axis(node, rank)
    return None if ax == 0 else ax - 1


def window_geometry(node: gs.Node) -> tuple[tuple[int, ...], int]:
    """(strides, padding per side) of a Conv / MaxPool with symmetric padding."""
    s = tuple(int(v) for v in (attr(node, "strides") or [1, 1]))
    pad = int((attr(node, "pads") or [0])[0])
    return s, pad


#: ops that pass values through unchanged (a maximum of bipolar values is bipolar)
_VALUE_PRESERVING = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def is_bipolar(t: gs.Tensor) -> bool:
    """``t`` holds only -1 and +1: a sign activation (BIPOLAR MultiThreshold, scale-1 BipolarQuant), possibly through
    layout ops and max pools."""
    from qpass.analysis.intinfo import is_bipolar_codes

    for _ in range(32):
        if not t.inputs:
            return False
        n = t.inputs[0]
        if n.op in _VALUE_PRESERVING:
            t = n.inputs[0]
            continue
        if n.op == "MultiThreshold":
            dt = n.attrs.get("out_dtype", "")
            return (dt.decode() if isinstance(dt, bytes) else dt) == "BIPOLAR"
        return is_bipolar_codes(n)
    return False
