"""The op classes (qpass.ops): every registered op's ``execute`` equals onnxruntime running its lowering, bit for
bit, on random inputs over its attribute combinations; shape rules; checks and refusals; integer ranges."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.errors import QpassError, UnsupportedOpError
from qpass.ir.ort_session import make_session
from qpass.ops import OPS, BipolarQuant, MultiThreshold, Quant, QuantizeLinear, StreamingDataflowPartition, Trunc, \
    get_op
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN, ROUNDING_MODES
from qpass.ops.partition import PartitionStore, model_sha256
from qpass.pipeline.files import pipeline_from_dict
from qpass.reference import GoldenExecutor

LOWER = pipeline_from_dict({"passes": ["lower_ort"]})
F32 = np.float32


def one_node(op_type, x, params: dict, attrs: dict, opset=17, x_const=False, domain=QONNX_DOMAIN):
    """A model computing ``op_type(x, *params)``; x is a graph input (or an initializer when ``x_const``)."""
    node = helper.make_node(op_type, ["x"] + list(params), ["y"], domain=domain, name="op", **attrs)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in params.items()]
    ins = [] if x_const else [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))]
    if x_const:
        inits.append(numpy_helper.from_array(x, "x"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))
    g = helper.make_graph([node], "g", ins, [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(domain, 1)])


def lowered_output(model, x, x_const=False):
    lowered = qpass.optimize(model, pipeline=LOWER).model
    assert not [n for n in lowered.graph.node if n.domain], "custom ops left after lowering"
    return make_session(lowered, optimize=True).run(None, {} if x_const else {"x": x})[0]


def assert_same(model, x, x_const=False, qdq=False):
    """The op's execute and onnxruntime on its lowering agree bit for bit. ``qdq``: the lowering runs integer
    QDQ kernels, which dequantise a zero code to +0 where the float definition may give -0 (the only allowed
    difference)."""
    node = model.graph.node[0]
    op = get_op(node.domain, node.op_type)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    args = [x if name == "x" else inits[name] for name in node.input]
    want = op.execute(node, *args)
    got = lowered_output(model, x, x_const)
    assert got.dtype == want.dtype == F32 and got.shape == want.shape
    sign = np.uint32(0x7FFFFFFF if qdq else 0xFFFFFFFF)
    np.testing.assert_array_equal(got.view(np.uint32) & sign, want.view(np.uint32) & sign)
    np.testing.assert_array_equal(got, want)


def data(rng, shape, step):
    """Random values: half exact multiples of step / 2 (ties of every rounding mode), half wide normal."""
    n = int(np.prod(shape))
    ties = rng.integers(-300, 300, n).astype(F32) * F32(step / 2)
    wide = (rng.standard_normal(n) * 40 * step).astype(F32)
    return np.where(rng.random(n) < 0.5, ties, wide).astype(F32).reshape(shape)


# ------------------------------------------------------------------------------------------------ Quant

QUANT_GRID = [(bits, signed, narrow) for bits, signed, narrow in itertools.product((2, 4, 8), (0, 1), (0, 1))]


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("bits,signed,narrow", QUANT_GRID + [(1, 1, 0), (12, 1, 0), (16, 0, 1)])
def test_quant_float_emulation(mode, bits, signed, narrow):
    rng = np.random.default_rng(bits * 7 + signed * 3 + narrow)
    x = data(rng, (2, 3, 4, 4), 0.25)
    s, z = F32(0.25), F32(1 if signed else 3)  # an odd zero point keeps the float path for every mode
    m = one_node("Quant", x, {"s": s, "z": z, "b": F32(bits)},
                 {"signed": signed, "narrow": narrow, "rounding_mode": mode})
    assert_same(m, x)
    assert "QuantizeLinear" not in [n.op_type for n in qpass.optimize(m, pipeline=LOWER).model.graph.node]


@pytest.mark.parametrize("bits,signed,narrow", QUANT_GRID + [(16, 1, 0), (16, 0, 0)])
@pytest.mark.parametrize("scale", ["tensor", "channel"])
@pytest.mark.parametrize("x_const", [False, True])
def test_quant_native_qdq(bits, signed, narrow, scale, x_const):
    rng = np.random.default_rng(bits + 10 * signed + 100 * narrow)
    x = data(rng, (2, 3, 4, 4), 0.125)
    s = F32(0.125) if scale == "tensor" else np.array([0.5, 0.25, 0.125], F32).reshape(1, 3, 1, 1)
    z = F32(0 if signed else 2)
    m = one_node("Quant", x, {"s": s, "z": z, "b": F32(bits)}, {"signed": signed, "narrow": narrow},
                 opset=21 if bits > 8 else 17, x_const=x_const)
    assert_same(m, x, x_const, qdq=True)
    lowered = qpass.optimize(m, pipeline=LOWER).model
    assert "DequantizeLinear" in [n.op_type for n in lowered.graph.node]


@pytest.mark.parametrize("bits,signed,narrow", [(12, 1, 0), (16, 1, 1), (16, 0, 1), (9, 0, 0)])
def test_quant_wider_than_8_bits_is_emulated_unless_it_fills_16_bits(bits, signed, narrow):
    """onnxruntime has no 16-bit Clip: a 9-15-bit or narrow 16-bit grid is emulated in float at opset 21."""
    x = data(np.random.default_rng(bits), (2, 3, 4, 4), 2.0 ** -6)
    m = one_node("Quant", x, {"s": F32(2.0 ** -6), "z": F32(0), "b": F32(bits)}, {"signed": signed, "narrow": narrow},
                 opset=21)
    assert_same(m, x)
    assert "QuantizeLinear" not in [n.op_type for n in qpass.optimize(m, pipeline=LOWER).model.graph.node]


def test_quant_in_every_domain_alias_and_as_intquant_lowers_the_same():
    x = data(np.random.default_rng(0), (2, 3, 4, 4), 0.5)
    for op_type, domain in [("IntQuant", QONNX_DOMAIN), ("Quant", "finn.custom_op.general"), ("Quant", QPASS_DOMAIN)]:
        m = one_node(op_type, x, {"s": F32(0.5), "z": F32(1), "b": F32(4)}, {"rounding_mode": "HALF_UP"},
                     domain=domain)
        assert_same(m, x)


# ------------------------------------------------------------------------------------------------ BipolarQuant

@pytest.mark.parametrize("scale", [F32(1), F32(0.375), np.array([1.0, 2.0, 0.5], F32).reshape(1, 3, 1, 1)])
def test_bipolar_quant(scale):
    x = data(np.random.default_rng(1), (2, 3, 4, 4), 1.0)
    x.flat[:4] = [0.0, -0.0, 1e-30, -1e-30]
    assert_same(one_node("BipolarQuant", x, {"s": scale}, {}), x)


# ------------------------------------------------------------------------------------------------ Trunc

@pytest.mark.parametrize("mode", ROUNDING_MODES)
@pytest.mark.parametrize("in_bw,out_bw,zp", [(8, 4, 0), (10, 3, 2), (6, 6, 1)])
def test_trunc_v1(mode, in_bw, out_bw, zp):
    rng = np.random.default_rng(in_bw * out_bw)
    x = (rng.integers(-2 ** (in_bw - 1), 2 ** (in_bw - 1), (2, 3, 5)) * 0.25).astype(F32)
    m = one_node("Trunc", x, {"s": F32(0.25), "z": F32(zp), "ib": F32(in_bw), "ob": F32(out_bw)},
                 {"rounding_mode": mode})
    assert_same(m, x)


@pytest.mark.parametrize("mode", ["FLOOR", "ROUND", "HALF_UP", "DOWN"])
@pytest.mark.parametrize("signed,narrow", [(1, 0), (1, 1), (0, 0)])
@pytest.mark.parametrize("inputs", [6, 7])
@pytest.mark.parametrize("out_scale", [F32(2.0), F32(3.0), np.array([4.0, 1.0, 0.5], F32).reshape(1, 3, 1)])
def test_trunc_v2(mode, signed, narrow, inputs, out_scale):
    rng = np.random.default_rng(inputs + 3 * signed + narrow)
    x = (rng.integers(-512, 512, (2, 3, 5)) * 0.5).astype(F32)
    params = {"s": F32(0.5), "z": F32(0), "ib": F32(10), "os": out_scale}
    if inputs == 7:
        params["oz"] = F32(0)
    params["ob"] = F32(4)
    m = one_node("Trunc", x, params, {"rounding_mode": mode, "signed": signed, "narrow": narrow})
    assert_same(m, x)


# ------------------------------------------------------------------------------------------------ MultiThreshold

MT_SHAPES = {2: (4, 6), 3: (2, 6, 5), 4: (2, 6, 3, 3)}
MT_LAYOUTS = {2: [None, "NC"], 3: [None, "NCW", "NWC"], 4: [None, "NCHW", "NHWC"]}


@pytest.mark.parametrize("rank,layout", [(r, lay) for r, lays in MT_LAYOUTS.items() for lay in lays])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("scale,bias", [(1.0, 0.0), (2.0, -7.0), (0.5, 0.25)])
def test_multithreshold(rank, layout, per_channel, scale, bias):
    rng = np.random.default_rng(rank)
    shape = MT_SHAPES[rank]
    attrs = {"out_dtype": "INT4", "out_scale": scale, "out_bias": bias}
    if layout:
        attrs["data_layout"] = layout
    channels = shape[MultiThreshold.channel_axis(helper.make_node("MultiThreshold", [], [], **attrs), rank)]
    thr = (rng.integers(-20, 20, (channels if per_channel else 1, 15)) * 0.5).astype(F32)  # unsorted, repeats
    x = (rng.integers(-24, 24, shape) * 0.5).astype(F32)  # many x == t ties
    x.flat[::7] = rng.standard_normal(x.size)[::7].astype(F32) * 10
    assert_same(one_node("MultiThreshold", x, {"t": thr}, attrs), x)


def test_multithreshold_one_dimensional_thresholds_are_one_row():
    x = (np.arange(-12, 12, dtype=F32) * 0.5).reshape(4, 6)
    assert_same(one_node("MultiThreshold", x, {"t": np.arange(-3, 4, dtype=F32)}, {"out_dtype": "UINT3"}), x)


# ------------------------------------------------------------------------------------------------ coverage

COVERED = {Quant, BipolarQuant, Trunc, MultiThreshold}


def test_every_op_with_a_lowering_is_checked_against_onnxruntime():
    with_lowering = {cls for cls in OPS.values() if cls.lower is not None}
    assert with_lowering == COVERED


def test_the_quantizers_are_the_ops_rounding_onto_a_grid():
    assert {cls for cls in OPS.values() if cls.quantizer} == {Quant, BipolarQuant, Trunc}


def test_the_table_agrees_with_the_classes():
    for (domain, op_type), cls in OPS.items():
        assert domain in cls.domains and (op_type == cls.op_type or (cls, op_type) == (Quant, "IntQuant"))
        assert get_op(domain, op_type) is cls
    assert get_op("finn.custom_op.general", "MultiThreshold") is MultiThreshold
    assert get_op("ai.onnx", "QuantizeLinear") is QuantizeLinear
    assert get_op("", "Quant") is None and get_op(QONNX_DOMAIN, "Relu") is None


# ------------------------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize("cls", [Quant, BipolarQuant, Trunc, MultiThreshold, QuantizeLinear])
def test_element_wise_ops_keep_the_input_shape(cls):
    node = helper.make_node(cls.op_type, ["x", "a"], ["y"], domain=cls.domains[0])
    assert cls.infer_shape(node, [[2, 3, "N"], [3]]) == [[2, 3, "N"]]


def test_shape_stand_ins_let_onnx_infer_shapes_through_the_custom_ops():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits = [numpy_helper.from_array(np.asarray(v, F32), k) for k, v in
             {"s": 1.0, "z": 0.0, "b": 4.0, "t": np.zeros((1, 3))}.items()]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain=QONNX_DOMAIN),
             helper.make_node("Relu", ["q"], ["r"]),
             helper.make_node("MultiThreshold", ["r", "t"], ["y"], domain=QONNX_DOMAIN, out_dtype="UINT2")]
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    for i, n in enumerate(g.node):
        cls = get_op(n.domain, n.op_type)
        stand = cls.shape_stand_in(n) if cls is not None else None
        if stand is not None:
            g.node[i].CopyFrom(stand)
    inferred = onnx.shape_inference.infer_shapes(helper.make_model(g), strict_mode=True)
    dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    assert dims["q"] == dims["r"] == dims["y"] == [2, 3, 4]
    assert QuantizeLinear.shape_stand_in(helper.make_node("QuantizeLinear", ["a", "b"], ["c"])) is None


def _partition_node(tmp_path):
    x = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((8, 4), F32), "w")
    body = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["b"])], "p", [x], [y], [w]))
    onnx.save(body, tmp_path / "p0.onnx")
    node = helper.make_node(StreamingDataflowPartition.op_type, ["a"], ["b"], name="part", domain=QPASS_DOMAIN,
                            model="p0.onnx", model_sha256=model_sha256(body), partition_id=0)
    return node, body


def test_partition_shape_comes_from_its_model(tmp_path):
    node, _ = _partition_node(tmp_path)
    store = PartitionStore(base_dir=tmp_path)
    assert StreamingDataflowPartition.infer_shape(node, [[1, 8]], store) == [[1, 4]]
    assert StreamingDataflowPartition.shape_stand_in(node) is None
    with pytest.raises(QpassError, match="PartitionStore"):
        StreamingDataflowPartition.infer_shape(node, [[1, 8]])


# ------------------------------------------------------------------------------------------------ checks

def _golden_refuses(model, match):
    with pytest.raises(UnsupportedOpError, match=match):
        GoldenExecutor(model)


@pytest.mark.parametrize("cls", [Quant, Trunc])
def test_quant_and_trunc_refuse_an_unknown_rounding_mode(cls):
    n_in = 4 if cls is Quant else 5
    node = helper.make_node(cls.op_type, ["x"] + [f"p{i}" for i in range(n_in)], ["y"], domain=QONNX_DOMAIN,
                            rounding_mode="bankers")
    assert cls.check(node) == f"rounding_mode 'BANKERS' is not one of {', '.join(ROUNDING_MODES)}"
    assert cls.check(helper.make_node(cls.op_type, [], [], rounding_mode="half_up")) is None
    x = np.zeros((2, 3), F32)
    m = one_node(cls.op_type, x, {f"p{i}": F32(4) for i in range(n_in)}, {"rounding_mode": "bankers"})
    _golden_refuses(m, "BANKERS")
    with pytest.raises(UnsupportedOpError, match="rounding_mode 'BANKERS'"):
        qpass.optimize(m, pipeline=LOWER)


def test_quant_lowering_refuses_a_run_time_bit_width():
    x = np.zeros((2, 3), F32)
    m = one_node("Quant", x, {"s": F32(1), "z": F32(0)}, {})
    m.graph.node[0].input.append("bits")
    m.graph.input.append(helper.make_tensor_value_info("bits", TensorProto.FLOAT, []))
    with pytest.raises(UnsupportedOpError, match="run-time bit width"):
        qpass.optimize(m, pipeline=LOWER)


def test_bipolar_quant_has_no_attribute_to_refuse():
    assert BipolarQuant.check(helper.make_node("BipolarQuant", ["x", "s"], ["y"], whatever=3)) is None


def test_trunc_lowering_refuses_run_time_widths_and_scales():
    x = np.zeros((2, 3), F32)
    m = one_node("Trunc", x, {"s": F32(1), "z": F32(0), "ib": F32(8)}, {})
    m.graph.node[0].input.append("ob")
    m.graph.input.append(helper.make_tensor_value_info("ob", TensorProto.FLOAT, []))
    with pytest.raises(UnsupportedOpError, match="run-time bit widths"):
        qpass.optimize(m, pipeline=LOWER)


def test_multithreshold_lowering_refuses_run_time_thresholds():
    x = np.zeros((2, 3), F32)
    m = one_node("MultiThreshold", x, {}, {"out_dtype": "UINT2"})
    m.graph.node[0].input.append("t")
    m.graph.input.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, [3, 3]))
    with pytest.raises(UnsupportedOpError, match="constant thresholds"):
        qpass.optimize(m, pipeline=LOWER)


def test_quantize_linear_refuses_blocks_and_float8():
    assert QuantizeLinear.check(helper.make_node("QuantizeLinear", [], [], block_size=32)) == \
        "blocked quantisation (block_size) is not supported"
    assert "FLOAT8E4M3FN" in QuantizeLinear.check(
        helper.make_node("QuantizeLinear", [], [], output_dtype=TensorProto.FLOAT8E4M3FN))
    assert QuantizeLinear.check(helper.make_node("QuantizeLinear", [], [], output_dtype=TensorProto.INT16)) is None


def test_partition_without_a_model_is_refused_and_has_no_lowering(tmp_path):
    node, _ = _partition_node(tmp_path)
    assert StreamingDataflowPartition.check(node) is None
    del node.attribute[:]
    assert "no 'model' attribute" in StreamingDataflowPartition.check(node)
    assert StreamingDataflowPartition.lower is None and StreamingDataflowPartition.execute is None


# ------------------------------------------------------------------------------------------------ integer ranges

def test_integer_ranges_of_the_quantisers():
    q = helper.make_node("Quant", [], [], signed=1, narrow=0)
    one, z = F32(1), F32(0)
    assert Quant.int_range(q, [None, one, z, F32(4)]) == (-8, 7)
    assert Quant.int_range(helper.make_node("Quant", [], []), [None, one, z, F32(4)]) == (-7, 7)  # narrow: 1
    assert Quant.int_range(q, [None, one, F32(2), F32(4)]) == (-10, 5)
    assert Quant.int_range(q, [None, F32(0.5), z, F32(4)]) is None  # not codes
    assert Quant.int_range(q, [None, one, z, F32(1)]) == (-1, 1)  # 1-bit signed: the sign function
    assert BipolarQuant.int_range(None, [None, one]) == (-1.0, 1.0)
    assert BipolarQuant.int_range(None, [None, F32(2)]) is None
    mt = helper.make_node("MultiThreshold", [], [], out_scale=-2.0, out_bias=3.0)
    assert MultiThreshold.int_range(mt, [None, np.zeros((4, 7), F32)]) == (-11.0, 3.0)
    assert MultiThreshold.int_range(helper.make_node("MultiThreshold", [], [], out_scale=0.5),
                                    [None, np.zeros((4, 7), F32)]) is None
    assert Trunc.int_range(None, []) is None


def test_quant_saturation_counts_values_outside_the_grid():
    q = helper.make_node("Quant", [], [], signed=1, narrow=1)
    x = np.array([-9, -7.6, -7, 0, 7, 7.4, 8], F32)
    assert Quant.saturated(q, x, one := F32(1), F32(0), F32(4)) == (7, 4)
    assert Quant.saturated(q, x, one, F32(0), F32(1)) is None
