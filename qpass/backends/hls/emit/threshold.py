"""``qpass::thresholding``: a standalone thresholding unit; thresholds as a ``ThresholdActivation``."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission, ram_style
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L = l.layer
    (ti,), to = e.types(l)
    act = e.thresholds(l, L.channels // L.pe, L.pe, to, ram_style(l))
    e.call(l, f"qpass::thresholding<{L.channels}, {L.pe}, {L.pixels}, {cpp_type(ti)}, {cpp_type(to)}>({ins[0]}, "
              f"{out}, {act});")
