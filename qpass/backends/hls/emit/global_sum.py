"""``qpass::global_acc_pool``: the sum over all pixels per channel."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L = l.layer
    (ti,), to = e.types(l)
    e.call(l, f"qpass::global_acc_pool<{L.channels}, {L.pe}, {L.ifm_dim[0] * L.ifm_dim[1]}, {cpp_type(ti)}, "
              f"{cpp_type(to)}>({ins[0]}, {out});")
