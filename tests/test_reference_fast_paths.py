"""The reference interpreter's fast paths give the numbers of the slow ones: 8-bit DQ -> f -> Q chains as 256-code
tables equal the unfused chain code for code; float32 Conv is batch-invariant; integer-valued float Convs and
MatMuls stay exact past 2^24; a multi-output model runs once per batch."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.reference import GoldenExecutor, run_samples
from qpass.ir.samples import as_samples

UNARY = [("Sigmoid", {}, []), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []), ("LeakyRelu", {"alpha": 0.1}, []),
         ("Tanh", {}, []), ("Erf", {}, []), ("Clip", {}, [-0.5, 0.75]), ("Exp", {}, []), ("HardSwish", {}, [])]


def _chain(op, attrs, params, dtype, float_out: bool):
    """x (float) -> Q -> DQ -> op -> Q -> DQ; ``float_out``: the op's float output is also a graph output (which
    keeps the chain unfused)."""
    zt = TensorProto.INT8 if dtype == np.int8 else TensorProto.UINT8
    zp = 3 if dtype == np.int8 else 121
    inits = [numpy_helper.from_array(np.array(0.037, np.float32), "s0"),
             numpy_helper.from_array(np.array(zp, dtype), "z0"),
             numpy_helper.from_array(np.array(0.0071, np.float32), "s1"),
             numpy_helper.from_array(np.array(zp // 2, dtype), "z1")]
    extra = []
    for i, v in enumerate(params):
        inits.append(numpy_helper.from_array(np.array(v, np.float32), f"p{i}"))
        extra.append(f"p{i}")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s0", "z0"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s0", "z0"], ["xd"]),
             helper.make_node(op, ["xd"] + extra, ["y"], **attrs),
             helper.make_node("QuantizeLinear", ["y", "s1", "z1"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s1", "z1"], ["out"])]
    outs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
    if float_out:
        outs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 300])], outs,
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("op,attrs,params", UNARY, ids=[u[0] for u in UNARY])
def test_unary_chain_table_equals_the_unfused_chain(op, attrs, params, dtype):
    x = np.random.default_rng(0).uniform(-6, 6, (7, 300)).astype(np.float32)  # every input code, and more
    fused, plain = GoldenExecutor(_chain(op, attrs, params, dtype, False)), \
        GoldenExecutor(_chain(op, attrs, params, dtype, True))
    assert list(fused.fused.values()) == ["QLinearLookup"] and not plain.fused
    a, b = fused.run({"x": x})["out"], plain.run({"x": x})["out"]
    assert len(np.unique(a)) > 8 and np.array_equal(a, b)


def _conv_model(w, b=None):
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    node = helper.make_node("Conv", ["x", "w"] + (["b"] if b is not None else []), ["y"], pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 40, 40])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_float32_conv_numbers_do_not_depend_on_the_batch():
    rng = np.random.default_rng(1)
    m = _conv_model(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), rng.standard_normal(8).astype(np.float32))
    x = rng.standard_normal((9, 4, 40, 40)).astype(np.float32)
    ex = GoldenExecutor(m)
    whole = ex.run({"x": x})["y"]
    for s in range(len(x)):
        assert np.array_equal(ex.run({"x": x[s:s + 1]})["y"], whole[s:s + 1])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    ref = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.allclose(whole, ref, rtol=1e-5, atol=1e-5)


def test_integer_valued_float_conv_and_matmul_are_exact_past_2_24():
    rng = np.random.default_rng(2)
    w = rng.integers(-2000, 2000, (8, 4, 3, 3)).astype(np.float32)
    x = rng.integers(-3000, 3000, (2, 4, 40, 40)).astype(np.float32)
    y = GoldenExecutor(_conv_model(w)).run({"x": x})["y"]
    xi = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    exact = np.zeros(y.shape, np.int64)
    for i in range(3):
        for j in range(3):
            exact += np.einsum("nchw,mc->nmhw", xi[:, :, i:i + 40, j:j + 40], w[:, :, i, j].astype(np.int64))
    assert np.abs(exact).max() > 2 ** 24
    assert np.array_equal(y, exact.astype(np.float32))  # the exact sum rounded once
    a = rng.integers(-3000, 3000, (5, 300)).astype(np.float32)
    b = rng.integers(-3000, 3000, (300, 7)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 300])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(b, "b")])
    got = GoldenExecutor(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])).run({"a": a})["y"]
    assert np.array_equal(got, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))


def test_run_samples_runs_a_multi_output_model_once_per_batch():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["x"], ["b"])], "two",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["n", 3]) for o in "ab"])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    ex, calls = GoldenExecutor(m), []
    run = ex.run
    ex.run = lambda feeds, outputs=None: calls.append(1) or run(feeds, outputs)
    x = np.arange(12, dtype=np.float32).reshape(4, 1, 3) - 5  # 4 samples of shape (1, 3)
    r = run_samples(m, as_samples({"x": x}, m), batch_size=4, executor=ex)
    assert len(calls) == 1 and np.array_equal(r["a"], np.maximum(x, 0)) and np.array_equal(r["b"], -x)
