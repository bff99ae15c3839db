"""``qpass::sliding_window``: the im2col window generator (with internal zero / minimum padding); its line
buffer bound to the layer's ``ram_style``."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import IMPL_CODE, Emission, ram_style
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    p, L = l.params, l.layer
    (ti,), _ = e.types(l)
    pad = p["pad"]
    e.call(l, f"qpass::sliding_window<{p['channels']}, {L.simd}, {p['ifm'][0]}, {p['ifm'][1]}, {p['kernel'][0]}, "
              f"{p['kernel'][1]}, {p['stride'][0]}, {p['stride'][1]}, {pad}, {pad}, {pad}, {pad}, "
              f"{'true' if p['depthwise'] else 'false'}, {cpp_type(ti)}, {p['pad_value']}, "
              f"{IMPL_CODE.get(ram_style(l), 0)}>({ins[0]}, {out});")
