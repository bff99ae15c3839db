"""Golden simulator latency against onnxruntime float latency, per zoo model, measured side by side in one run.

For each model: the float model and its default-pipeline int8 QDQ model, run over the eval set (batched along the
dynamic batch dimension, 64 samples per call) by onnxruntime (1 thread) and by the golden simulator, interleaved.
Prints golden / onnxruntime-float time ratios.

    python bench/golden_speed.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import qpass
from qpass.reference import GoldenExecutor, run_samples as golden_run
from qpass.ir.ort_session import make_session, run_samples as ort_run
from qpass.ir.samples import load_samples

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["digits_mlp", "digits_cnn", "digits_rescnn"]


def timed(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'model':<15}{'ort float ms':>13}{'golden float':>14}{'golden int8':>13}{'float ratio':>12}{'int8 ratio':>11}")
    for name in MODELS:
        fm = qpass.load(ROOT / "models" / f"{name}.onnx")
        ev = load_samples(ROOT / "models" / f"{name}.eval.npz", fm)
        qm = qpass.optimize(fm, calib=ROOT / "models" / f"{name}.calib.npz").model
        sess = make_session(fm, threads=1)
        gf, gq = GoldenExecutor(fm), GoldenExecutor(qm)
        runs = {"ort": lambda: ort_run(fm, ev, sess=sess), "gf": lambda: golden_run(fm, ev, executor=gf),
                "gq": lambda: golden_run(qm, ev, executor=gq)}
        for fn in runs.values():
            fn()  # warm-up
        t = {k: [] for k in runs}
        for _ in range(args.repeats):  # interleaved
            for k, fn in runs.items():
                t[k].append(timed(fn, 1))
        t = {k: float(np.median(v)) for k, v in t.items()}
        print(f"{name:<15}{1000 * t['ort']:>13.1f}{1000 * t['gf']:>14.1f}{1000 * t['gq']:>13.1f}"
              f"{t['gf'] / t['ort']:>12.1f}{t['gq'] / t['ort']:>11.1f}")


if __name__ == "__main__":
    main()
