"""MatMul storage and kernels side by side: MatMulNBits (float32 level 0, exact) against INT4 -> Cast(INT8) ->
DequantizeLinear and int8, per shape and on a MatMul-heavy zoo model (paraphrase-minilm-l3). The finding behind
lower_ort's rule (qpass/passes/matmul_nbits.py).

1. ``shapes``: one MatMul layer, with a uint8-quantised input (the QDQ layer onnxruntime fuses) and with a float
   input (weight-only quantisation); onnxruntime 1 thread, interleaved medians; "err" is the max |difference| from
   the reference interpreter on the same file (0 = bit-exact; onnxruntime rewrites a weight-only INT4 / int8 MatMul
   into an int8-compute MatMulNBits).
2. ``model``: paraphrase-minilm-l3 through qpass's fakequant pipeline (4-bit and 8-bit weights; uint8 activations
   or weight-only), with and without the MatMulNBits lowering: file size, latency on one calibration sample,
   max |difference| of the output from the reference interpreter on the same file.

    python bench/bitwidth_nbits.py [--out bench/results/bitwidth_nbits.json]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T, helper as h, numpy_helper as nh

SHAPES = [(1, 384, 384), (1, 384, 1536), (24, 384, 1536), (128, 384, 1536), (1, 2048, 2048), (1, 4096, 4096)]
ZOO = Path(os.path.expanduser("~/.cache/qpass-zoo"))


def layer(kind: str, act: str, m: int, k: int, n: int, rng) -> onnx.ModelProto:
    """One MatMul: weights int8 / int4 (Cast -> DequantizeLinear) / nbits (MatMulNBits level 0) / float; input
    uint8-quantised (``act="uint8"``) or float."""
    from qpass.passes.matmul_nbits import _nbits_inputs  # noqa: PLC2701 - the bench builds the pass's encoding

    codes = rng.integers(-8, 8, (k, n)).astype(np.int8)
    ws = (rng.random(n) * 0.01 + 0.001).astype(np.float32)
    inits, nodes, a = [], [], "x"
    if act == "uint8":
        inits += [nh.from_array(np.float32(0.02), "xs"), nh.from_array(np.uint8(128), "xz")]
        nodes += [h.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  h.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"])]
        a = "xd"
    if kind == "float":
        inits.append(nh.from_array((codes * ws).astype(np.float32), "w"))
        nodes.append(h.make_node("MatMul", [a, "w"], ["y"]))
    elif kind == "nbits":
        b, s, attrs = _nbits_inputs("w", codes, ws)
        inits += [b, s]
        nodes.append(h.make_node("MatMulNBits", [a, b.name, s.name], ["y"], domain="com.microsoft", **attrs))
    else:
        if kind == "int8":
            inits.append(nh.from_array(codes, "w"))
            wq = "w"
        else:
            nib = codes.reshape(-1).astype(np.uint8) & 0xF
            inits.append(h.make_tensor("w", T.INT4, codes.shape, (nib[0::2] | (nib[1::2] << 4)).tobytes(), raw=True))
            nodes.append(h.make_node("Cast", ["w"], ["wc"], to=T.INT8))
            wq = "wc"
        inits += [nh.from_array(ws, "ws"), nh.from_array(np.zeros(n, np.int8), "wz")]
        nodes += [h.make_node("DequantizeLinear", [wq, "ws", "wz"], ["wd"], axis=1),
                  h.make_node("MatMul", [a, "wd"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [m, k])],
                     [h.make_tensor_value_info("y", T.FLOAT, [m, n])], inits)
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 21), h.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return model


def exact_err(model, feed) -> float | None:
    """max |onnxruntime - reference interpreter| over the float outputs on ``feed`` (None where the reference
    refuses the file)."""
    from qpass.ir.ort_session import make_session
    from qpass.reference import GoldenExecutor, UnsupportedOpError

    ys = make_session(model).run(None, feed)
    try:
        r = GoldenExecutor(model).run(feed)
    except UnsupportedOpError:
        return None
    return max(float(np.abs(y.astype(np.float64) - r[o.name]).max()) for o, y in zip(model.graph.output, ys)
               if y.dtype == np.float32)


def timed(models: dict, feed: dict, budget_s: float) -> dict:
    from qpass.ir.ort_session import interleaved_times, make_session

    times = interleaved_times({k: make_session(m) for k, m in models.items()}, feed, 3, budget_s=budget_s)
    return {k: float(np.median(v)) * 1e6 for k, v in times.items()}


def shapes() -> list[dict]:
    rows = []
    for m, k, n in SHAPES:
        for act, kinds in (("uint8", ("int8", "int4", "nbits")), ("float", ("float", "int4", "nbits"))):
            x = np.random.default_rng(1).uniform(-2, 2, (m, k)).astype(np.float32)
            models = {kind: layer(kind, act, m, k, n, np.random.default_rng(0)) for kind in kinds}
            us = timed(models, {"x": x}, 1.0 if k * n < 2 ** 21 else 3.0)
            for kind, model in models.items():
                err = exact_err(model, {"x": x}) if k * n <= 384 * 1536 else None
                rows.append({"M": m, "K": k, "N": n, "input": act, "weights": kind, "us": round(us[kind], 1),
                             "bytes": model.ByteSize(), "err_vs_reference": err})
                print(f"  M={m:<4} K={k:<5} N={n:<5} {act:5} {kind:6} {us[kind]:9.1f} us {model.ByteSize():9d} B"
                      f"  err {err}")
    return rows


def model_rows() -> list[dict]:
    import qpass
    from qpass.ir.samples import load_samples
    from qpass.passes import lower_ort
    from qpass.pipeline.files import load_pipeline

    z = ZOO / "paraphrase-minilm-l3" / "paraphrase-minilm-l3"
    m = qpass.load(f"{z}.onnx")
    calib = load_samples(f"{z}.calib.npz", m)
    feed = calib.feed(0)
    real = lower_ort.lower_matmul_nbits
    variants = {}
    for w in (4, 8):
        for act in ("uint8", "float"):
            for nbits in ((True, False) if (w, act) == (4, "float") else (True,)):
                lower_ort.lower_matmul_nbits = real if nbits else (lambda mm: (mm, 0))
                rules = [{"role": "activation", "format": "float"}] if act == "float" else []
                res = qpass.optimize(m, calib=calib, pipeline=load_pipeline(
                    "fakequant", {"fakequant": {"weights": f"sym:{w}", "activations": "uint8", "rules": rules}}))
                variants[f"w{w} {act}{' nbits' if nbits and (w, act) == (4, 'float') else ''}"] = res.model
    lower_ort.lower_matmul_nbits = real
    us = timed(variants, feed, 6.0)
    rows = []
    for key, model in variants.items():
        ops = [n.op_type for n in model.graph.node]
        err = exact_err(model, feed)
        rows.append({"variant": key, "us": round(us[key], 1), "bytes": model.ByteSize(),
                     "matmulnbits": ops.count("MatMulNBits"), "err_vs_reference": err})
        print(f"  {key:16} {us[key]:9.1f} us {model.ByteSize():10d} B  MatMulNBits {ops.count('MatMulNBits'):2d}"
              f"  err {err}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; CPU flags avx2 avx512f avx512_vnni; onnxruntime 1 thread")
    out = {"load_average": os.getloadavg()[0], "shapes": shapes(), "paraphrase_minilm_l3": model_rows(),
           "load_average_after": os.getloadavg()[0]}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
