"""Dialect conversions (qpass.passes.dialects): QONNX <-> QCDQ / QDQ exactly, the refusals, float8, QOperator and
dynamic models from onnxruntime's quantizer, ``inspect`` and ``--format``."""
from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.errors import UnsupportedOpError
from qpass.ops.common import QONNX_DOMAIN
from qpass.passes.dialects import detect_dialect
from qpass.pipeline.run import run_passes
from qpass.reference import GoldenExecutor

C = 3


def _model(nodes, inits, shape=(2, C, 4, 4), opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(QONNX_DOMAIN, 1)])


def quant_model(bits, signed, narrow, mode, zp, per_channel, op="Quant", bw=None):
    s = np.array([0.05, 0.1, 0.02], np.float32).reshape(1, C, 1, 1) if per_channel else np.float32(0.07)
    node = helper.make_node(op, ["x", "s", "z", "b"], ["y"], domain=QONNX_DOMAIN, name="q0", signed=signed,
                            narrow=narrow, rounding_mode=mode)
    return _model([node], {"s": s, "z": np.float32(zp), "b": np.float32(bits if bw is None else bw)})


def _x(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, C, 4, 4)) * 3).astype(np.float32)
    x.reshape(-1)[:8] = np.float32(0.07) * np.array([0.5, 1.5, 2.5, -0.5, -1.5, 3.5, 100, -100], np.float32)
    return x


def _ref(m, x):
    return GoldenExecutor(m).run({"x": x})["y"]


CASES = [c for i, c in enumerate(itertools.product([2, 4, 8, 12, 16], [0, 1], [0, 1],
                                                   ["ROUND", "FLOOR", "HALF_UP", "DOWN", "CEIL", "UP", "HALF_DOWN"],
                                                   [0, 3], [False, True])) if i % 7 == 0]


@pytest.mark.parametrize("bits,signed,narrow,mode,zp,per_channel", CASES)
def test_quant_round_trips_bit_identical(bits, signed, narrow, mode, zp, per_channel):
    """Every Quant -> QCDQ and -> QDQ is bit-identical (ties at x.5, saturation), and comes back as one Quant."""
    m = quant_model(bits, signed, narrow, mode, -zp if signed else zp, per_channel)
    x = _x()
    ref = _ref(m, x)
    import onnxruntime as ort

    for style in ("qonnx_to_qcdq", "qonnx_to_qdq"):
        conv = run_passes(m, [style]).model
        assert not any(n.domain == QONNX_DOMAIN for n in conv.graph.node)
        assert np.array_equal(_ref(conv, x), ref)
        sess = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"])
        assert np.array_equal(sess.run(None, {"x": x})[0], ref)  # onnxruntime computes the same
        back = run_passes(conv, ["qdq_to_qonnx"]).model
        assert [n.op_type for n in back.graph.node] == ["Quant"]
        assert np.array_equal(_ref(back, x), ref)


def test_bipolar_and_sign_take_their_integer_form():
    import onnxruntime as ort

    x = _x(1)
    x.reshape(-1)[8:10] = [-1e-45, 0.0]  # -1e-45 / s is -0: the 1-bit Quant says +1, BipolarQuant -1
    for m, op in ((_model([helper.make_node("BipolarQuant", ["x", "s"], ["y"], domain=QONNX_DOMAIN)],
                          {"s": np.float32(0.25)}), "BipolarQuant"), (quant_model(1, 1, 0, "ROUND", 0, True), "Quant")):
        ref = _ref(m, x)
        conv = run_passes(m, ["qonnx_to_qcdq"]).model
        assert {"GreaterOrEqual", "Where", "DequantizeLinear"} <= {n.op_type for n in conv.graph.node}
        assert np.array_equal(_ref(conv, x), ref)
        sess = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"])
        assert np.array_equal(sess.run(None, {"x": x})[0], ref)
        back = run_passes(conv, ["qdq_to_qonnx"]).model
        assert [n.op_type for n in back.graph.node] == [op]
        assert np.array_equal(_ref(back, x), ref)


@pytest.mark.parametrize("model,words", [
    (quant_model(17, 1, 0, "ROUND", 0, False), "17 bits"),
    (quant_model(4, 1, 0, "ROUND", 0.5, False), "not an integer"),
    (_model([helper.make_node("Quant", ["x", "s", "z", "x"], ["y"], domain=QONNX_DOMAIN, name="q0")],
            {"s": np.float32(0.1), "z": np.float32(0)}), "run time"),
])
def test_refusals_name_the_node(model, words):
    with pytest.raises(UnsupportedOpError, match=f"Quant node 'q0'.*{words}"):
        run_passes(model, ["qonnx_to_qcdq"])


def test_asymmetric_qdq_imports_exactly():
    """uint8 codes with zero point 3 (per tensor) and per-channel zero points: a centred grid that is no QONNX grid
    comes in as Clip + Quant, bit-identical to onnxruntime's QuantizeLinear -> DequantizeLinear."""
    import onnxruntime as ort

    for s, z, axis in ((np.float32(0.03), np.uint8(3), None),
                       (np.array([0.02, 0.05, 0.1], np.float32), np.array([3, 200, 128], np.uint8), 1)):
        attrs = {} if axis is None else {"axis": axis}
        m = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["c"], **attrs),
                    helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], **attrs)], {"s": s, "z": z})
        x = _x(2)
        want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        back = run_passes(m, ["qdq_to_qonnx"]).model
        assert "Quant" in [n.op_type for n in back.graph.node]
        assert np.array_equal(_ref(back, x), want)


def test_float_quant_equals_onnx_float8():
    import onnxruntime as ort

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, C, 4, 4)) * np.exp(rng.uniform(-10, 7, (2, C, 4, 4)))).astype(np.float32)
    for e, mb, bias, top in ((4, 3, 7, 448.0), (5, 2, 15, 57344.0)):
        node = helper.make_node("FloatQuant", ["x", "s", "e", "m", "b", "t"], ["y"], domain=QONNX_DOMAIN, name="f")
        m = _model([node], {"s": np.float32(0.5), "e": np.float32(e), "m": np.float32(mb), "b": np.float32(bias),
                            "t": np.float32(top)})
        ref = _ref(m, x)
        conv = run_passes(m, ["qonnx_to_qcdq"]).model
        got = ort.InferenceSession(conv.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert np.array_equal(got, ref)
        assert [n.op_type for n in run_passes(conv, ["qdq_to_qonnx"]).model.graph.node] == ["FloatQuant"]
    node = helper.make_node("FloatQuant", ["x", "s", "e", "m", "b", "t"], ["y"], domain=QONNX_DOMAIN, name="f3")
    odd = _model([node], {"s": np.float32(1), "e": np.float32(3), "m": np.float32(2), "b": np.float32(3),
                          "t": np.float32(28)})
    with pytest.raises(UnsupportedOpError, match="FloatQuant node 'f3'"):
        run_passes(odd, ["qonnx_to_qcdq"])


def test_cli_refuses_an_inexpressible_quantizer_in_one_line(tmp_path):
    src = tmp_path / "q17.onnx"
    onnx.save(quant_model(17, 1, 0, "ROUND", 0, False), src)
    out = tmp_path / "out.onnx"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", src, "-o", out, "--format", "qcdq"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and not out.exists()
    assert r.stderr.count("\n") == 1 and "Quant node 'q0'" in r.stderr and "17 bits" in r.stderr


def test_detect_names_dialects():
    assert detect_dialect(quant_model(4, 1, 0, "ROUND", 0, False)).name == "QONNX"
    qcdq = run_passes(quant_model(4, 1, 0, "ROUND", 0, False), ["qonnx_to_qcdq"]).model
    info = detect_dialect(qcdq)
    assert info.name == "QCDQ" and info.formats == {"DequantizeLinear int8": 1}
    qdq = run_passes(quant_model(8, 1, 0, "ROUND", 0, False), ["qonnx_to_qcdq"]).model
    assert detect_dialect(qdq).name == "QDQ"


@pytest.mark.parametrize("v2,signed,narrow", [(0, 1, 0), (1, 1, 0), (1, 0, 0), (1, 1, 1)])
def test_trunc_round_trips_through_shift_and_clip(v2, signed, narrow):
    ins = ["x", "s", "z", "ib"] + (["os", "ob"] if v2 else ["ob"])
    vals = {"s": 0.25, "z": 0.0, "ib": 10.0, "ob": 4.0, "os": 16.0}
    node = helper.make_node("Trunc", ins, ["y"], domain=QONNX_DOMAIN, name="t0", rounding_mode="FLOOR",
                            signed=signed, narrow=narrow)
    m = _model([node], {k: np.float32(vals[k]) for k in ins[1:]}, shape=(4, 64))
    x = (np.random.default_rng(4).integers(-512, 512, (4, 64)) * 0.25).astype(np.float32)
    x[0, :8] += np.float32(0.125)  # ties of round(x / s)
    ref = _ref(m, x)
    conv = run_passes(m, ["qonnx_to_qcdq"]).model
    assert "Mod" in {n.op_type for n in conv.graph.node} and not any(n.domain for n in conv.graph.node)
    assert np.array_equal(_ref(conv, x), ref)
    back = run_passes(conv, ["qdq_to_qonnx"]).model
    assert [n.op_type for n in back.graph.node] == ["Trunc"]
    assert [numpy_helper.to_array(i).item() for i in back.graph.initializer] == [vals[k] for k in ins[1:]]
    assert np.array_equal(_ref(back, x), ref)
    ceil = helper.make_node("Trunc", ins, ["y"], domain=QONNX_DOMAIN, name="t1", rounding_mode="CEIL")
    with pytest.raises(UnsupportedOpError, match="Trunc node 't1'.*CEIL"):
        run_passes(_model([ceil], {k: np.float32(vals[k]) for k in ins[1:]}, shape=(4, 64)), ["qonnx_to_qcdq"])


def test_qlinear_matmul_and_mul_convert_to_qdq_with_onnxruntime_codes():
    import onnxruntime as ort

    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (16, 8)).astype(np.int8)
    inits = {"as": np.float32(0.02), "az": np.uint8(120), "w": w, "ws": np.float32(0.01), "wz": np.int8(0),
             "ys": np.float32(0.05), "yz": np.uint8(100), "ms": np.float32(0.2), "mz": np.uint8(90)}
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "ys", "yz"], ["y"], name="mm"),
             helper.make_node("QLinearMul", ["y", "ys", "yz", "y", "ys", "yz", "ms", "mz"], ["z"], name="mul",
                              domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, [4, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [4, 8]),
                           helper.make_tensor_value_info("z", TensorProto.UINT8, [4, 8])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    a = rng.integers(0, 256, (4, 16)).astype(np.uint8)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a})
    conv = run_passes(m, ["qoperator_to_qdq"]).model
    assert detect_dialect(conv).dialects == ["QDQ"]
    got = GoldenExecutor(conv).run({"a": a}, ["y", "z"])
    assert np.array_equal(got["y"], want[0]) and np.array_equal(got["z"], want[1])
