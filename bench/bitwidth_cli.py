"""Issue 14's "Done when", checked through the CLI as a user runs it, on the digits CNN and residual CNN.

Per model, with calibration data only (no labels, no --eval):

- ``qpass optimize M --calib C --bits auto --target "relative_accuracy>=0.99"`` twice (wall time; byte-identical
  files = deterministic), and the default int8 output ``qpass optimize M --calib C``;
- the held-out ``.eval.npz`` run in plain onnxruntime on the float model and both files: top-1, relative accuracy;
- the weights' stored width read from the file's initializer types (``artifact_summary``), file size;
- integer-kernel layers in the graph onnxruntime runs (bench/ort_compare.py's census) against the int8 output;
- latency of both files, interleaved (bench/ort_compare.py), 1 thread;
- ``--avg-bits 4``: the stored width and whether the report shows the held-out accuracy.

    python bench/bitwidth_cli.py [--out bench/results/bitwidth_cli.md]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MODELS = ["digits_cnn", "digits_rescnn"]
TARGET = "relative_accuracy>=0.99"


def cli(*args) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", *map(str, args)], capture_output=True,
                       text=True, env=dict(os.environ))
    if p.returncode:
        raise SystemExit(f"qpass optimize {' '.join(map(str, args))}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout, time.perf_counter() - t0


def top1(path: Path, ev) -> float:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    out = np.concatenate([s.run(None, {name: ev["input"][i]})[0] for i in range(len(ev["input"]))])
    return float(np.mean(out.reshape(len(out), -1).argmax(1) == ev["labels"]))


def check(name: str, tmp: Path) -> dict:
    from ort_compare import census, latency
    from qpass.search.artifact import artifact_summary

    src, calib = ROOT / "models" / f"{name}.onnx", ROOT / "models" / f"{name}.calib.npz"
    ev = dict(np.load(ROOT / "models" / f"{name}.eval.npz"))
    paths = {k: tmp / f"{name}.{k}.onnx" for k in ("auto", "auto2", "int8", "avg4")}
    _, wall = cli(src, "--calib", calib, "--bits", "auto", "--target", TARGET, "-o", paths["auto"])
    _, wall2 = cli(src, "--calib", calib, "--bits", "auto", "--target", TARGET, "-o", paths["auto2"])
    cli(src, "--calib", calib, "-o", paths["int8"])
    avg4_out, _ = cli(src, "--calib", calib, "--bits", "auto", "--avg-bits", "4", "-o", paths["avg4"])
    digest = {k: hashlib.sha256(paths[k].read_bytes()).hexdigest() for k in ("auto", "auto2")}
    fa, qa, ia = top1(src, ev), top1(paths["auto"], ev), top1(paths["int8"], ev)
    art = {k: artifact_summary(onnx.load(paths[k])) for k in ("auto", "int8", "avg4")}
    cen = {k: census(paths[k], paths[k].with_suffix(".opt.onnx"), 0)["integer_kernels"] for k in ("auto", "int8")}
    x = ev["input"][0]
    times, rounds = latency({k: paths[k] for k in ("auto", "int8")}, {onnx.load(src).graph.input[0].name: x},
                            threads=1, repeats=4000, budget=6.0)
    med = {k: float(np.median(v)) * 1e6 for k, v in times.items()}
    return {"model": name, "eval_samples": len(ev["labels"]), "float_top1": fa, "auto_top1": qa, "int8_top1": ia,
            "relative": qa / fa, "stored_bits": art["auto"]["avg_stored_weight_bits"],
            "int8_stored_bits": art["int8"]["avg_stored_weight_bits"], "bytes": art["auto"]["file_bytes"],
            "int8_bytes": art["int8"]["file_bytes"], "int_kernels": cen["auto"], "int8_int_kernels": cen["int8"],
            "us": med["auto"], "int8_us": med["int8"], "latency_ratio": med["auto"] / med["int8"], "rounds": rounds,
            "wall_s": (wall, wall2), "deterministic": digest["auto"] == digest["auto2"],
            "avg4_stored_bits": art["avg4"]["avg_stored_weight_bits"], "avg4_top1": top1(paths["avg4"], ev),
            "avg4_reports_held_out": "held out:" in avg4_out}


def storage(name: str, tmp: Path) -> str:
    """Uniform W-bit weights (W = 2, 4, 8; 8-bit activations) through fakequant + lower_ort: INT2 / INT4 / int8 in
    the file, its size, integer kernels and latency side by side."""
    import qpass
    from ort_compare import census, latency
    from qpass.ir.samples import load_samples
    from qpass.passes.int8_weights import Int8Weights
    from qpass.pipeline.context import PassContext
    from qpass.pipeline.files import load_pipeline
    from qpass.pipeline.manager import PassManager, Pipeline
    from qpass.search.artifact import artifact_summary

    src = ROOT / "models" / f"{name}.onnx"
    m = qpass.load(src)
    calib = load_samples(ROOT / "models" / f"{name}.calib.npz", m)
    ev = dict(np.load(ROOT / "models" / f"{name}.eval.npz"))
    paths = {}
    for w in (2, 4, 8):
        res = qpass.optimize(m, calib=calib, pipeline=load_pipeline(
            "fakequant", {"fakequant": {"weights": f"sym:{w}", "activations": "uint8"}}))
        paths[w] = tmp / f"{name}.w{w}.onnx"  # int8 weights as --bits auto stores them (pass int8_weights)
        onnx.save(PassManager(Pipeline("int8", [Int8Weights()]), PassContext(progress=False)).run(res.model), paths[w])
    times, _ = latency(paths, {m.graph.input[0].name: ev["input"][0]}, threads=1, repeats=4000, budget=6.0)
    rows = []
    for w, p in paths.items():
        mod = onnx.load(p)
        a = artifact_summary(mod)
        types = sorted({onnx.TensorProto.DataType.Name(t.data_type) for t in mod.graph.initializer
                        if t.data_type in (onnx.TensorProto.INT2, onnx.TensorProto.INT4, onnx.TensorProto.INT8,
                                           onnx.TensorProto.UINT8)})
        rows.append(f"| {name} | W{w}/A8 | {'/'.join(types)} | opset {mod.opset_import[0].version} | "
                    f"{a['avg_stored_weight_bits']:.2f} | {a['file_bytes']} | "
                    f"{census(p, p.with_suffix('.opt.onnx'), 0)['integer_kernels']} | "
                    f"{float(np.median(times[w])) * 1e6:.1f} | {100 * top1(p, ev):.2f}% |")
    return "\n".join(rows)


ROWS = [("eval top-1 auto (float; default int8)", lambda r: f"{100 * r['auto_top1']:.2f}% ({100 * r['float_top1']:.2f}%;"
         f" {100 * r['int8_top1']:.2f}%)"),
        ("relative accuracy (>= 0.99)", lambda r: f"{r['relative']:.4f}"),
        ("stored bits / weight from the file (<= 5.33; int8 output)",
         lambda r: f"{r['stored_bits']:.2f} ({r['int8_stored_bits']:.2f})"),
        ("file bytes (int8 output)", lambda r: f"{r['bytes']} ({r['int8_bytes']})"),
        ("integer-kernel layers (int8 output)", lambda r: f"{r['int_kernels']} ({r['int8_int_kernels']})"),
        ("latency us, 1 thread (int8 output; ratio <= 1.1)",
         lambda r: f"{r['us']:.1f} ({r['int8_us']:.1f}; {r['latency_ratio']:.3f})"),
        ("wall time of the two runs, s (< 60)", lambda r: f"{r['wall_s'][0]:.1f}, {r['wall_s'][1]:.1f}"),
        ("byte-identical reruns", lambda r: str(r["deterministic"])),
        ("--avg-bits 4: stored bits (<= 4), eval top-1, held-out in report",
         lambda r: f"{r['avg4_stored_bits']:.2f}, {100 * r['avg4_top1']:.2f}%, {r['avg4_reports_held_out']}")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        res = [check(m, Path(d)) for m in args.models]
        store = [storage(m, Path(d)) for m in args.models]
    lines = [f"# issue 14 Done-when via the CLI (calibration data only), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"AMD EPYC avx2 avx512f avx512_vnni; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}; "
             f"onnxruntime 1 thread", "", "| | " + " | ".join(r["model"] for r in res) + " |",
             "|---|" + "---|" * len(res)]
    lines += [f"| {label} | " + " | ".join(fmt(r) for r in res) + " |" for label, fmt in ROWS]
    lines += ["", "Uniform weight widths through fakequant + lower_ort + int8_weights (initializer types, stored "
              "bits / weight, bytes, integer-kernel layers, latency us, eval top-1):", "",
              "| model | widths | integer initializer types | opset | weight bits | bytes | int kernels | us | top-1 |", "|---" * 9 + "|"]
    lines += store
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
