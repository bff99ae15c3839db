"""Lowering of QONNX quantisation ops to standard ONNX: onnxruntime must compute the ops' exact definitions."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session
from qpass.errors import UnsupportedOpError
from qpass.pipeline.files import pipeline_from_dict
from qpass.ops.common import QONNX_DOMAIN, int_bounds

LOWER = pipeline_from_dict({"passes": ["lower_ort"]})
MODES = ["ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


def ref_round(y, mode):
    return {
        "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
        "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.fix,
        "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)),
        "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - np.float32(0.5)),
    }[mode](y)


def ref_quant(x, s, z, bits, signed, narrow, mode):
    lo, hi = int_bounds(bits, signed, narrow)
    y = x / s + z
    y = np.clip(y, np.float32(lo), np.float32(hi))
    return ((ref_round(y, mode) - z) * s).astype(np.float32)


def one_node_model(node, inits, shape=(2, 3, 4, 4)):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])


def run_lowered(model, x):
    lowered = qpass.optimize(model, pipeline=LOWER).model
    assert not [n for n in lowered.graph.node if n.domain], "custom ops left after lowering"
    return lowered, make_session(lowered, optimize=True).run(None, {"x": x})[0]


X = np.concatenate([np.arange(-40, 41, dtype=np.float32) * 0.25,  # exact ties at scale 0.5
                    np.random.default_rng(0).standard_normal(96 - 81 + 15).astype(np.float32) * 9])[:96]
X = X.reshape(2, 3, 4, 4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bits,signed,narrow", [(4, True, False), (3, False, True), (8, True, True), (12, True, False)])
def test_quant_float_emulation_matches_definition(mode, bits, signed, narrow):
    s, z = np.float32(0.5), np.float32(0.0 if signed else 1.0)
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain=QONNX_DOMAIN, signed=int(signed),
                            narrow=int(narrow), rounding_mode=mode)
    m = one_node_model(node, {"s": s, "z": z, "b": np.float32(bits)})
    _, y = run_lowered(m, X)
    np.testing.assert_array_equal(y, ref_quant(X, s, z, bits, signed, narrow, mode))


def test_native_quant_becomes_qdq_with_clip_and_per_channel_axis():
    s = np.array([0.5, 0.25, 0.125], np.float32).reshape(1, 3, 1, 1)
    node = helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], domain=QONNX_DOMAIN, signed=1, narrow=0,
                            rounding_mode="ROUND")
    m = one_node_model(node, {"s": s, "z": np.float32(0), "b": np.float32(4)})
    lowered, y = run_lowered(m, X)
    ops = [n.op_type for n in lowered.graph.node]
    assert ops == ["QuantizeLinear", "Clip", "DequantizeLinear"]
    np.testing.assert_array_equal(y, ref_quant(X, s, np.float32(0), 4, True, False, "ROUND"))


def test_bipolar_and_multithreshold():
    node = helper.make_node("BipolarQuant", ["x", "s"], ["y"], domain=QONNX_DOMAIN)
    s = np.array([1.0, 2.0, 0.5], np.float32).reshape(1, 3, 1, 1)
    _, y = run_lowered(one_node_model(node, {"s": s}), X)
    np.testing.assert_array_equal(y, np.where(X >= 0, 1.0, -1.0).astype(np.float32) * s)
    thr = np.sort(np.random.default_rng(1).standard_normal((3, 15)).astype(np.float32) * 4, axis=1)
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain=QONNX_DOMAIN, out_dtype="INT4",
                            out_scale=2.0, out_bias=-8.0)
    _, y = run_lowered(one_node_model(node, {"t": thr}), X)
    count = (X[..., None] >= thr[None, :, None, None, :]).sum(-1)
    np.testing.assert_array_equal(y, (2.0 * count - 8.0).astype(np.float32))


def test_multithreshold_tie_semantics_from_anchors():
    """anchors.md: FINN's half-step thresholds round ties up, Quant ROUND rounds half to even."""
    x = np.array([0.5, 1.5, 2.5, 3.49, 14.5, 20], np.float32).reshape(1, 6)
    thr = (np.arange(15, dtype=np.float32) + 0.5).reshape(1, 15)
    node = helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain=QONNX_DOMAIN, out_dtype="UINT4")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
                          [numpy_helper.from_array(thr, "t")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])
    _, y = run_lowered(m, x)
    assert y.tolist() == [[1, 2, 3, 3, 15, 15]]
    assert ref_quant(x, np.float32(1), np.float32(0), 4, False, False, "ROUND").tolist() == [[0, 2, 2, 3, 14, 15]]


def test_unknown_custom_op_is_refused():
    node = helper.make_node("Mystery", ["x"], ["y"], domain="qpass")
    m = one_node_model(node, {})
    m.opset_import.append(helper.make_opsetid("qpass", 1))
    with pytest.raises(UnsupportedOpError, match="qpass::Mystery"):
        qpass.optimize(m, pipeline=LOWER)


def _conv_model(w_bits, b_bits=32):
    """x -> Quant(uint8) -> Conv(Quant(W, w_bits) per channel, Quant(bias, b_bits)) -> MaxPool -> y."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    sw = (np.abs(w).reshape(4, -1).max(1) / (2 ** (w_bits - 1) - 1)).astype(np.float32).reshape(4, 1, 1, 1)
    bias = rng.standard_normal(4).astype(np.float32)
    sb = (np.float32(0.1) * sw.reshape(-1)).astype(np.float32)
    q = dict(domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND")
    nodes = [helper.make_node("Quant", ["x", "sx", "zx", "bx"], ["xq"], domain=QONNX_DOMAIN, signed=0, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("Quant", ["w", "sw", "z0", "bw"], ["wq"], **q),
             helper.make_node("Quant", ["b", "sb", "z0", "bb"], ["bq"], **q),
             helper.make_node("Conv", ["xq", "wq", "bq"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = {"sx": np.float32(0.1), "zx": np.float32(0), "bx": np.float32(4), "w": w, "sw": sw, "z0": np.float32(0),
             "bw": np.float32(w_bits), "b": bias, "sb": sb, "bb": np.float32(b_bits)}
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 2, 2])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])
    xq = ref_quant(np.abs(X), np.float32(0.1), np.float32(0), 4, False, False, "ROUND")
    ref = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], "r",
                            g.input, g.output,
                            [numpy_helper.from_array(ref_quant(w, sw, np.float32(0), w_bits, True, False, "ROUND"), "w"),
                             numpy_helper.from_array(ref_quant(bias, sb, np.float32(0), b_bits, True, False, "ROUND"),
                                                     "b")])
    expect = make_session(helper.make_model(ref, opset_imports=[helper.make_opsetid("", 17)]),
                          optimize=False).run(None, {"x": xq})[0]
    return m, expect


@pytest.mark.parametrize("w_bits,stored", [(4, TensorProto.INT4), (3, TensorProto.INT4), (6, TensorProto.UINT8)])
def test_weights_of_at_most_4_bits_are_stored_packed_and_compute_the_same(w_bits, stored):
    m, expect = _conv_model(w_bits)
    lowered = qpass.optimize(m, pipeline=LOWER).model
    types = {i.name: i.data_type for i in lowered.graph.initializer}
    weight = next(i for i in lowered.graph.initializer if list(i.dims) == [4, 3, 3, 3])
    assert weight.data_type == stored
    opset = next(o.version for o in lowered.opset_import if o.domain == "")
    assert opset == (21 if stored == TensorProto.INT4 else 17)
    if stored == TensorProto.INT4:
        assert len(weight.raw_data) == (4 * 27 + 1) // 2 and lowered.ir_version >= 10
        assert [n.op_type for n in lowered.graph.node if weight.name in n.input] == ["Cast"]
    assert TensorProto.INT32 in types.values()  # the 32-bit bias: int32 codes + DequantizeLinear, not float emulation
    assert not {"Div", "Round"} & {n.op_type for n in lowered.graph.node}
    y = make_session(lowered, optimize=False).run(None, {"x": np.abs(X)})[0]
    np.testing.assert_array_equal(y, expect)


def test_order_only_ops_are_requantised_with_their_inputs_parameters():
    """Quant(uint4) -> MaxPool -> Flatten: each order-only op gets QuantizeLinear -> DequantizeLinear with its
    input's scale and zero point (onnxruntime then runs them, and the layer after, on integers); same values."""
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=QONNX_DOMAIN, signed=0, narrow=0,
                              rounding_mode="ROUND"),
             helper.make_node("MaxPool", ["xq"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in
                           {"s": np.float32(0.3), "z": np.float32(0), "b": np.float32(4)}.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])
    lowered, y = run_lowered(m, X)
    node = {o: n for n in lowered.graph.node for o in n.output}
    chain, t = [], "y"
    while t in node:
        chain.append(node[t].op_type)
        t = node[t].input[0]
    assert chain[::-1] == ["QuantizeLinear", "Clip", "DequantizeLinear", "MaxPool", "QuantizeLinear",
                           "DequantizeLinear", "Flatten", "QuantizeLinear", "DequantizeLinear"]
    xq = ref_quant(X, np.float32(0.3), np.float32(0), 4, False, False, "ROUND")
    np.testing.assert_array_equal(y, xq.reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5)).reshape(2, 12))
    assert np.array_equal(make_session(lowered, optimize=False).run(None, {"x": X})[0], y)
