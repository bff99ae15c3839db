"""Automatic bitwidth assignment on the digits zoo: the Pareto front, and mixed against uniform widths at equal cost.

For each model (all measured in one run, on the model's held-out eval set):

1. ``target``: the search for relative_accuracy >= 0.99 at minimal weight memory: per-layer widths, compression
   against float32 / int8, verified accuracy, wall and CPU time, and the measured Pareto front (cost vs metric).
2. ``equal cost``: uniform W-bit weights (W = 8, 6, 4; 8-bit activations for both) against the search's fixed-budget
   form ``avg_bits=W`` (same weight memory or less), each through the real fakequant + lower_ort pipeline.
   Every search holds half of its samples out of the search and verifies on them (the default).
3. ``calibration only``: the target search with calibration data only (no labels, no eval), its onnxruntime file
   against the default int8 output: eval top-1 in plain onnxruntime, the weights' stored width read from the
   file's initializer types, file size, integer-kernel census and latency (bench/ort_compare.py).
4. ``bops``: the target search minimising bit operations, against uniform W8/A8 and W4/A4 BOPs.

    python bench/bitwidth.py [--models digits_cnn digits_rescnn] [--out out/bench_bitwidth]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import qpass
from qpass import search as bitwidth
from qpass.ir.ort_session import run_samples
from qpass.search.core import _float_reference, faithful_session
from qpass.ir.samples import load_samples
from qpass.analysis.metrics import accuracy, sqnr_db
from qpass.search.targets import describe_metrics
from qpass.pipeline.files import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MODELS = ["digits_mlp", "digits_cnn", "digits_rescnn"]
TARGET = "relative_accuracy>=0.99"


def timed(fn, *args, **kw):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def score(model, ev, reference) -> tuple[float, float]:
    """(accuracy, SQNR vs float) of a lowered fake-quant model, run faithfully (see core.ORT_UNFAITHFUL_OPTIMIZERS)."""
    name = model.graph.output[0].name
    out = run_samples(model, ev, outputs=[name], sess=faithful_session(model, 1))[name].reshape(len(ev), -1)
    return accuracy(out, ev.labels), sqnr_db(reference, out)


def uniform(m, calib, ev, reference, W: int, A: int = 8):
    res = qpass.optimize(m, calib=calib, pipeline=load_pipeline(
        "fakequant", {"fakequant": {"weights": f"sym:{W}", "activations": f"uint{A}"}}))
    return score(res.model, ev, reference)


def layer_bits(a) -> str:
    w = [f"{r['layer'].rsplit('/', 1)[0].strip('/') or r['layer']}:{r['bits']}" for r in a.table if r["kind"] == "weight"]
    acts = [r["bits"] for r in a.table if r["kind"] == "activation"]
    return " ".join(w) + f" | activations {min(acts)}-{max(acts)} bits"


def calibration_only(name: str, m, calib, out_dir: Path) -> dict:
    """``--bits auto --target relative_accuracy>=0.99`` with calibration data only, against the default int8
    output: eval top-1 in plain onnxruntime, stored weight bits read from the file, integer-kernel census, and
    latency (bench/ort_compare.py's census and interleaved timing)."""
    import onnx

    from ort_compare import census, latency
    from qpass.search.artifact import artifact_summary

    a, wall, _ = timed(bitwidth.search, m, calib, target=TARGET)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"auto": out_dir / f"{name}.auto.onnx", "int8": out_dir / f"{name}.int8.onnx"}
    onnx.save(a.model, paths["auto"])
    onnx.save(qpass.optimize(m, calib=calib).model, paths["int8"])
    ev = np.load(ROOT / "models" / f"{name}.eval.npz")
    x = ev["input"].reshape(-1, *ev["input"].shape[2:]) if ev["input"].ndim == 5 else ev["input"]
    top1 = {}
    for k, p in {**paths, "float": ROOT / "models" / f"{name}.onnx"}.items():
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        top1[k] = float(np.mean(sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(1) == ev["labels"]))
    cen = {k: census(p, p.with_suffix(".opt.onnx"), 0) for k, p in paths.items()}
    times, _ = latency(paths, {m.graph.input[0].name: x[:1]}, threads=1, repeats=2000, budget=4.0)
    files = {k: artifact_summary(onnx.load(p)) for k, p in paths.items()}
    return {"met": a.met, "search": a.samples["search"], "verify": a.samples["verify"], "acc": top1["auto"],
            "float_acc": top1["float"], "rel": top1["auto"] / top1["float"],
            "claimed_bits": a.compression["avg_weight_bits"], "stored_bits": files["auto"]["avg_stored_weight_bits"],
            "bytes": files["auto"]["file_bytes"], "int8_bytes": files["int8"]["file_bytes"],
            "int_kernels": cen["auto"]["integer_kernels"], "int8_kernels": cen["int8"]["integer_kernels"],
            "latency": float(np.median(times["auto"])), "int8_latency": float(np.median(times["int8"])),
            "seconds": wall}


def bench(name: str, out_dir: Path) -> dict:
    m = qpass.load(ROOT / "models" / f"{name}.onnx")
    calib = load_samples(ROOT / "models" / f"{name}.calib.npz", m)
    ev = load_samples(ROOT / "models" / f"{name}.eval.npz", m)
    reference = _float_reference(m, ev, 1)
    float_acc = accuracy(reference, ev.labels)
    print(f"\n=== {name}: float accuracy {100 * float_acc:.2f}% on {len(ev)} eval samples")

    # 1. target
    a, wall, cpu = timed(bitwidth.search, m, calib, eval=ev, target=TARGET)
    c = a.compression
    print(f"target {TARGET}: {'met' if a.met else 'MISSED'}; accuracy {100 * a.metric['accuracy']:.2f}% "
          f"(relative {a.metric['relative_accuracy']:.4f}), SQNR {a.metric['sqnr']:.1f} dB; weights "
          f"{c['avg_weight_bits']:.2f} bits avg = {c['float32']:.2f}x vs float32, {c['int8']:.2f}x vs int8 "
          f"({c['float32_with_scales']:.2f}x with per-channel scales); {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"{a.evaluations} measured assignments")
    print(f"  widths: {layer_bits(a)}")
    for line in a.lines()[2:-1]:
        if line.startswith("  "):
            print("  " + line)
    for n in a.notes:
        print(f"  note: {n}")
    front = a.pareto
    shown = sorted({int(round(i)) for i in np.linspace(0, len(front) - 1, min(len(front), 14))} |
                   {i for i, p in enumerate(front) if p["chosen"]})
    print(f"  Pareto front over (weight bits, relative accuracy, SQNR, activation bits), measured on the search "
          f"samples: {len(front)} of {len(a.points)} points, {len(shown)} shown (all in {name}_pareto.csv):")
    print(f"    {'weight bits':>11} {'avg W':>6} {'act bits':>9} {'rel.acc':>8} {'SQNR dB':>8}  source")
    for i in shown:
        p = front[i]
        print(f"    {p['cost']:>11,.0f} {p['avg_weight_bits']:>6.2f} {p['activation_bits']:>9,.0f} "
              f"{p['relative_accuracy']:>8.4f} {p['sqnr_db']:>8.1f}  {p['source']}{'  <- chosen' if p['chosen'] else ''}")
    for note in a.write(out_dir, stem=name):
        print(f"  {note}")

    # 2. equal cost: uniform W/A8 against avg_bits=W (activations 8 bits in both)
    print("  equal weight memory, 8-bit activations (faithful onnxruntime on the eval set):")
    print(f"    {'budget':>7} {'uniform acc':>12} {'SQNR':>6} | {'mixed acc':>10} {'SQNR':>6} {'avg W':>6}  "
          f"mixed widths")
    rows = []
    for W in (8, 6, 4):
        u_acc, u_sqnr = uniform(m, calib, ev, reference, W)
        b, _, bcpu = timed(bitwidth.search, m, calib, eval=ev, avg_bits=W)
        mixed_acc, mixed_sqnr = score(b.model, ev, reference)
        rows.append((W, u_acc, u_sqnr, mixed_acc, mixed_sqnr, b.compression["avg_weight_bits"]))
        print(f"    {W:>5} b {100 * u_acc:>11.2f}% {u_sqnr:>6.1f} | {100 * mixed_acc:>9.2f}% {mixed_sqnr:>6.1f} "
              f"{b.compression['avg_weight_bits']:>6.2f}  {layer_bits(b).split(' |')[0]}  ({bcpu:.1f} s CPU; file "
              f"stores {b.artifact['avg_stored_weight_bits']:.2f} bits/weight; held out "
              f"{describe_metrics(b.metric)})")
    # where uniform W/AW sits against the target search's measured front (same samples)
    for u in a.uniform:
        best = max((p for p in a.points if p["cost"] <= u["cost"] + 1e-9), key=lambda p: p["sqnr_db"], default=None)
        if best is not None:
            print(f"    uniform {u['name']}: {u['cost']:,.0f} bits, rel.acc {u['relative_accuracy']:.4f}, SQNR "
                  f"{u['sqnr_db']:.1f} dB; best measured mixed point at <= that cost: rel.acc "
                  f"{best['relative_accuracy']:.4f}, SQNR {best['sqnr_db']:.1f} dB")

    # 3. calibration data only (no labels, no eval): the artifact against the default int8 output
    cal = calibration_only(name, m, calib, out_dir)
    print(f"  calibration only (search {cal['search']} / held out {cal['verify']}): "
          f"{'met' if cal['met'] else 'MISSED'} held out; eval top-1 {100 * cal['acc']:.2f}% vs float "
          f"{100 * cal['float_acc']:.2f}% (relative {cal['rel']:.4f}); claimed {cal['claimed_bits']:.2f} bits, file "
          f"{cal['stored_bits']:.2f} bits/weight ({32 / cal['stored_bits']:.2f}x vs float32), {cal['bytes']} bytes "
          f"vs int8 {cal['int8_bytes']}; integer kernels {cal['int_kernels']} vs int8 {cal['int8_kernels']}; "
          f"latency {1e6 * cal['latency']:.1f} us vs int8 {1e6 * cal['int8_latency']:.1f} us "
          f"({cal['latency'] / cal['int8_latency']:.2f}x); {cal['seconds']:.1f} s")

    # 3b. cost=latency (onnxruntime's measured time per layer and storage class), calibration data only
    lt, lwall, _ = timed(bitwidth.search, m, calib, target=TARGET, cost="latency")
    print(f"  cost=latency (calibration only): {lt.cost:.1f} {lt.cost_unit}, {'met' if lt.met else 'MISSED'} held "
          f"out, file {lt.artifact['avg_stored_weight_bits']:.2f} bits/weight; {layer_bits(lt)}; {lwall:.1f} s")

    # 4. bit operations
    o, owall, _ = timed(bitwidth.search, m, calib, eval=ev, target=TARGET, cost="bops")
    ub = {u["name"]: u["cost"] for u in o.uniform}
    print(f"  cost=bops: {o.cost / 1e6:.2f} MBOPs ({'met' if o.met else 'MISSED'}, relative accuracy "
          f"{o.metric['relative_accuracy']:.4f}) vs uniform W8/A8 {ub.get('W8/A8', np.nan) / 1e6:.2f}, "
          f"W4/A4 {ub.get('W4/A4', np.nan) / 1e6:.2f} MBOPs; {layer_bits(o)}; {owall:.1f} s")
    return {"model": name, "target_met": a.met, "avg_bits": c["avg_weight_bits"], "x_float32": c["float32"],
            "accuracy": a.metric["accuracy"], "seconds": wall, "equal_cost": rows, "calibration_only": cal}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=MODELS)
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_bitwidth"))
    args = ap.parse_args()
    out_dir = Path(args.out)
    results = [bench(name, out_dir) for name in args.models]
    print("\n=== summary")
    print(f"  {'model':<15} {'target':>6} {'avg W':>6} {'x fp32':>7} {'accuracy':>9} {'time':>6}   "
          f"equal-cost accuracy, uniform -> mixed (8/6/4 bits)")
    for r in results:
        eq = "  ".join(f"{100 * u:.1f}->{100 * mx:.1f}" for _, u, _, mx, _, _ in r["equal_cost"])
        print(f"  {r['model']:<15} {'met' if r['target_met'] else 'MISSED':>6} {r['avg_bits']:>6.2f} "
              f"{r['x_float32']:>6.2f}x {100 * r['accuracy']:>8.2f}% {r['seconds']:>5.1f}s   {eq}")


if __name__ == "__main__":
    main()
