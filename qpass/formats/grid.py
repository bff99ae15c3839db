"""The integer grid a quantiser records: real = scale * (code - zero_point), codes in [qmin, qmax].

A format answers with an ``IntGrid`` where its values lie on one: ``Format.quant_params(lo, hi)`` for an
activation's calibrated range, ``Format.weight_grid(result, shape)`` for a quantised weight. The grid says which
QONNX node records it (``op``: Quant, or BipolarQuant for codes in {-1, +1}), its node attributes and the datatype
annotation of the quantised tensor. Formats without an integer grid (powers of two, small floats) are stored as
float constants annotated with ``Format.datatype``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rounding import int_bounds


@dataclass(frozen=True, eq=False)
class IntGrid:
    #: scalar (activations), compact per-block array (weights) or broadcastable array (accumulators)
    scale: object
    zero_point: object = 0
    bits: int = 8
    signed: bool = True
    narrow: bool = False
    #: codes in {-1, +1} (QONNX BipolarQuant) instead of a ``bits``-wide integer
    bipolar: bool = False
    #: F where the scale is exactly 2^-F (fixed point; affine scales that happen to be powers of two), else None
    fraction: int | None = None

    @property
    def op(self) -> str:
        """The QONNX node that records this grid."""
        return "BipolarQuant" if self.bipolar else "Quant"

    @property
    def qmin(self) -> int:
        return -1 if self.bipolar else int_bounds(self.bits, self.signed, self.narrow)[0]

    @property
    def qmax(self) -> int:
        return 1 if self.bipolar else int_bounds(self.bits, self.signed, self.narrow)[1]

    def attrs(self, rounding: str = "ROUND") -> dict:
        """The QONNX node's attributes (BipolarQuant has none)."""
        if self.bipolar:
            return {}
        return {"signed": int(self.signed), "narrow": int(self.narrow), "rounding_mode": rounding}

    @property
    def datatype(self) -> str:
        """The datatype annotation of the quantised tensor (QONNX names)."""
        unit_scale = np.all(np.asarray(self.scale) == 1)
        if self.bipolar:
            return "BIPOLAR" if unit_scale else "SCALEDINT<1>"
        if unit_scale and np.all(np.asarray(self.zero_point) == 0):
            return f"{'' if self.signed else 'U'}INT{self.bits}"
        return f"SCALEDINT<{self.bits}>"

    def summary(self) -> dict:
        """A short description for reports (at most 8 scales, the first zero point)."""
        return {"op": self.op, "scale": np.asarray(self.scale).reshape(-1).tolist()[:8],
                "zero_point": float(np.asarray(self.zero_point).reshape(-1)[0]), "bits": int(self.bits),
                "signed": bool(self.signed), "narrow": bool(self.narrow)}


def pow2_fraction(scale) -> int | None:
    """F where ``scale`` (one value) is exactly 2^-F, else None."""
    m, e = np.frexp(scale)
    return int(1 - e) if m == 0.5 else None


def compact(granularity, p, shape) -> np.ndarray:
    """A parameter of a quantised tensor (float64) in ``granularity``'s compact shape (scalars stay scalars)."""
    p = np.asarray(p, np.float64)
    return granularity.compact(p, shape) if p.ndim else p
