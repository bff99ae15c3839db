"""Verilator run of the digits designs (and CNV-W1A1) over their eval frames: one line per design as in
bench/results/rtl_sim_digits.txt (frames, mismatches, steady-state cycles/frame vs the folding model, latency, FIFO
occupancy vs depth), with the wall time, load average and CPU flags.

    python bench/rtl_sim_digits.py digits_cnn:8 [digits_mlp:1 ... cnv] [--frames N] [--harness cocotb|cpp]
                                   [--cross N] [--out DIR]

``--harness``: the generated cocotb testbench (default) or the plain Verilator C++ main over the same testbench
wrapper. ``--cross N``: also run both harnesses on the first N frames and check that they saw the same output words
at the same cycles (files sim_out/*.out.hex, *.end.hex byte-identical). ``cnv[:runtime|const]``: the CNV-W1A1
topology (bench/cnv_w1a1.rtl_export; runtime-writable weights as BNN-PYNQ unless :const) on --frames random images
(default 32).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _outputs(pdir: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted((pdir / "sim_out").glob("*.hex")) if ".in." not in f.name}


def cross_check(rtl, p, frames: int) -> str:
    """Both harnesses on the same first ``frames`` frames: identical output words and frame-end cycles?"""
    seen = {}
    for h in ("cocotb", "cpp"):
        s = rtl.simulate(p, frames, harness=h)
        seen[h] = (_outputs(Path(p.project_dir)), s.cycles_per_frame, s.latency, s.mismatches)
    same = seen["cocotb"] == seen["cpp"]
    return (f"cocotb vs cpp harness on {frames} frames: {'identical' if same else 'DIFFER'} output words and "
            f"frame-end cycles ({seen['cpp'][1]} cycles/frame, latency {seen['cpp'][2]})")


def export(b, d: str, out: Path, frames: int | None):
    if d.startswith("cnv"):
        mode = d.split(":")[1] if ":" in d else "runtime"
        where = out / d.replace(":", "_")  # no ':' in the build folder: make reads it as a target pattern
        where.mkdir(parents=True, exist_ok=True)
        return _load("cnv_w1a1").rtl_export("full", frames or 32, mode, where), f"CNV-W1A1 ({mode} weights)"
    name, bits = d.split(":")
    return b.digits_export(name, bits, out, True), f"{name} {bits}-bit"


def main() -> int:
    from qpass.backends import rtl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("designs", nargs="+", help="NAME:BITS (digits_mlp, digits_cnn, digits_rescnn) or cnv[:runtime|const]")
    ap.add_argument("--frames", type=int, default=None, help="first N eval frames (default: all)")
    ap.add_argument("--harness", choices=("cocotb", "cpp"), default="cocotb")
    ap.add_argument("--cross", type=int, default=0, help="also compare both harnesses on the first N frames")
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=float, default=7200.0)
    a = ap.parse_args()
    b = _load("rtl_vs_yosys")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        for d in a.designs:
            t0 = time.perf_counter()
            ex, label = export(b, d, out, a.frames)
            for p in ex.partitions:
                s = rtl.simulate(p, a.frames, timeout=a.timeout, harness=a.harness)
                print(f"{label} ({a.harness}): {s.summary()} [{time.perf_counter() - t0:.0f} s with the export and "
                      f"build; load {os.getloadavg()[0]:.1f}; {b.cpu_flags()}]", flush=True)
                bad += int(not s.ok or abs(s.ratio - 1) > 0.05)
                if a.cross:
                    print(f"  {cross_check(rtl, p, a.cross)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
