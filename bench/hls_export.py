"""HLS export of the digits zoo: wall time of streamline, export, g++ build and C simulation, and bit-exactness of
the C simulation against the golden simulator on the whole eval set (all measured in one run).

Per model and bit width (weights/activations binary, sym:2/dfp:2, sym:4/dfp:4, sym:8/dfp:8):
  streamline  the ``dataflow`` pipeline (QONNX integer graph)
  export      partition + folding + FIFO sizing + C++ generation (no samples)
  build       g++ -std=c++14 -O2 of the testbench + top (compile once)
  csim        the C simulation of all 360 eval images
  golden      the golden simulator on the same images (partition inputs/outputs)
  total       export + build + csim  (the "export plus C simulation" budget: < 60 s for digits_cnn)
and the mismatching output codes of the partition and after the host float head (must be 0), the folding
(bottleneck cycles, estimated FPS at the device clock, estimated LUTs) and the ratio csim time / golden time.

    python bench/hls_export.py [--models digits_cnn] [--bits 4 8] [--target-fps 100000] [--out out/bench_hls]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import qpass
from qpass.api import qonnx_model
from qpass.backends import hls
from qpass.backends.hls.csim_runner import build, csim
from qpass.backends.hls.exporter import partition_io
from qpass.ir.samples import load_samples

ROOT = Path(__file__).resolve().parents[1]
BITS = {"1": ("binary", "binary"), "2": ("sym:2", "dfp:2"), "4": ("sym:4", "dfp:4"), "8": ("sym:8", "dfp:8")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["digits_mlp", "digits_cnn", "digits_rescnn"])
    ap.add_argument("--bits", nargs="+", default=list(BITS), choices=list(BITS))
    ap.add_argument("--device", default="xc7z020")
    ap.add_argument("--target-fps", type=float, default=None)
    ap.add_argument("--out", default="out/bench_hls")
    args = ap.parse_args()
    if hls.find_ap_types() is None:
        raise SystemExit("needs ap_int.h: pip install hls4ml, or python -c 'from qpass.backends.hls import "
                         "fetch_ap_types; fetch_ap_types()'")
    head = (f"{'model':14s} {'bits':>4s} {'streamline':>10s} {'export':>7s} {'build':>6s} {'csim':>6s} {'golden':>7s} "
            f"{'total':>6s} {'mismatch':>8s} {'e2e':>4s} {'cycles':>7s} {'est. FPS':>12s} {'est. LUT':>8s}")
    print(head)
    print("-" * len(head))
    for name in args.models:
        ev_path = ROOT / "models" / f"{name}.eval.npz"
        for bits in args.bits:
            w, a = BITS[bits]
            t0 = time.perf_counter()
            p = qpass.load_pipeline("dataflow", {"fakequant": {"weights": w, "activations": a}})
            r = qpass.optimize(ROOT / "models" / f"{name}.onnx", calib=ROOT / "models" / f"{name}.calib.npz",
                               pipeline=p)
            model = qonnx_model(r)
            t1 = time.perf_counter()
            res = hls.export(model, Path(args.out) / f"{name}_{bits}", device=args.device,
                             target_fps=args.target_fps)
            t2 = time.perf_counter()
            for e in res.partitions:
                build(e.project_dir, force=True, cache=res.csim_cache)
            t3 = time.perf_counter()
            ev = load_samples(ev_path, model)
            io = partition_io(res.partitioned.parent, ev, batch_size=len(ev), partitions=res.partitioned.store)
            t4 = time.perf_counter()
            mism = 0
            for e in res.partitions:
                got = csim(e.project_dir, {p.tensor: io[p.tensor] for p in e.project.inputs}, cache=res.csim_cache)
                for p in e.project.outputs:
                    mism += int((got[p.tensor].reshape(-1) != io[p.tensor].reshape(-1)).sum())
            t5 = time.perf_counter()
            cmp = hls.compare_with_golden(res, ev)  # end to end (reusing the runs above through res.csim_cache)
            f = res.partitions[0].folding
            lut = sum(e.folding.total.lut for e in res.partitions)
            total = (t2 - t1) + (t3 - t2) + (t5 - t4)
            print(f"{name:14s} {bits:>4s} {t1 - t0:10.2f} {t2 - t1:7.2f} {t3 - t2:6.2f} {t5 - t4:6.2f} {t4 - t3:7.2f} "
                  f"{total:6.2f} {mism:8d} {sum(cmp.end_to_end.values()):4d} {f.max_cycles:7d} {f.fps:12,.0f} "
                  f"{lut:8d}", flush=True)
    print("\ntimes in seconds on this machine; mismatch: partition output codes differing from the golden simulator "
          "over the whole eval set; e2e: differing logits after the host float head")


if __name__ == "__main__":
    main()
