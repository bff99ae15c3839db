"""What a layer emitter writes into: the calls of the dataflow region, the constant tables of ``params.h``, the
array-partition pragmas, and helper functions placed before the top function."""
from __future__ import annotations

import numpy as np

from qpass.backends.hls.c_values import c_array, c_int_type, cpp_type, hex_u, hex_ull, int_literal, pack_limbs
from qpass.hw.dataflow_graph import DataflowGraph, HwLayer
from qpass.hw.inttype import IntType


class Emission:
    def __init__(self, dg: DataflowGraph):
        self.dg = dg
        self.body: list[str] = []  # calls in the dataflow region
        self.params: list[str] = []
        self.partition_pragmas: list[str] = []  # parameter tables read in parallel by the unrolled PE/SIMD lanes
        self.extra_funcs: list[str] = []

    def types(self, l: HwLayer) -> tuple[list[IntType], IntType]:
        """(element type per input port, output element type) of a layer."""
        dg = self.dg
        return [dg.streams[s].dtype for s in l.inputs], dg.streams[l.output].dtype

    def call(self, l: HwLayer, call: str, note: str = "") -> None:
        """A layer's call, after a comment line naming it, its folding, cycles and ONNX nodes."""
        L = l.layer
        self.body.append(f"// {l.name} ({L.kind}, PE={L.fold[0]}, SIMD={L.fold[1]}, {L.cycles()} cycles): " +
                         ", ".join(l.nodes) + note)
        self.body.append(call)

    def thresholds(self, l: HwLayer, nf: int, pe: int, out_t: IntType) -> str:
        """The layer's thresholds as a ``ThresholdActivation`` constant ([PE][NF][steps]); returns its name."""
        p = l.params
        thr = np.asarray(p["thresholds"], np.int64)  # (C, NT)
        c, nt = thr.shape
        ct = c_int_type(int(thr.min()), int(thr.max()))
        arr = thr.reshape(nf, pe, nt).transpose(1, 0, 2)  # [PE][NF][NT]
        name = f"{l.name}_thr"
        self.params.append(
            f"// thresholds of {', '.join(l.nodes)}: y = {p['out_bias']} + {p['out_scale']} * #{{t : acc >= T[c][t]}},"
            f" channel c = nf * {pe} + pe\n"
            f"static const qpass::ThresholdActivation<{nf}, {pe}, {nt}, {ct}, {cpp_type(out_t)}, {p['out_scale']}, "
            f"{p['out_bias']}> {name} = {{\n{c_array(arr, int_literal(ct))}}};\n")
        self.partition_pragmas += [f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1",
                                   f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3"]
        return name

    def activation(self, l: HwLayer, nf: int, pe: int, out_t: IntType) -> str:
        """The fused thresholds of a matrix layer, or a pass-through of its accumulator."""
        if "thresholds" in l.params:
            return self.thresholds(l, nf, pe, out_t)
        return f"qpass::PassThroughActivation<{cpp_type(out_t)}>()"

    def weights(self, name: str, arr: np.ndarray, wt: IntType, comment: str, pe_rows: bool = True) -> str:
        """arr (ROWS, COLS, N) integers -> a PackedRom constant (rows are PE lanes, read in parallel, when
        ``pe_rows``)."""
        limbs, ct, epl, nl = pack_limbs(arr, wt.bits)
        rows, cols, n = arr.shape
        fmt = hex_ull if ct == "uint64_t" else hex_u
        self.params.append(
            f"// {comment}\nstatic const qpass::PackedRom<{rows}, {cols}, {n}, {wt.bits}, {ct}, {epl}, {nl}> {name} = "
            f"{{\n{c_array(limbs, fmt, 8)}}};\n")
        self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3")
        if rows > 1 and pe_rows:
            self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1")
        return name
