"""``qpass::add_streams``: y = ka * a + kb * b of two streams (the residual join)."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L, p = l.layer, l.params
    (ta, tb), to = e.types(l)
    words = L.pixels * L.channels // L.pe
    e.call(l, f"qpass::add_streams<{L.pe}, {words}, {cpp_type(ta)}, {cpp_type(tb)}, {cpp_type(to)}, {p['ka']}, "
              f"{p['kb']}>({ins[0]}, {ins[1]}, {out});", f" (y = {p['ka']} * a + {p['kb']} * b)")
