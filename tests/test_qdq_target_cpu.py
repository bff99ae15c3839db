"""Issue 12, weight encoding: int8 weights on onnxruntime's u8s8 kernels, and a layer whose int16 pair sums would
saturate on x86 CPUs without VNNI (vpmaddubsw adds adjacent u8 * s8 products in int16 with saturation).

The layer: a padded 3x3 Conv whose adjacent input channels carry large weights of one sign, fed with activations
whose uint8 codes sit near 255. For each ``target_cpu`` the test asserts what qpass emits, checks the emitted
weights against a numpy model of the AVX2 kernel (pairs of the NHWC im2col order, int16 saturation), and runs the
emitted model in the reference interpreter and in onnxruntime on this machine: integer codes identical.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.errors import PipelineError
from qpass.ir.ort_session import run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import QuantizeQDQOptions
from qpass.passes.quantize_qdq.u8s8 import reduction_rows, saturating_channels
from qpass.reference import GoldenExecutor, run_samples as golden_run

C, M = 8, 4
RNG = np.random.default_rng(12)


def saturating_conv() -> onnx.ModelProto:
    w = RNG.uniform(-0.2, 0.2, (M, C, 3, 3)).astype(np.float32)
    w[:, 0:2] = RNG.uniform(0.8, 1.0, (M, 2, 3, 3))  # channels 0 and 1 pair up at every kernel position
    w[1, 2:4] = -RNG.uniform(0.8, 1.0, (2, 3, 3))
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", C, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", M, 6, 6])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(M, np.float32), "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


CALIB = {"x": RNG.uniform(0, 1, (16, 1, C, 6, 6)).astype(np.float32)}
HOT = {"x": RNG.uniform(0.97, 1.0, (4, 1, C, 6, 6)).astype(np.float32)}  # input codes near 255


def quantize(model, **opts):
    pipe = qpass.load_pipeline("default", {"quantize_qdq": opts})
    return qpass.optimize(model, calib=bind_samples(CALIB, model), pipeline=pipe)


def weight_and_input(model):
    """(weight codes as stored, weight zero point, input scale, input zero point) of the quantized Conv."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    wdq, xdq = prod[conv.input[1]], prod[conv.input[0]]
    return inits[wdq.input[0]], inits[wdq.input[2]], inits[xdq.input[1]], inits[xdq.input[2]]


def avx2_accumulators(x_codes: np.ndarray, w_codes: np.ndarray, x_zp: int, saturate: bool) -> np.ndarray:
    """Raw sums of u8 * s8 products of a pad-1 3x3 Conv in MLAS's reduction order (kernel position, then input
    channel), adding pairs (2i, 2i + 1) in int16 with saturation when ``saturate`` (vpmaddubsw) or exactly."""
    n, c, h, wd = x_codes.shape
    xp = np.pad(x_codes.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=x_zp)
    cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=1)  # N, 9, C, H, W
    cols = cols.reshape(n, 9 * c, h, wd)
    rows = w_codes.astype(np.int64).transpose(0, 2, 3, 1).reshape(w_codes.shape[0], -1)  # M, 9 * C
    prods = np.einsum("nkhw,mk->nmkhw", cols, rows)
    pairs = prods[:, :, 0::2] + prods[:, :, 1::2]
    if saturate:
        pairs = np.clip(pairs, -32768, 32767)
    return pairs.sum(axis=2)


def code_outputs(model):
    """The model with the integer codes of its output QuantizeLinear as an extra output: (model, codes name)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    prod = {o: n for n in m.graph.node for o in n.output}
    q = prod[prod[m.graph.output[0].name].input[0]]
    m.graph.output.append(helper.make_tensor_value_info(q.output[0], TensorProto.UINT8, None))
    return m, q.output[0]


@pytest.mark.parametrize("target", ["avx2", "any", "vnni", "arm"])
def test_saturating_layer_per_target(target):
    src = saturating_conv()
    res = quantize(src, target_cpu=target)
    enc = res.report.results["quantization"]["weight_encodings"]["conv"]
    w, wzp, xs, xzp = weight_and_input(res.model)
    assert w.dtype == np.int8 and not wzp.any()  # int8 everywhere: the remedy keeps the u8s8 kernels
    x_codes = np.clip(np.round(HOT["x"][:, 0] / xs) + xzp, 0, 255).astype(np.int64)
    assert x_codes.min() >= 240
    exact = avx2_accumulators(x_codes, w, int(xzp), saturate=False)
    on_avx2 = avx2_accumulators(x_codes, w, int(xzp), saturate=True)
    can_saturate = saturating_channels("Conv", {}, w, 0, 255)
    if target in ("vnni", "arm"):
        assert enc == "int8"
        assert (np.abs(w).reshape(M, -1).max(axis=1) == 127).all()  # full int8 grid
        assert can_saturate.all() and (on_avx2 != exact).any()  # wrong on an AVX2 CPU, by design of the target
    else:
        assert enc == "pair_scale"
        assert not can_saturate.any() and (on_avx2 == exact).all()  # exact on every x86 kernel
    # the reference interpreter and onnxruntime on this machine: the same integer codes
    m, codes = code_outputs(res.model)
    feeds = bind_samples(HOT, m)
    ex = GoldenExecutor(m)
    assert "conv" in ex.fused
    g, r = golden_run(m, feeds, executor=ex), ort_run(m, feeds)
    np.testing.assert_array_equal(g[codes], r[codes])
    np.testing.assert_array_equal(g["y"], r["y"])


@pytest.mark.parametrize("remedy,dtype,bound", [("seven_bit", np.int8, 64), ("uint8_offset", np.uint8, 255)])
def test_other_remedies(remedy, dtype, bound):
    res = quantize(saturating_conv(), target_cpu="avx2", avx2_remedy=remedy)
    assert res.report.results["quantization"]["weight_encodings"]["conv"] == remedy
    w, wzp, _, _ = weight_and_input(res.model)
    assert w.dtype == dtype and np.abs(w.astype(np.int64)).max() <= bound
    if remedy == "uint8_offset":
        assert (wzp == 128).all()
    else:
        assert not saturating_channels("Conv", {}, w, 0, 255).any()


def test_layer_that_cannot_saturate_stays_full_int8():
    src = saturating_conv()
    w = numpy_helper.to_array(src.graph.initializer[0]).copy()
    w[:, 0::2] = 0.01 * np.sign(w[:, 0::2])  # every pair: one large, one tiny weight
    src.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    res = quantize(src)
    assert res.report.results["quantization"]["weight_encodings"]["conv"] == "int8"
    codes = weight_and_input(res.model)[0]
    assert (np.abs(codes).reshape(M, -1).max(axis=1) == 127).all()


def test_pairing_follows_mlas_reduction_order():
    """Conv pairs adjacent input channels at one kernel position (K = kernel_position * C/g + channel); Gemm and
    MatMul pair adjacent rows of K; depthwise Conv has no pairs."""
    w = np.zeros((1, 4, 1, 2), np.int64)
    w[0, 0, 0, 0] = w[0, 1, 0, 0] = 100  # channels 0, 1 at one position: a pair
    assert saturating_channels("Conv", {}, w, 0, 255).all()
    w = np.zeros((1, 4, 1, 2), np.int64)
    w[0, 0, 0, 0] = w[0, 0, 0, 1] = 100  # one channel, two positions: not a pair when C/g is even
    assert not saturating_channels("Conv", {}, w, 0, 255).any()
    w = np.zeros((1, 3, 1, 2), np.int64)
    w[0, 2, 0, 0] = w[0, 0, 0, 1] = 100  # C/g = 3: K indices 2 and 3 pair across the positions
    assert saturating_channels("Conv", {}, w, 0, 255).all()
    rows = reduction_rows("Gemm", {"transB": 1}, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(rows, [[0, 1, 2], [3, 4, 5]])
    rows = reduction_rows("MatMul", {}, np.arange(6).reshape(3, 2))
    np.testing.assert_array_equal(rows, [[0, 2, 4], [1, 3, 5]])
    assert reduction_rows("Conv", {"group": 4}, np.full((4, 1, 3, 3), 127)) is None
    assert not saturating_channels("Conv", {}, np.full((1, 2, 1, 1), 64), 0, 255).any()  # 255 * 128 fits


def test_bad_target_is_one_error():
    with pytest.raises(ValueError, match="target_cpu must be one of auto, any, avx2, vnni, arm"):
        QuantizeQDQOptions(target_cpu="x86")
    with pytest.raises(PipelineError, match="avx2_remedy"):
        qpass.load_pipeline("default", {"quantize_qdq": {"avx2_remedy": "wider"}})


def test_lossy_remedy_is_checked_on_calibration_data():
    """pair_scale is kept while its simulated output SQNR loss against full int8 stays within avx2_max_loss_db;
    beyond it the pass re-quantizes the layers with the exact uint8 + 128 encoding."""
    strict = quantize(saturating_conv(), target_cpu="any", avx2_max_loss_db=0.0).report.results["quantization"]
    assert strict["weight_encodings"]["conv"] == "uint8_offset"
    assert "exact uint8+128 weights instead" in strict["remedy_check"]
    unchecked = quantize(saturating_conv(), target_cpu="any", avx2_max_loss_db=None).report.results["quantization"]
    assert unchecked["weight_encodings"]["conv"] == "pair_scale" and "remedy_check" not in unchecked


def test_cli_target_cpu(tmp_path):
    import subprocess
    import sys

    from conftest import MODELS

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "-o",
                               str(tmp_path / "m.onnx"), "-q", *args], capture_output=True, text=True, timeout=300)

    ok = cli("--target-cpu", "vnni")
    assert ok.returncode == 0, ok.stderr
    w = weight_and_input(onnx.load(tmp_path / "m.onnx"))[0]
    assert (np.abs(w).reshape(w.shape[0], -1).max(axis=1) == 127).all()
    bad = cli("--target-cpu", "avx2", "--weights", "sym:4")  # a fakequant pipeline has no quantize_qdq
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--target-cpu" in bad.stderr


@pytest.mark.parametrize("machine,flags,want", [
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, "vnni"), ("x86_64", {"avx2", "avx_vnni"}, "vnni"),
    ("x86_64", {"avx2", "fma"}, "avx2"), ("x86_64", {"sse4_2"}, "any"), ("aarch64", {"asimd"}, "arm"),
    ("riscv64", set(), "any")])
def test_auto_target_is_the_machines_kind(machine, flags, want):
    from qpass.passes.quantize_qdq.target import detect_target

    assert detect_target(machine, flags) == want


def test_auto_target_is_resolved_and_reported():
    from qpass.passes.quantize_qdq.target import detect_target

    res = quantize(saturating_conv())
    assert res.report.results["quantization"]["target_cpu"] == detect_target() != "auto"
