"""``qdq_moves.graph_cost`` prices a Conv from the fitted table ``qdq_moves_costs.json`` (bench/ptq13_conv_costs.py:
onnxruntime 1.32, 1 thread): onnxruntime's integer kernel runs a first layer on 3 channels (mtcnn-pnet's 3->10 3x3)
slower than float (2.7x measured), a 64-channel 3x3 about 3x faster. The old flat rule (an int8 MAC a quarter of
a float one) rated pnet's float model at 3.17x its int8 cost where onnxruntime measures 0.68-0.73x."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.passes.qdq_moves import conv_costs, conv_kind, graph_cost, integer_layers, tensor_dims


def _conv(cin, cout, k, hw, integer):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.uint8(128), "z")]
    if integer:
        inits += [numpy_helper.from_array(np.round(w * 10).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.full(cout, 0.1, np.float32), "ws"),
                  numpy_helper.from_array(np.zeros(cout, np.int8), "wz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
                 helper.make_node("Conv", ["xd", "w"], ["c"]),
                 helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
                 helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    g = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _ratio(cin, cout, k, hw):
    q, f = _conv(cin, cout, k, hw, True), _conv(cin, cout, k, hw, False)
    assert integer_layers(q) == {("c",)}  # the Conv runs on its integer kernel
    dims = tensor_dims(q, f)
    return graph_cost(q, dims) / graph_cost(f, dims)


def test_thin_first_layers_cost_more_on_integer_kernels_than_wide_ones():
    assert conv_kind(1, 3, 9) == "thin" and conv_kind(1, 64, 9) == "dense" and conv_kind(32, 1, 9) == "depthwise"
    assert conv_kind(1, 3, 1) == "dense"  # a 1x1 needs no im2col
    assert _ratio(3, 10, 3, 64) > 1.5  # pnet's first layer: 2.7x measured (Q/DQ kernels at the borders add more)
    assert _ratio(64, 64, 3, 32) < 0.5  # 0.33-0.38x measured (onet, oww-embedding)


def test_the_table_is_the_fitted_data_with_every_kind_and_precision():
    t = conv_costs()["kinds"]
    assert set(t) == {"dense", "thin", "depthwise"}
    for kind in t.values():
        for prec in ("float", "int8"):
            assert set(kind[prec]) >= {"mac", "row", "col", "tap", "in"}
            assert all(kind[prec][k] >= 0 for k in ("mac", "row", "col", "tap", "in"))
    assert t["dense"]["float"]["mac"] == 1.0  # the unit
    assert t["dense"]["int8"]["mac"] < 0.5  # u8s8 dot products: several times the float MACs per instruction


def _conv_pool_conv():
    """x(3ch) -> Conv 3x3 (thin) -> PRelu -> MaxPool -> Conv 3x3 (16ch): mtcnn's first block."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32) / 8, "w2"),
             numpy_helper.from_array(np.full((16, 1, 1), 0.25, np.float32), "slope")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("PRelu", ["c1", "slope"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["y"])]
    g = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 34, 34])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_a_uint8_maxpool_after_a_float_conv_is_priced_and_moved_with_it():
    import qpass
    from qpass.ir.samples import bind_samples
    from qpass.passes.qdq_moves import bypass, float_segment
    from qpass.search.mixed_int8 import activation_pairs

    f = _conv_pool_conv()
    calib = bind_samples({"x": np.random.default_rng(2).standard_normal((4, 1, 3, 34, 34)).astype(np.float32)}, f)
    # the graph auto_precision prices (prelu_split / prelu_max / prelu_lut, after it, rewrite the PRelu)
    res = qpass.optimize(f, calib=calib, disabled={"auto_precision", "choose_ranges", "prelu_split", "prelu_max",
                                                   "prelu_lut"})
    q, fq = res.model, res.report.snapshots["quantize_qdq"]
    pairs = {p["tensor"] for p in activation_pairs(q)}
    first = next(t for t in pairs if "c1" in t)
    seg = float_segment(q, first, pairs)
    assert len(seg) >= 2 and seg[0] == first and all("y" not in t for t in seg)  # stops at the next Conv
    dims = tensor_dims(q, fq)
    alone, with_pool = graph_cost(bypass(q, {first}, fq), dims), graph_cost(bypass(q, set(seg), fq), dims)
    # alone, the MaxPool stays on uint8 codes but in NCHW (onnxruntime's generic kernel): priced per element
    assert alone > with_pool + 0.5 * conv_costs()["u8_nchw_maxpool"] * 16 * 32 * 32
