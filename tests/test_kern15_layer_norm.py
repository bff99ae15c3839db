"""float32 LayerNormalization equals onnxruntime's bit for bit (its MLAS AVX2 kernel, qpass.reference.mlas_norm):
Y, Mean and InvStdDev, on rows with large offsets (cancellation-prone), with and without bias, rows that are and
are not multiples of 8, the normalised axes not only the last one, and a batch of rows with float32 midpoints."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.reference import GoldenExecutor

ort = pytest.importorskip("onnxruntime")


def _model(shape, axis, bias: bool) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    norm = shape[axis:]
    g = rng.standard_normal(norm).astype(np.float32)
    inits = [numpy_helper.from_array(g, "g")]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(norm).astype(np.float32), "b"))
    node = helper.make_node("LayerNormalization", ["x", "g"] + (["b"] if bias else []), ["y", "mean", "inv"],
                            axis=axis, epsilon=1e-5)
    graph = helper.make_graph([node], "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("y", "mean", "inv")],
                              inits)
    x = rng.standard_normal(shape) * 3 + rng.standard_normal(shape[:1] + (1,) * (len(shape) - 1)) * 50
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), {"x": x.astype(np.float32)}


@pytest.mark.parametrize("shape,axis,bias", [((300, 384), 1, True), ((64, 768), 1, False), ((7, 33), 1, True),
                                             ((5, 3, 21), 1, True), ((9, 8), 1, True), ((2, 6, 4, 16), 2, True)])
def test_layer_norm_equals_onnxruntime(shape, axis, bias):
    m, feed = _model(shape, axis, bias)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)
    got = GoldenExecutor(m).run(feed)
    for name, w in zip(("y", "mean", "inv"), want):
        g = got[name]
        assert g.dtype == np.float32 and g.shape == w.shape, name
        assert np.array_equal(g.view(np.int32), w.view(np.int32)), \
            f"{name}: {np.count_nonzero(g != w)} of {w.size} differ"


def test_square_chains_equal_fma_steps():
    """The float64-sum form of the variance's FMA chains equals fma32 step by step, also on rows it must redo
    (squares in the float32 subnormal range, where the float64 sum rounds twice)."""
    from qpass.reference.mlas_norm import square_chains
    from qpass.reference.numerics import fma32

    rng = np.random.default_rng(11)
    d = (rng.standard_normal((40, 12, 8)) * np.exp2(rng.integers(-70, 20, (40, 1, 1)))).astype(np.float32)
    d[3] = np.float32(1e-24) * rng.standard_normal((12, 8)).astype(np.float32)  # squares below 2^-126
    want = np.zeros((40, 8), np.float32)
    for k in range(d.shape[1]):
        want = fma32(d[:, k], d[:, k], want)
    assert np.array_equal(square_chains(d).view(np.int32), want.view(np.int32))
