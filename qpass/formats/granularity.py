"""Which elements share a scale: the whole tensor, each channel along an axis, or groups of G consecutive elements.

Parameters (scales, zero points, exponents, fraction widths) are kept in a *compact* keepdims shape:

* tensor:  all ones, e.g. (1, 1) for a 2-D tensor
* channel: ones except ``shape[axis]`` (one value per channel; broadcastable against the tensor)
* group:   the tensor's shape with ``shape[axis]`` replaced by ceil(L / G) -- ONNX's blocked-quantisation layout;
  the last group along the axis may be partial (L % G elements)

``expand`` turns a compact parameter into one broadcastable against the tensor (groups are repeated G times).
Reductions go through a 2-D (blocks, elements) view padded with a neutral fill value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError

KINDS = ("tensor", "channel", "group")


@dataclass(frozen=True)
class Granularity:
    kind: str = "tensor"
    axis: int = 0
    size: int = 0  # group size G (group only)

    def __post_init__(self):
        kind = str(self.kind).strip().lower()
        axis, size = int(self.axis), int(self.size)
        if kind == "row":  # SYQ's per-row scales: one per output channel, axis 0
            kind, axis = "channel", 0
        if kind not in KINDS:
            raise QpassError(f"unknown granularity {self.kind!r} (known: tensor, channel, row, group)")
        if kind == "group" and size < 1:
            raise QpassError(f"group granularity needs a group size >= 1, got {self.size!r}")
        if kind == "tensor":
            axis, size = 0, 0
        elif kind == "channel":
            size = 0
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "size", size)

    def __str__(self) -> str:
        if self.kind == "tensor":
            return "tensor"
        if self.kind == "channel":
            return f"channel:{self.axis}"
        return f"group:{self.axis},{self.size}"

    @property
    def suffix(self) -> str:
        """What a format name carries: '' per tensor, else '@' + str(self)."""
        return "" if self.kind == "tensor" else f"@{self}"

    @classmethod
    def for_weight(cls, spec: str | None, out_axis: int, red_axis: int) -> "Granularity":
        """A weight's granularity from a spec without axes: 'channel' / 'row' -> one scale per output channel
        (``out_axis``), 'group:G' -> groups of G along the reduction axis (``red_axis``), anything else per
        tensor."""
        kind, _, arg = (spec or "tensor").partition(":")
        if kind in ("channel", "row"):
            return cls("channel", axis=out_axis)
        if kind == "group":
            return cls("group", axis=red_axis, size=int(arg))
        return cls("tensor")

    def axis_of(self, ndim: int) -> int:
        if self.kind == "tensor":
            return 0
        if not -ndim <= self.axis < ndim:
            raise QpassError(f"{self} granularity: axis {self.axis} is out of range for a {ndim}-D tensor")
        return self.axis % ndim

    def param_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The compact keepdims shape of per-block parameters for a tensor of ``shape``."""
        shape = tuple(shape)
        if self.kind == "tensor":
            return (1,) * len(shape)
        ax = self.axis_of(len(shape))
        out = [1] * len(shape) if self.kind == "channel" else list(shape)
        out[ax] = shape[ax] if self.kind == "channel" else -(-shape[ax] // self.size)
        return tuple(out)

    def to_blocks(self, x: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """A 2-D (blocks, elements) copy of ``x``; partial groups are padded with ``fill``."""
        x = np.asarray(x)
        if self.kind == "tensor":
            return x.reshape(1, -1)
        ax = self.axis_of(x.ndim)
        if self.kind == "channel":
            return np.moveaxis(x, ax, 0).reshape(x.shape[ax], -1)
        xm = np.moveaxis(x, ax, -1)
        n = -(-x.shape[ax] // self.size)
        pad = n * self.size - x.shape[ax]
        if pad:
            xm = np.concatenate([xm, np.full(xm.shape[:-1] + (pad,), fill, dtype=np.result_type(xm, fill))], -1)
        return xm.reshape(-1, self.size)

    def from_blocks(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """One value per block (in ``to_blocks`` order) -> the compact keepdims parameter array."""
        values = np.asarray(values)
        pshape = self.param_shape(shape)
        if self.kind != "group":
            return values.reshape(pshape)
        ax = self.axis_of(len(shape))
        moved = [s for i, s in enumerate(pshape) if i != ax] + [pshape[ax]]
        return np.moveaxis(values.reshape(moved), -1, ax)

    def reduce(self, x: np.ndarray, op: str) -> np.ndarray:
        """Per-block 'max', 'min' or 'sum' of ``x`` in the compact shape (empty blocks give -inf, +inf, 0)."""
        x = np.asarray(x)
        fill = {"max": -np.inf, "min": np.inf, "sum": 0}[op]
        b = self.to_blocks(x, fill)
        if op == "sum":
            r = b.sum(axis=1)
        else:
            r = getattr(np, op)(b, axis=1, initial=fill)
        return self.from_blocks(r, x.shape)

    def counts(self, shape: tuple[int, ...]) -> np.ndarray:
        """Number of real (unpadded) elements per block, compact shape, int64."""
        return self.reduce(np.ones(shape, dtype=np.int64), "sum")

    def expand(self, p, shape: tuple[int, ...]) -> np.ndarray:
        """A compact parameter (or a scalar, or a 1-D per-channel vector) made broadcastable against ``shape``."""
        p = np.asarray(p)
        shape = tuple(shape)
        if p.ndim == 0:
            return p
        pshape = self.param_shape(shape)
        if self.kind == "channel" and p.ndim == 1 and p.shape[0] == pshape[self.axis_of(len(shape))]:
            return p.reshape(pshape)
        if p.size == 1 and self.kind == "tensor":
            return p.reshape(pshape)
        if p.shape != pshape:
            raise QpassError(f"parameter of shape {p.shape} does not fit {self} granularity on a tensor of shape "
                             f"{shape} (expected {pshape})")
        if self.kind != "group":
            return p
        ax = self.axis_of(len(shape))
        return np.take(np.repeat(p, self.size, axis=ax), np.arange(shape[ax]), axis=ax)

    def compact(self, p, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of ``expand``: a broadcastable parameter back to the compact shape."""
        p = np.asarray(p)
        if self.kind != "group":
            return np.broadcast_to(p, self.param_shape(shape)).copy()
        ax = self.axis_of(len(shape))
        return np.take(np.broadcast_to(p, tuple(shape)), np.arange(0, shape[ax], self.size), axis=ax)


TENSOR = Granularity()


def as_granularity(g) -> Granularity:
    """Accept a Granularity, None (per tensor) or a spec string: 'tensor', 'row', 'channel[:axis]', 'group:[axis,]G'."""
    if g is None:
        return TENSOR
    if isinstance(g, Granularity):
        return g
    if isinstance(g, str):
        return parse_granularity(g)
    raise QpassError(f"granularity must be a Granularity or a string, not {type(g).__name__}")


def parse_granularity(text: str) -> Granularity:
    t = text.strip().lower()
    kind, _, args = t.partition(":")
    try:
        nums = [int(a) for a in args.split(",")] if args.strip() else []
    except ValueError:
        raise QpassError(f"bad granularity {text!r}: arguments must be integers") from None
    if kind in ("tensor", "row") and not nums:
        return Granularity(kind)
    if kind == "channel" and len(nums) <= 1:
        return Granularity("channel", axis=nums[0] if nums else 0)
    if kind == "group" and len(nums) in (1, 2):
        return Granularity("group", axis=nums[0] if len(nums) == 2 else -1, size=nums[-1])
    raise QpassError(f"bad granularity {text!r} (use tensor, row, channel[:axis] or group:[axis,]size)")

