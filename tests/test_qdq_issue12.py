"""Issue 12, what quantize_qdq could not do: embedding tables whose rows only float ops read (stored as int8 rows),
LSTMs on onnxruntime's DynamicQuantizeLSTM, MatMuls inside If / Loop bodies; small built graphs in, the stored
arrays, the kernels onnxruntime runs and the numbers (golden interpreter == onnxruntime) out."""
from collections import Counter

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.reference import run_samples as golden_run

RNG = np.random.default_rng(12)


def f32(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def quantize(model, feeds, **opts):
    pipe = qpass.load_pipeline("default", {"quantize_qdq": opts} if opts else None)
    return qpass.optimize(model, calib=bind_samples(feeds, model), pipeline=pipe)


def test_embedding_rows_only_float_ops_read_are_stored_as_int8_rows():
    """word + position embeddings -> LayerNormalization (float): each table stored once as int8 codes with a scale
    per row, the rows gathered as codes; every gathered row within half a step of its row's scale of the float
    table; golden interpreter == onnxruntime bit for bit up to the LayerNorm."""
    words, pos = RNG.standard_normal((300, 16)) * np.linspace(0.01, 2, 300)[:, None], RNG.standard_normal((8, 16))
    nodes = [helper.make_node("Gather", ["words", "ids"], ["w"]), helper.make_node("Gather", ["words", "ids2"], ["w2"]),
             helper.make_node("Gather", ["pos", "pids"], ["p"]), helper.make_node("Add", ["w", "p"], ["a"]),
             helper.make_node("Add", ["a", "w2"], ["e"]),
             helper.make_node("LayerNormalization", ["e", "gamma", "beta"], ["y"], axis=-1)]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["n", 8]) for n in ("ids", "ids2", "pids")]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [f32("words", words), f32("pos", pos), f32("gamma", np.ones(16)), f32("beta", np.zeros(16))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"ids": RNG.integers(0, 300, (12, 1, 8)), "ids2": RNG.integers(0, 300, (12, 1, 8)),
             "pids": np.tile(np.arange(8), (12, 1, 1))}
    res = quantize(m, feeds)
    inits = Counter((tuple(i.dims), i.data_type) for i in res.model.graph.initializer if i.dims and i.dims[0] == 300)
    assert inits == {((300, 16), TensorProto.INT8): 1, ((300, 1), TensorProto.FLOAT): 1}
    assert len(res.model.SerializeToString()) < 0.45 * len(m.SerializeToString())  # 19.2 KB of words -> 6 KB
    gathered = [n.output[0] for n in res.model.graph.node if n.op_type == "Mul"]
    assert len(gathered) == 2  # the 8 x 16 position table is too small to gain anything: float
    probe = res.model.__class__()
    probe.CopyFrom(res.model)
    for name in gathered:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    s = bind_samples(feeds, probe)
    golden, ort = golden_run(probe, s, outputs=gathered + ["y"]), ort_run(probe, s, outputs=gathered + ["y"])
    for name in gathered:
        np.testing.assert_array_equal(golden[name], ort[name])
    np.testing.assert_allclose(golden["y"], ort["y"], rtol=1e-5, atol=1e-5)
    step = np.abs(words).max(1) / 127
    for name, ids in zip(gathered, ("ids", "ids2")):
        err = np.abs(ort[name] - words[feeds[ids]]) / step[feeds[ids]][..., None]
        assert err.max() <= 0.5 + 1e-4


def _ort_optimized(model, tmp_path):
    """The model onnxruntime runs (its optimizer applied), as a ModelProto."""
    import onnx
    from qpass.ir.ort_session import make_session

    path = tmp_path / "opt.onnx"
    make_session(model, optimize=True, optimized_path=str(path))
    return onnx.load(path)


def _all_ops(graph) -> Counter:
    """Op types of ``graph`` and every body nested in it."""
    c = Counter()
    for n in graph.node:
        c[n.op_type] += 1
        for a in n.attribute:
            if a.type == a.GRAPH:
                c.update(_all_ops(a.g))
    return c


def test_lstm_runs_on_dynamic_quantize_lstm_as_the_golden_interpreter_computes_it(tmp_path):
    """A bidirectional LSTM with constant W, R, B and a zero initial state: com.microsoft DynamicQuantizeLSTM with
    int8 weights [D, I, 4H] / [D, H, 4H] and a scale per gate row; golden interpreter == onnxruntime to float32
    rounding, both near the float LSTM; nothing quantizes the LSTM's float input (the kernel does)."""
    seq, batch, i_size, hid = 6, 2, 5, 4
    w = RNG.standard_normal((2, 4 * hid, i_size)) * 0.5
    r = RNG.standard_normal((2, 4 * hid, hid)) * 0.5
    nodes = [helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("LSTM", ["xr", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=hid,
                              direction="bidirectional"),
             helper.make_node("Tanh", ["yh"], ["out"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, i_size])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                          [f32("W", w), f32("R", r), f32("B", RNG.standard_normal((2, 8 * hid)) * 0.1)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": RNG.standard_normal((8, seq, batch, i_size)).astype(np.float32)}
    res = quantize(m, feeds)
    (lstm,) = [n for n in res.model.graph.node if n.op_type == "DynamicQuantizeLSTM"]
    assert lstm.domain == "com.microsoft" and "com.microsoft" in {o.domain for o in res.model.opset_import}
    inits = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    assert inits[lstm.input[1]].dtype == np.int8 and inits[lstm.input[1]].shape == (2, i_size, 4 * hid)
    assert inits[lstm.input[2]].shape == (2, hid, 4 * hid) and inits[lstm.input[8]].shape == (2, 4 * hid)
    assert not any(n.op_type == "QuantizeLinear" for n in res.model.graph.node)
    assert _all_ops(_ort_optimized(res.model, tmp_path).graph)["DynamicQuantizeLSTM"] == 1
    s = bind_samples(feeds, res.model)
    golden, ort = golden_run(res.model, s), ort_run(res.model, s)
    np.testing.assert_allclose(golden["out"], ort["out"], atol=1e-5)
    want = ort_run(m, s)["out"]
    assert np.abs(ort["out"] - want).max() < 0.05


def _body_model():
    """If(sum(x) > 0) then Relu(x @ W1) @ W2 + x (x read from the main graph) else x * 2; then a Loop of 3 steps
    h <- Tanh(h @ U + x @ V) from h0 = the If's result, U and V initializers of the body, x from the main graph."""
    n, k = 6, 8
    then = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["t1"]), helper.make_node("Relu", ["t1"], ["t2"]),
         helper.make_node("MatMul", ["t2", "W2"], ["t3"]), helper.make_node("Add", ["t3", "x"], ["ty"])],
        "then", [], [helper.make_tensor_value_info("ty", TensorProto.FLOAT, [n, k])],
        [f32("W1", RNG.standard_normal((k, 16)) * 0.4), f32("W2", RNG.standard_normal((16, k)) * 0.3)])
    other = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["ey"])], "else", [],
                              [helper.make_tensor_value_info("ey", TensorProto.FLOAT, [n, k])], [f32("two", 2.0)])
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "U"], ["bu"]), helper.make_node("MatMul", ["x", "V"], ["bv"]),
         helper.make_node("Add", ["bu", "bv"], ["bs"]), helper.make_node("Tanh", ["bs"], ["h_next"]),
         helper.make_node("Identity", ["go"], ["go_next"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("go", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h", TensorProto.FLOAT, [n, k])],
        [helper.make_tensor_value_info("go_next", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [n, k])],
        [f32("U", RNG.standard_normal((k, k)) * 0.3), f32("V", RNG.standard_normal((k, k)) * 0.3)])
    nodes = [helper.make_node("ReduceSum", ["x"], ["sx"], keepdims=0), helper.make_node("Greater", ["sx", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["yi"], then_branch=then, else_branch=other),
             helper.make_node("Loop", ["trips", "cond"], ["h_out"], body=body)]
    nodes[3].input.append("yi")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, k])],
                          [helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [n, k])],
                          [f32("zero", 0.0), numpy_helper.from_array(np.asarray(3, np.int64), "trips"),
                           numpy_helper.from_array(np.asarray(True), "cond")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_if_and_loop_bodies_run_integer_matmuls_with_outer_values_intact(tmp_path):
    """Every MatMul of the If branch and of the Loop body runs on an integer kernel in onnxruntime; the main graph's
    x is still read by the bodies (through their own Q/DQ), the result stays near the float model, and the golden
    interpreter computes what onnxruntime does."""
    m = _body_model()
    x = RNG.standard_normal((24, 6, 8)).astype(np.float32) + 0.3
    res = quantize(m, {"x": x})
    ops = _all_ops(_ort_optimized(res.model, tmp_path).graph)
    assert ops["MatMul"] == 0 and ops["QLinearMatMul"] + ops["MatMulIntegerToFloat"] + ops["QGemm"] == 4
    assert any(n.op_type == "If" for n in res.model.graph.node) and [i.name for i in res.model.graph.input] == ["x"]
    (loop,) = [n for n in res.model.graph.node if n.op_type == "Loop"]
    body_q = [n.input[0] for n in loop.attribute[0].g.node if n.op_type == "QuantizeLinear"]
    assert "x" not in body_q  # the main graph's x is quantized once per run, not every iteration
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in res.model.graph.node)
    s = bind_samples({"x": x}, res.model)
    want, got, golden = ort_run(m, s)["h_out"], ort_run(res.model, s)["h_out"], golden_run(res.model, s)["h_out"]
    assert np.abs(got - want).max() < 0.08
    np.testing.assert_allclose(golden, got, atol=1e-5)


@pytest.mark.parametrize("read_after", [True, False])
def test_weights_carried_through_a_loop_unchanged_are_quantized_once_as_weights(read_after):
    """A Loop carrying its weight W as a loop state (the body returns it through Identity, as Paddle2ONNX writes
    GRU decoders): normalize points the body's MatMul at the initializer, so the weight is stored as int8 codes with
    a scale per column (no QuantizeLinear of W at every iteration) and the Loop's outputs are unchanged; when
    nothing reads the carried weight after the Loop, it is no longer carried and the float W is not stored."""
    k = 8
    w = RNG.standard_normal((k, k)) * np.linspace(0.05, 0.6, k)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "w_in"], ["hm"]), helper.make_node("Tanh", ["hm"], ["h_next"]),
         helper.make_node("Identity", ["w_in"], ["w_out"]), helper.make_node("Identity", ["go"], ["go_next"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("go", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h", TensorProto.FLOAT, [4, k]),
                 helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [k, k])],
        [helper.make_tensor_value_info("go_next", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [4, k]),
         helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [k, k])])
    g = helper.make_graph([helper.make_node("Loop", ["trips", "cond", "x", "W"], ["h_out", "w_last"], body=body)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                          [helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [4, k])]
                          + [helper.make_tensor_value_info("w_last", TensorProto.FLOAT, [k, k])] * read_after,
                          [f32("W", w), numpy_helper.from_array(np.asarray(4, np.int64), "trips"),
                           numpy_helper.from_array(np.asarray(True), "cond")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = RNG.standard_normal((16, 4, k)).astype(np.float32)
    res = quantize(m, {"x": x})
    (loop,) = [n for n in res.model.graph.node if n.op_type == "Loop"]
    b = loop.attribute[0].g
    assert not [n for n in b.node if n.op_type == "QuantizeLinear" and n.input[0] in ("w_in", "W")]
    codes = [numpy_helper.to_array(i) for i in b.initializer if numpy_helper.to_array(i).shape == (k, k)]
    assert [c.dtype for c in codes] == [np.int8]
    s = bind_samples({"x": x}, res.model)
    want, got = ort_run(m, s), ort_run(res.model, s)
    if read_after:
        np.testing.assert_array_equal(got["w_last"], want["w_last"])
    floats = [i for i in res.model.graph.initializer if tuple(i.dims) == (k, k)]
    assert len(floats) == read_after and len(loop.input) == 3 + read_after
    err = np.abs(got["h_out"] - want["h_out"])
    assert err.max() < 0.2 and err.mean() < 0.03  # 8-bit h on [-3.5, 3.5] (x's range) through 4 steps
    np.testing.assert_allclose(golden_run(res.model, s)["h_out"], got["h_out"], atol=1e-5)


def test_a_layer_left_float_by_its_range_keeps_float_weights():
    """A MatMul whose input reaches |x| = 2e4 (a raw audio front end) stays float, and so do its weights: no
    DequantizeLinear of constant weights runs at every call in front of a float kernel; the next MatMul (input in
    range) is quantized as usual."""
    w1, w2 = RNG.standard_normal((16, 8)), RNG.standard_normal((8, 4))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["t", "w2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [f32("w1", w1), f32("w2", w2)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    res = quantize(m, {"x": (RNG.standard_normal((8, 4, 16)) * 2e4).astype(np.float32)})
    first = next(n for n in res.model.graph.node if n.op_type == "MatMul" and n.output[0] == "h")
    inits = {i.name: numpy_helper.to_array(i) for i in res.model.graph.initializer}
    assert first.input[1] in inits and inits[first.input[1]].dtype == np.float32
    assert "reaches" in res.report.results["quantization"]["float_nodes"][first.name]
    # the second MatMul (input in range, float output) runs as MatMulInteger on its int8 weight codes
    second = [n for n in res.model.graph.node if n.op_type == "MatMulInteger"]
    assert len(second) == 1 and inits[second[0].input[1]].shape == (8, 4) and inits[second[0].input[1]].dtype == np.int8


def _conv(name, x, w, y, **attrs):
    return helper.make_node("Conv", [x, name + "_w", name + "_b"], [y], name=name, **attrs)


def test_a_long_single_channel_filter_gets_a_zero_channel_to_leave_the_slow_depthwise_kernel():
    """basic-pitch's shape: a 1 -> 1 channel Conv with a 1x64 window, on which onnxruntime's QLinearConv takes its
    depthwise kernel (3-8x slower than float: bench/layer_speed.py). It gets an all-zero second output channel and
    a Slice of the first (onnxruntime then runs its GEMM-based QLinearConv, 0.5x float): every layer stays integer,
    the codes and the output are bit for bit those of the one-channel form (``widen_single_channel: false``), and
    the golden interpreter reproduces them."""
    from qpass.ir.ort_session import optimized_graph

    ws = {"fir_w": RNG.standard_normal((1, 1, 1, 64)) * 0.1, "fir_b": [0.1],
          "bank_w": RNG.standard_normal((8, 1, 1, 64)) * 0.1, "bank_b": RNG.standard_normal(8) * 0.1}
    nodes = [_conv("fir", "x", "fir_w", "h", strides=[1, 2]), helper.make_node("Relu", ["h"], ["r"]),
             _conv("bank", "r", "bank_w", "y", strides=[1, 16])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 1, 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [f32(k, v) for k, v in ws.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    calib = {"x": RNG.standard_normal((8, 1, 1, 1, 512)).astype(np.float32)}
    wide, narrow = quantize(m, calib), quantize(m, calib, widen_single_channel=False)
    assert not wide.report.results["quantization"]["float_nodes"]
    inits = {i.name: numpy_helper.to_array(i) for i in wide.model.graph.initializer}
    fir_w = inits[next(n for n in wide.model.graph.node if n.op_type == "DequantizeLinear"
                       and inits.get(n.input[0]) is not None and inits[n.input[0]].shape == (2, 1, 1, 64)).input[0]]
    assert fir_w.dtype == np.int8 and not fir_w[1].any()
    ops = Counter(n.op_type for n in optimized_graph(wide.model).node)
    assert ops["QLinearConv"] == 2 and ops["Conv"] + ops["FusedConv"] == 0 and ops["Slice"] == 1
    s = bind_samples({"x": RNG.standard_normal((4, 1, 1, 1, 512)).astype(np.float32)}, wide.model)
    got = ort_run(wide.model, s)["y"]
    np.testing.assert_array_equal(got, ort_run(narrow.model, s)["y"])
    np.testing.assert_array_equal(golden_run(wide.model, s)["y"], got)


SEED = 5  # (5, 6, 7 checked: choose_dynamic takes the Gemm on each)


def test_a_dynamic_gemm_bias_is_fused_into_dynamic_quantize_matmul():
    """choose_dynamic's Gemm (weight >= 65,536 elements) keeps its bias as float values, which onnxruntime fuses
    into DynamicQuantizeMatMul: no DequantizeLinear of the bias and no Add run at every call, and the int8 codes
    of the replaced static weight are not stored."""
    from qpass.ir.ort_session import optimized_graph

    rng = np.random.default_rng(SEED)  # its own data: choose_dynamic's choice is measured on it
    w, b = rng.standard_normal((64, 1024)) * 0.05, rng.standard_normal(64)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [f32("w", w), f32("b", b), f32("w2", rng.standard_normal((4, 64)) * 0.1), f32("b2", np.zeros(4))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    pipe = qpass.load_pipeline("default", {"choose_dynamic": {"min_rows": 1}})  # one row: static by default
    res = qpass.optimize(m, calib=bind_samples({"x": rng.standard_normal((32, 1, 1024)).astype(np.float32)}, m),
                         pipeline=pipe)
    ops = Counter(n.op_type for n in optimized_graph(res.model).node)
    assert ops["DynamicQuantizeMatMul"] == 1 and ops["Add"] == 0 and ops["DequantizeLinear"] <= 1
    assert sum(i.dims == [64, 1024] or i.dims == [1024, 64] for i in res.model.graph.initializer) == 1


@pytest.mark.parametrize("thin", [False, True])
def test_an_isolated_thin_conv_stays_float_only_with_float_thin_convs(thin):
    """mtcnn's shape: a 3 -> 8 channel 3x3 Conv (27 products per output) between PRelus (float): with
    ``float_thin_convs`` it stays float with float weights (its integer kernel and the Q/DQ around it are slower);
    the 8 -> 16 Conv after the next PRelu (72 products, also isolated) too, and the 1x1 head (no im2col) does not.
    By default every Conv is integer."""
    from qpass.ir.ort_session import optimized_graph

    shapes = {"c1": (8, 3, 3, 3), "c2": (16, 8, 3, 3), "c3": (4, 16, 1, 1)}
    inits = [f32(f"{k}_w", RNG.standard_normal(s) * 0.2) for k, s in shapes.items()]
    inits += [f32(f"{k}_b", RNG.standard_normal(s[0]) * 0.1) for k, s in shapes.items()]
    inits += [f32(f"a{i}", np.full((s[0], 1, 1), 0.25)) for i, s in enumerate(shapes.values())]
    nodes = [_conv("c1", "x", "c1_w", "h1"), helper.make_node("PRelu", ["h1", "a0"], ["p1"]),
             _conv("c2", "p1", "c2_w", "h2"), helper.make_node("PRelu", ["h2", "a1"], ["p2"]),
             _conv("c3", "p2", "c3_w", "y")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    res = quantize(m, {"x": RNG.standard_normal((8, 1, 3, 12, 12)).astype(np.float32)}, float_thin_convs=thin)
    float_nodes = res.report.results["quantization"]["float_nodes"]
    ops = Counter(n.op_type for n in optimized_graph(res.model).node)
    if thin:
        assert {"c1", "c2"} <= set(float_nodes) and "products per output" in float_nodes["c1"]
        assert "c3" not in float_nodes and ops["QLinearConv"] == 1
    else:
        assert not {"c1", "c2", "c3"} & set(float_nodes) and ops["QLinearConv"] == 3
