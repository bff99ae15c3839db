"""What a layer emitter writes into: the calls of the dataflow region, the constant tables of ``params.h``, the
array-partition and storage-binding pragmas, and helper functions placed before the top function.

Per memory the generated code binds its storage explicitly (``#pragma HLS BIND_STORAGE``) from the hardware
layer's ``ram_style`` (weights; sliding-window line buffers; standalone thresholds and channel-wise parameters) or
``ram_style_thresholds`` (thresholds fused into a matrix unit): auto (type only, the tool picks), block (impl=bram),
distributed (impl=lutram), ultra (impl=uram). Multipliers are bound with ``BIND_OP`` from ``res_type`` (lut:
impl=fabric, dsp: impl=dsp). An attribute a layer does not have reads as "auto" / "lut".

A layer in ``mem_mode`` "runtime" (``qpass.hw.weight_memory``) gets its weights and thresholds as zero-initialised
(non-const) tables bound as RAMs with a read/write port (``type=ram_2p``), listed in ``Emission.memories``: the
top function writes them one limb per call (``codegen``) from the values the export writes to ``memories.txt``."""
from __future__ import annotations

from dataclasses import dataclass
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


def mem_mode(l: HwLayer) -> str:
    return str(getattr(l.layer, "mem_mode", "const"))


def bind_rom(var: str, style: str, writable: bool = False) -> str:
    """The storage binding of a parameter table: a ROM, or (``writable``) a RAM whose read/write port is the load
    path and whose read port is the layer's."""
    impl = STORAGE_IMPL.get(style)
    kind = "ram_2p" if writable else "rom_2p"
    return f"#pragma HLS BIND_STORAGE variable={var} type={kind}" + (f" impl={impl}" if impl else "")


@dataclass
class RuntimeMemory:
    """One runtime-writable table: ``var`` (the C array, ``[R][C][K]`` of ``ctype``) of layer ``layer`` holding its
    ``what`` ("weights": packed limbs; "thresholds"), loaded from ``values`` (integers, that shape)."""

    var: str
    layer: str
    what: str
    ctype: str
    values: np.ndarray
    doc: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.values.shape)


class Emission:
    def __init__(self, dg: DataflowGraph, reps: str = "1", etypes: dict | None = None):
        self.dg = dg
        self.reps = reps  # the frame count every call takes last: "1", or the frame-loop top's argument
        self.etypes = etypes if etypes is not None else element_types(dg)
        self.body: list[str] = []  # calls in the dataflow region
        self.params: list[str] = []
        self.partition_pragmas: list[str] = []  # partitioning and storage binding of the parameter tables
        self.extra_funcs: list[str] = []
        self.memories: list[RuntimeMemory] = []  # the runtime-writable tables, in memory-id order

    def table(self, l: HwLayer, decl: str, init, var: str, values: np.ndarray, ctype: str, what: str,
              doc: str) -> None:
        """A parameter table of layer ``l``: ``static const decl = init();`` or, in runtime mode, a writable
        ``static decl;`` registered in ``memories``."""
        if mem_mode(l) == "runtime":
            self.params.append(f"// {doc} (runtime-writable: memory {len(self.memories)}, see memories.json)\n"
                               f"static {decl};\n")
            self.memories.append(RuntimeMemory(var, l.name, what, ctype, np.asarray(values), doc))
        else:
            self.params.append(f"// {doc}\nstatic const {decl} = {{\n{init()}}};\n")

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

    def thresholds(self, l: HwLayer, nf: int, pe: int, out_t, style: str, thr=None, acc: IntType | None = None) -> str:
        """The layer's thresholds (or ``thr``) as a ``ThresholdActivation`` table ([PE][NF][steps]); returns its
        name. A constant table takes the narrowest C integer type of its values; a runtime-writable one (``acc``: the
        accumulator's type) the accumulator's range plus one, its values clipped to [acc.lo, acc.hi + 1] (the same
        comparisons), so that any thresholds the host writes later fit."""
        p = l.params
        thr = np.asarray(p["thresholds"] if thr is None else thr, np.int64)  # (C, NT)
        c, nt = thr.shape
        ct = c_int_type(int(thr.min()), int(thr.max()))
        if mem_mode(l) == "runtime" and acc is not None:
            thr = np.clip(thr, acc.lo(), acc.hi() + 1)
            ct = cpp_type(IntType.of_range(acc.lo(), acc.hi() + 1))
        arr = thr.reshape(nf, pe, nt).transpose(1, 0, 2)  # [PE][NF][NT]
        name = f"{l.name}_thr"
        self.table(l, f"qpass::ThresholdActivation<{nf}, {pe}, {nt}, {ct}, {cpp_type(out_t)}, {p['out_scale']}, "
                      f"{p['out_bias']}> {name}", lambda: c_array(arr, int_literal(ct)), f"{name}.m", arr, ct,
                   "thresholds", f"thresholds of {', '.join(l.nodes)}: y = {p['out_bias']} + {p['out_scale']} * "
                   f"#{{t : acc >= T[c][t]}}, channel c = nf * {pe} + pe")
        self.partition_pragmas += [f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1",
                                   f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3",
                                   bind_rom(f"{name}.m", style, mem_mode(l) == "runtime")]
        return name

    def activation(self, l: HwLayer, nf: int, pe: int, out_t, xnor_mw: int = 0) -> str:
        """The fused thresholds of a matrix layer, or a pass-through of its accumulator; ``xnor_mw``: the layer
        accumulates an XNOR popcount over that many +-1 products (thresholds and the raw output rescaled)."""
        style = ram_style(l, "ram_style_thresholds")
        if "thresholds" in l.params:
            thr = xnor_thresholds(l.params["thresholds"], xnor_mw) if xnor_mw else None
            acc = IntType.of_range(0, xnor_mw) if xnor_mw else l.params.get("acc_type")
            return self.thresholds(l, nf, pe, out_t, style, thr, acc)
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
        self.table(l, f"qpass::PackedRom<{rows}, {cols}, {n}, {wt.bits}, {ct}, {epl}, {nl}> {name}",
                   lambda: c_array(limbs, fmt, 8), f"{name}.m", limbs, ct, "weights",
                   f"{comment}; {epl} per {ct} limb")
        self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3")
        if rows > 1 and pe_rows:
            self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1")
        self.partition_pragmas.append(bind_rom(f"{name}.m", ram_style(l), mem_mode(l) == "runtime"))
        return name
