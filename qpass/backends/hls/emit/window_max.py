"""``qpass::window_reduce`` with max: the maximum over each depthwise window."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L = l.layer
    (ti,), to = e.types(l)
    e.call(l, f"qpass::window_reduce<{L.channels}, {L.pe}, {L.kernel_elems}, {L.pixels}, true, {cpp_type(ti)}, "
              f"{cpp_type(to)}>({ins[0]}, {out});")
