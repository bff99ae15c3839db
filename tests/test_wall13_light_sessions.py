"""Sessions of big models get their large weights as values (qpass.ir.light_model), not as protobuf bytes: the
outputs must be bit-identical to a session of the whole serialized model, and the caller's model untouched."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.ir import ort_session
from qpass.ir.light_model import LOCATION, light_copy


def _model():
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((96, 256)).astype(np.float32)  # 96 KB: handed over as a value
    w2 = rng.standard_normal((256, 8)).astype(np.float32)  # 8 KB: stays in the protobuf
    b = rng.standard_normal(8).astype(np.float64)  # float64 data, typed field: stays
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y0"]), helper.make_node("Cast", ["y0"], ["y1"], to=11),
             helper.make_node("Add", ["y1", "b"], ["y"])]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             helper.make_tensor("b", TensorProto.DOUBLE, [8], b.tolist())]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 96])],
                          [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_light_copy_stubs_only_large_raw_initializers_and_leaves_the_model():
    m = _model()
    before = m.SerializeToString()
    light, values = light_copy(m)
    assert m.SerializeToString() == before
    assert list(values) == ["w1"]
    np.testing.assert_array_equal(values["w1"], numpy_helper.to_array(m.graph.initializer[0]))
    stub = light.graph.initializer[0]
    assert stub.name == "w1" and list(stub.dims) == [96, 256] and stub.data_location == TensorProto.EXTERNAL
    assert stub.external_data[0].value == LOCATION and not stub.raw_data
    assert light.graph.initializer[1] == m.graph.initializer[1] and light.graph.initializer[2] == m.graph.initializer[2]
    assert list(light.graph.node) == list(m.graph.node) and light.opset_import == m.opset_import
    assert light.ByteSize() < 20_000


@pytest.mark.parametrize("optimize", [False, True])
def test_light_session_outputs_are_bit_identical(monkeypatch, optimize):
    m = _model()
    x = np.random.default_rng(4).standard_normal((5, 96)).astype(np.float32)
    monkeypatch.setattr(ort_session, "LIGHT_MIN_BYTES", 1 << 40)
    full = ort_session.make_session(m, optimize=optimize)
    monkeypatch.setattr(ort_session, "LIGHT_MIN_BYTES", 0)
    before = m.SerializeToString()
    light = ort_session.make_session(m, optimize=optimize)
    assert m.SerializeToString() == before
    assert getattr(light, "_qpass_values", None) is not None and getattr(full, "_qpass_values", None) is None
    a, b = full.run(None, {"x": x})[0], light.run(None, {"x": x})[0]
    assert a.dtype == np.float64 and np.array_equal(a, b)
