"""`qpass zoo` on the packaged zoo: wall time of `--engine process` against `--engine ray` (a local Ray instance),
in one run on the same machine, and whether their converted models are byte-identical.

    python bench/zoo_engines.py [--jobs N] [--models NAME...] [--latency] [--keep DIR]

The packaged zoo (every float model of models/packaged/tasks.py in ~/.cache/qpass-zoo, see models/packaged/README.md)
is laid out as a MODELS_DIR (model, NAME.calib.npz and NAME.eval.npz from models/packaged/inputs.py), then
converted twice from scratch: with N worker processes and with a Ray instance of N CPUs. Ray's start-up (ray.init)
is timed separately from the conversion. Prints the CPU model and flags (avx2 / avx512f / avx512_vnni) first.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from ort_compare import fetch, machine_info, packaged_names  # noqa: E402


def lay_out(names: list[str], cache: Path, dst: Path) -> list[str]:
    import inputs

    done = []
    for name in names:
        src = fetch.model_path(name, cache)
        try:
            calib, ev = inputs.build(name, src)
        except Exception as exc:  # noqa: BLE001 - a model without inputs here is left out, and said so
            print(f"  {name}: left out ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        (dst / name).mkdir(parents=True)
        os.symlink(src, dst / name / f"{name}.onnx")
        np.savez(dst / name / f"{name}.calib.npz", **{k: v for k, v in calib.items() if k != "labels"})
        np.savez(dst / name / f"{name}.eval.npz", **ev)
        done.append(name)
    return done


def converted(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.onnx")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes / Ray CPUs")
    ap.add_argument("--models", nargs="*", help="packaged model names (default: all in the cache)")
    ap.add_argument("--latency", action="store_true", help="also measure each model's latency ratio")
    ap.add_argument("--keep", type=Path, help="write the two output folders here (default: a temporary folder)")
    args = ap.parse_args()
    from qpass.pipeline.engines import ProcessEngine
    from qpass.pipeline.ray_engine import RayEngine
    from qpass.zoo import run_zoo

    info = machine_info()
    print(f"cpu: {info['cpu']}  flags: {' '.join(info['cpu_flags'])}  cores: {info['cores']}  "
          f"load: {' '.join(f'{x:.2f}' for x in info['load_avg'])}  qpass {info['qpass_commit']}")
    cache = Path(os.environ.get("QPASS_ZOO_CACHE", Path.home() / ".cache" / "qpass-zoo"))
    names = args.models or packaged_names(cache)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        src = work / "zoo"
        names = lay_out(names, cache, src)
        print(f"packaged zoo: {len(names)} models, {args.jobs} jobs, latency {'on' if args.latency else 'off'}")
        times = {}
        t0 = time.perf_counter()
        with ProcessEngine(args.jobs) as eng:
            rows = {"process": run_zoo(src, work / "process", jobs=args.jobs, progress=False, engine=eng,
                                       force=True, latency=args.latency)}
        times["process"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with RayEngine(num_cpus=args.jobs) as eng:
            times["ray start"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            rows["ray"] = run_zoo(src, work / "ray", jobs=args.jobs, progress=False, engine=eng, force=True,
                                  latency=args.latency)
            times["ray"] = time.perf_counter() - t1
        print(f"{'model':<24}{'status':<10}{'process s':>10}{'ray s':>8}  SQNR dB")
        for a, b in zip(rows["process"], rows["ray"]):
            print(f"{a.model[:23]:<24}{a.status + ('' if a.status == b.status else '/' + b.status):<10}"
                  f"{a.seconds:>10.1f}{b.seconds:>8.1f}  {a.sqnr_db}")
            for r, engine in ((a, "process"), (b, "ray")):
                if r.status != "ok":
                    print(f"  {engine}: {r.status}: {r.reason}")
        same = converted(work / "process") == converted(work / "ray")
        print(f"wall time: process {times['process']:.1f} s, ray {times['ray']:.1f} s (+ {times['ray start']:.1f} s "
              f"ray.init) -> ray / process {times['ray'] / times['process']:.2f} "
              f"({(times['ray'] + times['ray start']) / times['process']:.2f} with start-up)")
        print(f"converted models byte-identical between the engines: {'yes' if same else 'NO'} "
              f"({len(converted(work / 'process'))} files)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
