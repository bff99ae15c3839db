"""Issue 13 (mtcnn-pnet): prelu_split turns Conv -> Q -> DQ -> PRelu -> Q -> DQ -> Conv into a doubled Conv whose
Relu halves [Relu(y), |a| Relu(-y)] are quantized once (uint8, zero point 0) and read by the next Conv with weights
[W2, -sign(a) W2]: one requantization less. Built cases: one that needs it (the output error drops), the weights are
the old codes exactly and stored once, onnxruntime runs it on integer kernels, the reference interpreter agrees; and the cases it
leaves alone (MaxPool after the PRelu, a zero slope) byte-identical."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import make_session, run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.passes.prelu_split import find_matches, split_prelus
from qpass.reference import run_samples as golden_run

FAST = {"choose_dynamic", "auto_precision", "prelu_max"}  # prelu_max (after this pass) would take the PRelus it leaves


def net(pool: bool = False, zero_slope: bool = False) -> onnx.ModelProto:
    """x [n, 3, 16, 16] -> Conv(16) -> PRelu (slopes of both signs) [-> MaxPool] -> Conv(16) -> PRelu -> Conv(4):
    the PRelu outputs are skewed (large positive, small negative side), as in mtcnn."""
    rng = np.random.default_rng(1313)

    def const(name, *shape, s=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)
    a1 = rng.uniform(-0.6, 0.9, (16, 1, 1)).astype(np.float32)
    if zero_slope:
        a1[3] = 0.0
    a2 = rng.uniform(-0.3, 0.6, (16, 1, 1)).astype(np.float32)
    b1 = numpy_helper.from_array(rng.uniform(0.2, 1.0, 16).astype(np.float32), "b1")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "a1"], ["p1"])]
    mid = "p1"
    if pool:
        nodes.append(helper.make_node("MaxPool", ["p1"], ["m1"], kernel_shape=[2, 2], strides=[2, 2]))
        mid = "m1"
    nodes += [helper.make_node("Conv", [mid, "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
              helper.make_node("PRelu", ["c2", "a2"], ["p2"]), helper.make_node("Conv", ["p2", "w3"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [const("w1", 16, 3, 3, 3), b1, numpy_helper.from_array(a1, "a1"),
                           const("w2", 16, 16, 3, 3, s=0.1), const("b2", 16, s=0.2),
                           numpy_helper.from_array(a2, "a2"), const("w3", 4, 16, 1, 1)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def quantize(model, calib, split=True):
    return qpass.optimize(model, calib=bind_samples(calib, model),
                          disabled=FAST | (set() if split else {"prelu_split"})).model


@pytest.fixture(scope="module")
def case():
    m, rng = net(), np.random.default_rng(13)
    calib = {"x": rng.standard_normal((16, 1, 3, 16, 16)).astype(np.float32)}
    held = rng.standard_normal((16, 3, 16, 16)).astype(np.float32)
    return m, calib, held, quantize(m, calib), quantize(m, calib, split=False)


def test_the_split_removes_the_prelus_and_the_error_drops(case):
    m, _, held, split, plain = case
    assert Counter(n.op_type for n in split.graph.node)["PRelu"] == 0
    assert Counter(n.op_type for n in plain.graph.node)["PRelu"] == 2
    ref = make_session(m).run(None, {"x": held})[0]
    gain = sqnr_db(ref, make_session(split).run(None, {"x": held})[0]) - \
        sqnr_db(ref, make_session(plain).run(None, {"x": held})[0])
    assert gain > 2.0, gain


def test_the_weights_are_the_old_codes_and_the_file_does_not_grow(case):
    m, calib, _, split, plain = case
    before = qpass.optimize(m, calib=bind_samples(calib, m), disabled=FAST | {"prelu_split", "prelu_lut"}).model
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert [x.conv.name for x in find_matches(after)] == [n.name for n in after.graph.node if n.op_type == "Conv"][:2]
    assert len(split_prelus(after)) == 2
    w_old, w_new = _dequantized_weights(before), _dequantized_weights(after)
    a1 = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "a1")).reshape(-1)
    first = next(k for k in w_old if w_old[k].shape == (16, 3, 3, 3))
    np.testing.assert_array_equal(w_new[first][:16], w_old[first])
    np.testing.assert_allclose(w_new[first][16:], -np.abs(a1)[:, None, None, None] * w_old[first], rtol=1e-6)
    # the second Conv reads [W2, -sign(a1) W2] on the first Conv's halves; its own output channels are doubled
    second = next(k for k in w_old if w_old[k].shape == (16, 16, 3, 3))
    sign = -np.sign(a1)[None, :, None, None]
    np.testing.assert_array_equal(w_new[second][:16, :16], w_old[second])
    np.testing.assert_array_equal(w_new[second][:16, 16:], sign * w_old[second])
    # each weight code stored once: the doubled weights are computed from the stored ones (folded at load)
    assert _int8_bytes(split) == _int8_bytes(plain) == 16 * 3 * 9 + 16 * 16 * 9 + 4 * 16


def _int8_bytes(model) -> int:
    arrays = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    return sum(a.size for a in arrays if a.any())  # weight codes, not zero points


def _dequantized_weights(model) -> dict:
    """The float weight every Conv reads (its DequantizeLinear run on the constants), by Conv name."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = {n.name: n.input[1] for n in g.node if n.op_type == "Conv"}
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in names.values())
    assert all(prod[t].op_type == "DequantizeLinear" for t in names.values())
    out = make_session(probe).run(None, {"x": np.zeros((1, 3, 16, 16), np.float32)})
    return dict(zip(names, out))


def test_onnxruntime_runs_integer_kernels_and_the_reference_agrees(case, tmp_path):
    _, calib, held, split, _ = case
    path = tmp_path / "opt.onnx"
    make_session(split, optimize=True, optimized_path=str(path))
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert ops["QLinearConv"] == 3 and not {"Conv", "Relu", "PRelu", "Concat", "Neg", "Where"} & set(ops), ops
    s = bind_samples({"x": held[:4, None]}, split)
    g, r = golden_run(split, s, outputs=["y"]), ort_run(split, s, outputs=["y"])
    np.testing.assert_allclose(g["y"], r["y"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["pool", "zero_slope"])
def test_left_alone_where_the_split_is_not_exact(kind):
    """A MaxPool after the PRelu (max over a window does not split into the halves) or a zero slope: that PRelu is
    kept; with both PRelus so, the file is byte-identical to the pipeline without the pass."""
    m = net(pool=kind == "pool", zero_slope=kind == "zero_slope")
    calib = {"x": np.random.default_rng(14).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)}
    split, plain = quantize(m, calib), quantize(m, calib, split=False)
    assert Counter(n.op_type for n in split.graph.node)["PRelu"] == 1  # the second PRelu -> Conv is split
    lone = net(pool=kind == "pool", zero_slope=kind == "zero_slope")
    lone.graph.node.remove(next(n for n in lone.graph.node if n.output[0] == "y"))
    lone.graph.node[-1].output[0] = "y"  # ... -> Conv -> PRelu is the output: nothing to split
    a, b = quantize(lone, calib), quantize(lone, calib, split=False)
    assert a.SerializeToString() == b.SerializeToString()


def flatten_net(channels_last: bool) -> onnx.ModelProto:
    """x [n, 3, 6, 6] -> Conv(8) -> PRelu [-> Transpose to NHWC] -> Flatten -> Gemm(10): mtcnn-rnet/onet's end."""
    rng = np.random.default_rng(1314)
    a = rng.uniform(-0.6, 0.9, (8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("PRelu", ["c1", "a1"], ["p1"])]
    t = "p1"
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["p1"], ["t1"], perm=[0, 2, 3, 1]))
        t = "t1"
    nodes += [helper.make_node("Flatten", [t], ["f1"], axis=1), helper.make_node("Gemm", ["f1", "w2", "b2"], ["y"])]
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.uniform(0.2, 1.0, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(a, "a1"),
             numpy_helper.from_array((rng.standard_normal((8 * 16, 10)) * 0.1).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "b2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_flattened_gemm_reader_gets_its_rows_in_the_new_order(channels_last):
    m, rng = flatten_net(channels_last), np.random.default_rng(15)
    calib = {"x": rng.standard_normal((16, 1, 3, 6, 6)).astype(np.float32)}
    held = rng.standard_normal((32, 3, 6, 6)).astype(np.float32)
    split, plain = quantize(m, calib), quantize(m, calib, split=False)
    assert Counter(n.op_type for n in split.graph.node)["PRelu"] == 0
    ref = make_session(m).run(None, {"x": held})[0]
    got, before = make_session(split).run(None, {"x": held})[0], make_session(plain).run(None, {"x": held})[0]
    # rows in a wrong order would wreck the output; in the right one the error drops (+1.66 NHWC / +0.74 NCHW dB)
    assert sqnr_db(ref, got) > sqnr_db(ref, before) + 0.4, (sqnr_db(ref, got), sqnr_db(ref, before))
    s = bind_samples({"x": held[:4, None]}, split)
    np.testing.assert_allclose(golden_run(split, s, outputs=["y"])["y"], ort_run(split, s, outputs=["y"])["y"],
                               rtol=1e-6, atol=1e-6)


def test_an_already_quantized_model_keeps_its_grids(case):
    """prelu_split re-grids activations: on a model that is already QDQ it gives way like the other quantizing
    passes (the trained quantization is kept)."""
    _, _, held, _, plain = case
    res = qpass.optimize(plain)
    again = res.model
    assert "prelu_split" not in [r.name for r in res.records] and "import_quantized" in [r.name for r in res.records]
    assert Counter(n.op_type for n in again.graph.node)["PRelu"] == 2
    np.testing.assert_array_equal(make_session(again).run(None, {"x": held})[0],
                                  make_session(plain).run(None, {"x": held})[0])


def test_no_new_int16_pair_saturation_for_cpus_without_vnni():
    """Made for --target-cpu avx2, every layer keeps its u8s8 pair sums within int16 (quantize_qdq's pair_scale);
    the doubled input pairs weights anew (a channel whose slope is positive meets one whose slope is negative:
    opposite-sign pairs become same-sign), so prelu_split leaves a pair alone where that would saturate."""
    from qpass.ir.graph import producers
    from qpass.passes.prelu_split import const_value
    from qpass.passes.quantize_qdq import u8s8

    m, rng = net(), np.random.default_rng(16)
    calib = bind_samples({"x": rng.standard_normal((8, 1, 3, 16, 16)).astype(np.float32)}, m)
    q = qpass.optimize(m, calib=calib, disabled=FAST, overrides={"quantize_qdq": {"target_cpu": "avx2"}}).model
    g = q.graph
    prods, inits = producers(g), {i.name: i for i in g.initializer}
    for n in (n for n in g.node if n.op_type == "Conv"):
        codes = const_value(inits, prods, prods[n.input[1]].input[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert not u8s8.saturating_channels("Conv", attrs, codes, 0, 255).any(), n.name
