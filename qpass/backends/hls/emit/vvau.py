"""``qpass::vvau``: the depthwise vector-vector unit; weights [NF][K] words of PE elements."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.c_values import acc_cpp, cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    p, L = l.params, l.layer
    (ti,), to = e.types(l)
    w = np.asarray(p["weights"], np.int64)  # (C, K)
    c, k = w.shape
    pe = L.pe
    nf = c // pe
    arr = w.reshape(nf, pe, k).transpose(0, 2, 1)  # [NF][K][PE]
    wname = e.weights(f"{l.name}_w", arr, p["w_type"], f"depthwise weights of {l.nodes[0]}: [NF={nf}][K={k}] words "
                      f"of PE={pe} x {p['w_type'].name}", pe_rows=False)
    act = e.activation(l, nf, pe, to)
    e.call(l, f"qpass::vvau<{c}, {pe}, {k}, {L.pixels}, {cpp_type(ti)}, {cpp_type(p['w_type'])}, "
              f"{acc_cpp(p['acc_type'])}, {cpp_type(to)}>({ins[0]}, {out}, {wname}, {act});")
