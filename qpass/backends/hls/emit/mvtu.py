"""``qpass::mvtu``: the matrix-vector-threshold unit; weights as a ``PackedRom`` in finn-hlslib layout (rows
interleaved across PEs, SIMD elements per word)."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.c_values import acc_cpp, cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    p, L = l.params, l.layer
    (ti,), to = e.types(l)
    w = np.asarray(p["weights"], np.int64)  # (MH, MW)
    mh, mw = w.shape
    pe, simd = L.pe, L.simd
    nf, sf = mh // pe, mw // simd
    arr = w.reshape(nf, pe, sf, simd).transpose(1, 0, 2, 3).reshape(pe, nf * sf, simd)
    wname = e.weights(f"{l.name}_w", arr, p["w_type"], f"weights of {l.nodes[0]}: [PE={pe}][WMEM={nf * sf}] words of "
                      f"SIMD={simd} x {p['w_type'].name}")
    act = e.activation(l, nf, pe, to)
    e.call(l, f"qpass::mvtu<{mw}, {mh}, {simd}, {pe}, {p['num_vectors']}, {cpp_type(ti)}, {cpp_type(p['w_type'])}, "
              f"{acc_cpp(p['acc_type'])}, {cpp_type(to)}>({ins[0]}, {out}, {wname}, {act});")
