"""qpass' resource estimates against Yosys ``synth_xilinx`` (7-series) of the RTL backend's modules, per layer, side
by side: the analytical models ('old': ``layer.resources()``, LUT/BRAM18/DSP) and the Yosys-calibrated formulas
('cal': ``qpass.hw.calibration``, LUT/FF/BRAM18/DSP) for the digits MLP, CNN and residual CNN at 1, 2, 4 and 8 bits
and (``--cnv``) a CNV-W1A1-topology net folded with FINN's fold_cnv_large, whose sum over layers is set against
BNN-PYNQ's published Pynq-Z1 build (26,072 LUT, 124 BRAM36). LUT counts LUT1..LUT6 plus LUT-RAM/SRL LUTs, BRAM in
RAMB18 units. Yosys numbers are cached by module, parameters and memory images (``--cache``; the committed cache
``bench/results/yosys_layers.json`` makes a rerun print the tables without Yosys). With ``--sim`` also the Verilator
cycles per frame against the folding model's bottleneck.

    python bench/rtl_vs_yosys.py [--models digits_mlp ...] [--bits 1 2 4 8] [--cnv] [--partition] [--sim] [--pnr]

Prints the Yosys version, the machine's CPU flags of note and the wall time of the synthesis.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

import qpass
from qpass.api import qonnx_model
from qpass.backends import rtl
from qpass.backends.rtl.synth import METRICS, SynthCache, comparison_table, family, layer_rows, synth_partition, \
    within, yosys_command
from qpass.hw.calibration import calibration_note
from qpass.pipeline.config import QuantConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "results" / "yosys_layers.json"


def cpu_flags() -> str:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni") if f in flags)


def digits_export(name: str, bits: str, out: Path, sim: bool):
    plan = QuantConfig(backend="rtl", bits=bits).resolve()
    res = qpass.optimize(ROOT / "models" / f"{name}.onnx", calib=ROOT / "models" / f"{name}.calib.npz",
                         pipeline=plan.pipeline, disabled=plan.disabled)
    return rtl.export(qonnx_model(res), out / f"{name}_{bits}",
                      samples=ROOT / "models" / f"{name}.eval.npz" if sim else None)


def cnv_export(out: Path):
    """The full CNV-W1A1 topology (bench/cnv_w1a1.py, random +-1 weights) folded with fold_cnv_large."""
    spec = importlib.util.spec_from_file_location("cnv_w1a1", ROOT / "bench" / "cnv_w1a1.py")
    cnv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cnv)
    d = out / "cnv_src"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(cnv.build_cnv("full"), d / "cnv.onnx")
    np.savez(d / "calib.npz", **cnv.samples("full", 16))
    (d / "pipe.yaml").write_text(cnv.PIPELINE)
    res = qpass.optimize(d / "cnv.onnx", calib=d / "calib.npz", pipeline=d / "pipe.yaml")
    folding = json.loads(cnv.folding_file(d / "folding.json").read_text())
    return rtl.export(qonnx_model(res), out / "cnv_w1a1", folding=folding)


def tally(rows: list[dict], score: dict) -> None:
    for r in rows:
        for k in METRICS:
            y = r["yosys"][k]
            for which in ("old", "cal", "mod"):
                est = (r[which] or {}).get(k)
                if est is None:
                    continue
                ok = score.setdefault((which, k), [0, 0, 0])
                ok[0] += 1
                ok[1] += abs(est - y) <= 0.15 * y or est == y
                ok[2] += within(est, y)


def cnv_vs_bnn_pynq(rows: list[dict]) -> str:
    lut = {w: sum((r[w] or r["old"]).get("lut", 0) for r in rows) for w in ("old", "cal")}
    bram = {w: sum((r[w] or r["old"]).get("bram18", 0) for r in rows) for w in ("old", "cal")}
    y_lut, y_bram = sum(r["yosys"]["lut"] for r in rows), sum(r["yosys"]["bram18"] for r in rows)
    lines = [f"{'CNV-W1A1, sum of layers':26s}{'old est':>10s}{'cal est':>10s}{'yosys':>10s}{'BNN-PYNQ':>10s}"
             f"{'yosys/BNN-PYNQ':>16s}",
             f"{'LUT':26s}{lut['old']:>10,d}{lut['cal']:>10,d}{y_lut:>10,d}{26_072:>10,d}{y_lut / 26_072:>16.2f}",
             f"{'BRAM36 (= BRAM18/2)':26s}{bram['old'] / 2:>10.1f}{bram['cal'] / 2:>10.1f}{y_bram / 2:>10.1f}"
             f"{124:>10d}{y_bram / 2 / 124:>16.2f}",
             "(qpass: layers only, no FIFOs/DMA/AXI shell, weights in ROMs; BNN-PYNQ: the whole Pynq-Z1 system with "
             "runtime-writable weight RAMs)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["digits_mlp", "digits_cnn", "digits_rescnn"])
    ap.add_argument("--bits", nargs="+", default=["1", "2", "4", "8"])
    ap.add_argument("--cnv", action="store_true", help="also the CNV-W1A1 topology with fold_cnv_large")
    ap.add_argument("--partition", action="store_true", help="also synthesize every whole partition (slow)")
    ap.add_argument("--sim", action="store_true", help="also simulate with Verilator (cycles/frame vs model)")
    ap.add_argument("--pnr", action="store_true", help="also place and route on an ECP5 85k (nextpnr) for Fmax")
    ap.add_argument("--cache", default=str(CACHE), help="JSON cache of Yosys numbers ('' for none)")
    ap.add_argument("--out", default=None, help="export folder (default: a temporary one)")
    ap.add_argument("--offline", action="store_true", help="no Yosys runs: layers missing from the cache are listed")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per Yosys run (a layer over it is listed)")
    a = ap.parse_args()
    ver = subprocess.run(yosys_command() + ["-V"], capture_output=True, text=True).stdout.strip()
    print(f"{ver}; CPU flags: {cpu_flags()}")
    print(calibration_note())
    cache = SynthCache(Path(a.cache), offline=a.offline) if a.cache else None
    score: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        jobs = [(f"{n} at {b} bits", lambda n=n, b=b: digits_export(n, b, out, a.sim)) for n in a.models
                for b in a.bits]
        if a.cnv:
            jobs.append(("CNV-W1A1 (fold_cnv_large)", lambda: cnv_export(out)))
        for title, make in jobs:
            ex = make()
            for p in ex.partitions:
                t0 = time.perf_counter()
                fails: list = []
                nums = synth_partition(p, family(ex.device.part), whole=a.partition, cache=cache,
                                       timeout=a.timeout, failures=fails)
                print(f"\n{title}, partition {p.name} (yosys synth_xilinx, {time.perf_counter() - t0:.0f} s):")
                print(comparison_table(p, nums))
                for name, why in fails:
                    print(f"  no yosys numbers for {name}: {why}")
                rows = layer_rows(p, nums)
                tally(rows, score)
                if title.startswith("CNV"):
                    print(cnv_vs_bnn_pynq(rows))
                if a.sim:
                    print(rtl.simulate(p, 40).summary())
                if a.pnr:
                    print(rtl.place_and_route(p).summary())
    print("\nlayers whose estimate is within +-15% of yosys (and within +-15% or +-10 cells under 100):")
    for (which, k), (n, strict, loose) in sorted(score.items()):
        print(f"  {which:3s} {k:6s}: {strict}/{n} strict, {loose}/{n} with the small-module slack")


if __name__ == "__main__":
    main()
