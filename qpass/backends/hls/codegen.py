"""C++ code generation for one folded dataflow partition: a self-contained HLS project.

Files written into the project folder (see ``write_project``):

- ``<top>.cpp`` / ``<top>.h``: the top function under ``#pragma HLS DATAFLOW``: one call per hardware layer of
  ``qpass_dataflow.h``, ``hls::stream`` variables with ``#pragma HLS STREAM depth=`` from the FIFO sizing,
  data-width converters where a producer's word differs from its consumer's, stream duplicators at forks,
  AXI-Stream ports (one word of FOLD packed elements per beat) for the partition's inputs and outputs.
- ``params.h``: weights (``PackedRom``, finn-hlslib layout: rows interleaved across PEs, SIMD elements per word)
  and thresholds (``ThresholdActivation``, [PE][NF][steps]) as constant-initialised C arrays.
- ``qpass_dataflow.h``: the layer library; ``csim/hls_stream.h``: qpass' own minimal ``hls::stream`` for the g++
  C simulation (Vitis HLS uses its own); ``tb.cpp``: a testbench streaming text files of integer codes.
- ``Makefile`` (``make csim``: g++ -std=c++14 -O2), ``run_hls.tcl`` (Vitis HLS: csim_design, csynth_design),
  ``partition.json`` + ``orders.npz`` (stream metadata for ``qpass.backends.hls.csim``), ``README.md``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from qpass.hw.from_graph import DataflowGraph, HwLayer, IntType, c_ident

# full part numbers of the devices qpass.hw.devices knows (board parts of the named boards)
PARTS = {
    "xc7z020": "xc7z020clg400-1",  # Pynq-Z1/Z2
    "xc7z045": "xc7z045ffg900-2",  # ZC706
    "xczu3eg": "xczu3eg-sbva484-1-i",  # Ultra96
    "xczu7ev": "xczu7ev-ffvc1156-2-e",  # ZCU104
    "xcu250": "xcu250-figd2104-2L-e",  # Alveo U250
}
CXXFLAGS = "-std=c++14 -O2 -w"
LIB = "qpass_dataflow.h"


def template_text(name: str) -> str:
    return resources.files("qpass.backends.hls").joinpath("templates", name).read_text()


# ------------------------------------------------------------------------------------- C value tables

def c_int_type(lo: int, hi: int) -> str:
    for bits in (8, 16, 32, 64):
        if -(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1:
            return f"int{bits}_t"
    raise ValueError(f"values {lo}..{hi} do not fit 64 bits")


def limb_layout(n: int, eb: int) -> tuple[str, int, int, int]:
    """(C type, limb bits, elements per limb, limbs) for n elements of eb bits (no element straddles limbs)."""
    if eb > 64:
        raise ValueError(f"{eb}-bit elements cannot be stored in 64-bit limbs")
    total = n * eb
    for lb, ct in ((8, "uint8_t"), (16, "uint16_t"), (32, "uint32_t"), (64, "uint64_t")):
        if total <= lb or lb == 64:
            if eb <= lb:
                epl = lb // eb
                return ct, lb, epl, -(-n // epl)
    raise AssertionError


def pack_limbs(values: np.ndarray, eb: int) -> tuple[np.ndarray, str, int, int]:
    """values (..., N) integers -> (limbs (..., NL) as uint64, C type, EPL, NL), two's complement fields."""
    v = np.asarray(values, np.int64)
    n = v.shape[-1]
    ct, lb, epl, nl = limb_layout(n, eb)
    mask = np.uint64((1 << eb) - 1) if eb < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    codes = v.astype(np.uint64) & mask
    pad = nl * epl - n
    if pad:
        codes = np.concatenate([codes, np.zeros(v.shape[:-1] + (pad,), np.uint64)], axis=-1)
    codes = codes.reshape(v.shape[:-1] + (nl, epl))
    limbs = np.zeros(v.shape[:-1] + (nl,), np.uint64)
    for e in range(epl):
        limbs |= codes[..., e] << np.uint64(e * eb)
    return limbs, ct, epl, nl


def c_array(arr: np.ndarray, fmt=str, per_line: int = 16) -> str:
    """Nested brace initialiser of an n-d array."""
    a = np.asarray(arr)
    if a.ndim == 1:
        items = [fmt(x) for x in a.tolist()]
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "{" + ",\n ".join(lines) + "}"
    return "{" + ",\n".join(c_array(x, fmt, per_line) for x in a) + "}"


def _hex(x: int) -> str:
    return f"0x{int(x):x}u"


def _hexll(x: int) -> str:
    return f"0x{int(x):x}ull"


def _int(ct: str):
    if ct == "int64_t":
        return lambda x: f"{int(x)}ll" if int(x) != -(1 << 63) else "(-9223372036854775807ll - 1)"
    if ct == "int32_t":
        return lambda x: str(int(x)) if int(x) != -(1 << 31) else "(-2147483647 - 1)"
    return lambda x: str(int(x))


def acc_cpp(t: IntType) -> str:
    """Accumulators are signed (a signed view compares by value against signed thresholds)."""
    return f"ap_int<{t.bits + (0 if t.signed else 1)}>"


# ---------------------------------------------------------------------------------------- the project

@dataclass
class PortSpec:
    """A top-level AXI-Stream port: the stream of one tensor, FOLD elements per word."""

    name: str  # C argument name
    tensor: str
    shape: tuple  # per-sample shape
    elems: int
    fold: int
    dtype: IntType
    order: np.ndarray

    @property
    def words(self) -> int:
        return self.elems // self.fold

    @property
    def word_bits(self) -> int:
        return self.fold * self.dtype.bits

    def meta(self) -> dict:
        return {"name": self.name, "tensor": self.tensor, "shape": list(self.shape), "elems": self.elems,
                "fold": self.fold, "words": self.words, "bits": self.dtype.bits, "signed": self.dtype.signed,
                "word_bits": self.word_bits}


@dataclass
class _Var:
    name: str
    bits: int
    depth: int | None  # None: a top-level port


@dataclass
class Project:
    top: str
    inputs: list[PortSpec]
    outputs: list[PortSpec]
    files: dict[str, str] = field(default_factory=dict)
    max_word_bits: int = 0


class _Gen:
    def __init__(self, dg: DataflowGraph, depths: dict, top: str):
        self.dg, self.depths, self.top = dg, depths, top
        self.vars: dict[str, _Var] = {}
        self.taken: set[str] = set()
        self.body: list[str] = []  # calls in the dataflow region
        self.plumb: dict[str, list[str]] = {}  # stream -> duplicator / width-converter calls after its producer
        self._cur: list[str] = []
        self.extra_funcs: list[str] = []
        self.params: list[str] = []
        self.partition_pragmas: list[str] = []  # parameter tables read in parallel by the unrolled PE/SIMD lanes
        self.reads: dict[tuple[str, int], str] = {}  # (layer, port) -> var
        self.writes: dict[str, str] = {}  # layer -> var
        self.max_bits = 0

    def var(self, base: str, bits: int, depth: int | None = 2) -> str:
        name = c_ident(base, self.taken)
        self.vars[name] = _Var(name, bits, depth)
        self.max_bits = max(self.max_bits, bits)
        return name

    # -- wiring ----------------------------------------------------------------------------------------
    def wire(self) -> tuple[list[PortSpec], list[PortSpec]]:
        dg = self.dg
        ins, outs = [], []
        out_of = {}
        for k, (tensor, sname) in enumerate(dg.outputs):
            out_of.setdefault(sname, []).append((k, tensor))
        in_ports = {}
        for k, sname in enumerate(dg.inputs):
            s = dg.streams[sname]
            fold = None
            for lname, port in s.consumers:
                fold = dg.layer(lname).in_fold[port]
                break
            fold = fold or 1
            p = PortSpec(f"in{k}", s.tensor, s.shape, s.elems, fold, s.dtype, s.order)
            ins.append(p)
            in_ports[sname] = p
            self.vars[p.name] = _Var(p.name, p.word_bits, None)
            self.taken.add(p.name)
        for k, (tensor, sname) in enumerate(dg.outputs):
            s = dg.streams[sname]
            prod = dg.layer(s.producer)
            p = PortSpec(f"out{k}", tensor, s.shape, s.elems, prod.out_fold, s.dtype, dg.output_orders[tensor])
            outs.append(p)
            self.vars[p.name] = _Var(p.name, p.word_bits, None)
            self.taken.add(p.name)
        out_by_stream = {}
        for p, (tensor, sname) in zip(outs, dg.outputs):
            out_by_stream.setdefault(sname, []).append(p)
        for sname, s in dg.streams.items():
            self._cur = self.plumb.setdefault(sname, [])
            eb = s.dtype.bits
            if s.producer is None:
                src_fold = in_ports[sname].fold
            else:
                src_fold = dg.layer(s.producer).out_fold
            readers = [(l, p, dg.layer(l).in_fold[p]) for l, p in s.consumers]
            targets = [("layer", l, p, f) for l, p, f in readers] + \
                [("port", o.name, 0, o.fold) for o in out_by_stream.get(sname, [])]
            if not targets:
                if s.producer is not None:  # an unread output: drain it (should not happen)
                    raise ValueError(f"stream {sname} has no reader")
                continue
            words = s.elems // src_fold
            # the variable the producer writes into
            if s.producer is None:
                src = in_ports[sname].name
            elif len(targets) == 1 and targets[0][3] == src_fold:
                t = targets[0]
                src = t[1] if t[0] == "port" else self.var(f"{t[1]}_in{t[2]}", eb * src_fold,
                                                           self._depth(s, t[1], t[2], src_fold, src_fold))
                self.writes[s.producer] = src
                if t[0] == "layer":
                    self.reads[(t[1], t[2])] = src
                continue
            else:
                src = self.var(f"{sname}_out", eb * src_fold, 2)
                self.writes[s.producer] = src
            # fork
            branches = [src] if len(targets) == 1 else self._duplicate(src, eb * src_fold, words, targets, s,
                                                                          src_fold)
            for b, t in zip(branches, targets):
                kind, who, port, fold = t
                if b is not None and fold == src_fold and (kind == "port" or b != src or s.producer is None):
                    if kind == "layer":
                        self.reads[(who, port)] = b
                    continue
                dest = who if kind == "port" else self.var(f"{who}_in{port}", eb * fold,
                                                          self._depth(s, who, port, src_fold, fold))
                self._dwc(b, src_fold, dest, fold, eb, s.elems)
                if kind == "layer":
                    self.reads[(who, port)] = dest
        return ins, outs

    def _depth(self, s, layer, port, src_fold, fold) -> int:
        d = self.depths.get((s.producer or "<input>", layer, port), 2)
        if fold != src_fold:
            d = math.ceil(d * src_fold / fold) + 1
        return max(2, 1 << max(0, int(d) - 1).bit_length())

    def _duplicate(self, src, bits, words, targets, s, src_fold) -> list[str]:
        """A chain of 2-way duplicators; returns one variable per target (None entries never happen)."""
        outs = []
        cur = src
        for i, t in enumerate(targets):
            kind, who, port, fold = t
            if i == len(targets) - 1:
                outs.append(cur)
                break
            if kind == "port" and fold == src_fold:
                a = who
            elif kind == "layer" and fold == src_fold:
                a = self.var(f"{who}_in{port}", bits, self._depth(s, who, port, src_fold, fold))
            else:
                a = self.var(f"{s.name}_b{i}", bits, 2)
            last_t = targets[-1]
            if i == len(targets) - 2 and last_t[3] == src_fold:
                lk, lw, lp, lf = last_t
                b = lw if lk == "port" else self.var(f"{lw}_in{lp}", bits, self._depth(s, lw, lp, src_fold, lf))
            else:
                b = self.var(f"{s.name}_b{i}r", bits, 2)
            self._cur.append(f"qpass::duplicate<{bits}, {words}>({cur}, {a}, {b});")
            outs.append(a)
            cur = b
        return outs

    def _dwc(self, src, a, dest, b, eb, elems):
        if b % a == 0:
            self._cur.append(f"qpass::dwc_up<{a}, {b}, {eb}, {elems // a}>({src}, {dest});")
        elif a % b == 0:
            self._cur.append(f"qpass::dwc_down<{a}, {b}, {eb}, {elems // a}>({src}, {dest});")
        else:
            g = math.gcd(a, b)
            mid = self.var(f"{dest}_dwc", g * eb, 2)
            self._cur.append(f"qpass::dwc_down<{a}, {g}, {eb}, {elems // a}>({src}, {mid});")
            self._cur.append(f"qpass::dwc_up<{g}, {b}, {eb}, {elems // g}>({mid}, {dest});")

    # -- layers ------------------------------------------------------------------------------------------
    def layers(self) -> None:
        """Layer calls in topological order, each followed by the plumbing of its output stream (the C simulation
        runs the dataflow region's calls one after the other)."""
        for sname in self.dg.inputs:
            self.body.extend(self.plumb.get(sname, []))
        for l in self.dg.layers:
            ins = [self.reads[(l.name, p)] for p in range(len(l.inputs))]
            out = self.writes[l.name]
            getattr(self, "_" + l.kind)(l, ins, out)
            self.body.extend(self.plumb.get(l.output, []))

    def _types(self, l: HwLayer):
        dg = self.dg
        return [dg.streams[s].dtype for s in l.inputs], dg.streams[l.output].dtype

    def _comment(self, l: HwLayer) -> str:
        L = l.layer
        return f"// {l.name} ({L.kind}, PE={L.fold[0]}, SIMD={L.fold[1]}, {L.cycles()} cycles): " + \
            ", ".join(l.nodes)

    def _thresholds(self, l: HwLayer, nf: int, pe: int, out_t: IntType) -> str:
        p = l.params
        thr = np.asarray(p["thresholds"], np.int64)  # (C, NT)
        c, nt = thr.shape
        ct = c_int_type(int(thr.min()), int(thr.max()))
        arr = thr.reshape(nf, pe, nt).transpose(1, 0, 2)  # [PE][NF][NT]
        name = f"{l.name}_thr"
        self.params.append(
            f"// thresholds of {', '.join(l.nodes)}: y = {p['out_bias']} + {p['out_scale']} * #{{t : acc >= T[c][t]}},"
            f" channel c = nf * {pe} + pe\n"
            f"static const qpass::ThresholdActivation<{nf}, {pe}, {nt}, {ct}, {out_t.cpp}, {p['out_scale']}, "
            f"{p['out_bias']}> {name} = {{\n{c_array(arr, _int(ct))}}};\n")
        self.partition_pragmas += [f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1",
                                   f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3"]
        return name

    def _weights(self, name: str, arr: np.ndarray, wt: IntType, comment: str, pe_rows: bool = True) -> str:
        """arr (ROWS, COLS, N) integers -> a PackedRom constant (rows are PE lanes, read in parallel, when
        ``pe_rows``)."""
        limbs, ct, epl, nl = pack_limbs(arr, wt.bits)
        rows, cols, n = arr.shape
        fmt = _hexll if ct == "uint64_t" else _hex
        self.params.append(
            f"// {comment}\nstatic const qpass::PackedRom<{rows}, {cols}, {n}, {wt.bits}, {ct}, {epl}, {nl}> {name} = "
            f"{{\n{c_array(limbs, fmt, 8)}}};\n")
        self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=3")
        if rows > 1 and pe_rows:
            self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name}.m complete dim=1")
        return name

    def _swg(self, l, ins, out):
        p = l.params
        (ti,), _ = self._types(l)
        L = l.layer
        pad = p["pad"]
        self.body.append(self._comment(l))
        self.body.append(
            f"qpass::sliding_window<{p['channels']}, {L.simd}, {p['ifm'][0]}, {p['ifm'][1]}, {p['kernel'][0]}, "
            f"{p['kernel'][1]}, {p['stride'][0]}, {p['stride'][1]}, {pad}, {pad}, {pad}, {pad}, "
            f"{'true' if p['depthwise'] else 'false'}, {ti.cpp}, {p['pad_value']}>({ins[0]}, {out});")

    def _mvtu(self, l, ins, out):
        p = l.params
        L = l.layer
        (ti,), to = self._types(l)
        w = np.asarray(p["weights"], np.int64)  # (MH, MW)
        mh, mw = w.shape
        pe, simd = L.pe, L.simd
        nf, sf = mh // pe, mw // simd
        arr = w.reshape(nf, pe, sf, simd).transpose(1, 0, 2, 3).reshape(pe, nf * sf, simd)
        wname = self._weights(f"{l.name}_w", arr, p["w_type"],
                              f"weights of {l.nodes[0]}: [PE={pe}][WMEM={nf * sf}] words of SIMD={simd} x "
                              f"{p['w_type'].name}")
        act = self._thresholds(l, nf, pe, to) if "thresholds" in p else f"qpass::PassThroughActivation<{to.cpp}>()"
        self.body.append(self._comment(l))
        self.body.append(
            f"qpass::mvtu<{mw}, {mh}, {simd}, {pe}, {p['num_vectors']}, {ti.cpp}, {p['w_type'].cpp}, "
            f"{acc_cpp(p['acc_type'])}, {to.cpp}>({ins[0]}, {out}, {wname}, {act});")

    def _vvau(self, l, ins, out):
        p = l.params
        L = l.layer
        (ti,), to = self._types(l)
        w = np.asarray(p["weights"], np.int64)  # (C, K)
        c, k = w.shape
        pe = L.pe
        nf = c // pe
        arr = w.reshape(nf, pe, k).transpose(0, 2, 1)  # [NF][K][PE]
        wname = self._weights(f"{l.name}_w", arr, p["w_type"],
                              f"depthwise weights of {l.nodes[0]}: [NF={nf}][K={k}] words of PE={pe} x "
                              f"{p['w_type'].name}", pe_rows=False)
        act = self._thresholds(l, nf, pe, to) if "thresholds" in p else f"qpass::PassThroughActivation<{to.cpp}>()"
        self.body.append(self._comment(l))
        self.body.append(
            f"qpass::vvau<{c}, {pe}, {k}, {L.pixels}, {ti.cpp}, {p['w_type'].cpp}, {acc_cpp(p['acc_type'])}, "
            f"{to.cpp}>({ins[0]}, {out}, {wname}, {act});")

    def _window_max(self, l, ins, out):
        L = l.layer
        (ti,), to = self._types(l)
        self.body.append(self._comment(l))
        self.body.append(f"qpass::window_reduce<{L.channels}, {L.pe}, {L.kernel_elems}, {L.pixels}, true, "
                         f"{ti.cpp}, {to.cpp}>({ins[0]}, {out});")

    def _maxpool(self, l, ins, out):
        L = l.layer
        (ti,), _ = self._types(l)
        self.body.append(self._comment(l))
        self.body.append(f"qpass::max_pool<{L.channels}, {L.pe}, {L.ifm_dim[0]}, {L.ifm_dim[1]}, {L.kernel[0]}, "
                         f"{L.kernel[1]}, {ti.cpp}>({ins[0]}, {out});")

    def _global_sum(self, l, ins, out):
        L = l.layer
        (ti,), to = self._types(l)
        self.body.append(self._comment(l))
        self.body.append(f"qpass::global_acc_pool<{L.channels}, {L.pe}, {L.ifm_dim[0] * L.ifm_dim[1]}, {ti.cpp}, "
                         f"{to.cpp}>({ins[0]}, {out});")

    def _threshold(self, l, ins, out):
        L = l.layer
        (ti,), to = self._types(l)
        act = self._thresholds(l, L.channels // L.pe, L.pe, to)
        self.body.append(self._comment(l))
        self.body.append(f"qpass::thresholding<{L.channels}, {L.pe}, {L.pixels}, {ti.cpp}, {to.cpp}>({ins[0]}, "
                         f"{out}, {act});")

    def _channelwise(self, l, ins, out):
        L = l.layer
        p = l.params
        (ti,), to = self._types(l)
        vals = np.asarray(p["values"], np.int64)
        nf = L.channels // L.pe
        ct = c_int_type(int(min(0, vals.min())), int(max(0, vals.max())))
        arr = vals.reshape(nf, L.pe).T  # [PE][NF]
        name = f"{l.name}_p"
        self.params.append(f"// {p['op']} parameters of {', '.join(l.nodes)}, slot c = nf * {L.pe} + pe\n"
                           f"static const {ct} {name}[{L.pe}][{nf}] = {c_array(arr, _int(ct))};\n")
        self.partition_pragmas.append(f"#pragma HLS ARRAY_PARTITION variable={name} complete dim=1")
        self.body.append(self._comment(l))
        self.body.append(f"qpass::channelwise<{L.channels}, {L.pe}, {L.pixels}, "
                         f"{'true' if p['op'] == 'mul' else 'false'}, {ti.cpp}, {ct}, {to.cpp}>({ins[0]}, {out}, "
                         f"{name});")

    def _add(self, l, ins, out):
        L = l.layer
        p = l.params
        (ta, tb), to = self._types(l)
        words = L.pixels * L.channels // L.pe
        self.body.append(self._comment(l) + f" (y = {p['ka']} * a + {p['kb']} * b)")
        self.body.append(f"qpass::add_streams<{L.pe}, {words}, {ta.cpp}, {tb.cpp}, {to.cpp}, {p['ka']}, {p['kb']}>"
                         f"({ins[0]}, {ins[1]}, {out});")

    def _concat(self, l, ins, out):
        L = l.layer
        tis, to = self._types(l)
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
        qpass::put<{to.cpp}>(o, s, {to.cpp}(qpass::get<{t.cpp}>(x, s)));
      }}
      out.write(o);
    }}""")
        self.extra_funcs.append(f"""// {l.name}: concatenation of {len(tis)} streams, {L.pixels} pixels
static void {fname}({args}, hls::stream<ap_uint<{simd} * {to.bits}> >& out) {{
  for (unsigned p = 0; p < {L.pixels}; p++) {{
{chr(10).join(loops)}
  }}
}}
""")
        self.body.append(self._comment(l))
        self.body.append(f"{fname}({', '.join(ins)}, {out});")


def generate(dg: DataflowGraph, depths: dict, top: str) -> Project:
    """The C++ sources of one folded partition (``dg`` after ``from_graph.fold``)."""
    gen = _Gen(dg, depths, top)
    ins, outs = gen.wire()
    gen.layers()
    ports = ins + outs
    max_bits = max([gen.max_bits] + [p.word_bits for p in ports])
    sig = ", ".join(f"hls::stream<ap_uint<{p.word_bits}> >& {p.name}" for p in ports)
    guard = f"{top.upper()}_H"
    apmax = ""
    if max_bits > 1024:
        w = 1 << (max_bits - 1).bit_length()
        apmax = f"#ifndef AP_INT_MAX_W\n#define AP_INT_MAX_W {w}\n#endif\n"
    port_doc = "\n".join(
        f"//   {p.name}: tensor {p.tensor!r}, {p.elems} x {p.dtype.name} per frame, {p.fold} per {p.word_bits}-bit "
        f"word ({p.words} words)" for p in ports)
    header = f"""// Generated by qpass: dataflow partition {dg.name}.
{port_doc}
#ifndef {guard}
#define {guard}
{apmax}#include <stdint.h>
#include <ap_int.h>
#include <hls_stream.h>

{"".join(f"#define {top.upper()}_{p.name.upper()}_FOLD {p.fold}{chr(10)}" for p in ports)}
void {top}({sig});

#endif
"""
    decls = []
    for v in gen.vars.values():
        if v.depth is None:
            continue
        decls.append(f'  hls::stream<ap_uint<{v.bits}> > {v.name}("{v.name}");')
        decls.append(f"#pragma HLS STREAM variable={v.name} depth={v.depth}")
    pragmas = "\n".join(f"#pragma HLS INTERFACE axis port={p.name}" for p in ports)
    body = "\n".join("  " + line for line in gen.body)
    cpp = f"""// Generated by qpass: top function of dataflow partition {dg.name} (one frame per call).
#include "{top}.h"
#include "qpass_dataflow.h"
#include "params.h"

{"".join(gen.extra_funcs)}
void {top}({sig}) {{
{pragmas}
#pragma HLS INTERFACE ap_ctrl_hs port=return
#pragma HLS DATAFLOW
{chr(10).join(gen.partition_pragmas)}
{chr(10).join(decls)}

{body}
}}
"""
    params = f"""// Generated by qpass: weights and thresholds of dataflow partition {dg.name} (constant tables).
#ifndef {top.upper()}_PARAMS_H
#define {top.upper()}_PARAMS_H
#include <stdint.h>
#include "qpass_dataflow.h"

{chr(10).join(gen.params)}
#endif
"""
    proj = Project(top, ins, outs, max_word_bits=max_bits)
    proj.files = {f"{top}.h": header, f"{top}.cpp": cpp, "params.h": params}
    return proj


# -------------------------------------------------------------------------------------------- testbench

def testbench(proj: Project) -> str:
    top = proj.top
    n_in, n_out = len(proj.inputs), len(proj.outputs)
    decl = []
    for p in proj.inputs + proj.outputs:
        decl.append(f"  hls::stream<ap_uint<{p.word_bits}> > {p.name}(\"{p.name}\");")
    opens = []
    for i, p in enumerate(proj.inputs):
        opens.append(f'  FILE* f_{p.name} = std::fopen(argv[{2 + i}], "r");\n'
                     f'  if (!f_{p.name}) {{ std::fprintf(stderr, "cannot read %s\\n", argv[{2 + i}]); return 2; }}')
    for i, p in enumerate(proj.outputs):
        opens.append(f'  FILE* f_{p.name} = std::fopen(argv[{2 + n_in + i}], "w");\n'
                     f'  if (!f_{p.name}) {{ std::fprintf(stderr, "cannot write %s\\n", argv[{2 + n_in + i}]); '
                     f'return 2; }}')
    feed, drain = [], []
    for p in proj.inputs:
        t = p.dtype
        feed.append(f"""    for (unsigned w = 0; w < {p.words}; w++) {{
      ap_uint<{p.word_bits}> word = 0;
      for (unsigned e = 0; e < {p.fold}; e++) {{
        long long v;
        if (std::fscanf(f_{p.name}, "%lld", &v) != 1) {{
          std::fprintf(stderr, "{p.name}: input ends in frame %u\\n", f);
          return 3;
        }}
        if (v < {t.lo()}LL || v > {t.hi()}LL) {{
          std::fprintf(stderr, "{p.name}: value %lld outside {t.name}\\n", v);
          return 3;
        }}
        qpass::put<{t.cpp}>(word, e, {t.cpp}(v));
      }}
      {p.name}.write(word);
    }}""")
    for p in proj.outputs:
        t = p.dtype
        conv = "to_int64()" if t.signed else "to_uint64()"
        drain.append(f"""    for (unsigned w = 0; w < {p.words}; w++) {{
      if ({p.name}.empty()) {{
        std::fprintf(stderr, "{p.name}: only %u of {p.words} words in frame %u\\n", w, f);
        return 4;
      }}
      const ap_uint<{p.word_bits}> word = {p.name}.read();
      for (unsigned e = 0; e < {p.fold}; e++)
        std::fprintf(f_{p.name}, "%lld\\n", (long long)qpass::get<{t.cpp}>(word, e).{conv});
    }}
    if (!{p.name}.empty()) {{
      std::fprintf(stderr, "{p.name}: more than {p.words} words in frame %u\\n", f);
      return 4;
    }}""")
    left = " || ".join(f"!{p.name}.empty()" for p in proj.inputs) or "false"
    args = ", ".join(p.name for p in proj.inputs + proj.outputs)
    usage = " ".join([f"IN{i}.txt" for i in range(n_in)] + [f"OUT{i}.txt" for i in range(n_out)])
    return f"""// Generated by qpass: C testbench of {top}. Streams FRAMES frames of integer codes (text, one value per
// line or whitespace separated, each frame's elements in stream order) through the top function and writes the
// output codes the same way.   usage: csim_bin FRAMES {usage}
#include <cstdio>
#include <cstdlib>
#include "{top}.h"
#include "qpass_dataflow.h"
#ifdef QPASS_SINGLE_TU
#include "{top}.cpp"
#endif

int main(int argc, char** argv) {{
  if (argc != {2 + n_in + n_out}) {{
    std::fprintf(stderr, "usage: %s FRAMES {usage}\\n", argv[0]);
    return 2;
  }}
  const unsigned frames = (unsigned)std::strtoul(argv[1], 0, 10);
{chr(10).join(opens)}
{chr(10).join(decl)}
  for (unsigned f = 0; f < frames; f++) {{
{chr(10).join(feed)}
    {top}({args});
    if ({left}) {{
      std::fprintf(stderr, "frame %u: the top function did not read all its input\\n", f);
      return 4;
    }}
{chr(10).join(drain)}
  }}
{chr(10).join(f"  std::fclose(f_{p.name});" for p in proj.inputs + proj.outputs)}
#ifdef QPASS_CSIM_STREAM
  if (hls::stream_leftovers()) {{
    std::fprintf(stderr, "%lu internal streams were not drained\\n", hls::stream_leftovers());
    return 5;
  }}
#endif
  return 0;
}}
"""


# ------------------------------------------------------------------------------------- build scripts

def part_of(device) -> str:
    from qpass.hw.devices import get_device

    name = device.part if hasattr(device, "part") else str(device)
    key = name.strip().lower()
    if key in PARTS:
        return PARTS[key]
    d = get_device(name)
    return name if key.startswith(d.part) and len(key) > len(d.part) else PARTS.get(d.part, d.part)


def makefile(proj: Project, ap_types: str | None, frames: int | None) -> str:
    top = proj.top
    run = ""
    if frames:
        ins = " ".join(f"data/{p.name}.txt" for p in proj.inputs)
        outs = " ".join(f"data/{p.name}.csim.txt" for p in proj.outputs)
        cmp = "\n".join(f"\tcmp -s data/{p.name}.csim.txt data/{p.name}.expected.txt && echo '{p.name}: matches the "
                        f"golden simulator' || (echo '{p.name}: DIFFERS from the golden simulator'; exit 1)"
                        for p in proj.outputs)
        run = f"\t./csim_bin {frames} {ins} {outs}\n{cmp}\n"
    else:
        run = "\t@echo 'built csim_bin; run: ./csim_bin FRAMES " + " ".join(
            f"{p.name}.txt" for p in proj.inputs + proj.outputs) + "'\n"
    return f"""# Generated by qpass. C simulation with g++ (no Xilinx tools needed):
#   make csim                      build csim_bin and run the sample frames in data/ (if exported with samples)
#   make csim AP_TYPES=/path/to/ap_types
# AP_TYPES: a folder with ap_int.h (e.g. hls4ml's templates/vivado/ap_types, Apache-2.0).
AP_TYPES ?= {ap_types or "ap_types"}
CXX ?= g++
CXXFLAGS ?= {CXXFLAGS}

csim_bin: tb.cpp {top}.cpp {top}.h params.h qpass_dataflow.h csim/hls_stream.h
\t$(CXX) $(CXXFLAGS) -DQPASS_SINGLE_TU -I. -Icsim -I$(AP_TYPES) tb.cpp -o csim_bin

csim: csim_bin
{run}
clean:
\trm -f csim_bin data/*.csim.txt

.PHONY: csim clean
"""


def tcl(proj: Project, part: str, clock_ns: float, frames: int | None) -> str:
    top = proj.top
    argv = ""
    if frames:
        argv = " -argv {" + " ".join([str(frames)] + [f"data/{p.name}.txt" for p in proj.inputs] +
                                     [f"data/{p.name}.csim.txt" for p in proj.outputs]) + "}"
    tb_data = "add_files -tb data\n" if frames else ""
    return f"""# Generated by qpass. Vitis HLS: vitis_hls -f run_hls.tcl
# (Vitis uses its own hls_stream.h and ap_int.h; csim/ is only for the g++ C simulation.)
open_project -reset proj_{top}
set_top {top}
add_files {top}.cpp -cflags "-std=c++14 -I."
add_files -tb tb.cpp -cflags "-std=c++14 -I."
{tb_data}open_solution -reset sol1 -flow_target vivado
set_part {{{part}}}
create_clock -period {clock_ns:g} -name default
csim_design{argv}
csynth_design
exit
"""


def readme(proj: Project, dg: DataflowGraph, table: str, part: str, clock_ns: float, frames: int | None) -> str:
    ports = "\n".join(f"- `{p.name}`: tensor `{p.tensor}` (per-sample shape {list(p.shape)}), {p.elems} x "
                      f"{p.dtype.name} per frame, {p.fold} elements per {p.word_bits}-bit word"
                      for p in proj.inputs + proj.outputs)
    return f"""# HLS project `{proj.top}` (generated by qpass)

Dataflow partition `{dg.name}` of a streamlined integer-only network, as streaming HLS C++
(one function per layer, `#pragma HLS DATAFLOW`, AXI-Stream ports, one frame per call).

Ports (elements packed least significant first, two's complement for signed types; image tensors stream
pixel by pixel, channels innermost):
{ports}

- `make csim`: g++ C simulation (needs only `ap_int.h`, e.g. from hls4ml's `templates/vivado/ap_types`)
  {"of the " + str(frames) + " sample frames in `data/`, compared with the golden simulator" if frames else ""}
- `vitis_hls -f run_hls.tcl`: C simulation and synthesis for `{part}` at {clock_ns:g} ns.

Layers (folding, cycle and resource estimates from qpass' analytical models):

```
{table}
```
"""


def write_project(out: Path, proj: Project, dg: DataflowGraph, table: str, *, ap_types: str | None, part: str,
                  clock_ns: float, frames: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "csim").mkdir(exist_ok=True)
    for name, text in proj.files.items():
        (out / name).write_text(text)
    (out / LIB).write_text(template_text(LIB))
    (out / "csim" / "hls_stream.h").write_text(template_text("hls_stream.h"))
    (out / "tb.cpp").write_text(testbench(proj))
    (out / "Makefile").write_text(makefile(proj, ap_types, frames))
    (out / "run_hls.tcl").write_text(tcl(proj, part, clock_ns, frames))
    (out / "README.md").write_text(readme(proj, dg, table, part, clock_ns, frames))
    (out / "report.txt").write_text(table + "\n")
    meta = {"top": proj.top, "partition": dg.name, "part": part, "clock_ns": clock_ns, "cxxflags": CXXFLAGS,
            "inputs": [p.meta() for p in proj.inputs], "outputs": [p.meta() for p in proj.outputs]}
    (out / "partition.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez(out / "orders.npz", **{p.name: p.order for p in proj.inputs + proj.outputs})
    stale = out / "csim_bin"
    if stale.exists():
        stale.unlink()

