"""The streams of an HLS top function: AXI-Stream ports for the partition's inputs and outputs, one
``hls::stream`` per layer input (depth from the FIFO sizing), 2-way duplicators at forks and data-width converters
where a producer's word differs from its consumer's."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qpass.hw.dataflow_graph import DataflowGraph, c_ident
from qpass.hw.inttype import IntType


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
    axis: bool = False  # an output port of AXI-Stream beats with TLAST (qpass::axis_t), else plain words

    @property
    def c_type(self) -> str:
        """The C++ type of one stream word / beat."""
        return f"qpass::axis_t<{self.word_bits}>" if self.axis else f"ap_uint<{self.word_bits}>"

    @property
    def words(self) -> int:
        return self.elems // self.fold

    @property
    def word_bits(self) -> int:
        return self.fold * self.dtype.bits

    def meta(self) -> dict:
        return {"name": self.name, "tensor": self.tensor, "shape": list(self.shape), "elems": self.elems,
                "fold": self.fold, "words": self.words, "bits": self.dtype.bits, "signed": self.dtype.signed,
                "word_bits": self.word_bits, "tlast": self.axis}


@dataclass
class Var:
    name: str
    bits: int
    depth: int | None  # None: a top-level port


class Wiring:
    """Stream variables of one partition's top function: ``reads[(layer, port)]`` and ``writes[layer]`` name the
    variable each layer reads and writes; ``plumb[stream]`` holds the duplicator / width-converter calls that go
    right after the stream's producer. ``etypes``: the element type each stream is stored with
    (``binary.element_types``); ``reps``: the frame count argument of every call. An output port is written by an
    ``axis_out`` stage (TLAST on each frame's last word) from the stream variable ``port_data[port]``."""

    def __init__(self, dg: DataflowGraph, depths: dict, etypes: dict | None = None, reps: str = "1"):
        self.dg, self.depths = dg, depths
        self.etypes = etypes if etypes is not None else {n: s.dtype for n, s in dg.streams.items()}
        self.reps = reps
        self.port_data: dict[str, str] = {}
        self.vars: dict[str, Var] = {}
        self.taken: set[str] = set()
        self.plumb: dict[str, list[str]] = {}
        self._cur: list[str] = []
        self.reads: dict[tuple[str, int], str] = {}  # (layer, port) -> var
        self.writes: dict[str, str] = {}  # layer -> var
        self.max_bits = 0

    def var(self, base: str, bits: int, depth: int | None = 2) -> str:
        name = c_ident(base, self.taken)
        self.vars[name] = Var(name, bits, depth)
        self.max_bits = max(self.max_bits, bits)
        return name

    def _port(self, p: PortSpec) -> PortSpec:
        self.vars[p.name] = Var(p.name, p.word_bits, None)
        self.taken.add(p.name)
        return p

    def wire(self) -> tuple[list[PortSpec], list[PortSpec]]:
        """Declare the ports and every stream variable; returns (input ports, output ports)."""
        dg = self.dg
        ins, outs, in_ports = [], [], {}
        for k, sname in enumerate(dg.inputs):
            s = dg.streams[sname]
            fold = None
            for lname, port in s.consumers:
                fold = dg.layer(lname).in_fold[port]
                break
            p = self._port(PortSpec(f"in{k}", s.tensor, s.shape, s.elems, fold or 1, s.dtype, s.order))
            ins.append(p)
            in_ports[sname] = p
        for k, (tensor, sname) in enumerate(dg.outputs):
            s = dg.streams[sname]
            prod = dg.layer(s.producer)
            shape = dg.output_shapes.get(tensor, s.shape)  # a folded layout op changes the shape, not the stream
            p = self._port(PortSpec(f"out{k}", tensor, shape, s.elems, prod.out_fold, s.dtype,
                                    dg.output_orders[tensor], axis=True))
            self.port_data[p.name] = self.var(f"{p.name}_data", p.word_bits, 2)
            outs.append(p)
        out_by_stream = {}
        for p, (tensor, sname) in zip(outs, dg.outputs):
            out_by_stream.setdefault(sname, []).append(p)
        for sname, s in dg.streams.items():
            self._wire_stream(sname, s, in_ports, out_by_stream)
        return ins, outs

    def _wire_stream(self, sname, s, in_ports: dict, out_by_stream: dict) -> None:
        dg = self.dg
        self._cur = self.plumb.setdefault(sname, [])
        eb = self.etypes[sname].bits
        src_fold = in_ports[sname].fold if s.producer is None else dg.layer(s.producer).out_fold
        readers = [(l, p, dg.layer(l).in_fold[p]) for l, p in s.consumers]
        targets = [("layer", l, p, f) for l, p, f in readers] + \
            [("port", self.port_data[o.name], 0, o.fold) for o in out_by_stream.get(sname, [])]
        if not targets:
            if s.producer is not None:  # an unread output: drain it (should not happen)
                raise ValueError(f"stream {sname} has no reader")
            return
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
            return
        else:
            src = self.var(f"{sname}_out", eb * src_fold, 2)
            self.writes[s.producer] = src
        # fork
        branches = [src] if len(targets) == 1 else self._duplicate(src, eb * src_fold, words, targets, s, src_fold)
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

    def _depth(self, s, layer, port, src_fold, fold) -> int:
        """The FIFO depth the stream sizing asks for (in producer words), in words of this variable (behind a
        width converter: the same elements in the consumer's words); no padding to a power of two."""
        d = int(self.depths.get((s.producer or "<input>", layer, port), 2))
        if fold != src_fold:
            d = math.ceil(d * src_fold / fold)
        return max(2, d)

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
            self._cur.append(f"qpass::duplicate<{bits}, {words}>({cur}, {a}, {b}, {self.reps});")
            outs.append(a)
            cur = b
        return outs

    def _dwc(self, src, a, dest, b, eb, elems):
        if b % a == 0:
            self._cur.append(f"qpass::dwc_up<{a}, {b}, {eb}, {elems // a}>({src}, {dest}, {self.reps});")
        elif a % b == 0:
            self._cur.append(f"qpass::dwc_down<{a}, {b}, {eb}, {elems // a}>({src}, {dest}, {self.reps});")
        else:
            g = math.gcd(a, b)
            mid = self.var(f"{dest}_dwc", g * eb, 2)
            self._cur.append(f"qpass::dwc_down<{a}, {g}, {eb}, {elems // a}>({src}, {mid}, {self.reps});")
            self._cur.append(f"qpass::dwc_up<{g}, {b}, {eb}, {elems // g}>({mid}, {dest}, {self.reps});")
