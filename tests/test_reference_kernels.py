"""Reference kernels against onnxruntime where the ONNX node tests are thin: recurrent ops with sequence lengths,
clip and custom activations, the quantised LSTM, integer products, MaxPool indices, scatter reductions with
duplicate indices, TopK ties, Resize cubic / antialias; and the construction-time checks of Dropout."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from qpass.reference import GoldenExecutor, UnsupportedOpError

F32 = np.float32
RNG = np.random.default_rng(15)


def model(op, inputs, attrs=None, n_out=1, opset=21, consts=(), domain=""):
    """A one-node model: ``inputs[k]`` is a graph input (an initializer when ``k in consts``, absent when None)."""
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    feeds = {n: v for k, (n, v) in enumerate(zip(names, inputs)) if n and k not in consts}
    inits = [numpy_helper.from_array(v, n) for k, (n, v) in enumerate(zip(names, inputs)) if n and k in consts]
    node = helper.make_node(op, names, [f"o{k}" for k in range(n_out)], domain=domain, **(attrs or {}))
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in feeds.items()]
    outs = [helper.make_empty_tensor_value_info(f"o{k}") for k in range(n_out)]
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", vis, outs, inits), opset_imports=opsets), feeds


def both(m, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    want = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = GoldenExecutor(m).run(feeds)
    return [got[o.name] for o in m.graph.output], want


def assert_exact(m, feeds):
    for g, w in zip(*both(m, feeds)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def assert_close(m, feeds, atol=2e-6):
    for g, w in zip(*both(m, feeds)):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=atol)


def rand(*shape, scale=0.5):
    return (RNG.standard_normal(shape) * scale).astype(F32)


# ---------------------------------------------------------------------------------------------- recurrent

T, B, I, H = 5, 3, 4, 6
LENS = np.array([5, 2, 4], np.int32)


@pytest.mark.parametrize("op, gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("extra", [{}, {"clip": 0.3}, {"linear_before_reset": 1}])
def test_recurrent_ops_match_onnxruntime(op, gates, direction, extra):
    if "linear_before_reset" in extra and op != "GRU":
        pytest.skip("GRU only")
    d = 2 if direction == "bidirectional" else 1
    ins = [rand(T, B, I), rand(d, gates * H, I), rand(d, gates * H, H), rand(d, 2 * gates * H), LENS, rand(d, B, H)]
    if op == "LSTM":
        ins += [rand(d, B, H), rand(d, 3 * H)]
    m, feeds = model(op, ins, {"hidden_size": H, "direction": direction, **extra}, n_out=3 if op == "LSTM" else 2)
    assert_close(m, feeds)


@pytest.mark.parametrize("op, gates, attrs", [
    ("RNN", 1, {"activations": ["LeakyRelu"], "activation_alpha": [0.2]}),
    ("GRU", 3, {"activations": ["HardSigmoid", "ScaledTanh"], "activation_alpha": [0.3, 0.7],
                "activation_beta": [0.4, 1.5]}),
    ("LSTM", 4, {"input_forget": 1}),
    ("LSTM", 4, {"direction": "bidirectional", "activation_alpha": [0.5, 0.9], "activation_beta": [0.1],
                 "activations": ["Sigmoid", "Tanh", "Tanh", "Affine", "Elu", "Softsign"]}),
])
def test_recurrent_activations_and_input_forget_match_onnxruntime(op, gates, attrs):
    d = 2 if attrs.get("direction") == "bidirectional" else 1
    m, feeds = model(op, [rand(T, B, I), rand(d, gates * H, I), rand(d, gates * H, H)], {"hidden_size": H, **attrs},
                     n_out=3 if op == "LSTM" else 2)
    assert_close(m, feeds)


def test_recurrent_checks_run_at_construction():
    m, _ = model("LSTM", [rand(T, B, I), rand(1, 4 * H, I), rand(1, 4 * H, H)],
                 {"hidden_size": H, "activations": ["Sigmoid", "Tanh", "Gaussian"]}, n_out=3)
    with pytest.raises(UnsupportedOpError, match="Gaussian"):
        GoldenExecutor(m)


def _dq_lstm(direction, wdtype, lens, h0):
    d = 2 if direction == "bidirectional" else 1
    lo, hi = (-128, 128) if wdtype == np.int8 else (0, 256)
    w = RNG.integers(lo, hi, (d, I, 4 * H)).astype(wdtype)
    r = RNG.integers(lo, hi, (d, H, 4 * H)).astype(wdtype)
    scales = [(RNG.random(d) * 0.01 + 0.001).astype(F32) for _ in range(2)]
    zp = np.zeros(d, wdtype) if wdtype == np.int8 else np.full(d, 128, wdtype)
    ins = [rand(T, B, I, scale=1.0), w, r, rand(d, 8 * H, scale=0.1), lens, h0(d), h0(d), None,
           scales[0], zp, scales[1], zp]
    return model("DynamicQuantizeLSTM", ins, {"hidden_size": H, "direction": direction}, n_out=3,
                 consts=(1, 2, 3, 8, 9, 10, 11), opset=17, domain="com.microsoft")


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("wdtype", [np.int8, np.uint8])
@pytest.mark.parametrize("lens", [None, LENS])
def test_dynamic_quantize_lstm_matches_onnxruntime(direction, wdtype, lens):
    """Input and state quantised per product, finished sequences feeding zeros: agreement to float32 rounding
    (a random initial state can make onnxruntime's approximate sigmoid/tanh flip a dynamic code; zeros here)."""
    m, feeds = _dq_lstm(direction, wdtype, lens, lambda d: np.zeros((d, B, H), F32))
    assert_close(m, feeds, atol=1e-5)


# ---------------------------------------------------------------------------------------------- integer ops


@pytest.mark.parametrize("scale", [1.0, 0.01, 100.0])
@pytest.mark.parametrize("shift", [0.0, 3.0, -3.0])
def test_dynamic_quantize_linear_is_exact(scale, shift):
    m, feeds = model("DynamicQuantizeLinear", [((RNG.standard_normal((37, 53)) + shift) * scale).astype(F32)],
                     n_out=3)
    assert_exact(m, feeds)


def test_dynamic_quantize_linear_of_zeros_uses_scale_one():
    m, feeds = model("DynamicQuantizeLinear", [np.zeros((3, 4), F32)], n_out=3)
    assert_exact(m, feeds)
    assert GoldenExecutor(m).run(feeds)["o1"] == 1.0


def test_integer_products_are_exact():
    a = RNG.integers(0, 256, (2, 5, 7)).astype(np.uint8)
    b = RNG.integers(-128, 128, (7, 6)).astype(np.int8)
    assert_exact(*model("MatMulInteger", [a, b, np.array(17, np.uint8), np.array(-3, np.int8)]))
    assert_exact(*model("MatMulInteger", [a[0], b.astype(np.uint8), np.array(3, np.uint8),
                                          np.arange(6).astype(np.uint8)]))
    x = RNG.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    w = RNG.integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    assert_exact(*model("ConvInteger", [x, w, np.array(100, np.uint8), np.array(5, np.uint8)],
                        {"pads": [1, 1, 1, 1], "strides": [2, 1]}))


# ---------------------------------------------------------------------------------------------- indexing


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("shape, attrs", [
    ((2, 3, 7, 9), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((2, 3, 7, 9), {"kernel_shape": [2, 3], "ceil_mode": 1, "strides": [2, 2]}),
    ((2, 3, 7, 9), {"kernel_shape": [3, 2], "dilations": [2, 1]}),
    ((1, 2, 5, 6, 4), {"kernel_shape": [2, 2, 2]}),
])
def test_maxpool_indices_are_exact(storage_order, shape, attrs):
    x = np.round(rand(*shape, scale=2.0))  # ties: the first position in the window wins
    assert_exact(*model("MaxPool", [x], {"storage_order": storage_order, **attrs}, n_out=2))


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements_reductions_with_duplicate_indices(reduction):
    idx = RNG.integers(0, 4, (2, 8, 3, 4)).astype(np.int64)
    ins = [rand(2, 8, 4, 4), idx, rand(2, 8, 3, 4)]
    assert_exact(*model("ScatterElements", [*ins], {"axis": 2, "reduction": reduction}, opset=18))


def test_scatter_nd_and_gather_nd():
    x = rand(2, 8, 4, 4)
    idx = np.array([[0, 1], [1, 2], [0, 1]], np.int64)
    assert_exact(*model("ScatterND", [x, idx, rand(3, 4, 4)], {"reduction": "add"}, opset=18))
    assert_exact(*model("GatherND", [x, np.array([[[0, 1], [1, 3]], [[1, 2], [0, 0]]], np.int64)],
                        {"batch_dims": 1}))


@pytest.mark.parametrize("largest, axis", [(1, 1), (0, -1)])
def test_topk_keeps_index_order_of_equal_values(largest, axis):
    x = np.round(rand(2, 8, 4, 4, scale=2.0))
    assert_exact(*model("TopK", [x, np.array([3], np.int64)], {"axis": axis, "largest": largest}, n_out=2))


# ---------------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize("mode, antialias, exclude", [("cubic", 0, 0), ("cubic", 0, 1), ("cubic", 1, 0),
                                                      ("linear", 1, 0), ("linear", 1, 1)])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 1.5], [1, 1, 0.6, 0.5]])
def test_resize_cubic_and_antialias_match_onnxruntime(mode, antialias, exclude, ctm, scales):
    m, feeds = model("Resize", [rand(1, 2, 7, 9, scale=1.0), None, np.array(scales, F32)],
                     {"mode": mode, "antialias": antialias, "exclude_outside": exclude,
                      "coordinate_transformation_mode": ctm}, opset=19, consts=(2,))
    assert_close(m, feeds, atol=5e-6)


def test_resize_keep_aspect_ratio_policy():
    for policy in ("not_larger", "not_smaller"):
        m, feeds = model("Resize", [rand(1, 2, 4, 6), None, None, np.array([7, 8], np.int64)],
                         {"axes": [2, 3], "keep_aspect_ratio_policy": policy}, opset=19, consts=(3,))
        assert_exact(m, feeds)


# ---------------------------------------------------------------------------------------------- Dropout


def test_dropout_in_training_mode_with_constant_zero_ratio_is_the_identity():
    x = rand(3, 4)
    m, feeds = model("Dropout", [x, np.array(0.0, F32), np.array(True)], n_out=2, consts=(1, 2))
    out = GoldenExecutor(m).run(feeds)
    np.testing.assert_array_equal(out["o0"], x)
    assert out["o1"].dtype == np.bool_ and out["o1"].all()


def test_dropout_with_run_time_training_mode_is_refused_at_construction():
    m, _ = model("Dropout", [rand(3, 4), np.array(0.5, F32), np.array(True)], n_out=2)
    with pytest.raises(UnsupportedOpError, match="random mask"):
        GoldenExecutor(m)
    m, feeds = model("Dropout", [rand(3, 4), np.array(0.5, F32), np.array(False)], n_out=2, consts=(2,))
    np.testing.assert_array_equal(GoldenExecutor(m).run(feeds)["o0"], feeds["i0"])


def test_cast_to_float8_saturates_unless_told_not_to():
    x = np.array([1e6, -1e6, np.inf, 0.3], F32)
    to = onnx.TensorProto.FLOAT8E4M3FN
    sat = GoldenExecutor(model("Cast", [x], {"to": to}, opset=21)[0]).run({"i0": x})["o0"].astype(F32)
    np.testing.assert_array_equal(sat[:3], [448, -448, 448])
    raw = GoldenExecutor(model("Cast", [x], {"to": to, "saturate": 0}, opset=21)[0]).run({"i0": x})["o0"]
    assert np.isnan(raw.astype(F32)[:3]).all()


# ---------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("extra, attrs", [
    ([], {}), ([], {"is_causal": 1}), ([], {"scale": 0.3, "softcap": 2.0}),
    ([RNG.random((5, 7)) > 0.3], {}), ([rand(2, 1, 5, 7)], {}),
])
def test_attention_matches_onnxruntime(extra, attrs):
    m, feeds = model("Attention", [rand(2, 4, 5, 8), rand(2, 2, 7, 8), rand(2, 2, 7, 6), *extra], attrs, opset=23)
    assert_close(m, feeds)


def test_attention_with_past_and_grouped_heads_matches_onnxruntime():
    m, feeds = model("Attention", [rand(2, 4, 5, 8), rand(2, 2, 7, 8), rand(2, 2, 7, 6), None, rand(2, 2, 3, 8),
                                   rand(2, 2, 3, 6)], {"is_causal": 1}, n_out=3, opset=23)
    assert_close(m, feeds)
    m, feeds = model("Attention", [rand(2, 5, 32), rand(2, 7, 16), rand(2, 7, 16)],
                     {"q_num_heads": 4, "kv_num_heads": 2}, opset=23)
    assert_close(m, feeds)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding_matches_onnxruntime(interleaved):
    pos = RNG.integers(0, 10, (2, 5)).astype(np.int64)
    m, feeds = model("RotaryEmbedding", [rand(2, 3, 5, 8), rand(10, 4), rand(10, 4), pos],
                     {"interleaved": interleaved}, opset=23)
    assert_close(m, feeds)


# ---------------------------------------------------------------------------------------------- vision


@pytest.mark.parametrize("center_point_box", [0, 1])
@pytest.mark.parametrize("score_threshold", [None, np.array([0.3], F32)])
def test_non_max_suppression_is_exact(center_point_box, score_threshold):
    boxes = (RNG.random((2, 40, 4)) * 10).astype(F32)
    scores = np.round(RNG.random((2, 3, 40)), 1).astype(F32)  # ties: the lower box index first
    ins = [boxes, scores, np.array([5], np.int64), np.array([0.4], F32)]
    ins += [] if score_threshold is None else [score_threshold]
    assert_exact(*model("NonMaxSuppression", ins, {"center_point_box": center_point_box}))


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_grid_sample_matches_onnxruntime(mode, padding, align_corners):
    grid = (RNG.random((2, 4, 6, 2)) * 3 - 1.5).astype(F32)  # reaches outside the input
    assert_close(*model("GridSample", [rand(2, 3, 5, 7, scale=1.0), grid],
                        {"mode": mode, "padding_mode": padding, "align_corners": align_corners}, opset=20))


def test_lp_pool_and_max_unpool_match_onnxruntime():
    x = rand(2, 3, 7, 9, scale=1.0)
    assert_close(*model("LpPool", [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2], "p": 3},
                        opset=18))
    y, idx = GoldenExecutor(model("MaxPool", [x], {"kernel_shape": [2, 2], "strides": [2, 2]}, n_out=2)[0]).run(
        {"i0": x}).values()
    assert_exact(*model("MaxUnpool", [y, idx, np.array([2, 3, 8, 10], np.int64)],
                        {"kernel_shape": [2, 2], "strides": [2, 2]}))


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_is_exact(mode, ctm, sampling_ratio):
    rois = np.array([[0, 0, 9, 9], [1.3, 2.1, 7.7, 5.2], [-2, -1, 14, 13], [5, 5, 5.5, 5.2]], F32)
    attrs = {"mode": mode, "coordinate_transformation_mode": ctm, "sampling_ratio": sampling_ratio,
             "output_height": 3, "output_width": 4, "spatial_scale": 0.9}
    assert_exact(*model("RoiAlign", [rand(2, 3, 10, 12, scale=1.0), rois, np.array([0, 1, 1, 0], np.int64)], attrs,
                        opset=16))
