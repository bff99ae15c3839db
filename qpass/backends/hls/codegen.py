"""C++ code generation for one folded dataflow partition: the top function, its header and its constant tables.

- ``<top>.cpp`` / ``<top>.h``: the top function under ``#pragma HLS DATAFLOW``: one call per hardware layer of
  ``qpass_dataflow.h`` (written by the layer's emitter, ``qpass.backends.hls.emit``), ``hls::stream`` variables
  with ``#pragma HLS STREAM depth=`` from the FIFO sizing, data-width converters and stream duplicators
  (``wiring``), AXI-Stream ports (one word of FOLD packed elements per beat) for the partition's inputs and
  outputs, the outputs with TLAST on each frame's last beat. ``control`` (``CONTROLS``): ``ap_ctrl_hs`` (one
  frame per call, start/done handshake), ``ap_ctrl_none`` (free-running: no control port, the dataflow region
  restarts itself as data arrives) or ``frame-loop`` (an AXI-Lite argument ``frames``: that many frames per
  call, every layer looping over them as finn-hlslib's ``reps``).
  Stream words wider than ``AP_INT_MAX_W_LIMIT`` bits (Vitis HLS' ap_int limit) are refused, naming the layer.
- ``params.h``: weights (``PackedRom``, finn-hlslib layout: rows interleaved across PEs, SIMD elements per word)
  and thresholds (``ThresholdActivation``, [PE][NF][steps]) as constant-initialised C arrays, or, for layers in
  ``mem_mode`` runtime, as writable tables the host loads (``_memory_write``): BNN-PYNQ's structure, the top
  function either writes one limb of one memory (``mem_load`` set; AXI-Lite arguments ``mem_id``, ``mem_row``,
  ``mem_col``, ``mem_idx``, ``mem_value``) or runs the dataflow region (a function of its own).

The rest of the project (testbench, Makefile, Tcl, metadata) comes from ``project_files``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from qpass.backends.hls.binary import element_types
from qpass.backends.hls.emit import EMITTERS, Emission
from qpass.backends.hls.wiring import PortSpec, Wiring
from qpass.errors import QpassError
from qpass.hw.dataflow_graph import DataflowGraph

CONTROLS = ("ap_ctrl_hs", "ap_ctrl_none", "frame-loop")
AP_INT_MAX_W_LIMIT = 4096
#: the load path's arguments of a top function with runtime-writable memories
MEMORY_ARGS = (("bool", "mem_load"), ("unsigned", "mem_id"), ("unsigned", "mem_row"), ("unsigned", "mem_col"),
               ("unsigned", "mem_idx"), ("ap_uint<64>", "mem_value"))


@dataclass
class Project:
    top: str
    inputs: list[PortSpec]
    outputs: list[PortSpec]
    files: dict[str, str] = field(default_factory=dict)
    max_word_bits: int = 0
    control: str = "ap_ctrl_hs"
    memories: list = field(default_factory=list)  # RuntimeMemory, in memory-id order

    @property
    def call_args(self) -> tuple[str, ...]:
        """Arguments after the ports in a call of the top function for one frame (the frame-loop's count; with
        runtime memories, the load path idle)."""
        return (("1",) if self.control == "frame-loop" else ()) + (("false", "0", "0", "0", "0", "0")
                                                                  if self.memories else ())


def _emit_layers(dg: DataflowGraph, w: Wiring, outs: list[PortSpec]) -> Emission:
    """Layer calls in topological order, each followed by the plumbing of its output stream (the C simulation
    runs the dataflow region's calls one after the other), then the TLAST stages of the output ports."""
    e = Emission(dg, w.reps, w.etypes)
    for sname in dg.inputs:
        e.body.extend(w.plumb.get(sname, []))
    for l in dg.layers:
        ins = [w.reads[(l.name, p)] for p in range(len(l.inputs))]
        EMITTERS[l.kind](l, ins, w.writes[l.name], e)
        e.body.extend(w.plumb.get(l.output, []))
    for p in outs:
        e.body.append(f"// {p.name}: AXI-Stream beats, TLAST on the last of each frame's {p.words} words")
        e.body.append(f"qpass::axis_out<{p.word_bits}, {p.words}>({w.port_data[p.name]}, {p.name}, {w.reps});")
    return e


def check_word_widths(dg: DataflowGraph, etypes: dict, ports: list[PortSpec]) -> int:
    """The widest stream word in bits; a QpassError naming the layer when one exceeds AP_INT_MAX_W_LIMIT."""
    widest = max([p.word_bits for p in ports] + [0])
    for l in dg.layers:
        words = [(f * etypes[s].bits, "input") for f, s in zip(l.in_fold, l.inputs)]
        words.append((l.out_fold * etypes[l.output].bits, "output"))
        for bits, what in words:
            if bits > AP_INT_MAX_W_LIMIT:
                raise QpassError(f"layer {l.name}: its {bits}-bit {what} stream word exceeds AP_INT_MAX_W "
                                 f"{AP_INT_MAX_W_LIMIT} (Vitis HLS' ap_int limit); fold it with a smaller PE/SIMD")
            widest = max(widest, bits)
    for p in ports:
        if p.word_bits > AP_INT_MAX_W_LIMIT:
            raise QpassError(f"port {p.name} ({p.tensor}): its {p.word_bits}-bit word exceeds AP_INT_MAX_W "
                             f"{AP_INT_MAX_W_LIMIT} (Vitis HLS' ap_int limit); fold it with a smaller PE/SIMD")
    return widest


def _header(dg: DataflowGraph, top: str, ports: list[PortSpec], sig: str, max_bits: int) -> str:
    guard = f"{top.upper()}_H"
    apmax = ""
    if max_bits > 1024:
        w = 1 << (max_bits - 1).bit_length()
        apmax = f"#ifndef AP_INT_MAX_W\n#define AP_INT_MAX_W {w}\n#endif\n"
    port_doc = "\n".join(
        f"//   {p.name}: tensor {p.tensor!r}, {p.elems} x {p.dtype.name} per frame, {p.fold} per {p.word_bits}-bit "
        f"word ({p.words} words)" for p in ports)
    return f"""// Generated by qpass: dataflow partition {dg.name}.
{port_doc}
#ifndef {guard}
#define {guard}
{apmax}#include <stdint.h>
#include <ap_int.h>
#include <hls_stream.h>

#include "qpass_dataflow.h"

{"".join(f"#define {top.upper()}_{p.name.upper()}_FOLD {p.fold}{chr(10)}" for p in ports)}
void {top}({sig});

#endif
"""


def _control_pragmas(control: str) -> str:
    if control == "frame-loop":
        return "#pragma HLS INTERFACE s_axilite port=frames\n#pragma HLS INTERFACE s_axilite port=return"
    return f"#pragma HLS INTERFACE {control} port=return"


def _memory_write(top: str, memories: list) -> str:
    """The load path: one limb of one runtime memory per call, indices checked against the table."""
    cases = []
    for i, m in enumerate(memories):
        r, c, k = m.shape
        val = "{0}(mem_value)".format(m.ctype) if m.ctype.startswith("ap_") else f"({m.ctype})mem_value.to_uint64()"
        cases.append(f"  case {i}:  // {m.layer} {m.what}: [{r}][{c}][{k}] x {m.ctype}\n"
                     f"    if (mem_row < {r} && mem_col < {c} && mem_idx < {k}) {m.var}[mem_row][mem_col][mem_idx] = "
                     f"{val};\n    break;")
    args = ", ".join(f"const {t} {n}" for t, n in MEMORY_ARGS[1:])
    return (f"// runtime-writable memories (memories.json): mem_value into limb mem_idx of word mem_col of PE row "
            f"mem_row of memory mem_id\nstatic void {top}_memory_write({args}) {{\n  switch (mem_id) {{\n"
            + "\n".join(cases) + "\n  default:\n    break;\n  }\n}\n\n")


def _top_cpp(dg: DataflowGraph, top: str, ports: list[PortSpec], sig: str, w: Wiring, e: Emission,
             control: str) -> str:
    decls = []
    for v in w.vars.values():
        if v.depth is None:
            continue
        decls.append(f'  hls::stream<ap_uint<{v.bits}> > {v.name}("{v.name}");')
        decls.append(f"#pragma HLS STREAM variable={v.name} depth={v.depth}")
    pragmas = "\n".join(f"#pragma HLS INTERFACE axis port={p.name}" for p in ports)
    body = "\n".join("  " + line for line in e.body)
    per_call = "frames per call: the argument frames" if control == "frame-loop" else "one frame per call"
    head = f"""// Generated by qpass: top function of dataflow partition {dg.name} ({control}, {per_call}).
#include "{top}.h"
#include "qpass_dataflow.h"
#include "params.h"

{"".join(e.extra_funcs)}"""
    if not e.memories:
        return f"""{head}void {top}({sig}) {{
{pragmas}
{_control_pragmas(control)}
#pragma HLS DATAFLOW
{chr(10).join(e.partition_pragmas)}
{chr(10).join(decls)}

{body}
}}
"""
    names = [p.name for p in ports] + (["frames"] if control == "frame-loop" else [])
    inner = sig.split(", const bool mem_load")[0]
    axil = "\n".join(f"#pragma HLS INTERFACE s_axilite port={n}" for _, n in MEMORY_ARGS)
    return f"""{head}{_memory_write(top, e.memories)}// the dataflow region (the layers)
static void {top}_dataflow({inner}) {{
#pragma HLS DATAFLOW
{chr(10).join(decls)}

{body}
}}

void {top}({sig}) {{
{pragmas}
{axil}
{_control_pragmas(control)}
{chr(10).join(e.partition_pragmas)}
  if (mem_load) {{
    {top}_memory_write({", ".join(n for _, n in MEMORY_ARGS[1:])});
  }} else {{
    {top}_dataflow({", ".join(names)});
  }}
}}
"""


def generate(dg: DataflowGraph, depths: dict, top: str, control: str = "ap_ctrl_hs") -> Project:
    """The C++ sources of one folded partition (``dg`` after ``qpass.hw.design.fold``)."""
    if control not in CONTROLS:
        raise QpassError(f"HLS control {control!r} is not one of {', '.join(CONTROLS)}")
    etypes = element_types(dg)
    w = Wiring(dg, depths, etypes, "frames" if control == "frame-loop" else "1")
    ins, outs = w.wire()
    ports = ins + outs
    max_bits = max(w.max_bits, check_word_widths(dg, etypes, ports))
    e = _emit_layers(dg, w, outs)
    sig = ", ".join(f"hls::stream<{p.c_type} >& {p.name}" for p in ports)
    if control == "frame-loop":
        sig += ", const unsigned frames"
    if e.memories:
        if control == "ap_ctrl_none":
            raise QpassError("runtime-writable memories need a top function that is called (the load path is a "
                             "call): use --hls-control ap_ctrl_hs or frame-loop, or --weights-mode const")
        sig += "".join(f", const {t} {n}" for t, n in MEMORY_ARGS)
    params = f"""// Generated by qpass: weights and thresholds of dataflow partition {dg.name} (constant tables{
        ", runtime-writable ones loaded through the top function" if e.memories else ""}).
#ifndef {top.upper()}_PARAMS_H
#define {top.upper()}_PARAMS_H
#include <stdint.h>
#include "qpass_dataflow.h"

{chr(10).join(e.params)}
#endif
"""
    proj = Project(top, ins, outs, max_word_bits=max_bits, control=control, memories=e.memories)
    proj.files = {f"{top}.h": _header(dg, top, ports, sig, max_bits),
                  f"{top}.cpp": _top_cpp(dg, top, ports, sig, w, e, control), "params.h": params}
    return proj
