"""The RTL instance of each hardware layer kind: which library module (``hdl/qpass_layers.sv``) with which
parameters and ``$readmemh`` files; ``INSTANCES`` maps a ``qpass.hw.kinds`` name to its builder."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from qpass.errors import QpassError
from qpass.hw.dataflow_graph import DataflowGraph, HwLayer
from qpass.hw.inttype import IntType
from qpass.hw.threshold_costs import BS_MIN_STEPS
from .memfiles import hex_words, search_images, signed_width


@dataclass
class Instance:
    """One module instance: ``ports`` are the stream port prefixes by input port (``<p>_data/_valid/_ready``),
    the output is ``out``; ``mems`` the $readmemh files it reads (name -> text)."""

    module: str
    params: list[tuple[str, object]]
    ports: list[str] = field(default_factory=lambda: ["in"])
    mems: dict[str, str] = field(default_factory=dict)
    #: the module has write ports wmem_* / tmem_* (tied off unless listed in ``writable``)
    mem_ports: bool = False
    #: runtime-writable memories: write-port prefix -> (word bits, its $readmemh-format file of initial words)
    writable: dict[str, tuple[int, str]] = field(default_factory=dict)


class UnsupportedLayer(QpassError):
    """A hardware layer kind the RTL backend has no module for."""


def _types(dg: DataflowGraph, l: HwLayer) -> tuple[list[IntType], IntType]:
    return [dg.streams[s].dtype for s in l.inputs], dg.streams[l.output].dtype


def bipolar_stream(dg: DataflowGraph, sname: str) -> bool:
    """A stream that carries only -1 and +1 (sign activations): written by thresholds y = 2 * [x >= T] - 1, or
    passed on unchanged by a max pool or an unpadded sliding window. Partition inputs are not known to be."""
    prod = dg.streams[sname].producer
    if prod is None:
        return False
    l = dg.layer(prod)
    p = l.params
    if "thresholds" in p:
        return np.asarray(p["thresholds"]).shape[1] == 1 and (p["out_scale"], p["out_bias"]) == (2, -1)
    if l.kind == "maxpool" or (l.kind == "swg" and not p["pad"]):
        return bipolar_stream(dg, l.inputs[0])
    return False


def _runtime(l: HwLayer) -> bool:
    return getattr(l.layer, "mem_mode", "const") == "runtime"


def mvtu(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), to = _types(dg, l)
    w = np.asarray(p["weights"], np.int64)
    mh, mw = w.shape
    pe, simd = L.pe, L.simd
    nf, sf = mh // pe, mw // simd
    acc: IntType = p["acc_type"]
    wt: IntType = p["w_type"]
    # 1-bit XNOR-popcount when weights and inputs are all -1 / +1 (inputs keep their stream width; the sign bit
    # tells -1 from +1)
    xnor = bool(np.all(np.abs(w) == 1)) and bipolar_stream(dg, l.inputs[0])
    wb = 1 if xnor else wt.bits
    wcode = (w > 0).astype(np.int64) if xnor else w
    tiles = wcode.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
    params = [("MW", mw), ("MH", mh), ("SIMD", simd), ("PE", pe), ("IB", ti.bits), ("I_SIGNED", int(ti.signed)),
              ("WB", wb), ("W_SIGNED", int(wt.signed)), ("AB", acc.bits + 1), ("OB", to.bits), ("XNOR", int(xnor)),
              ("USE_DSP", int(L.res_type == "dsp")), ("WFILE", f'"{ident}_w.mem"')]
    inst = Instance("qp_mvtu", params, mems={f"{ident}_w.mem": hex_words(tiles, wb)}, mem_ports=True)
    _activation(inst, l, acc, nf, pe, ident)
    _writable(inst, l, ident, pe * simd * wb, pe)
    return inst


def vvau(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), to = _types(dg, l)
    w = np.asarray(p["weights"], np.int64)  # (C, K)
    c, k = w.shape
    nf = c // L.pe
    acc: IntType = p["acc_type"]
    wt: IntType = p["w_type"]
    tiles = w.reshape(nf, L.pe, k).transpose(0, 2, 1).reshape(nf * k, L.pe)
    params = [("C", c), ("PE", L.pe), ("K", k), ("IB", ti.bits), ("I_SIGNED", int(ti.signed)), ("WB", wt.bits),
              ("W_SIGNED", int(wt.signed)), ("AB", acc.bits + 1), ("OB", to.bits), ("WFILE", f'"{ident}_w.mem"')]
    inst = Instance("qp_vvau", params, mems={f"{ident}_w.mem": hex_words(tiles, wt.bits)}, mem_ports=True)
    _activation(inst, l, acc, nf, L.pe, ident)
    _writable(inst, l, ident, L.pe * wt.bits, L.pe)
    return inst


def window_max(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    L = l.layer
    (ti,), to = _types(dg, l)
    return Instance("qp_vvau", [
        ("C", L.channels), ("PE", L.pe), ("K", L.kernel_elems), ("IB", ti.bits), ("I_SIGNED", int(ti.signed)),
        ("AB", ti.bits + 1), ("OB", to.bits), ("MAXMODE", 1)], mem_ports=True)


def binary_search(thr: np.ndarray) -> bool:
    """Whether a (channels, steps) threshold table is emitted as a binary search (``qp_activate`` BS = 1: the count
    of thresholds <= v found in clog2(steps + 1) comparisons, exact for non-decreasing rows; at least BS_MIN_STEPS
    steps)."""
    t = np.asarray(thr)
    return t.shape[1] >= BS_MIN_STEPS and bool(np.all(np.diff(t, axis=1) >= 0))


def threshold_mems(thr: np.ndarray, pe: int, tb: int, ident: str, search: bool) -> dict[str, str]:
    """The threshold ROM image (word nf: PE x NT thresholds) and, for a binary search (with or without row folds),
    its per-stage ROMs (``search_images``)."""
    nf = thr.shape[0] // pe
    mems = {f"{ident}_t.mem": hex_words(thr.reshape(nf, pe * thr.shape[1]), tb)}
    if search:
        mems.update(search_images(thr, pe, tb, f"{ident}_t.mem"))
    return mems


def _activation(inst: Instance, l: HwLayer, acc: IntType, nf: int, pe: int, ident: str) -> None:
    """The fused thresholds of a matrix layer (clipped to the accumulator's range) as parameters and a ROM image
    (word nf: PE x NT thresholds)."""
    p = l.params
    nt, tb = 0, 1
    if "thresholds" in p:
        thr = np.clip(np.asarray(p["thresholds"], np.int64), acc.lo(), acc.hi() + 1)
        lo, hi = (acc.lo(), acc.hi() + 1) if _runtime(l) else (int(thr.min()), int(thr.max()))
        nt, tb = thr.shape[1], signed_width(lo, hi)  # runtime: any thresholds the host may write fit
        bs = not _runtime(l) and binary_search(thr)  # (a host may write any thresholds: no search over them)
        inst.mems.update(threshold_mems(thr, pe, tb, ident, bs))
        inst.params += [("OUT_SCALE", int(p["out_scale"])), ("OUT_BIAS", int(p["out_bias"]))] + [("BS", 1)] * bs
    inst.params += [("NT", nt), ("TB", tb), ("TFILE", f'"{ident}_t.mem"')]


def _writable(inst: Instance, l: HwLayer, ident: str, w_bits: int, pe: int) -> None:
    """mem_mode runtime: the weight and threshold memories become RAMs loaded through the top's write port."""
    if not _runtime(l):
        return
    inst.params.append(("RUNTIME", 1))
    inst.writable["wmem"] = (w_bits, f"{ident}_w.mem")
    prm = dict(inst.params)
    if prm["NT"]:
        inst.writable["tmem"] = (pe * prm["NT"] * prm["TB"], f"{ident}_t.mem")


def swg(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), _ = _types(dg, l)
    return Instance("qp_swg", [
        ("C", p["channels"]), ("SIMD", L.simd), ("IH", p["ifm"][0]), ("IW", p["ifm"][1]), ("KH", p["kernel"][0]),
        ("KW", p["kernel"][1]), ("SH", p["stride"][0]), ("SW", p["stride"][1]), ("PAD", p["pad"]),
        ("DEPTHWISE", int(bool(p["depthwise"]))), ("EB", ti.bits), ("PADV", int(p["pad_value"]))])


def maxpool(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), _ = _types(dg, l)
    return Instance("qp_maxpool", [
        ("C", p["channels"]), ("PE", L.pe), ("IH", p["ifm"][0]), ("IW", p["ifm"][1]), ("KH", p["kernel"][0]),
        ("KW", p["kernel"][1]), ("EB", ti.bits), ("SIGNED", int(ti.signed))])


def threshold(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), to = _types(dg, l)
    thr = np.clip(np.asarray(p["thresholds"], np.int64), ti.lo(), ti.hi() + 1)
    nt = thr.shape[1]
    tb = signed_width(int(thr.min()), int(thr.max()))
    bs = binary_search(thr)
    return Instance("qp_threshold", [
        ("C", L.channels), ("PE", L.pe), ("NPIX", L.pixels), ("IB", ti.bits), ("I_SIGNED", int(ti.signed)),
        ("OB", to.bits), ("NT", nt), ("TB", tb), ("OUT_SCALE", int(p["out_scale"])), ("OUT_BIAS", int(p["out_bias"])),
        ("TFILE", f'"{ident}_t.mem"')] + [("BS", 1)] * bs, mems=threshold_mems(thr, L.pe, tb, ident, bs))


def add(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ta, tb), to = _types(dg, l)
    return Instance("qp_add", [
        ("PE", L.pe), ("AB_", ta.bits), ("A_SIGNED", int(ta.signed)), ("BB", tb.bits), ("B_SIGNED", int(tb.signed)),
        ("OB", to.bits), ("KA", int(p["ka"])), ("KB", int(p["kb"]))], ports=["a", "b"])


def channelwise(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), to = _types(dg, l)
    vals = np.asarray(p["values"], np.int64)
    nf = L.channels // L.pe
    pb = signed_width(int(vals.min()), int(vals.max()))
    return Instance("qp_channelwise", [
        ("C", L.channels), ("PE", L.pe), ("NPIX", L.pixels), ("MUL", int(p["op"] == "mul")), ("IB", ti.bits),
        ("I_SIGNED", int(ti.signed)), ("PB", pb), ("OB", to.bits), ("PFILE", f'"{ident}_p.mem"')],
        mems={f"{ident}_p.mem": hex_words(vals.reshape(nf, L.pe), pb)})


def global_sum(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    p, L = l.params, l.layer
    (ti,), to = _types(dg, l)
    return Instance("qp_global_sum", [
        ("C", L.channels), ("PE", L.pe), ("NPIX", p["pixels"]), ("IB", ti.bits), ("I_SIGNED", int(ti.signed)),
        ("OB", to.bits)])  # sums kept modulo 2^OB: exact, the totals fit the output type


#: inputs of the qp_concat library module
CONCAT_MAX_INPUTS = 4


def concat(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    L = l.layer
    tis, to = _types(dg, l)
    n = len(tis)
    if n > CONCAT_MAX_INPUTS:
        raise UnsupportedLayer(f"{l.name}: the RTL concatenation takes at most {CONCAT_MAX_INPUTS} streams, this "
                               f"Concat has {n}")
    params = [("N", n), ("SIMD", L.simd), ("OB", to.bits)]
    params += [(f"W{i}", c // L.simd) for i, c in enumerate(L.channels)]
    params += [(f"IB{i}", t.bits) for i, t in enumerate(tis)] + [(f"IS{i}", int(t.signed)) for i, t in enumerate(tis)]
    return Instance("qp_concat", params, ports=[f"in{i}" for i in range(n)])


INSTANCES: Mapping[str, Callable[[DataflowGraph, HwLayer, str], Instance]] = MappingProxyType({
    "mvtu": mvtu, "vvau": vvau, "window_max": window_max, "swg": swg, "maxpool": maxpool, "threshold": threshold,
    "add": add, "channelwise": channelwise, "global_sum": global_sum, "concat": concat,
})


def instance(dg: DataflowGraph, l: HwLayer, ident: str) -> Instance:
    fn = INSTANCES.get(l.kind)
    if fn is None:
        raise UnsupportedLayer(f"{l.name}: the RTL backend has no module for hardware layer kind {l.kind!r} yet "
                               f"(supported: {', '.join(sorted(INSTANCES))})")
    return fn(dg, l, ident)
