"""The common interface of the hardware cost models (independent of ONNX graphs).

Each hardware layer kind (``qpass.hw.kinds``) has a cost model: a frozen dataclass derived from ``Layer`` with a
``name``, its folding (``pe`` and/or ``simd``), ``cycles()`` per frame, ``resources()``, the legal folding values
(divisors of the folded dimension), its stream interface (elements and words per frame per input port / on the
output) and its per-frame iteration ``program()`` for the FIFO simulation. ``folded(pe=..., simd=...)`` returns a
refolded copy. Formulas live in cost_models.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm

RAM_STYLES = ("auto", "block", "distributed", "ultra")
RES_TYPES = ("lut", "dsp")


@dataclass(frozen=True)
class Resources:
    """LUT, BRAM18, URAM and DSP counts."""

    lut: int = 0
    bram18: int = 0
    uram: int = 0
    dsp: int = 0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.lut + other.lut, self.bram18 + other.bram18, self.uram + other.uram,
                         self.dsp + other.dsp)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.lut, self.bram18, self.uram, self.dsp)


@dataclass(frozen=True)
class StreamProgram:
    """A layer's per-frame iteration program (``qpass.hw.fifo_sim``): ``n`` II=1 iterations; per input port the
    iterations reading each word, the iterations writing each output word (ascending); ``lat`` the pipeline
    depth (read -> write of one iteration)."""

    n: int
    reads: tuple[np.ndarray, ...]
    writes: np.ndarray
    lat: int


def pair(v, what: str, layer: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, numbers.Integral) else tuple(int(x) for x in v)
    if len(t) != 2 or min(t) < 1:
        raise QpassError(f"{layer}: {what} must be a positive int or (h, w) pair, got {v!r}")
    return t


def check_fold(layer: str, what: str, value: int, dim: int, dim_name: str) -> None:
    if value < 1 or dim % value:
        raise QpassError(f"{layer}: {what}={value} must divide {dim_name}={dim}")


def check_choice(layer: str, what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise QpassError(f"{layer}: {what}={value!r} is not one of {', '.join(choices)}")


def check_positive(layer, **dims) -> None:
    for k, v in dims.items():
        if int(v) < 1:
            raise QpassError(f"{layer}: {k} must be >= 1, got {v}")


@dataclass(frozen=True)
class Layer:
    """Common interface. Subclasses set ``kind``."""

    name: str
    kind: ClassVar[str] = "Layer"
    #: a layout-only layer: the FIFO simulation splices it out as a wire
    wire: ClassVar[bool] = False

    def cycles(self) -> int:
        raise NotImplementedError

    def resources(self) -> Resources:
        return Resources()

    def legal_pe(self) -> list[int]:
        return [1]

    def legal_simd(self) -> list[int]:
        return [1]

    @property
    def fold(self) -> tuple[int, int]:
        """(PE, SIMD); 1 where the layer has no such parameter."""
        return (getattr(self, "pe", 1), getattr(self, "simd", 1))

    def fold_options(self) -> list[tuple[int, int]]:
        """All legal (PE, SIMD) pairs."""
        return [(p, s) for p in self.legal_pe() for s in self.legal_simd()]

    def folded(self, pe: int = 1, simd: int = 1) -> "Layer":
        names = {f.name for f in fields(self)}
        kw = {}
        if "pe" in names:
            kw["pe"] = pe
        if "simd" in names:
            kw["simd"] = simd
        return replace(self, **kw)

    def restyled(self, **styles) -> "Layer":
        """A copy with other ``ram_style`` / ``ram_style_thresholds`` / ``res_type`` (checked by the layer)."""
        return replace(self, **styles)

    def resolved_styles(self) -> dict:
        """The layer's style attributes with "auto" replaced by the cost model's choice (none by default)."""
        return {}

    def pipeline_depth(self) -> int:
        """Assumed HLS pipeline depth in cycles (``cost_models.PIPELINE_DEPTH`` unless the model says)."""
        return cm.PIPELINE_DEPTH

    def program(self) -> StreamProgram:
        raise QpassError(f"{self.name}: no stream program for layer kind {self.kind}")

    # stream interface (per frame)
    def in_elems(self) -> list[int]:
        raise NotImplementedError

    def out_elems(self) -> int:
        raise NotImplementedError

    def in_words(self) -> list[int]:
        raise NotImplementedError

    def out_words(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class PerChannel(Layer):
    """Base of one-word-in (per input port), one-word-out streaming layers over ``pixels`` x ``channels``."""

    channels: int = 1
    pixels: int = 1
    a_bits: int = 8
    pe: int = 1

    def __post_init__(self):
        check_positive(self.name, channels=self.channels, pixels=self.pixels, a_bits=self.a_bits)
        check_fold(self.name, "PE", self.pe, self.channels, "channels")

    def cycles(self) -> int:
        return cm.streaming_cycles(self.channels, self.pixels, self.pe)

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def program(self) -> StreamProgram:
        i = np.arange(self.cycles())
        return StreamProgram(len(i), (i,) * len(self.in_words()), i, self.pipeline_depth())

    def in_elems(self):
        return [self.pixels * self.channels]

    def out_elems(self):
        return self.pixels * self.channels

    def in_words(self):
        return [self.pixels * self.channels // self.pe]

    def out_words(self):
        return self.pixels * self.channels // self.pe
