"""Issue 12 (mtcnn-pnet's latency): a Softmax over a short static axis on many rows runs on QLinearSoftmax, not as
DequantizeLinear -> float Softmax (float_outputs), whose per-row cost made pnet's int8 graph slower than
quantize_static's; a Softmax over few rows or a long axis still runs in float on the graph output."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq.op_table import short_softmax_rows

RNG = np.random.default_rng(12)


def conv_softmax(classes: int, pooled: bool, spatial=("h", "w")) -> onnx.ModelProto:
    """x [n, 4, h, w] -> Conv(classes) -> NHWC Softmax over the classes, or (pooled) GlobalAveragePool ->
    Flatten -> Softmax over [n, classes]."""
    w = numpy_helper.from_array((RNG.standard_normal((classes, 4, 3, 3)) * 0.3).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"])]
    if pooled:
        nodes += [helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["t"])]
    else:
        nodes += [helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1])]
    nodes += [helper.make_node("Softmax", ["t"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, *spatial])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ort_ops(model, tmp_path) -> Counter:
    path = tmp_path / "opt.onnx"
    make_session(model, optimize=True, optimized_path=str(path))
    return Counter(n.op_type for n in onnx.load(path).graph.node)


@pytest.mark.parametrize("classes, pooled, spatial, integer", [
    (2, False, ("h", "w"), True),    # mtcnn-pnet: 2 classes on every pixel of an image of any size
    (2, False, (10, 10), True),      # 8 x 8 = 64 rows of 2
    (2, False, (6, 6), False),       # 4 x 4 = 16 rows: as fast in float
    (2, True, ("h", "w"), False),    # mtcnn-rnet / onet: one row of 2 per sample
    (10, False, ("h", "w"), False),  # a long axis: float Softmax is the faster kernel
])
def test_short_softmax_on_many_rows_runs_integer(tmp_path, classes, pooled, spatial, integer):
    m = conv_softmax(classes, pooled, spatial)
    hw = 10 if spatial[0] == "h" else spatial[0]
    feeds = {"x": RNG.standard_normal((8, 1, 4, hw, hw)).astype(np.float32)}
    res = qpass.optimize(m, calib=bind_samples(feeds, m), disabled={"choose_dynamic", "auto_precision"})
    ops = ort_ops(res.model, tmp_path)
    assert (ops["QLinearSoftmax"], ops["Softmax"]) == ((1, 0) if integer else (0, 1)), ops
    floats = res.report.results["quantization"]["float_nodes"]
    assert any(r.startswith("float_outputs") for r in floats.values()) is not integer
    # the answer is still a probability on QLinearSoftmax's 1/256 grid, close to float
    x = feeds["x"][0]
    ref = make_session(m).run(None, {"x": x})[0]
    got = make_session(res.model).run(None, {"x": x})[0]
    assert np.abs(got - ref).max() < 0.05
    assert np.allclose(got * 256, np.round(got * 256), atol=1e-3) is integer


def test_rule_reads_static_shapes_only():
    import onnx_graphsurgeon as gs
    x = gs.Variable("x", np.float32, ["n", 7, 2])
    assert short_softmax_rows(gs.Node("Softmax", inputs=[x], outputs=[gs.Variable("y")], attrs={"axis": -1})) is False
    x = gs.Variable("x", np.float32, ["n", 33, 2])
    assert short_softmax_rows(gs.Node("Softmax", inputs=[x], outputs=[gs.Variable("y")], attrs={"axis": 2}))
    x = gs.Variable("x", np.float32, None)  # unknown shape: as before (float)
    assert short_softmax_rows(gs.Node("Softmax", inputs=[x], outputs=[gs.Variable("y")])) is False
