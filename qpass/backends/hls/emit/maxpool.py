"""``qpass::max_pool``: the non-overlapping streaming max pool."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L = l.layer
    (ti,), _ = e.types(l)
    e.call(l, f"qpass::max_pool<{L.channels}, {L.pe}, {L.ifm_dim[0]}, {L.ifm_dim[1]}, {L.kernel[0]}, {L.kernel[1]}, "
              f"{cpp_type(ti)}>({ins[0]}, {out});")
