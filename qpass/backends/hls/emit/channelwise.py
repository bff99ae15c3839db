"""``qpass::channelwise``: multiply or add per-slot constants ([PE][NF] table)."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.c_values import c_array, c_int_type, cpp_type, int_literal
from qpass.backends.hls.emit.context import Emission, bind_rom, ram_style
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L, p = l.layer, l.params
    (ti,), to = e.types(l)
    vals = np.asarray(p["values"], np.int64)
    nf = L.channels // L.pe
    ct = c_int_type(int(min(0, vals.min())), int(max(0, vals.max())))
    arr = vals.reshape(nf, L.pe).T  # [PE][NF]
    name = f"{l.name}_p"
    e.params.append(f"// {p['op']} parameters of {', '.join(l.nodes)}, slot c = nf * {L.pe} + pe\n"
                    f"static const {ct} {name}[{L.pe}][{nf}] = {c_array(arr, int_literal(ct))};\n")
    e.partition_pragmas += [f"#pragma HLS ARRAY_PARTITION variable={name} complete dim=1", bind_rom(name, ram_style(l))]
    e.call(l, f"qpass::channelwise<{L.channels}, {L.pe}, {L.pixels}, {'true' if p['op'] == 'mul' else 'false'}, "
              f"{cpp_type(ti)}, {ct}, {cpp_type(to)}>({ins[0]}, {out}, {name});")
