"""qpass' resource estimates against Yosys ``synth_xilinx`` (7-series) of the RTL backend's modules, per layer, side
by side: the analytical models ('old': ``layer.resources()``, LUT/BRAM18/DSP) and the Yosys-calibrated formulas
('cal': ``qpass.hw.calibration``, LUT/FF/BRAM18/DSP) for the digits MLP, CNN and residual CNN at 1, 2, 4 and 8 bits
and (``--cnv``) a CNV-W1A1-topology net folded with FINN's fold_cnv_large, whose sum over layers is set against
BNN-PYNQ's published Pynq-Z1 build (26,072 LUT, 124 BRAM36). LUT counts LUT1..LUT6 plus LUT-RAM/SRL LUTs, BRAM in
RAMB18 units. Yosys numbers are cached by module, parameters and memory images (``--cache``; the committed cache
``bench/results/yosys_layers.json`` makes a rerun print the tables without Yosys). With ``--sim`` also the Verilator
cycles per frame against the folding model's bottleneck.

    python bench/rtl_vs_yosys.py [--models digits_mlp ...] [--bits 1 2 4 8] [--cnv [--cnv-whole]] [--partition] [--sim]
                                 [--pnr]

Prints the Yosys version, the machine's CPU flags of note and the wall time of the synthesis.
"""
from __future__ import annotations

import argparse
import hashlib
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
from qpass.backends.rtl.synth import METRICS, SynthCache, comparison_table, family, instance_key, key_is_current, \
    layer_rows, run_yosys, synth_partition, within, yosys_command
from qpass.hw.calibration import CALIBRATION, calibration_note
from qpass.pipeline.config import QuantConfig

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "results" / "yosys_layers.json"
WHOLE = ROOT / "bench" / "results" / "yosys_cnv_whole.json"
#: the digits designs' foldings of the bench results (written by the folding search of session 6's cost model)
FOLDINGS = ROOT / "bench" / "results" / "rtl_foldings"


def cpu_flags() -> str:
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_vnni") if f in flags)


def digits_export(name: str, bits: str, out: Path, sim: bool, search: bool = False):
    """The digits design at ``bits``, folded as pinned in bench/results/rtl_foldings/NAME_BITS.json (the foldings
    the Verilator runs and the Yosys numbers of bench/results are of) unless ``search`` (the folding search of the
    current cost model, which may pick other foldings than the pinned ones)."""
    plan = QuantConfig(backend="rtl", bits=bits).resolve()
    res = qpass.optimize(ROOT / "models" / f"{name}.onnx", calib=ROOT / "models" / f"{name}.calib.npz",
                         pipeline=plan.pipeline, disabled=plan.disabled)
    pinned = FOLDINGS / f"{name}_{bits}.json"
    folding = json.loads(pinned.read_text()) if pinned.is_file() and not search else None
    return rtl.export(qonnx_model(res), out / f"{name}_{bits}", folding=folding,
                      samples=ROOT / "models" / f"{name}.eval.npz" if sim else None)


def cnv_export(out: Path, weights_mode: str = "const"):
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
    return rtl.export(qonnx_model(res), out / f"cnv_w1a1_{weights_mode}", folding=folding, weights_mode=weights_mode)


def fitted_layers(p, fam: str) -> set[str]:
    """The partition's layers whose module instance (cache key) the shipped calibration was fitted on."""
    fitted = set(CALIBRATION.get("fitted", ()))
    out = set()
    for l in p.graph.layers:
        inst = p.module.instances[l.name]
        if instance_key(inst, inst.mems, fam, l.layer.resources().dsp == 0) in fitted:
            out.add(l.name)
    return out


def tally(rows: list[dict], score: dict, fitted: set[str]) -> None:
    """Per (estimate, metric, in-sample or held-out): layers, strictly within +-15%, within with the slack."""
    for r in rows:
        sample = "in-sample" if r["layer"] in fitted else "held-out"
        for k in METRICS:
            y = r["yosys"][k]
            for which in ("old", "cal", "mod"):
                est = (r[which] or {}).get(k)
                if est is None:
                    continue
                for group in (sample, "all"):
                    ok = score.setdefault((which, k, group), [0, 0, 0])
                    ok[0] += 1
                    ok[1] += abs(est - y) <= 0.15 * y or est == y
                    ok[2] += within(est, y)


def cnv_vs_bnn_pynq(rows: list[dict], whole: dict | None = None) -> str:
    """Sum of the per-layer numbers and (``whole``: yosys of the whole partition with runtime-writable weights,
    FIFOs and width converters included) against BNN-PYNQ's published Pynq-Z1 build, in one table."""
    lut = {w: sum((r[w] or r["old"]).get("lut", 0) for r in rows) for w in ("old", "cal")}
    bram = {w: sum((r[w] or r["old"]).get("bram18", 0) for r in rows) for w in ("old", "cal")}
    y_lut, y_bram = sum(r["yosys"]["lut"] for r in rows), sum(r["yosys"]["bram18"] for r in rows)
    w_lut = f"{whole['lut']:>14,d}" if whole else f"{'-':>14s}"
    w_bram = f"{whole['bram18'] / 2:>14.1f}" if whole else f"{'-':>14s}"
    w_ratio = (f"{whole['lut'] / 26_072:>8.2f}", f"{whole['bram18'] / 2 / 124:>8.2f}") if whole else ("", "")
    lines = [f"{'CNV-W1A1':22s}{'old est':>9s}{'cal est':>9s}{'yosys':>9s}{'yosys whole':>14s}{'BNN-PYNQ':>10s}"
             f"{'layers/BNN':>11s}{'whole/BNN':>10s}",
             f"{'LUT':22s}{lut['old']:>9,d}{lut['cal']:>9,d}{y_lut:>9,d}{w_lut}{26_072:>10,d}"
             f"{y_lut / 26_072:>11.2f}{w_ratio[0]:>10s}",
             f"{'BRAM36 (= BRAM18/2)':22s}{bram['old'] / 2:>9.1f}{bram['cal'] / 2:>9.1f}{y_bram / 2:>9.1f}{w_bram}"
             f"{124:>10d}{y_bram / 2 / 124:>11.2f}{w_ratio[1]:>10s}",
             "(est/yosys columns: the layers synthesized one by one, weights in ROMs; 'yosys whole': the whole "
             "partition (FIFOs, width converters, AXI-stream top) with runtime-writable weight and threshold RAMs, "
             f"{whole['ff']:,d} FF, {whole['seconds']:.0f} s of yosys" if whole else
             "(est/yosys columns: the layers synthesized one by one, weights in ROMs; no whole-design run: --cnv-whole",
             " BNN-PYNQ: the whole Pynq-Z1 system, runtime-writable weights, DMA and AXI shell included)"]
    return "\n".join(lines)


def cnv_whole(out: Path, fam: str, cache: Path, timeout: float) -> dict:
    """yosys synth_xilinx of the whole CNV-W1A1 partition with runtime weights (cached by the sources' hash)."""
    ex = cnv_export(out, "runtime")
    (p,) = ex.partitions
    d = p.project_dir / "rtl"
    h = hashlib.sha1()
    for f in sorted(d.glob("*.sv")):
        h.update(f.read_bytes())
    key = f"cnv_w1a1:runtime:{fam}:{h.hexdigest()[:16]}"
    data = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in data:
        n = run_yosys(d, [f.name for f in sorted(d.glob("qpass_*.sv"))] + [f"{p.module.name}.sv"], p.module.name, fam,
                      nodsp=True, timeout=timeout)
        data[key] = dict(lut=n.lut, ff=n.ff, bram18=n.bram18, dsp=n.dsp, seconds=round(n.seconds, 1))
        cache.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["digits_mlp", "digits_cnn", "digits_rescnn"])
    ap.add_argument("--bits", nargs="+", default=["1", "2", "4", "8"])
    ap.add_argument("--cnv", action="store_true", help="also the CNV-W1A1 topology with fold_cnv_large")
    ap.add_argument("--partition", action="store_true", help="also synthesize every whole partition (slow)")
    ap.add_argument("--cnv-whole", action="store_true",
                    help="with --cnv: also yosys on the whole CNV partition with runtime weights (cached in "
                         "bench/results/yosys_cnv_whole.json; ~100 s on one core)")
    ap.add_argument("--sim", action="store_true", help="also simulate with Verilator (cycles/frame vs model)")
    ap.add_argument("--pnr", action="store_true", help="also place and route on an ECP5 85k (nextpnr) for Fmax")
    ap.add_argument("--cache", default=str(CACHE), help="JSON cache of Yosys numbers ('' for none)")
    ap.add_argument("--out", default=None, help="export folder (default: a temporary one)")
    ap.add_argument("--offline", action="store_true", help="no Yosys runs: layers missing from the cache are listed")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per Yosys run (a layer over it is listed)")
    ap.add_argument("--search", action="store_true",
                    help="fold the digits designs with the folding search instead of bench/results/rtl_foldings")
    a = ap.parse_args()
    ver = subprocess.run(yosys_command() + ["-V"], capture_output=True, text=True).stdout.strip()
    print(f"{ver}; CPU flags: {cpu_flags()}")
    print(calibration_note())
    print("columns: 'cal' = the folding search's estimate of the cost-model layer before it is emitted (shapes, bits, "
          "folding, a residual add's scale factors; weights and thresholds unseen); 'mod' = the same calibrated "
          "formulas at the emitted instance's parameters, with what its ROM images show (varying weight columns, "
          "distinct threshold columns, PEs with non-trivial constant thresholds); 'old' = the analytical FINN-R "
          "models. Digits designs folded as pinned in bench/results/rtl_foldings unless --search.")
    cache = SynthCache(Path(a.cache), offline=a.offline) if a.cache else None
    if cache is not None:
        stale = sum(not key_is_current(k) for k in cache.data)
        print(f"yosys cache {a.cache}: {len(cache.data) - stale} entries of today's library HDL, {stale} stale "
              "(synthesized from older HDL: never used; a design layer whose entry is stale is re-synthesized, or "
              "listed as stale with --offline)".replace(f"{ROOT}/", ""))
    score: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.out) if a.out else Path(tmp)
        jobs = [(f"{n} at {b} bits", lambda n=n, b=b: digits_export(n, b, out, a.sim, a.search)) for n in a.models
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
                fitted = fitted_layers(p, family(ex.device.part))
                print(f"  layers the calibration was fitted on (in-sample): {', '.join(sorted(fitted)) or 'none'}")
                tally(rows, score, fitted)
                if title.startswith("CNV"):
                    whole = cnv_whole(out, family(ex.device.part), WHOLE, a.timeout) if a.cnv_whole else None
                    print(cnv_vs_bnn_pynq(rows, whole))
                if a.sim:
                    print(rtl.simulate(p, 40).summary())
                if a.pnr:
                    print(rtl.place_and_route(p).summary())
    print("\nlayers whose estimate is within +-15% of yosys (and within +-15% or +-10 cells under 100); 'held-out': "
          "layers whose yosys numbers the calibration was not fitted on:")
    for (which, k, group), (n, strict, loose) in sorted(score.items()):
        print(f"  {which:3s} {k:6s} {group:9s}: {strict}/{n} strict, {loose}/{n} with the small-module slack")


if __name__ == "__main__":
    main()
