"""Large 8-bit QGemm / QLinearMatMul / QLinearConv on torch's exact int8 GEMM (qpass.reference.ops_integer.int_mm): the codes,
float outputs and statistics of the float-BLAS path (QPASS_NO_INT_MM=1) and of onnxruntime; uint8 activations with
a zero point off 128 (the shift to int8 and its column-sum correction), int8 activations, saturated outputs, a
weight zero point that leaves int8 (then the float-BLAS path)."""
import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("torch")

from qpass.reference import GoldenExecutor  # noqa: E402
from qpass.reference.ops_integer import int_mm  # noqa: E402
from test_int15_jit import _model, _ort  # noqa: E402

K, N = 256, 96  # with 48 rows: 2^20 multiply-adds, the int_mm threshold


def _run_both(model, feeds, monkeypatch, expect_int_mm=True):
    monkeypatch.setenv("QPASS_NO_INT_MM", "1")
    ex0 = GoldenExecutor(model)
    y0 = ex0.run(feeds)["y"]
    monkeypatch.delenv("QPASS_NO_INT_MM")
    calls = []
    for kernel in ("matmul", "conv_mm"):
        fn = getattr(int_mm, kernel)
        monkeypatch.setattr(int_mm, kernel, lambda *a, fn=fn: (calls.append(1), fn(*a))[1])
    ex1 = GoldenExecutor(model)
    y1 = ex1.run(feeds)["y"]
    assert bool(calls) == expect_int_mm
    assert y0.dtype == y1.dtype and np.array_equal(y0, y1)
    assert ex0.stats == ex1.stats
    return y1, ex1.stats


@pytest.mark.parametrize("xdt, zx, op", [(np.uint8, 201, "Gemm"), (np.int8, -9, "Gemm"), (np.uint8, 3, "MatMul"),
                                          (np.int8, 0, "MatMul")])
def test_large_products_on_int_mm_equal_onnxruntime(xdt, zx, op, monkeypatch):
    rng = np.random.default_rng(zx + 300)
    lo, hi = np.iinfo(xdt).min, np.iinfo(xdt).max
    x = rng.integers(lo, hi + 1, (48, K)).astype(xdt)
    x[0] = hi  # extreme rows: the largest partial sums
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    w[:, 0] = -128
    sw = rng.uniform(0.002, 0.02, N).astype(np.float32)
    bias = rng.integers(-50000, 50000, N).astype(np.int32) if op == "Gemm" else None
    ydt = np.int8 if xdt == np.int8 else np.uint8
    model = _model(op, x.shape, xdt, w, np.zeros(N, np.int8), sw, bias, 0.04, zx, 1.5, 3, ydt, 1)
    y, stats = _run_both(model, {"x": x}, monkeypatch)
    assert np.array_equal(y, _ort(model, {"x": x}))
    assert next(iter(stats.values()))["output_clipped"] > 0


def test_float_output_on_int_mm(monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (64, K)).astype(np.uint8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    bias = rng.integers(-5000, 5000, N).astype(np.int32)
    model = _model("Gemm", x.shape, np.uint8, w, np.int8(0), np.float32(0.013), bias, 0.07, 77, None, 0, np.uint8, 1)
    y, _ = _run_both(model, {"x": x}, monkeypatch)
    assert y.dtype == np.float32 and np.allclose(y, _ort(model, {"x": x}), rtol=1e-6, atol=0)


def test_weights_outside_int8_stay_on_float_blas(monkeypatch):
    """uint8 weights with zero point 0: w - zw up to 255 does not fit int8."""
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (48, K)).astype(np.uint8)
    w = rng.integers(0, 256, (K, N)).astype(np.uint8)
    model = _model("MatMul", x.shape, np.uint8, w, np.zeros(N, np.uint8), np.full(N, 0.01, np.float32), None, 0.04,
                   128, 2.0, 128, np.uint8, 1)
    y, _ = _run_both(model, {"x": x}, monkeypatch, expect_int_mm=False)
    assert np.array_equal(y, _ort(model, {"x": x}))


@pytest.mark.parametrize("xdt, zx, attrs", [
    (np.uint8, 140, dict(pads=[1, 2, 0, 1], strides=[2, 1], group=2)),
    (np.int8, -5, dict(pads=[2, 2, 2, 2], dilations=[2, 1])),
])
def test_conv_on_int_mm_equal_onnxruntime(xdt, zx, attrs, monkeypatch):
    """Padding (the zero point, shifted), strides, dilations, groups; three samples in one patch matrix (32 output
    channels per group: fewer stay on the fused float-BLAS conv, ``CONV_INT_MM_MIN_CHANNELS``)."""
    rng = np.random.default_rng(zx + 1000)
    g = attrs.get("group", 1)
    m = 32 * g
    lo, hi = np.iinfo(xdt).min, np.iinfo(xdt).max
    x = rng.integers(lo, hi + 1, (3, 16, 21, 19)).astype(xdt)
    w = rng.integers(-128, 128, (m, 16 // g, 3, 3)).astype(np.int8)
    sw = rng.uniform(0.002, 0.02, m).astype(np.float32)
    bias = rng.integers(-50000, 50000, m).astype(np.int32)
    ydt = np.int8 if xdt == np.int8 else np.uint8
    model = _model("Conv", x.shape, xdt, w, np.zeros(m, np.int8), sw, bias, 0.04, zx, 1.0, 3, ydt, 0,
                   kernel_shape=[3, 3], **attrs)
    y, stats = _run_both(model, {"x": x}, monkeypatch)
    assert np.array_equal(y, _ort(model, {"x": x}))
    assert next(iter(stats.values()))["output_clipped"] > 0
