"""``qpass::mvtu``: the matrix-vector-threshold unit; weights as a ``PackedRom`` in finn-hlslib layout (rows
interleaved across PEs, SIMD elements per word), bound to the layer's ``ram_style``; products on LUTs or DSPs by
its ``res_type``. Binary (-1/+1) weights are stored one bit each; with a bipolar input the MAC is an
XNOR-popcount (``qpass.backends.hls.binary``)."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.binary import Bipolar, weight_type
from qpass.backends.hls.c_values import acc_cpp, cpp_type
from qpass.backends.hls.emit.context import Emission, uses_dsp
from qpass.hw.dataflow_graph import HwLayer
from qpass.hw.inttype import IntType


def mac_types(p: dict, ti, n_terms: int):
    """(weight storage type, accumulator C type, XNOR term count or 0) of a matrix layer."""
    wt = weight_type(p["weights"], p["w_type"])
    if isinstance(wt, Bipolar) and isinstance(ti, Bipolar):
        return wt, acc_cpp(IntType.of_range(0, n_terms)), n_terms
    return wt, acc_cpp(p["acc_type"]), 0


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    p, L = l.params, l.layer
    (ti,), to = e.types(l)
    w = np.asarray(p["weights"], np.int64)  # (MH, MW)
    mh, mw = w.shape
    pe, simd = L.pe, L.simd
    nf, sf = mh // pe, mw // simd
    wt, acc, xnor = mac_types(p, ti, mw)
    arr = w.reshape(nf, pe, sf, simd).transpose(1, 0, 2, 3).reshape(pe, nf * sf, simd)
    wname = e.weights(l, arr, wt, f"weights of {l.nodes[0]}: [PE={pe}][WMEM={nf * sf}] words of SIMD={simd} x "
                      f"{wt.name}")
    act = e.activation(l, nf, pe, to, xnor)
    dsp = "true" if uses_dsp(l) else "false"
    e.call(l, f"qpass::mvtu<{mw}, {mh}, {simd}, {pe}, {p['num_vectors']}, {cpp_type(ti)}, {cpp_type(wt)}, "
              f"{acc}, {cpp_type(to)}, {dsp}>({ins[0]}, {out}, {wname}, {act});",
           " (XNOR-popcount)" if xnor else "")
