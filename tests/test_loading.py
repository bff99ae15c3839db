"""Model loading: opsets, external data, cycles, and one-line errors."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.errors import ModelLoadError
from qpass.pipeline.files import pipeline_from_dict

from conftest import MODELS

NORMALIZE = pipeline_from_dict({"passes": ["normalize"]})


def _gemm_model(opset: int, ir: int | None = None):
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm"),
                           helper.make_node("Relu", ["y"], ["z"], name="relu")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4])], [w, b])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if ir:
        m.ir_version = ir
    return m


@pytest.mark.parametrize("opset", [9, 10, 11, 12, 13, 15, 17, 18, 19, 20, 21])
def test_every_common_opset_loads_and_quantizes(tmp_path, opset):
    p = tmp_path / f"m{opset}.onnx"
    onnx.save(_gemm_model(opset), p)
    m = qpass.load(p)
    calib = {"x": np.random.default_rng(0).standard_normal((16, 2, 8)).astype(np.float32)}
    # static int8 (choose_dynamic may rightly put this Gemm on run-time ranges: x's range moves per sample)
    res = qpass.optimize(m, calib=calib, disabled={"choose_dynamic"})
    ops = {n.op_type for n in res.model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Gemm"} <= ops
    assert max(17, opset) == [o.version for o in res.model.opset_import if o.domain == ""][0]


def test_external_data_model_loads(tmp_path):
    m = _gemm_model(17)
    expected = numpy_helper.to_array(m.graph.initializer[0])
    onnx.save(m, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").stat().st_size >= expected.nbytes
    loaded = qpass.load(tmp_path / "ext.onnx")
    w = numpy_helper.to_array(next(i for i in loaded.graph.initializer if i.name == "w"))
    np.testing.assert_array_equal(w, expected)


def test_external_data_outside_folder_is_refused(tmp_path):
    sub = tmp_path / "model"
    sub.mkdir()
    m = _gemm_model(17)
    onnx.save(m, sub / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="m.data",
              size_threshold=0)
    (tmp_path / "secret.bin").write_bytes(b"\0" * 1024)
    m2 = onnx.load(sub / "m.onnx", load_external_data=False)
    for t in m2.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../secret.bin"
    onnx.save(m2, sub / "m.onnx")
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        qpass.load(sub / "m.onnx")


def test_missing_external_data_file(tmp_path):
    m = _gemm_model(17)
    onnx.save(m, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    (tmp_path / "m.data").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        qpass.load(tmp_path / "m.onnx")


def test_cycle_is_a_clear_error(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["b"], ["a"], name="r1"),
                           helper.make_node("Relu", ["a"], ["b"], name="r2")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    p = tmp_path / "cyc.onnx"
    p.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ModelLoadError, match="cycle"):
        qpass.load(p)


def test_unsorted_graph_is_sorted(tmp_path):
    m = _gemm_model(17)
    nodes = list(m.graph.node)[::-1]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    p = tmp_path / "unsorted.onnx"
    p.write_bytes(m.SerializeToString())
    assert [n.name for n in qpass.load(p).graph.node] == ["gemm", "relu"]


def test_error_messages_are_one_line_and_name_the_file(tmp_path):
    for content in (b"", b"\x08\x07garbage\xff\xff", (MODELS / "digits_mlp.onnx").read_bytes()[:100]):
        p = tmp_path / "bad.onnx"
        p.write_bytes(content)
        with pytest.raises(ModelLoadError) as info:
            qpass.load(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_normalize_names_and_constants(tmp_path):
    m = _gemm_model(17)
    for n in m.graph.node:
        n.name = ""
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32(2.0)))
    m.graph.node.insert(0, const)
    m.graph.node.append(helper.make_node("Mul", ["z", "c"], ["out"]))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 4]))
    res = qpass.optimize(m, pipeline=NORMALIZE)
    names = [n.name for n in res.model.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert "Constant" not in {n.op_type for n in res.model.graph.node}
    assert "c" in {i.name for i in res.model.graph.initializer}
