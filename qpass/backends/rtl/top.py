"""The top module of one partition: AXI-Stream ports (TDATA/TVALID/TREADY/TLAST, one word of FOLD packed
elements per beat), one library-module instance per hardware layer, and per stream edge a fork (several readers),
a FIFO of the computed depth (in producer words) and a data-width converter where producer and consumer words
differ. With runtime-writable memories (layers in mem_mode runtime) the top has one write port, ``mem_we``,
``mem_sel`` (memory id, ``TopModule.memories``), ``mem_addr`` (word) and ``mem_wdata`` (the word, low bits), that
writes one word of one memory per cycle before streaming."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qpass.backends.hls.wiring import PortSpec as Port
from qpass.hw.dataflow_graph import DataflowGraph, c_ident
from .instances import Instance, instance


@dataclass
class Fifo:
    name: str  # instance name
    width: int
    depth: int
    edge: tuple[str, str, int]  # (producer or <input>, consumer or output port, port)


@dataclass
class TopModule:
    name: str
    inputs: list[Port]
    outputs: list[Port]
    text: str
    mems: dict[str, str]
    fifos: list[Fifo]
    idents: dict[str, str]  # layer name -> instance name
    instances: dict[str, Instance] = field(default_factory=dict)
    #: runtime-writable memories, by id: {"id", "layer", "instance", "port", "width", "file", "words"}
    memories: list[dict] = field(default_factory=list)


class _Net:
    def __init__(self):
        self.decls: list[str] = []
        self.body: list[str] = []
        self.taken: set[str] = set()
        self.fifos: list[Fifo] = []
        self.memories: list[dict] = []

    def mem_ports(self, layer: str, ident: str, inst: Instance) -> list[tuple[str, str]]:
        """The write-port connections of a module with memories: the top's write port decoded by memory id, or
        tied off."""
        conns = []
        for pfx in ("wmem", "tmem"):
            if pfx not in inst.writable:
                conns += [(f"{pfx}_we", "1'b0"), (f"{pfx}_addr", "32'd0"), (f"{pfx}_data", "'0")]
                continue
            bits, fname = inst.writable[pfx]
            k = len(self.memories)
            words = inst.mems[fname].count("\n")
            self.memories.append({"id": k, "layer": layer, "instance": f"u_{ident}", "port": pfx, "width": bits,
                                  "file": fname, "words": words})
            conns += [(f"{pfx}_we", f"mem_we && mem_sel == 16'd{k}"), (f"{pfx}_addr", "mem_addr"),
                      (f"{pfx}_data", f"mem_wdata[{bits - 1}:0]")]
        return conns

    def stream(self, base: str, bits: int) -> str:
        n = c_ident(base, self.taken)
        self.decls.append(f"  logic [{bits - 1}:0] {n}_data;\n  logic {n}_valid, {n}_ready;")
        return n

    def connect(self, a: str, b: str) -> None:
        """a (a source endpoint) drives b (a sink endpoint)."""
        self.body.append(f"  assign {b}_data = {a}_data;\n  assign {b}_valid = {a}_valid;\n"
                         f"  assign {a}_ready = {b}_ready;")


def _inst(module: str, name: str, params: list[tuple[str, object]], ports: list[tuple[str, str]]) -> str:
    ps = ",\n".join(f"    .{k}({v})" for k, v in params)
    conns = ",\n".join(f"    .{k}({v})" for k, v in ports)
    return f"  {module} #(\n{ps}\n  ) {name} (\n{conns}\n  );"


def _sio(prefix: str, ep: str) -> list[tuple[str, str]]:
    return [(f"{prefix}_data", f"{ep}_data"), (f"{prefix}_valid", f"{ep}_valid"), (f"{prefix}_ready", f"{ep}_ready")]


def _clk() -> list[tuple[str, str]]:
    return [("clk", "clk"), ("rst", "rst")]


def _fifo(net: _Net, src: str, dst: str, w: int, depth: int, edge) -> None:
    name = c_ident(f"fifo_{dst}", net.taken)
    net.fifos.append(Fifo(name, w, depth, edge))
    net.body.append(_inst("qp_fifo", name, [("W", w), ("D", depth)], _clk() + _sio("in", src) + _sio("out", dst)))


def _dwc(net: _Net, src: str, dst: str, eb: int, a: int, b: int) -> None:
    """a-element words from src -> b-element words to dst; when neither divides the other, up to the lcm then down
    (through the gcd the middle stream carries gcd(a, b) elements a cycle: 16 -> 4 -> 12 ran a 12-lane consumer at a
    third of its rate, the 4-bit residual CNN at 2304 cycles/frame instead of 768)."""
    if b % a == 0 or a % b == 0:
        mod = "qp_dwc_up" if b > a else "qp_dwc_down"
        net.body.append(_inst(mod, c_ident(f"dwc_{dst}", net.taken), [("IN", a), ("OUT", b), ("EB", eb)],
                              _clk() + _sio("in", src) + _sio("out", dst)))
        return
    m = int(np.lcm(a, b))
    mid = net.stream(f"{dst}_mid", eb * m)
    _dwc(net, src, mid, eb, a, m)
    _dwc(net, mid, dst, eb, m, b)


def _edge(net: _Net, src: str, dst: str, eb: int, src_fold: int, dst_fold: int, depth: int, edge) -> None:
    """src endpoint (src_fold elements per word) -> FIFO of ``depth`` producer words -> dst endpoint, with a width
    converter on the narrow side of the FIFO (so neither side waits for it: an up-converter fills the FIFO at
    the producer's rate, a down-converter drains it at the consumer's)."""
    if src_fold == dst_fold:
        _fifo(net, src, dst, eb * src_fold, depth, edge)
        return
    mid = net.stream(f"{dst}_w", eb * (dst_fold if dst_fold > src_fold else src_fold))
    if dst_fold > src_fold:  # FIFO in consumer words after the up-converter
        _dwc(net, src, mid, eb, src_fold, dst_fold)
        _fifo(net, mid, dst, eb * dst_fold, max(2, -(-depth * src_fold // dst_fold) + 1), edge)
    else:
        _fifo(net, src, mid, eb * src_fold, depth, edge)
        _dwc(net, mid, dst, eb, src_fold, dst_fold)


def _ports(dg: DataflowGraph) -> tuple[list[Port], list[Port]]:
    ins, outs = [], []
    for k, sname in enumerate(dg.inputs):
        s = dg.streams[sname]
        fold = next((dg.layer(l).in_fold[p] for l, p in s.consumers), 1)
        ins.append(Port(f"in{k}", s.tensor, s.shape, s.elems, fold, s.dtype, s.order))
    for k, (tensor, sname) in enumerate(dg.outputs):
        s = dg.streams[sname]
        outs.append(Port(f"out{k}", tensor, s.shape, s.elems, dg.layer(s.producer).out_fold, s.dtype,
                         dg.output_orders[tensor]))
    return ins, outs


def _layers(net: _Net, dg: DataflowGraph, idents: dict) -> tuple[dict, dict, dict]:
    """One library-module instance per layer; (instances, $readmemh files, stream endpoints: (layer, input port)
    and (layer, -1) for its output)."""
    insts, mems, eps = {}, {}, {}
    for l in dg.layers:
        ident = idents[l.name]
        inst = instance(dg, l, ident)
        insts[l.name] = inst
        mems.update(inst.mems)
        in_eps = [net.stream(f"{ident}_in{k}", dg.streams[s].dtype.bits * l.in_fold[k]) for k, s in enumerate(l.inputs)]
        out_ep = net.stream(f"{ident}_out", dg.streams[l.output].dtype.bits * l.out_fold)
        eps.update({(l.name, k): ep for k, ep in enumerate(in_eps)})
        eps[(l.name, -1)] = out_ep
        conns = _clk() + [c for pfx, ep in zip(inst.ports, in_eps) for c in _sio(pfx, ep)] + _sio("out", out_ep)
        if inst.mem_ports:
            conns += net.mem_ports(l.name, ident, inst)
        net.body.append(f"  // {l.name} ({l.layer.kind}, PE={l.layer.fold[0]}, SIMD={l.layer.fold[1]}, "
                        f"{l.layer.cycles()} cycles/frame): {', '.join(l.nodes)}")
        net.body.append(_inst(inst.module, f"u_{ident}", inst.params, conns))
    return insts, mems, eps


def _axis_ports(net: _Net, dg: DataflowGraph, ins: list[Port], outs: list[Port]) -> dict:
    """The AXI-Stream ports' glue; returns {stream: [(output port, endpoint)]}."""
    for p in ins:
        net.taken.add(p.name)
        net.decls.append(f"  logic [{p.word_bits - 1}:0] {p.name}_data;\n  logic {p.name}_valid, {p.name}_ready;")
        net.body.append(f"  assign {p.name}_data = {p.name}_tdata;\n  assign {p.name}_valid = {p.name}_tvalid;\n"
                        f"  assign {p.name}_tready = {p.name}_ready;")
    out_eps = {}
    for p in outs:
        ep = net.stream(f"{p.name}_s", p.word_bits)
        out_eps.setdefault(dict(dg.outputs)[p.tensor], []).append((p, ep))
        net.body.append(f"  assign {p.name}_tdata = {ep}_data;\n  assign {p.name}_tvalid = {ep}_valid;\n"
                        f"  assign {ep}_ready = {p.name}_tready;")
        net.body.append(f"  qp_tlast #(.WORDS({p.words})) u_{p.name}_tlast (.clk(clk), .rst(rst), "
                        f".fire({p.name}_tvalid && {p.name}_tready), .last({p.name}_tlast));")
    return out_eps


def _streams(net: _Net, dg: DataflowGraph, depths: dict, ins: list[Port], eps: dict, out_eps: dict) -> None:
    """Every stream: its producer to each reader through a fork (several readers), a FIFO and a width converter."""
    for sname, s in dg.streams.items():
        eb = s.dtype.bits
        if s.producer is None:
            port = ins[dg.inputs.index(sname)]
            src, src_fold, prod = port.name, port.fold, "<input>"
        else:
            src, src_fold, prod = eps[(s.producer, -1)], dg.layer(s.producer).out_fold, s.producer
        targets = [(eps[(l, k)], dg.layer(l).in_fold[k], int(depths.get((prod, l, k), 2)), (prod, l, k))
                   for l, k in s.consumers]
        targets += [(ep, p.fold, 2, (prod, p.name, 0)) for p, ep in out_eps.get(sname, [])]
        if len(targets) == 1:
            dst, fold, d, edge = targets[0]
            _edge(net, src, dst, eb, src_fold, fold, max(2, d), edge)
            continue
        n, w = len(targets), eb * src_fold
        fk = c_ident(f"fork_{src}", net.taken)
        net.decls.append(f"  logic [{n * w - 1}:0] {fk}_data;\n  logic [{n - 1}:0] {fk}_valid, {fk}_ready;")
        net.body.append(_inst("qp_fork", f"u_{fk}", [("W", w), ("N", n)], _sio("in", src) + _sio("out", fk)))
        for i, (dst, fold, d, edge) in enumerate(targets):
            br = net.stream(f"{fk}_{i}", w)
            net.body.append(f"  assign {br}_data = {fk}_data[{i * w} +: {w}];\n  assign {br}_valid = {fk}_valid[{i}];\n"
                            f"  assign {fk}_ready[{i}] = {br}_ready;")
            _edge(net, br, dst, eb, src_fold, fold, max(2, d), edge)


def _module_text(dg: DataflowGraph, name: str, net: _Net, ins: list[Port], outs: list[Port]) -> str:
    ports = ["  input  logic ap_clk", "  input  logic ap_rst_n"]
    for p in ins:
        ports += [f"  input  logic [{p.word_bits - 1}:0] {p.name}_tdata", f"  input  logic {p.name}_tvalid",
                  f"  output logic {p.name}_tready", f"  input  logic {p.name}_tlast"]
    for p in outs:
        ports += [f"  output logic [{p.word_bits - 1}:0] {p.name}_tdata", f"  output logic {p.name}_tvalid",
                  f"  input  logic {p.name}_tready", f"  output logic {p.name}_tlast"]
    if net.memories:
        wmax = max(m["width"] for m in net.memories)
        ports += ["  input  logic mem_we", "  input  logic [15:0] mem_sel", "  input  logic [31:0] mem_addr",
                  f"  input  logic [{wmax - 1}:0] mem_wdata"]
    doc = "\n".join(f"//   {p.name}: tensor {p.tensor!r}, {p.elems} x {p.dtype.name} per frame, {p.fold} per "
                    f"{p.word_bits}-bit word ({p.words} words, TLAST on the last)" for p in ins + outs)
    body = "\n".join(x for x in net.body if x)
    sep = ",\n"
    return f"""// Generated by qpass: dataflow partition {dg.name} as a free-running AXI-Stream pipeline.
{doc}
// Files: the layer library (qpass_*.sv) and the weight / threshold ROM images (*.mem, read by $readmemh{
    "; the runtime-writable memories' initial words, written through mem_we/mem_sel/mem_addr/mem_wdata" if net.memories
    else ""}).
module {name} (
{sep.join(ports)}
);
  wire clk = ap_clk;
  logic rst;
  always_ff @(posedge clk) rst <= !ap_rst_n;
{chr(10).join(net.decls)}

{body}
endmodule
"""


def generate(dg: DataflowGraph, depths: dict, name: str) -> TopModule:
    """The top module of a folded partition (``dg`` after ``qpass.hw.design.fold``), FIFO depths from
    ``qpass.hw.design.fifo_depths``."""
    net = _Net()
    net.taken |= {"clk", "rst", "ap_clk", "ap_rst_n"}
    ins, outs = _ports(dg)
    idents = {l.name: c_ident(l.name, net.taken) for l in dg.layers}
    insts, mems, eps = _layers(net, dg, idents)
    out_eps = _axis_ports(net, dg, ins, outs)
    _streams(net, dg, depths, ins, eps, out_eps)
    return TopModule(name, ins, outs, _module_text(dg, name, net, ins, outs), mems, net.fifos, idents, insts,
                     net.memories)
