"""A generated ``concat_<layer>`` function: the inputs' channels of each pixel one input after the other."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type
from qpass.backends.hls.emit.context import Emission
from qpass.hw.dataflow_graph import HwLayer


def emit(l: HwLayer, ins: list[str], out: str, e: Emission) -> None:
    L = l.layer
    tis, to = e.types(l)
    simd = L.simd
    fname = f"concat_{l.name}"
    args = ", ".join(f"hls::stream<ap_uint<{simd} * {t.bits}> >& in{i}" for i, t in enumerate(tis))
    loops = []
    for i, (t, c) in enumerate(zip(tis, L.channels)):
        loops.append(f"""    for (unsigned j = 0; j < {c // simd}; j++) {{
#pragma HLS PIPELINE II=1
      const ap_uint<{simd * t.bits}> x = in{i}.read();
      ap_uint<{simd * to.bits}> o = 0;
      for (unsigned s = 0; s < {simd}; s++) {{
#pragma HLS UNROLL
        qpass::put<{cpp_type(to)}>(o, s, {cpp_type(to)}(qpass::get<{cpp_type(t)}>(x, s)));
      }}
      out.write(o);
    }}""")
    e.extra_funcs.append(f"""// {l.name}: concatenation of {len(tis)} streams, {L.pixels} pixels
static void {fname}({args}, hls::stream<ap_uint<{simd} * {to.bits}> >& out,
    const unsigned reps) {{
  for (unsigned p = 0; p < reps * {L.pixels}; p++) {{
{chr(10).join(loops)}
  }}
}}
""")
    e.call(l, f"{fname}({', '.join(ins)}, {out});")
