"""Shape inference and session sizing without serializing big weights: ``normalize.infer_shapes`` infers on a copy
whose large initializers are stubs (same name, type, dims) and gives the weights back, so the result is the model
onnx's own inference returns, byte for byte; ``light_model.nbytes`` sizes a tensor from its dims."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.light_model import MIN_BYTES, nbytes, weight_bytes
from qpass.passes.normalize import infer_shapes
from qpass.passes.qdq_moves import tensor_dims


def _model():
    rng = np.random.default_rng(3)
    big = numpy_helper.from_array(rng.standard_normal((256, 128)).astype(np.float32), "w")  # 128 KB
    small = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [big, small])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_light_inference_is_onnx_inference_byte_for_byte():
    m = _model()
    assert nbytes(m.graph.initializer[0]) == 256 * 128 * 4 >= MIN_BYTES
    want = onnx.shape_inference.infer_shapes(m, data_prop=True)
    got = infer_shapes(m)
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    assert {vi.name for vi in got.graph.value_info} >= {"h", "r"}
    assert tensor_dims(m)["y"] == [1, 128]


def test_nbytes_from_dims_equals_the_raw_bytes():
    m = _model()
    assert [nbytes(t) for t in m.graph.initializer] == [len(t.raw_data) for t in m.graph.initializer]
    assert weight_bytes(m) == sum(len(t.raw_data) for t in m.graph.initializer)
    ext = onnx.TensorProto(name="e", data_type=TensorProto.FLOAT, dims=[1000],
                           data_location=TensorProto.EXTERNAL)
    assert nbytes(ext) == 0
