"""qpass vs onnxruntime.quantization.quantize_static on the digits zoo, measured side by side in one run.

For each model: top-1 accuracy, output SQNR against the float model, quantize wall time, and int8/float latency
ratio in onnxruntime with one thread (batch 1, median of interleaved runs). Both quantizers get the same
calibration samples and are scored on the same eval set.

    python bench/ort_baseline.py [--repeats 300]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

import qpass
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import load_samples
from qpass.analysis.metrics import accuracy, sqnr_db

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["digits_mlp", "digits_cnn", "digits_rescnn"]


def ort_quantize(src: Path, calib, out: Path) -> float:
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(list(calib.feeds()))

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))  # folds BN, as a careful user would
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return time.perf_counter() - t0


def latency(models: dict[str, onnx.ModelProto], feed: dict, repeats: int) -> dict[str, float]:
    sessions = {k: make_session(m, threads=1) for k, m in models.items()}
    for s in sessions.values():
        for _ in range(20):
            s.run(None, feed)
    times = {k: [] for k in sessions}
    for _ in range(repeats):  # interleaved so that machine noise hits all alike
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            src = ROOT / "models" / f"{name}.onnx"
            fm = qpass.load(src)
            calib = load_samples(ROOT / "models" / f"{name}.calib.npz", fm)
            ev = load_samples(ROOT / "models" / f"{name}.eval.npz", fm)
            t0 = time.perf_counter()
            qm = qpass.optimize(fm, calib=calib).model
            t_qpass = time.perf_counter() - t0
            ort_out = Path(tmp) / f"{name}.ort.onnx"
            t_ort = ort_quantize(src, calib, ort_out)
            om = onnx.load(ort_out)
            out = fm.graph.output[0].name
            ref = run_samples(fm, ev, outputs=[out])[out]
            lat = latency({"float": fm, "qpass": qm, "ort": om}, ev.feed(0), args.repeats)
            for tool, m, t in (("qpass", qm, t_qpass), ("quantize_static", om, t_ort)):
                got = run_samples(m, ev, outputs=[out])[out]
                key = "qpass" if tool == "qpass" else "ort"
                rows.append((name, tool, accuracy(ref, ev.labels), accuracy(got, ev.labels), sqnr_db(ref, got), t,
                             lat[key] / lat["float"]))
    print(f"{'model':<15}{'quantizer':<17}{'float acc':>10}{'int8 acc':>10}{'SQNR dB':>9}{'quant s':>9}"
          f"{'int8/float lat':>16}")
    for r in rows:
        print(f"{r[0]:<15}{r[1]:<17}{100 * r[2]:>9.2f}%{100 * r[3]:>9.2f}%{r[4]:>9.2f}{r[5]:>9.2f}{r[6]:>16.2f}")


if __name__ == "__main__":
    main()
