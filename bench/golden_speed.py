"""Reference interpreter latency against onnxruntime (1 thread), per model, measured side by side in one run.

For each model (the digits models and every packaged zoo model in the cache): the float model and its
default-pipeline int8 QDQ model, run over the first ``--samples`` eval samples by onnxruntime (1 thread) and by
the reference interpreter, both through ``qpass.ir.batching`` (batched along the batch dimension, recognised by
name or traced through the graph (``batchable(trace=True)``, decided once per model, outside the timed runs, and
the same for both), ``--batch`` samples per call, else one call per sample), runs interleaved. Column ``b``: whether
the float / int8 runs were batched. Prints the per-sample times, the
reference / onnxruntime ratios (float: reference float / onnxruntime float; int8: reference int8 / onnxruntime
int8), their geometric means, and the CPU flags in the header. Issue 15's targets: <= 3x float and <= 5x int8 on
every conv net, geomean <= 4x.

    python bench/golden_speed.py [--repeats 3] [--samples 64] [--only digits_cnn,magika] [--zoo ~/.cache/qpass-zoo]
                                 [--stat median|min] [--batching trace|name|both] [--jit on|off|both]
                                 [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# onnxruntime runs at 1 thread: so does the reference's BLAS (set before numpy loads OpenBLAS; on a shared machine
# a multi-threaded BLAS also spins against the other load)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
import ort_compare as oc  # noqa: E402  (model cases and inputs, machine info)

import qpass  # noqa: E402
from qpass.ir.batching import batchable  # noqa: E402
from qpass.ir.ort_session import make_session, run_samples as ort_run  # noqa: E402
from qpass.ir.samples import as_samples  # noqa: E402
from qpass.reference import GoldenExecutor, run_samples as ref_run  # noqa: E402


def _interleaved(runs: dict, repeats: int, stat=np.median, clock=time.perf_counter) -> dict[str, float]:
    for fn in runs.values():
        fn()  # warm-up (plans, constant caches, compiled kernels)
    t = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = clock()
            fn()
            t[k].append(clock() - t0)
    return {k: float(stat(v)) for k, v in t.items()}


def _jit_env(on: bool):
    """The reference's compiled recurrent kernels on or off (QPASS_NO_JIT, read at every node call)."""
    if on:
        os.environ.pop("QPASS_NO_JIT", None)
    else:
        os.environ["QPASS_NO_JIT"] = "1"


def measure(case, samples: int, repeats: int, batch: int, stat=np.median,
            configs: tuple[tuple[str, bool], ...] = (("trace", True),), clock=time.perf_counter) -> dict[tuple, dict]:
    """Per configuration (batching rule: "name" by name only, "trace" traced too; compiled recurrent kernels on /
    off), per-sample seconds of ort float / ref float / ort int8 / ref int8 over the first SAMPLES eval samples;
    every configuration's runs interleaved in one loop (onnxruntime once per rule)."""
    fm = qpass.load(case.src)
    ev = {k: v[:samples] if np.ndim(v) else v for k, v in case.eval.items() if k != "labels"}
    n = len(next(v for v in ev.values() if np.ndim(v)))
    qm = qpass.optimize(fm, calib=case.calib).model
    runs, flags = {}, {}
    for tag, m in (("f", fm), ("q", qm)):
        s, sess = as_samples(ev, m), make_session(m, threads=1)
        for rule in dict.fromkeys(r for r, _ in configs):
            # decided once, outside the timed runs, the same for both sides
            b = batchable(m, s, [o.name for o in m.graph.output], trace=rule == "trace")
            flags[rule] = flags.get(rule, "") + ("y" if b else "n")
            runs[(rule, None, f"ort_{tag}")] = lambda m=m, s=s, sess=sess, b=b: ort_run(
                m, s, sess=sess, batch_size=batch, batched=b)
            for rule_, jit in configs:
                if rule_ == rule:
                    ex = GoldenExecutor(m)
                    runs[(rule, jit, f"ref_{tag}")] = lambda m=m, s=s, ex=ex, b=b, jit=jit: (
                        _jit_env(jit), ref_run(m, s, executor=ex, batch_size=batch, batched=b), _jit_env(True))
    t = _interleaved(runs, repeats, stat, clock)
    return {(rule, jit): {k[2]: v / n for k, v in t.items() if k[0] == rule and k[1] in (None, jit)}
            | {"n": n, "b": flags[rule]} for rule, jit in configs}


def _geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--zoo", type=Path, default=Path.home() / ".cache" / "qpass-zoo")
    ap.add_argument("--stat", choices=("median", "min"), default="median",
                    help="per-run time statistic (min: the least disturbed run, on a loaded machine)")
    ap.add_argument("--batching", choices=("trace", "name", "both"), default="trace",
                    help="batch dimension recognised by name only, traced through the graph too, or both side by "
                         "side in one interleaved run (one row per rule)")
    ap.add_argument("--jit", choices=("on", "off", "both"), default="on",
                    help="the reference's compiled recurrent kernels (numba, the fast extra): on, off "
                         "(QPASS_NO_JIT=1), or both side by side")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or the process's CPU time (both sides single-threaded: steadier on a loaded "
                         "machine, where a niced process waits for the CPU between its steps)")
    args = ap.parse_args()
    rules = ("name", "trace") if args.batching == "both" else (args.batching,)
    jits = (False, True) if args.jit == "both" else (args.jit == "on",)
    configs = tuple((r, j) for r in rules for j in jits)
    names = list(oc.DIGITS) + (oc.packaged_names(args.zoo) if args.zoo.is_dir() else [])
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    info = oc.machine_info()
    print(f"# {info['cpu']}; flags {' '.join(info['cpu_flags'])}; {info['cores']} cores, load {info['load_avg'][0]:.1f}; "
          f"onnxruntime {info['onnxruntime']}, numpy {info['numpy']}, qpass {info['qpass_commit']}; "
          f"{args.samples} samples, batch {args.batch}, {args.repeats} repeats ({args.stat}, {args.clock} time), "
          f"BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}")
    print(f"{'model':<22}{'n':>4}{'b':>3}{'ort f ms':>10}{'ref f ms':>10}{'ort q ms':>10}{'ref q ms':>10}"
          f"{'f ratio':>9}{'q ratio':>9}")
    ratios = {c: [] for c in configs}
    for name in names:
        try:
            res = measure(oc.make_case(name, args.zoo), args.samples, args.repeats, args.batch,
                          np.min if args.stat == "min" else np.median, configs,
                          time.process_time if args.clock == "cpu" else time.perf_counter)
        except Exception as exc:  # report, never stop the table
            print(f"{name:<22} error: {oc.first_line(exc)}", flush=True)
            continue
        for c, r in res.items():
            rf, rq = r["ref_f"] / r["ort_f"], r["ref_q"] / r["ort_q"]
            ratios[c] += [rf, rq]
            label = name if len(configs) == 1 else f"{name[:13]}:{c[0][0]}{'+j' if c[1] else ''}"
            print(f"{label:<22}{r['n']:>4}{r['b']:>3}{1e3 * r['ort_f']:>10.3f}{1e3 * r['ref_f']:>10.3f}"
                  f"{1e3 * r['ort_q']:>10.3f}{1e3 * r['ref_q']:>10.3f}{rf:>9.1f}{rq:>9.1f}", flush=True)
    for c, rs in ratios.items():
        label = "geomean" if len(configs) == 1 else f"geomean:{c[0][0]}{'+j' if c[1] else ''}"
        print(f"{label:<22}{'':>47}{_geomean(rs[0::2]):>9.1f}{_geomean(rs[1::2]):>9.1f}   all {_geomean(rs):.1f}")
    if len(configs) > 1:
        print("# row suffix: :n batched by name only, :t traced too; +j compiled recurrent kernels (numba)")


if __name__ == "__main__":
    main()
