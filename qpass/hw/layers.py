"""Hardware layer descriptions for the streaming dataflow backend (independent of ONNX graphs).

Each layer is a frozen dataclass with a ``name``, its folding (``pe`` and/or ``simd``), ``cycles()``
per frame, ``resources()``, the legal folding values (divisors of the folded dimension) and its
stream interface (elements and words per frame per input port / on the output) for the FIFO
simulation. ``folded(pe=..., simd=...)`` returns a refolded copy. Formulas live in cost_models.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from qpass.hw import cost_models as cm
from qpass.errors import QpassError

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


def _pair(v, what: str, layer: str) -> tuple[int, int]:
    t = (int(v), int(v)) if isinstance(v, numbers.Integral) else tuple(int(x) for x in v)
    if len(t) != 2 or min(t) < 1:
        raise QpassError(f"{layer}: {what} must be a positive int or (h, w) pair, got {v!r}")
    return t


def _check_fold(layer: str, what: str, value: int, dim: int, dim_name: str) -> None:
    if value < 1 or dim % value:
        raise QpassError(f"{layer}: {what}={value} must divide {dim_name}={dim}")


def _check_choice(layer: str, what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise QpassError(f"{layer}: {what}={value!r} is not one of {', '.join(choices)}")


def _check_positive(layer, **dims) -> None:
    for k, v in dims.items():
        if int(v) < 1:
            raise QpassError(f"{layer}: {k} must be >= 1, got {v}")


@dataclass(frozen=True)
class Layer:
    """Common interface. Subclasses set ``kind``."""

    name: str
    kind: ClassVar[str] = "Layer"

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
class MVTU(Layer):
    """Matrix-vector-threshold unit (FINN MVAU): an MW-input, MH-output matrix applied to
    ``num_vectors`` input vectors per frame (1 for FC, OH*OW for a conv after a SlidingWindow).
    ``thresholds`` per output channel: 2^out_bits - 1, or 0 for no activation (raw accumulators
    or plain requantisation). ``acc_bits`` None means unknown (FINN's INT32 default)."""

    mw: int = 1
    mh: int = 1
    num_vectors: int = 1
    w_bits: int = 8
    a_bits: int = 8
    w_signed: bool = True
    a_signed: bool = True
    thresholds: int = 0
    acc_bits: int | None = None
    pe: int = 1
    simd: int = 1
    ram_style: str = "auto"
    res_type: str = "lut"
    ram_style_thresholds: str = "auto"
    kind: ClassVar[str] = "MVTU"

    def __post_init__(self):
        _check_positive(self.name, mw=self.mw, mh=self.mh, num_vectors=self.num_vectors, w_bits=self.w_bits,
                        a_bits=self.a_bits)
        _check_fold(self.name, "PE", self.pe, self.mh, "MH")
        _check_fold(self.name, "SIMD", self.simd, self.mw, "MW")
        _check_choice(self.name, "ram_style", self.ram_style, RAM_STYLES)
        _check_choice(self.name, "ram_style_thresholds", self.ram_style_thresholds, ("auto", "block", "distributed"))
        _check_choice(self.name, "res_type", self.res_type, RES_TYPES)
        if self.thresholds < 0:
            raise QpassError(f"{self.name}: thresholds must be >= 0, got {self.thresholds}")

    @property
    def out_bits(self) -> int:
        if self.thresholds:
            return max(1, math.ceil(math.log2(self.thresholds + 1)))
        return self.acc_bits or 32

    def cycles(self) -> int:
        return cm.mvtu_cycles(self.mw, self.mh, self.pe, self.simd, self.num_vectors)

    def wmem(self) -> int:
        return cm.mvtu_wmem(self.mw, self.mh, self.pe, self.simd)

    def tmem(self) -> int:
        return cm.mvtu_tmem(self.mh, self.pe, self.thresholds)

    def resources(self) -> Resources:
        a = (self.mw, self.mh, self.pe, self.simd, self.w_bits)
        return Resources(
            lut=cm.mvtu_lut(*a, self.a_bits, a_signed=self.a_signed, thresholds=self.thresholds,
                            acc_bits=self.acc_bits, ram_style=self.ram_style,
                            ram_style_thresholds=self.ram_style_thresholds, res_type=self.res_type),
            bram18=cm.mvtu_bram18(*a, self.ram_style),
            uram=cm.mvtu_uram(*a, self.ram_style),
            dsp=cm.mvtu_dsp(self.pe, self.simd, self.w_bits, self.a_bits, self.res_type),
        )

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.mh)

    def legal_simd(self) -> list[int]:
        return cm.divisors(self.mw)

    def in_elems(self):
        return [self.num_vectors * self.mw]

    def out_elems(self):
        return self.num_vectors * self.mh

    def in_words(self):
        return [self.num_vectors * self.mw // self.simd]

    def out_words(self):
        return self.num_vectors * self.mh // self.pe


@dataclass(frozen=True)
class SlidingWindow(Layer):
    """im2col generator feeding a conv MVTU (FINN ConvolutionInputGenerator). ``ifm_dim`` is the
    unpadded input; ``pad`` zero pixels per side are generated internally (FINN: FMPadding + SWG).
    Output: OH*OW windows of K*K*C elements in (ky, kx, c) order, SIMD elements per word."""

    ifm_ch: int = 1
    ifm_dim: tuple[int, int] | int = 1
    kernel: tuple[int, int] | int = 1
    stride: tuple[int, int] | int = 1
    pad: int = 0
    dilation: int = 1
    a_bits: int = 8
    simd: int = 1
    ram_style: str = "auto"
    ofm_dim: tuple[int, int] | int | None = None
    kind: ClassVar[str] = "SlidingWindow"

    def __post_init__(self):
        set_ = object.__setattr__
        for f in ("ifm_dim", "kernel", "stride"):
            set_(self, f, _pair(getattr(self, f), f, self.name))
        _check_positive(self.name, ifm_ch=self.ifm_ch, a_bits=self.a_bits, dilation=self.dilation)
        if self.pad < 0:
            raise QpassError(f"{self.name}: pad must be >= 0, got {self.pad}")
        _check_fold(self.name, "SIMD", self.simd, self.ifm_ch, "IFMChannels")
        _check_choice(self.name, "ram_style", self.ram_style, RAM_STYLES)
        ofm = tuple((p - self.dilation * (k - 1) - 1) // s + 1
                    for p, k, s in zip(self.padded_dim, self.kernel, self.stride))
        if min(ofm) < 1:
            raise QpassError(f"{self.name}: kernel {self.kernel} does not fit the input {self.padded_dim}")
        if self.ofm_dim is not None and _pair(self.ofm_dim, "ofm_dim", self.name) != ofm:
            raise QpassError(f"{self.name}: ofm_dim {self.ofm_dim} disagrees with the computed {ofm}")
        set_(self, "ofm_dim", ofm)

    @property
    def padded_dim(self) -> tuple[int, int]:
        return (self.ifm_dim[0] + 2 * self.pad, self.ifm_dim[1] + 2 * self.pad)

    def cycles(self) -> int:
        return cm.swg_cycles(self.ifm_ch, self.padded_dim, self.ofm_dim, self.kernel, self.stride, self.simd,
                             self.dilation)

    def resources(self) -> Resources:
        a = (self.ifm_ch, self.padded_dim[1], self.kernel[0], self.stride[0], self.simd, self.a_bits, self.ram_style)
        return Resources(lut=cm.swg_lut(*a), bram18=cm.swg_bram18(*a), uram=cm.swg_uram(*a))

    def legal_simd(self) -> list[int]:
        return cm.divisors(self.ifm_ch)

    def in_elems(self):
        return [self.ifm_dim[0] * self.ifm_dim[1] * self.ifm_ch]

    def out_elems(self):
        return self.ofm_dim[0] * self.ofm_dim[1] * self.kernel[0] * self.kernel[1] * self.ifm_ch

    def in_words(self):
        return [self.in_elems()[0] // self.simd]

    def out_words(self):
        return self.out_elems() // self.simd


@dataclass(frozen=True)
class Pool(Layer):
    """MaxPool / AvgPool (non-overlapping, stride == kernel) or GlobalAvgPool over ``channels``."""

    channels: int = 1
    ifm_dim: tuple[int, int] | int = 1
    kernel: tuple[int, int] | int = 2
    pool: str = "max"
    a_bits: int = 8
    pe: int = 1
    ofm_dim: tuple[int, int] = field(default=(1, 1), init=False)
    kind: ClassVar[str] = "Pool"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "ifm_dim", _pair(self.ifm_dim, "ifm_dim", self.name))
        _check_choice(self.name, "pool", self.pool, ("max", "avg", "global_avg"))
        if self.pool == "global_avg":
            set_(self, "kernel", self.ifm_dim)
        set_(self, "kernel", _pair(self.kernel, "kernel", self.name))
        _check_positive(self.name, channels=self.channels, a_bits=self.a_bits)
        _check_fold(self.name, "PE", self.pe, self.channels, "channels")
        ofm = tuple(i // k for i, k in zip(self.ifm_dim, self.kernel))
        if min(ofm) < 1:
            raise QpassError(f"{self.name}: pool kernel {self.kernel} larger than the input {self.ifm_dim}")
        set_(self, "ofm_dim", ofm)

    def cycles(self) -> int:
        return cm.pool_cycles(self.pool, self.channels, self.ifm_dim, self.ofm_dim, self.pe)

    def resources(self) -> Resources:
        return Resources(lut=cm.pool_lut(self.pool, self.channels, self.ifm_dim[1], self.ofm_dim[1], self.pe,
                                         self.a_bits))

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def in_elems(self):
        return [self.ifm_dim[0] * self.ifm_dim[1] * self.channels]

    def out_elems(self):
        return self.ofm_dim[0] * self.ofm_dim[1] * self.channels

    def in_words(self):
        return [self.in_elems()[0] // self.pe]

    def out_words(self):
        return self.out_elems() // self.pe


@dataclass(frozen=True)
class _PerChannel(Layer):
    """Base of one-word-in, one-word-out streaming layers over ``pixels`` x ``channels``."""

    channels: int = 1
    pixels: int = 1
    a_bits: int = 8
    pe: int = 1

    def __post_init__(self):
        _check_positive(self.name, channels=self.channels, pixels=self.pixels, a_bits=self.a_bits)
        _check_fold(self.name, "PE", self.pe, self.channels, "channels")

    def cycles(self) -> int:
        return cm.streaming_cycles(self.channels, self.pixels, self.pe)

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def in_elems(self):
        return [self.pixels * self.channels]

    def out_elems(self):
        return self.pixels * self.channels

    def in_words(self):
        return [self.pixels * self.channels // self.pe]

    def out_words(self):
        return self.pixels * self.channels // self.pe


@dataclass(frozen=True)
class Thresholding(_PerChannel):
    """A standalone MultiThreshold: ``steps`` thresholds per channel (2^out_bits - 1)."""

    steps: int = 1
    ram_style: str = "distributed"
    kind: ClassVar[str] = "Thresholding"

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self.name, "ram_style", self.ram_style, ("distributed", "block"))

    def resources(self) -> Resources:
        return Resources(lut=cm.thresholding_lut(self.channels, self.pe, self.a_bits, self.ram_style),
                         bram18=cm.thresholding_bram18(self.channels, self.pe, self.a_bits, self.ram_style))


@dataclass(frozen=True)
class ChannelwiseOp(_PerChannel):
    """Per-channel Mul or Add with constant parameters (FINN ChannelwiseOp)."""

    op: str = "mul"
    ram_style: str = "distributed"
    kind: ClassVar[str] = "ChannelwiseOp"

    def __post_init__(self):
        super().__post_init__()
        _check_choice(self.name, "op", self.op, ("mul", "add"))
        _check_choice(self.name, "ram_style", self.ram_style, ("distributed", "block"))

    def resources(self) -> Resources:
        # FINN ChannelwiseOp_hls uses the Thresholding estimate verbatim
        return Resources(lut=cm.thresholding_lut(self.channels, self.pe, self.a_bits, self.ram_style),
                         bram18=cm.thresholding_bram18(self.channels, self.pe, self.a_bits, self.ram_style))


@dataclass(frozen=True)
class AddStreams(_PerChannel):
    """Element-wise add of two equally shaped streams (residual join); input ports 0 and 1."""

    kind: ClassVar[str] = "AddStreams"

    def resources(self) -> Resources:
        return Resources(lut=cm.addstreams_lut(self.pe, self.a_bits))

    def in_elems(self):
        return [self.pixels * self.channels] * 2

    def in_words(self):
        return [self.pixels * self.channels // self.pe] * 2


@dataclass(frozen=True)
class Concat(Layer):
    """Channel concatenation of len(channels) streams over ``pixels``; SIMD divides every input."""

    channels: tuple[int, ...] = (1,)
    pixels: int = 1
    a_bits: int = 8
    simd: int = 1
    kind: ClassVar[str] = "Concat"

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.channels or min(self.channels) < 1:
            raise QpassError(f"{self.name}: channels must be a non-empty tuple of positive ints")
        _check_positive(self.name, pixels=self.pixels, a_bits=self.a_bits)
        _check_fold(self.name, "SIMD", self.simd, math.gcd(*self.channels), "gcd(channels)")

    def cycles(self) -> int:
        return cm.streaming_cycles(sum(self.channels), self.pixels, self.simd)

    def resources(self) -> Resources:
        return Resources(lut=cm.concat_lut(self.simd, self.a_bits, len(self.channels)))

    def legal_simd(self) -> list[int]:
        return cm.divisors(math.gcd(*self.channels))

    def in_elems(self):
        return [self.pixels * c for c in self.channels]

    def out_elems(self):
        return self.pixels * sum(self.channels)

    def in_words(self):
        return [self.pixels * c // self.simd for c in self.channels]

    def out_words(self):
        return self.pixels * sum(self.channels) // self.simd


@dataclass(frozen=True)
class Reorder(Layer):
    """Layout-only change (reshape/flatten/transpose handled by the producer's write order): zero
    cycles, zero resources; the FIFO simulation treats it as a wire. ``elems`` (0 = unchecked)."""

    elems: int = 0
    kind: ClassVar[str] = "Reorder"

    def cycles(self) -> int:
        return 0

    def in_elems(self):
        return [self.elems]

    def out_elems(self):
        return self.elems

    def in_words(self):
        return [self.elems]

    def out_words(self):
        return self.elems


LAYER_TYPES = (MVTU, SlidingWindow, Pool, Thresholding, ChannelwiseOp, AddStreams, Concat, Reorder)
