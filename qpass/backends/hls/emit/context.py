"""What a layer emitter writes into: the calls of the dataflow region, the constant tables of ``params.h``, the
array-partition and storage-binding pragmas, and helper functions placed before the top function.

Per memory the generated code binds its storage explicitly (``#pragma HLS BIND_STORAGE``) from the hardware
layer's ``ram_style`` (weights; sliding-window line buffers; standalone thresholds and channel-wise parameters) or
``ram_style_thresholds`` (thresholds fused into a matrix unit): auto (type only, the tool picks), block (impl=bram),
distributed (impl=lutram), ultra (impl=uram). Multipliers are bound with ``BIND_OP`` from ``res_type`` (lut:
impl=fabric, dsp: impl=dsp). An attribute a layer does not have reads as "auto" / "lut"."""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from qpass.backends.hls.binary import Bipolar, element_types, storage_codes, xnor_thresholds
from qpass.backends.hls.c_values import c_array, c_int_type, cpp_type, hex_u, hex_ull, int_literal, pack_limbs
from qpass.hw.dataflow_graph import DataflowGraph, HwLayer
from qpass.hw.inttype import IntType

#: ram_style -> BIND_STORAGE impl (None: the tool chooses)
STORAGE_IMPL = MappingProxyType({"auto": None, "block": "bram", "distributed": "lutram", "ultra": "uram"})
#: ram_style -> the IMPL template argument of qpass::sliding_window
IMPL_CODE = MappingProxyType({"auto": 0, "block": 1, "distributed": 2, "ultra": 3})


def ram_style(l: HwLayer, attr: str = "ram_style") -> str:
    return str(getattr(l.layer, attr, "auto"))


def uses_dsp(l: HwLayer) -> bool:
    return str(getattr(l.layer, "res_type", "lut")) == "dsp"


def bind_rom(var: str, style: str) -> str:
    impl = STORAGE_IMPL.get(style)
    return f"#pragma HLS BIND_STORAGE variable={var} type=rom_2p" + (f" impl={impl}" if impl else "")


class Emission:
    def __init__(self, dg: DataflowGraph, reps: str = "1", etypes: dict | None = None):
        self.dg = dg
        self.reps = reps  # the frame count every call takes last: "1", or the frame-loop top's argument
        self.etypes = etypes if etypes is not None else element_types(dg)
        self.body: list[str] = []  # calls in the dataflow region
        self.params: list[str] = []
        self.partition_pragmas: list[str] = []  # partitioning and storage binding of the parameter tables
        self.extra_funcs: list[str] = []

    def types(self, l: HwLayer) -> tuple[list[IntType | Bipolar], IntType | Bipolar]:
        """(element type per input port, output element type) of a layer, as stored in its streams."""
        return [self.etypes[s] for s in l.inputs], self.etypes[l.output]

    def call(self, l: HwLayer, call: str, note: str = "") -> None:
        """A layer's call (its frame count appended as the last argument), after a comment line naming it, its
        folding, cycles and ONNX nodes."""
        L = l.layer
        assert call.endswith(");"), call
        self.body.append(f"// {l.name} ({L.kind}, PE={L.fold[0]}, SIMD={L.fold[1]}, {L.cycles()} cycles): " +
                         ", ".join(l.nodes) + note)
        self.body.append(f"{call[:-2]}, {self.reps});")

    def thresholds(self, l: HwLayer, nf: int, pe: int, out_t, style: str, thr=None) -> str:
        """The layer's thresholds (or ``thr``) as a ``ThresholdActivation`` constant ([PE][NF][steps]); returns its
        name."""
        p = l.params
        thr = np.asarray(p["thresholds"] if thr is None else thr, np.int64)  # (C, NT)
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
                                   f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3",
                                   bind_rom(f"{name}.m", style)]
        return name

    def activation(self, l: HwLayer, nf: int, pe: int, out_t, xnor_mw: int = 0) -> str:
        """The fused thresholds of a matrix layer, or a pass-through of its accumulator; ``xnor_mw``: the layer
        accumulates an XNOR popcount over that many +-1 products (thresholds and the raw output rescaled)."""
        style = ram_style(l, "ram_style_thresholds")
        if "thresholds" in l.params:
            thr = xnor_thresholds(l.params["thresholds"], xnor_mw) if xnor_mw else None
            return self.thresholds(l, nf, pe, out_t, style, thr)
        if xnor_mw:
            return f"qpass::XnorDotActivation<{cpp_type(out_t)}, {xnor_mw}>()"
        return f"qpass::PassThroughActivation<{cpp_type(out_t)}>()"

    def weights(self, l: HwLayer, arr: np.ndarray, wt, comment: str, pe_rows: bool = True) -> str:
        """arr (ROWS, COLS, N) integers -> a PackedRom constant ``<layer>_w`` in the storage of the layer's
        ``ram_style`` (rows are PE lanes, read in parallel, when ``pe_rows``); bipolar weights one bit each."""
        name = f"{l.name}_w"
        limbs, ct, epl, nl = pack_limbs(storage_codes(arr, wt), wt.bits)
        rows, cols, n = arr.shape
        fmt = hex_ull if ct == "uint64_t" else hex_u
        self.params.append(
            f"// {comment}\nstatic const qpass::PackedRom<{rows}, {cols}, {n}, {wt.bits}, {ct}, {epl}, {nl}> {name} = "
            f"{{\n{c_array(limbs, fmt, 8)}}};\n")
        self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3")
        if rows > 1 and pe_rows:
            self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1")
        self.partition_pragmas.append(bind_rom(f"{name}.m", ram_style(l)))
        return name
