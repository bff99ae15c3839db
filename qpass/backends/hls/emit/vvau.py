"""``qpass::vvau``: the depthwise vector-vector unit; weights [NF][K] words of PE elements (storage and products
bound as for the MVTU)."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission, uses_dsp
from qpass.backends.hls.emit.mvtu import mac_types
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    p, L = l.params, l.layer
    (ti,), to = e.types(l)
    w = np.asarray(p["weights"], np.int64)  # (C, K)
    c, k = w.shape
    pe = L.pe
    nf = c // pe
    wt, acc, xnor = mac_types(p, ti, k)
    arr = w.reshape(nf, pe, k).transpose(0, 2, 1)  # [NF][K][PE]
    wname = e.weights(l, arr, wt, f"depthwise weights of {l.nodes[0]}: [NF={nf}][K={k}] words of PE={pe} x "
                      f"{wt.name}", pe_rows=False)
    act = e.activation(l, nf, pe, to, xnor)
    dsp = "true" if uses_dsp(l) else "false"
    e.call(l, f"qpass::vvau<{c}, {pe}, {k}, {L.pixels}, {cpp_type(ti)}, {cpp_type(wt)}, {acc}, {cpp_type(to)}, "
              f"{dsp}>({ins[0]}, {out}, {wname}, {act});")
