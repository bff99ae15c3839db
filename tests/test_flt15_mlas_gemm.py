"""Float32 MatMul / Gemm with a constant weight: the reference computes them as onnxruntime's MLAS SGEMM does (the
weight packed at session creation, K blocks of 256, one FMA chain per output and block, Gemm's C added first), so
the outputs are bit-identical to onnxruntime's at one thread, through the compiled kernel and the numpy emulation
alike (QPASS_NO_JIT=1)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.ort_session import make_session
from qpass.reference import GoldenExecutor

SHAPES = [(1, 3, 5), (1, 300, 64), (2, 257, 16), (5, 600, 33), (8, 100, 200), (17, 10, 1),
          (300, 520, 5), (129, 257, 8)]  # the last two: the narrow kernel (row blocks, K blocks)


def _model(op, m, k, w, c, attrs):
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(c, "C")] if c is not None else [])
    node = helper.make_node(op, ["A", "W"] + (["C"] if c is not None else []), ["Y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("jit", ["on", "off"])
@pytest.mark.parametrize("op,trans_b,bias", [("MatMul", 0, False), ("Gemm", 1, True), ("Gemm", 0, True),
                                             ("Gemm", 1, False)])
def test_float_gemm_bit_identical_to_onnxruntime(op, trans_b, bias, jit, monkeypatch):
    if jit == "off":
        monkeypatch.setenv("QPASS_NO_JIT", "1")
    rng = np.random.default_rng(15)
    for m, k, n in SHAPES:
        a = rng.standard_normal((m, k)).astype(np.float32)
        w = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
        c = rng.standard_normal((n,)).astype(np.float32) if bias else None
        model = _model(op, m, k, w, c, {"transB": trans_b} if op == "Gemm" else {})
        want = make_session(model, threads=1).run(None, {"A": a})[0]
        got = GoldenExecutor(model).run({"A": a})["Y"]
        assert got.dtype == np.float32
        assert np.array_equal(got, want), (m, k, n, int((got != want).sum()))
        # float64 rounded once differs from MLAS's float32 chains on some element of the larger shapes
        if k >= 100:
            exact = (a.astype(np.float64) @ (w.T if trans_b else w).astype(np.float64)
                     + (0 if c is None else c)).astype(np.float32)
            assert not np.array_equal(exact, want)
