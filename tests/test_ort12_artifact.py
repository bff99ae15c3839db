"""The ``--backend ort`` artifact is written without the inferred value_info of intermediate tensors: onnxruntime
infers the same types at load, so the file only shrinks (``qpass.backends.ort``)."""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

import qpass
from qpass.backends.ort import artifact

MODELS = Path(__file__).resolve().parents[1] / "models"


def _run(model_or_path, x):
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})


def test_saved_default_output_has_no_intermediate_value_info_and_computes_the_same(quantized_digits, tmp_path):
    res = quantized_digits("digits_cnn")
    held = len(res.model.graph.value_info)
    assert held > 0  # the pipeline's verification leaves the inferred types on the in-memory model
    out = qpass.save(res.model, tmp_path / "cnn.int8.onnx")
    saved = onnx.load(out)
    assert len(saved.graph.value_info) < held / 4  # what plain shape inference gives back is dropped
    assert len(res.model.graph.value_info) == held  # the result itself is not changed
    assert [i.name for i in saved.graph.input] == [i.name for i in res.model.graph.input]
    assert saved.graph.output == res.model.graph.output  # outputs keep their types and shapes
    x = np.load(MODELS / "digits_cnn.eval.npz")
    x = x["input"][0].astype(np.float32)
    for a, b in zip(_run(res.model, x), _run(out, x)):
        np.testing.assert_array_equal(a, b)
    kept = tmp_path / "kept.onnx"
    onnx.save(res.model, kept)
    assert out.stat().st_size < kept.stat().st_size


def test_value_info_only_data_propagation_finds_is_kept():
    """A Reshape to a shape a Shape -> Gather -> Concat chain computes: ONNX shape inference finds its output
    shape only with data propagation, onnxruntime not at all, so that value_info stays (onnxruntime's optimizer
    needs it for its fusions); the Relu output's, which plain inference gives back, goes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "i"], ["d"], axis=0), helper.make_node("Concat", ["d", "m1"], ["t"], axis=0),
             helper.make_node("Reshape", ["r", "t"], ["y0"]), helper.make_node("Sigmoid", ["y0"], ["y"])]
    inits = [helper.make_tensor("i", TensorProto.INT64, [1], [0]), helper.make_tensor("m1", TensorProto.INT64, [1], [-1])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                                          data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    assert shapes["y0"] == [2, 12] and shapes["r"] == [2, 3, 4]
    kept = {v.name for v in artifact(m).graph.value_info}
    assert "y0" in kept and "r" not in kept


def _body_model(domain=""):
    """An If whose branches hold value_info of their own intermediate tensors."""
    def branch(name, k):
        n1 = helper.make_node("Mul", ["x", f"{name}_k"], [f"{name}_t"])
        n2 = helper.make_node("Relu" if not domain else "Quant", [f"{name}_t"], [f"{name}_y"], domain=domain)
        g = helper.make_graph([n1, n2], name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [2])],
                              [helper.make_tensor(f"{name}_k", TensorProto.FLOAT, [1], [k])])
        g.value_info.append(helper.make_tensor_value_info(f"{name}_t", TensorProto.FLOAT, [2]))
        return g
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    c = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("a", 2.0), else_branch=branch("b", -1.0))
    g = helper.make_graph([node], "g", [x, c], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    g.value_info.append(helper.make_tensor_value_info("y_note", TensorProto.FLOAT, [2]))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_the_argument_is_not_changed_and_bodies_keep_their_value_info():
    m = _body_model()
    before = m.SerializeToString()
    out = artifact(m)
    assert m.SerializeToString() == before
    assert all(len(a.g.value_info) == 1 for a in out.graph.node[0].attribute)
    x = np.array([1.5, -3.0], np.float32)
    s = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    for c in (True, False):
        np.testing.assert_array_equal(s.run(None, {"x": x, "c": np.array(c)})[0], np.maximum(x * (2.0 if c else -1.0), 0))


def test_a_model_with_an_op_outside_onnxruntime_domains_keeps_its_value_info():
    m = _body_model(domain="qonnx.custom_op.general")
    assert artifact(m) is m


def test_only_the_first_tensor_inference_misses_is_kept():
    """A Reshape back to a shape a Shape node reads (prelu_lut's lookup) on symbolic sizes: plain inference loses its
    output's sizes and every tensor after it; keeping that one tensor's value_info gives the rest back, so only it
    stays (mtcnn-pnet's file: 22 entries -> 13, 1.12x -> 1.05x quantize_static's)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Reshape", ["r", "m1"], ["f"]), helper.make_node("Sigmoid", ["f"], ["g"]),
             helper.make_node("Reshape", ["g", "s"], ["b"]), helper.make_node("Neg", ["b"], ["n"]),
             helper.make_node("Add", ["n", "r"], ["y0"]), helper.make_node("Relu", ["y0"], ["y"])]
    g = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [helper.make_tensor("m1", TensorProto.INT64, [1], [-1])])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
                                          data_prop=True)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in m.graph.value_info}
    assert dims["b"] == dims["n"] == dims["y0"] == ["N", 4, "H", "W"]
    assert [v.name for v in artifact(m).graph.value_info] == ["b"]
    x0 = np.random.default_rng(0).standard_normal((2, 4, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(m, x0)[0], _run(artifact(m), x0)[0])
