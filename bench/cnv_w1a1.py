"""CNV-W1A1 (BNN-PYNQ's CNV: binary weights and activations, 8-bit first layer) exported to HLS with FINN's
``fold_cnv_large`` folding through ``--folding``, its estimate printed next to BNN-PYNQ's published Pynq-Z1 build.

Topology (BNN-PYNQ ``bnn/src/network/cnvW1A1``, FINN ``tests/end2end/test_end2end_bnn_pynq.py``): 3x32x32 input;
3x3 valid convolutions 64, 64, [2x2 max pool], 128, 128, [pool], 256, 256; fully connected 256-512-512-10. Every
convolution and the first two FC layers are followed by a batch norm and a sign (Brevitas: QuantConv2d/QuantLinear
+ BatchNorm + 1-bit QuantIdentity); the first layer reads 8-bit pixels. Weights are random (signs): resources and
cycles do not depend on their values, bit-exactness is checked on whatever they are.

Folding: FINN's ``fold_cnv_large`` (Xilinx/finn, tests/end2end/test_end2end_bnn_pynq.py, commit 00fc0aac), (PE, SIMD)
per MVAU = (16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1); each sliding window's
SIMD = its MVAU's SIMD. Written as a FINN ``folding_config.json`` and passed to ``qpass optimize --folding``.

Published numbers (BNN-PYNQ ``bnn/src/network/cnvW1A1/README.md``, Pynq-Z1, whole system): 26,072 LUT, 124 BRAM36.
Exported with ``--weights-mode runtime`` (default here): weights and thresholds in per-PE RAMs the host writes
before streaming, as BNN-PYNQ's ``DoMemInit`` (``const``: constant ROMs, with the runtime pricing of the weight
memories shown beside).

    python bench/cnv_w1a1.py [--csim [--frames N]] [--out DIR] [--size full|tiny] [--weights-mode runtime|const]
    python bench/cnv_w1a1.py --rtl [--frames N] [--size full|tiny] [--weights-mode ...]   (Verilator, slow)

``--rtl``: the same design through the RTL backend, simulated with Verilator + cocotb on N frames streamed back to
back: mismatches against the reference interpreter, steady-state cycles/frame vs the folding model's bottleneck.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.hw.memory_costs import AUTO_LUTRAM_DEPTH, bram18_for
from qpass.hw.weight_memory import runtime_memory

ROOT = Path(__file__).resolve().parents[1]
FOLD_CNV_LARGE = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)]
BNN_PYNQ = {"LUT": 26_072, "BRAM36": 124}
#: (MW, MH) of the nine matrix layers of the full CNV (9*C_in x C_out for the convolutions)
CNV_MATRICES = [(27, 64), (576, 64), (576, 128), (1152, 128), (1152, 256), (2304, 256), (256, 512), (512, 512),
                (512, 10)]
#: (conv channels with "pool" markers, FC widths, input side) of the full CNV and of a fast test twin
SIZES = {"full": ([64, 64, "pool", 128, 128, "pool", 256, 256], [512, 512, 10], 32),
         "tiny": ([8, 8, "pool", 16, 16], [16, 10], 16)}


def build_cnv(size: str = "full", seed: int = 0) -> onnx.ModelProto:
    """The float CNV graph: Conv (no bias) -> BatchNormalization -> [MaxPool] ..., Flatten, MatMul ->
    BatchNormalization (1-d) ..., a last MatMul. The quantisers (1-bit signs, 8-bit first input) come from the
    pipeline (``pipeline_overrides``)."""
    convs, fcs, side = SIZES[size]
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = [], [], "input", 3

    def bn(name, t, ch):
        for k, v in (("g", rng.uniform(0.5, 1.5, ch)), ("b", rng.normal(0, 0.3, ch)), ("m", rng.normal(0, 0.5, ch)),
                     ("v", rng.uniform(0.5, 2.0, ch))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), f"{name}_{k}"))
        nodes.append(helper.make_node("BatchNormalization", [t] + [f"{name}_{k}" for k in "gbmv"], [f"{name}_y"],
                                      name=name))
        return f"{name}_y"

    i = 0
    for spec in convs:
        if spec == "pool":
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{i}_y"], kernel_shape=[2, 2], strides=[2, 2],
                                          name=f"pool{i}"))
            x = f"pool{i}_y"
            continue
        w = np.sign(rng.standard_normal((spec, c, 3, 3))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"conv{i}_w"))
        nodes.append(helper.make_node("Conv", [x, f"conv{i}_w"], [f"conv{i}_y"], kernel_shape=[3, 3], name=f"conv{i}"))
        x, c = bn(f"bn{i}", f"conv{i}_y", spec), spec
        i += 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten"))
    x = "flat"
    dims = onnx.shape_inference.infer_shapes(helper.make_model(
        helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
                          [helper.make_tensor_value_info("flat", TensorProto.FLOAT, None)], inits)))
    c = next(v for v in dims.graph.output).type.tensor_type.shape.dim[1].dim_value
    for j, h in enumerate(fcs):
        w = np.sign(rng.standard_normal((c, h))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"fc{j}_w"))
        nodes.append(helper.make_node("MatMul", [x, f"fc{j}_w"], [f"fc{j}_y"], name=f"fc{j}"))
        x, c = f"fc{j}_y", h
        if j < len(fcs) - 1:
            x = bn(f"bnfc{j}", x, h)
    g = helper.make_graph(nodes, f"cnv_w1a1_{size}",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, side, side])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, c])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def pipeline_overrides() -> dict:
    """Binary weights and activations everywhere, 8-bit unsigned pixels into the first convolution."""
    return {"fakequant": {"weights": "binary", "activations": "binary",
                          "rules": [{"role": "activation", "match": "conv0", "format": "uint8"}]}}


def samples(size: str, n: int, seed: int = 1) -> dict:
    side = SIZES[size][2]
    rng = np.random.default_rng(seed)
    return {"input": (rng.integers(0, 256, (n, 1, 3, side, side)) / 255.0).astype(np.float32)}


def folding_file(path: Path) -> Path:
    """fold_cnv_large as a FINN folding_config.json (FINN's node names: the i-th MVAU / sliding window)."""
    cfg = {"Defaults": {}}
    for i, (pe, simd) in enumerate(FOLD_CNV_LARGE):
        cfg[f"MVAU_hls_{i}"] = {"PE": pe, "SIMD": simd}
        if i < 6:
            cfg[f"ConvolutionInputGenerator_hls_{i}"] = {"SIMD": simd}
    path.write_text(json.dumps(cfg, indent=1))
    return path


def _totals(report: str) -> dict:
    import re

    m = re.search(r"\(LUT (\d+), BRAM18 (\d+), URAM (\d+), DSP (\d+)\)", report)
    cyc = max(int(x) for x in re.findall(r"^bottleneck \S+ \((\d+) cycles/frame\)", report, re.M))
    return {"LUT": int(m.group(1)), "BRAM18": int(m.group(2)), "DSP": int(m.group(4)), "cycles": cyc}


def rtl_export(size: str, frames: int, weights_mode: str, out: Path):
    """The CNV through the RTL backend (the Python API: fold_cnv_large for the full size) with ``frames`` random
    sample frames for its testbench, exported under ``out``/rtl."""
    import qpass
    from qpass.api import qonnx_model
    from qpass.backends import rtl
    from qpass.hw.folding_config import load
    from qpass.ir.samples import bind_samples

    m = build_cnv(size)
    (out / "pipe.yaml").write_text(PIPELINE)
    r = qpass.optimize(m, calib=bind_samples(samples(size, 16), m), pipeline=qpass.load_pipeline(
        str(out / "pipe.yaml")))
    folding = load(folding_file(out / "f.json")) if size == "full" else None
    return rtl.export(qonnx_model(r), out / "rtl", samples=bind_samples(samples(size, frames, seed=2), m),
                      folding=folding, weights_mode=weights_mode)


def rtl_run(size: str, frames: int, weights_mode: str, out: Path | None, harness: str = "cocotb") -> int:
    """Export the CNV through the RTL backend and simulate it with Verilator (cocotb or the plain C++ harness)."""
    from qpass.backends import rtl

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = rtl_export(size, frames, weights_mode, out or Path(tmp))
        t1 = time.perf_counter()
        print(f"CNV-W1A1 ({size}) RTL export ({weights_mode} weights) {t1 - t0:.1f} s; Verilator ({harness}), "
              f"{frames} frames back to back:")
        bad = 0
        for p in res.partitions:
            s = rtl.simulate(p, frames=frames, timeout=7200, harness=harness)
            print(f"  {s.summary()} [{time.perf_counter() - t1:.0f} s]")
            bad += int(not s.ok)
        return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--csim", action="store_true", help="also g++ C simulation vs the reference interpreter (slow)")
    ap.add_argument("--frames", type=int, default=2, help="frames for --csim")
    ap.add_argument("--out", default=None, help="export folder (default: a temporary one)")
    ap.add_argument("--weights-mode", choices=("const", "runtime"), default="runtime",
                    help="runtime (default): weights and thresholds in RAMs the host writes, as BNN-PYNQ; const: ROMs")
    ap.add_argument("--rtl", action="store_true", help="the RTL backend under Verilator instead (slow)")
    args = ap.parse_args()
    if args.rtl:
        return rtl_run(args.size, args.frames, args.weights_mode, Path(args.out).resolve() if args.out else None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / f"cnv_w1a1_{args.size}.onnx"
        onnx.save(build_cnv(args.size), model)
        np.savez(tmp / "calib.npz", **samples(args.size, 16))
        np.savez(tmp / "eval.npz", **samples(args.size, args.frames, seed=2))
        pipe = tmp / "pipeline.yaml"
        pipe.write_text(PIPELINE)
        out = Path(args.out).resolve() if args.out else tmp / "hls"
        cmd = [sys.executable, "-m", "qpass.cli", "optimize", str(model), "--backend", "hls", "-o", f"{out}/",
               "--pipeline", str(pipe), "--calib", str(tmp / "calib.npz"), "--allow-over-budget", "-q",
               "--weights-mode", args.weights_mode]
        if args.size == "full":
            cmd += ["--folding", str(folding_file(tmp / "folding_config.json"))]
        if args.csim:
            cmd += ["--csim", "--eval", str(tmp / "eval.npz")]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            print(r.stdout + r.stderr)
            return r.returncode
        est = _totals((out / "report.txt").read_text())
    print(f"CNV-W1A1 ({args.size}), fold_cnv_large via --folding, xc7z020 at 100 MHz; qpass export {secs:.1f} s"
          + (f" with C simulation of {args.frames} frames: {r.stdout.strip().splitlines()[-1]}" if args.csim else ""))
    print(f"bottleneck: {est['cycles']} cycles/frame" + (" (FINN fold_cnv_large: 32768)" if args.size == "full" else
                                                         "") + f" -> {1e8 / est['cycles']:,.0f} FPS")
    if args.size != "full":
        print(f"estimate: LUT {est['LUT']:,d}, BRAM18 {est['BRAM18']} (the tiny twin: no published build to compare)")
        return 0
    print(f"{'':22s}{'qpass estimate':>16s}{'BNN-PYNQ Pynq-Z1':>18s}{'ratio':>8s}")
    print(f"{'LUT':22s}{est['LUT']:>16,d}{BNN_PYNQ['LUT']:>18,d}{est['LUT'] / BNN_PYNQ['LUT']:>8.2f}")
    b36 = est["BRAM18"] / 2
    print(f"{'BRAM36 (= BRAM18/2)':22s}{b36:>16.1f}{BNN_PYNQ['BRAM36']:>18d}{b36 / BNN_PYNQ['BRAM36']:>8.2f}")
    if args.weights_mode == "runtime":
        print("qpass: the dataflow region (layers, FIFOs, width converters) with runtime-writable weights and "
              "thresholds (per-PE RAMs with a read/write load port, weights in block RAM: BNN-PYNQ's design), priced "
              "by qpass.hw.weight_memory. BNN-PYNQ: the whole system (DMA, AXI-Lite, its weights loaded the same "
              "way); qpass does not estimate the shell.")
        return 0
    # the runtime memory model applied to BNN-PYNQ's weight memories (what --weights-mode runtime emits)
    own = sum(pe * bram18_for(mw * mh // (pe * simd), simd) if mw * mh // (pe * simd) > AUTO_LUTRAM_DEPTH else 0
              for (mw, mh), (pe, simd) in zip(CNV_MATRICES, FOLD_CNV_LARGE))
    theirs = sum(runtime_memory(mw * mh // (pe * simd), simd, pe, "block")[1]
                 for (mw, mh), (pe, simd) in zip(CNV_MATRICES, FOLD_CNV_LARGE))
    b36 = (est["BRAM18"] - own + theirs) / 2
    print(f"{'BRAM36, BNN-PYNQ RAMs':22s}{b36:>16.1f}{BNN_PYNQ['BRAM36']:>18d}{b36 / BNN_PYNQ['BRAM36']:>8.2f}"
          f"   (weights {own} -> {theirs} BRAM18)")
    print("qpass: the dataflow region (layers, FIFOs, width converters), weights as embedded constant ROMs (LUTROM up "
          "to 128 words). BNN-PYNQ: the whole system (DMA, AXI); its weights are runtime-writable per-PE RAMs, all in "
          "block RAM: the 'BNN-PYNQ RAMs' row prices those as --weights-mode runtime does.")
    return 0


PIPELINE = """name: cnv-w1a1
passes:
  - normalize
  - fold_batchnorm
  - calibrate: {method: minmax}
  - fakequant:
      weights: binary
      activations: binary
      rules: [{role: activation, match: conv0, format: uint8}]
  - to_int_codes
  - repeat:
      max_iter: 20
      passes: [move_dequant, integer_linear, integer_add, integer_pool, absorb_thresholds]
  - integer_report
"""

if __name__ == "__main__":
    sys.exit(main())
