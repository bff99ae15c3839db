"""Verilator + cocotb run of the digits designs (and CNV-W1A1) over their eval frames: one line per design as in
bench/results/rtl_sim_digits.txt (frames, mismatches, steady-state cycles/frame vs the folding model, latency, FIFO
occupancy vs depth), with the wall time, load average and CPU flags.

    python bench/rtl_sim_digits.py digits_cnn:8 [digits_mlp:1 ...] [--frames N] [--out DIR]
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


def _bench():
    spec = importlib.util.spec_from_file_location("rtl_vs_yosys", ROOT / "bench" / "rtl_vs_yosys.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    from qpass.backends import rtl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("designs", nargs="+", help="NAME:BITS (digits_mlp, digits_cnn, digits_rescnn)")
    ap.add_argument("--frames", type=int, default=None, help="first N eval frames (default: all)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=float, default=7200.0)
    a = ap.parse_args()
    b = _bench()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        for d in a.designs:
            name, bits = d.split(":")
            t0 = time.perf_counter()
            ex = b.digits_export(name, bits, out, True)
            for p in ex.partitions:
                s = rtl.simulate(p, a.frames, timeout=a.timeout)
                print(f"{name} {bits}-bit: {s.summary()} [{time.perf_counter() - t0:.0f} s; load "
                      f"{os.getloadavg()[0]:.1f}; {b.cpu_flags()}]", flush=True)
                bad += int(not s.ok)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
