"""qpass.ir.batching: a batch dimension named differently at the input and the output (tf2onnx's ``unk__N``) is
found by tracing it through the graph (``trace=True``), a dimension that does not follow the input is not, and the
reference interpreter and onnxruntime then give the same numbers batched as one sample at a time."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from qpass.ir.batching import batchable, iter_feeds
from qpass.ir.ort_session import run_samples as ort_run
from qpass.ir.samples import as_samples
from qpass.reference import run_samples as ref_run


def _model(tail: str = "mean", declared_mid: bool = False) -> onnx.ModelProto:
    """x [unk_a, 6] -> Reshape [-1, 2, 3] -> Transpose -> Reshape [-1, 6] -> y [unk_b, 6 or 1]; the tail is a
    per-sample ReduceMean (batch kept) or a ReduceMean over the batch axis (batch gone)."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [6, 6], rng.standard_normal(36).astype(np.float32).ravel())
    nodes = [helper.make_node("Reshape", ["x", "s3"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t", "s2"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["m"]),
             helper.make_node("ReduceMean", ["m", "ax"], ["y"], keepdims=1)]
    inits = [helper.make_tensor("s3", TensorProto.INT64, [3], [-1, 2, 3]),
             helper.make_tensor("s2", TensorProto.INT64, [2], [-1, 6]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1 if tail == "mean" else 0]), w]
    out_shape = ["unk_b", 1] if tail == "mean" else [1, 6]
    vi = [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["unk_a", 6])] if declared_mid else []
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["unk_a", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits, value_info=vi)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def _samples(model, n=5):
    x = np.random.default_rng(1).standard_normal((n, 1, 6)).astype(np.float32)
    return as_samples({"x": x}, model)


def test_batch_traced_through_reshape_to_minus_one():
    m = _model()
    s = _samples(m)
    assert not batchable(m, s, ["y"])  # the names differ: not batched by name
    assert batchable(m, s, ["y"], trace=True)
    assert batchable(_model(declared_mid=True), s, ["f", "y"], trace=True)  # an intermediate output too


def test_dimension_that_does_not_follow_the_input_is_not_batched():
    m = _model(tail="batch-mean")
    assert not batchable(m, _samples(m), ["y"], trace=True)


def test_declared_shape_of_an_op_onnx_cannot_infer_carries_the_batch():
    """A com.microsoft op has no onnx shape inference: its declared value_info (the input's symbol) carries on."""
    m = _model(declared_mid=True)
    m.graph.node[2].CopyFrom(helper.make_node("Gelu", ["t2"], ["f"], domain="com.microsoft"))
    m.graph.node.insert(2, helper.make_node("Reshape", ["t", "s2"], ["t2"]))
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert batchable(m, _samples(m), ["y"], trace=True)
    del m.graph.value_info[:]
    assert not batchable(m, _samples(m), ["y"], trace=True)


def test_traced_batches_give_the_per_sample_numbers():
    """The reference is exact batched; onnxruntime's MatMul may take another MLAS path at one row (float32 ulps)."""
    m = _model()
    s = _samples(m, n=7)
    assert [c for _, c, _ in iter_feeds(m, s, ["y"], batch_size=4, batched=True)] == [4, 3]
    one, batched = (ref_run(m, s, batch_size=4, batched=b)["y"] for b in (False, True))
    assert one.shape == batched.shape == (7, 1, 1)
    np.testing.assert_array_equal(one, batched)
    ort_one, ort_batched = (ort_run(m, s, batch_size=4, batched=b)["y"] for b in (False, True))
    np.testing.assert_allclose(ort_batched, ort_one, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(batched, ort_batched, rtol=1e-6, atol=1e-7)


def test_a_dynamically_quantized_model_runs_one_sample_per_call():
    """DynamicQuantizeLinear takes one scale over the whole call: batched, a sample's codes would depend on the
    others (here a sample of small values beside one of large values); such a model is never batched, by name or
    traced, and its stacked results equal the per-sample ones."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    x = np.random.default_rng(2).standard_normal((4, 1, 6)).astype(np.float32) * np.array([1, 50, 0.1, 3],
                                                                                           np.float32)[:, None, None]
    s = as_samples({"x": x}, m)
    assert not batchable(m, s, ["y"]) and not batchable(m, s, ["y"], trace=True)
    want = np.stack([ort_run(m, as_samples({"x": x[i:i + 1]}, m))["y"][0] for i in range(4)])
    for run in (ort_run, ref_run):
        np.testing.assert_array_equal(run(m, s, batch_size=4)["y"], want)
