"""Sliding-window generator (FINN ConvolutionInputGenerator + FMPadding): im2col windows for a convolution, a
depthwise convolution or a window maximum. It implements no ONNX node on its own: the ``mvtu``, ``vvau`` and
``window_max`` kinds put one in front of themselves (``add_sliding_window``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw import memory_costs as mc
from qpass.hw.kinds.base import HwKind
from qpass.hw.layers import RAM_STYLES, Layer, Resources, StreamProgram, check_choice, check_fold, check_positive, pair
from qpass.hw.orders import row_major


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
            set_(self, f, pair(getattr(self, f), f, self.name))
        check_positive(self.name, ifm_ch=self.ifm_ch, a_bits=self.a_bits, dilation=self.dilation)
        if self.pad < 0:
            raise QpassError(f"{self.name}: pad must be >= 0, got {self.pad}")
        check_fold(self.name, "SIMD", self.simd, self.ifm_ch, "IFMChannels")
        check_choice(self.name, "ram_style", self.ram_style, RAM_STYLES)
        ofm = tuple((p - self.dilation * (k - 1) - 1) // s + 1
                    for p, k, s in zip(self.padded_dim, self.kernel, self.stride))
        if min(ofm) < 1:
            raise QpassError(f"{self.name}: kernel {self.kernel} does not fit the input {self.padded_dim}")
        if self.ofm_dim is not None and pair(self.ofm_dim, "ofm_dim", self.name) != ofm:
            raise QpassError(f"{self.name}: ofm_dim {self.ofm_dim} disagrees with the computed {ofm}")
        set_(self, "ofm_dim", ofm)

    @property
    def padded_dim(self) -> tuple[int, int]:
        return (self.ifm_dim[0] + 2 * self.pad, self.ifm_dim[1] + 2 * self.pad)

    def cycles(self) -> int:
        return cm.swg_cycles(self.ifm_ch, self.padded_dim, self.ofm_dim, self.kernel, self.stride, self.simd,
                             self.dilation)

    def resources(self) -> Resources:
        """The emitted window (``qpass.hw.memory_costs.line_buffer``); ``finn_resources`` is FINN's formula."""
        return Resources(*mc.line_buffer(self.ifm_ch, self.padded_dim[1], self.kernel[0], self.stride[0], self.simd,
                                         self.a_bits, self.ram_style))

    def finn_resources(self) -> Resources:
        a = (self.ifm_ch, self.padded_dim[1], self.kernel[0], self.stride[0], self.simd, self.a_bits, self.ram_style)
        return Resources(lut=cm.swg_lut(*a), bram18=cm.swg_bram18(*a), uram=cm.swg_uram(*a))

    def resolved_styles(self) -> dict:
        return {"ram_style": mc.resolve_ram_style(self.padded_dim[1] * self.ifm_ch // self.simd, self.ram_style)}

    def legal_simd(self) -> list[int]:
        return cm.divisors(self.ifm_ch)

    def program(self) -> StreamProgram:
        """Prefill K padded rows (reading only real pixels; padding is generated), then per output row
        max(write, read) iterations writing the OW*K*K*C/SIMD window words while prefetching the next ``stride``
        input rows (K + stride row buffers), as in finn-hlslib's slidingwindow.h."""
        if self.dilation != 1:
            raise QpassError(f"{self.name}: the FIFO simulation supports dilation 1 only")
        (ph, pw), (oh, ow), (kh, kw), (sh, _) = self.padded_dim, self.ofm_dim, self.kernel, self.stride
        cf = self.ifm_ch // self.simd
        real_row = (np.arange(ph) >= self.pad) & (np.arange(ph) < self.pad + self.ifm_dim[0])
        real_col = (np.arange(pw) >= self.pad) & (np.arange(pw) < self.pad + self.ifm_dim[1])
        # a padded row as a sequence of pw*cf word slots: which slots are real stream reads
        row_slots = np.repeat(real_col, cf)
        n0 = pw * kh * cf
        wb, rb = ow * kw * kh * cf, sh * pw * cf
        m = max(wb, rb)
        n = n0 + oh * m
        reads, writes = [], []
        for y in range(min(kh, ph)):  # prefill
            if real_row[y]:
                reads.append(y * pw * cf + np.flatnonzero(row_slots))
        for r in range(oh):
            base = n0 + r * m
            writes.append(base + np.arange(wb))
            for dy in range(sh):
                y = kh + r * sh + dy
                if y < ph and real_row[y]:
                    reads.append(base + dy * pw * cf + np.flatnonzero(row_slots))
        reads = np.concatenate(reads) if reads else np.zeros(0, dtype=np.int64)
        if len(reads) != self.in_words()[0]:
            raise QpassError(f"{self.name}: sliding-window program reads {len(reads)} words, expected "
                             f"{self.in_words()[0]}")
        return StreamProgram(n, (reads,), np.concatenate(writes), self.pipeline_depth())

    def in_elems(self):
        return [self.ifm_dim[0] * self.ifm_dim[1] * self.ifm_ch]

    def out_elems(self):
        return self.ofm_dim[0] * self.ofm_dim[1] * self.kernel[0] * self.kernel[1] * self.ifm_ch

    def in_words(self):
        return [self.in_elems()[0] // self.simd]

    def out_words(self):
        return self.out_elems() // self.simd


class SwgKind(HwKind):
    name = "swg"
    model = SlidingWindow


def add_sliding_window(b, node, src, xs, k, s, pad, depthwise: bool, pad_value: int):
    """Add the sliding-window layer feeding ``node`` from stream ``src`` (sample shape ``xs``); returns it."""
    c, ih, iw = xs
    oh = (ih + 2 * pad - k[0]) // s[0] + 1
    ow = (iw + 2 * pad - k[1]) // s[1] + 1
    out_shape = (oh * ow, k[0] * k[1] * c)
    params = dict(channels=c, ifm=(ih, iw), kernel=k, stride=s, pad=pad, depthwise=depthwise,
                  pad_value=int(pad_value), ofm=(oh, ow))
    layer = lambda nm: SlidingWindow(nm, ifm_ch=c, ifm_dim=(ih, iw), kernel=k, stride=s, pad=pad,  # noqa: E731
                                     a_bits=src.dtype.bits)
    sname = f"{src.name}__swg_{node.name}"
    return b.add_layer(SwgKind.name, f"swg_{node.name}", layer, [src.name], sname, src.dtype, out_shape,
                       row_major(out_shape), [node.name], params, sname)
