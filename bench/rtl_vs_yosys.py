"""qpass' resource estimates against Yosys ``synth_xilinx`` (7-series) of the RTL backend's modules, per layer and
per partition, side by side from one run; with ``--sim`` also the Verilator cycles per frame against the folding
model's bottleneck. LUT counts LUT1..LUT6 plus LUT-RAM/SRL LUTs, BRAM in RAMB18 units, FF from yosys only (the cost
models have none).

    python bench/rtl_vs_yosys.py [--models digits_cnn] [--bits 4] [--target-fps 20000] [--sim] [--pnr] [--out DIR]

Prints the Yosys version, the machine's CPU flags of note and the wall time of every synthesis.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import qpass
from qpass.api import qonnx_model
from qpass.backends import rtl
from qpass.backends.rtl.synth import comparison_table, family, synth_partition, yosys_command
from qpass.pipeline.config import QuantConfig

ROOT = Path(__file__).resolve().parents[1]


def cpu_flags() -> str:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni") if f in flags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits_mlp", "digits_cnn"])
    ap.add_argument("--bits", nargs="+", default=["4"])
    ap.add_argument("--target-fps", type=float, default=None, help="fold for this frame rate (smaller designs)")
    ap.add_argument("--sim", action="store_true", help="also simulate with Verilator (cycles/frame vs model)")
    ap.add_argument("--pnr", action="store_true", help="also place and route on an ECP5 85k (nextpnr) for Fmax")
    ap.add_argument("--no-synth", action="store_true", help="skip synth_xilinx (with --sim / --pnr)")
    ap.add_argument("--out", default="out/bench_rtl")
    a = ap.parse_args()
    ver = subprocess.run(yosys_command() + ["-V"], capture_output=True, text=True).stdout.strip()
    print(f"{ver}; CPU flags: {cpu_flags()}")
    for name in a.models:
        for bits in a.bits:
            plan = QuantConfig(backend="rtl", bits=bits).resolve()
            res = qpass.optimize(ROOT / "models" / f"{name}.onnx", calib=ROOT / "models" / f"{name}.calib.npz",
                                 pipeline=plan.pipeline, disabled=plan.disabled)
            ex = rtl.export(qonnx_model(res), Path(a.out) / f"{name}_{bits}", target_fps=a.target_fps,
                            samples=ROOT / "models" / f"{name}.eval.npz" if a.sim else None)
            for p in ex.partitions:
                print(f"\n{name} at {bits} bits, partition {p.name}:")
                if not a.no_synth:
                    t0 = time.perf_counter()
                    nums = synth_partition(p, family(ex.device.part))
                    print(f"yosys synth_xilinx ({time.perf_counter() - t0:.0f} s):")
                    print(comparison_table(p, nums))
                if a.sim:
                    print(rtl.simulate(p, 40).summary())
                if a.pnr:
                    print(rtl.place_and_route(p).summary())


if __name__ == "__main__":
    main()
