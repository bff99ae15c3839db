"""Dataflow partitioning: hardware marking, maximal acyclic partitions, host reasons, and a partitioned model that the
golden simulator runs end to end (partition kernel) and onnxruntime runs after ``lower_partitions``."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.api import as_samples, qonnx_model
import qpass.backends.hls  # noqa: F401  (registers the partition kernel)
from qpass.reference import GoldenExecutor, run_samples
from qpass.ops.partition import PartitionStore
from qpass.ir.ort_session import run_samples as ort_run_samples
from qpass.ir.samples import load_samples
from qpass.hw import grouping, orders
from qpass.hw import partition as P
from qpass.hw.builder import build
from qpass.ir.graph import topo_order

from conftest import MODELS

Q = "qonnx.custom_op.general"


def streamlined(name, w="sym:4", a="dfp:4"):
    p = qpass.load_pipeline("dataflow", {"fakequant": {"weights": w, "activations": a}})
    r = qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz", pipeline=p)
    return qonnx_model(r)


@pytest.fixture(scope="module")
def cnn():
    return streamlined("digits_cnn")


def float_graph(kind: str) -> onnx.ModelProto:
    """conv-relu-[resize]-conv-relu-gap-flatten-matmul-[softmax] with onnx.helper."""
    rng = np.random.default_rng(3)
    c = 8
    inits = [numpy_helper.from_array((rng.standard_normal((c, 3, 3, 3)) * 0.4).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((c, 10)).astype(np.float32), "wf"),
             numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b1")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["a1"], name="relu1")]
    t = "a1"
    if kind == "resize":
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
        nodes.append(helper.make_node("Resize", [t, "", "scales"], ["r1"], mode="nearest", name="resize"))
        t = "r1"
    nodes += [helper.make_node("Conv", [t, "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["a2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["a2"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("MatMul", ["flat", "wf"], ["logits"], name="fc")]
    out = "logits"
    if kind == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1, name="softmax"))
        out = "y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def float_data(n=48, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 1, 3, 8, 8)).astype(np.float32)


def streamline_float(kind):
    m = float_graph(kind)
    r = qpass.optimize(m, calib={"x": float_data(32, 1)}, pipeline="dataflow")
    return qonnx_model(r)


def golden_equals_ort(pm, model, x):
    samples = as_samples({"x": x}, model)
    g = run_samples(pm.parent, samples, partitions=pm.store)
    o = ort_run_samples(P.lower_partitions(pm), samples)
    for k in g:
        np.testing.assert_array_equal(np.argmax(g[k], -1), np.argmax(o[k], -1))
        assert np.abs(g[k] - o[k]).max() <= 1e-5 * max(1.0, np.abs(g[k]).max())
    return g


# ------------------------------------------------------------------------------------------------- digits

def test_digits_cnn_is_one_partition_between_input_quantiser_and_float_head(cnn):
    pm = P.partition(cnn)
    assert len(pm.partitions) == 1 and len(pm.partition_nodes) == 1
    node = pm.partition_nodes[0]
    assert node.domain == "qpass" and node.op_type == "StreamingDataflowPartition"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["model"] == b"dataflow_partition_0.onnx" and len(attrs["model_sha256"]) == 64
    host = {op: why for _, op, why in pm.host_nodes()}
    assert set(host) == {"Div", "Quant", "Mul", "Add"}
    assert "input quantiser" in host["Quant"] and "input quantiser" in host["Div"]
    assert "float head" in host["Mul"] and "float head" in host["Add"]
    sub = next(iter(pm.partitions.values()))
    ops = [n.op_type for n in sub.graph.node]
    assert ops.count("Conv") == 2 and ops.count("Gemm") == 2 and "MaxPool" in ops and "Flatten" in ops
    onnx.checker.check_model(pm.parent)
    onnx.checker.check_model(sub)


def test_partitioned_digits_run_in_golden_and_onnxruntime(cnn):
    pm = P.partition(cnn)
    ev = load_samples(MODELS / "digits_cnn.eval.npz", cnn)
    a = run_samples(cnn, ev)["logits"]
    b = run_samples(pm.parent, ev, partitions=pm.store)["logits"]
    np.testing.assert_array_equal(a, b)  # the partition kernel runs the same graph
    o = ort_run_samples(P.lower_partitions(pm), ev)["logits"]
    np.testing.assert_array_equal(o.argmax(-1), a.argmax(-1))
    assert np.abs(o - a).max() <= 1e-5 * np.abs(a).max()
    inlined = P.inline_partitions(pm)
    assert sorted(n.name for n in inlined.graph.node) == sorted(n.name for n in cnn.graph.node)


@pytest.mark.parametrize("name", ["digits_mlp", "digits_rescnn"])
def test_other_digits_models_stream_everything_integer(name):
    m = streamlined(name)
    pm = P.partition(m)
    assert len(pm.partitions) == 1
    assert {op for _, op, _ in pm.host_nodes()} == {"Div", "Quant", "Mul", "Add"}
    dg = build(next(iter(pm.partitions.values())), "p")
    kinds = [l.kind for l in dg.layers]
    if name == "digits_rescnn":  # residual joins with the power-of-two alignment fused as the Add's factor
        adds = [l for l in dg.layers if l.kind == "add"]
        assert len(adds) == 2 and {(l.params["ka"], l.params["kb"]) for l in adds} <= {(4, 1), (1, 2), (2, 1), (1, 4)}
        assert "global_sum" in kinds and "maxpool" in kinds and kinds.count("swg") == 5
    else:
        assert kinds == ["mvtu"] * 3


def test_save_and_load_resolve_partition_files(cnn, tmp_path, monkeypatch):
    pm = P.partition(cnn)
    path = pm.save(tmp_path / "net.onnx")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["net.dataflow_partition_0.onnx", "net.onnx"]
    ev = load_samples(MODELS / "digits_cnn.eval.npz", cnn)
    want = run_samples(cnn, ev)["logits"]
    # found by path, relative to the parent's folder, by a store that has never seen the models
    monkeypatch.chdir(tmp_path.parent)
    loaded = P.load_partitioned(path)
    np.testing.assert_array_equal(run_samples(loaded.parent, ev, partitions=loaded.store)["logits"], want)
    np.testing.assert_array_equal(
        run_samples(onnx.load(str(path)), ev, partitions=PartitionStore(base_dir=tmp_path))["logits"], want)
    # a missing partition file is reported when the executor is built, before any computation
    (tmp_path / "net.dataflow_partition_0.onnx").unlink()
    with pytest.raises(qpass.errors.QpassError, match="dataflow partition model"):
        GoldenExecutor(onnx.load(str(path)), partitions=PartitionStore(base_dir=tmp_path))


# ------------------------------------------------------------------------------------------------ host ops

def test_softmax_at_the_end_stays_on_the_host():
    q = streamline_float("softmax")
    pm = P.partition(q)
    assert len(pm.partitions) == 1
    why = {n: r for n, op, r in grouping.explain(q)}
    assert "Softmax has no streaming hardware implementation" in why["softmax"]
    assert pm.parent.graph.node[-1].op_type == "Softmax"
    golden_equals_ort(pm, q, float_data())


def test_resize_in_the_middle_splits_the_graph_into_two_partitions():
    q = streamline_float("resize")
    pm = P.partition(q)
    assert len(pm.partitions) == 2
    ops = [n.op_type for n in pm.parent.graph.node]
    i0, i1 = [i for i, op in enumerate(ops) if op == "StreamingDataflowPartition"]
    assert "Resize" in ops[i0:i1]  # the host part sits between the two partitions
    expl = {op: r for _, op, r in grouping.explain(q)}
    assert "Resize" in expl
    g = golden_equals_ort(pm, q, float_data())
    ref = run_samples(q, as_samples({"x": float_data()}, q))
    np.testing.assert_array_equal(g["logits"], ref["logits"])


# ----------------------------------------------------------------------------------------- structure

def qnode(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, domain=Q, **attrs)


def test_partitions_never_create_a_cycle_through_the_host():
    """conv -> thresholds -> (host: float Mul + requantiser) -> Add(conv path, host path): grouping the Add with the
    conv would make the partition both feed and read the host nodes; it must be a second partition."""
    rng = np.random.default_rng(0)
    c = lambda n, v: numpy_helper.from_array(np.asarray(v, np.float32), n)  # noqa: E731
    inits = [c("one", 1.0), c("zero", 0.0), c("b4", 4.0), c("w", rng.integers(-3, 4, (4, 4, 1, 1))),
             c("T", np.sort(rng.integers(-20, 20, (4, 15)), axis=1)), c("s", 0.37)]
    nodes = [qnode("Quant", ["x", "one", "zero", "b4"], ["q"], "inq", signed=0, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Conv", ["q", "w"], ["acc"], name="conv", kernel_shape=[1, 1]),
             qnode("MultiThreshold", ["acc", "T"], ["a"], "mt", out_dtype="UINT4", data_layout="NCHW"),
             helper.make_node("Mul", ["a", "s"], ["f"], name="float_mul"),
             qnode("Quant", ["f", "one", "zero", "b4"], ["r"], "requant", signed=0, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Add", ["a", "r"], ["y"], name="join")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 3, 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)])
    pm = P.partition(m)
    assert len(pm.partitions) == 2
    topo_order(list(pm.parent.graph.node))  # a DAG
    where = {n: w for n, _, w, _ in grouping.describe(m)}
    assert where["conv"] == where["mt"] == "partition 0" and where["join"] == "partition 1"
    x = rng.uniform(-5, 20, (8, 4, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(GoldenExecutor(pm.parent, partitions=pm.store).run({"x": x})["y"],
                                  GoldenExecutor(m).run({"x": x})["y"])


def test_stream_orders_follow_layout_ops():
    order = orders.nhwc_order((3, 2, 2))
    assert order.tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert orders.channel_slots(order, (3, 2, 2), 0).tolist() == [0, 1, 2]
    flat = np.arange(12)  # a flattened NC tensor streamed in NHWC order: one pixel of 12 slots
    assert orders.channel_slots(order, (12,), 0).tolist() == order.tolist() and flat.size == 12
    assert orders.vector_perm(np.arange(12), 3).tolist() == [0, 1, 2, 3]
    assert orders.vector_perm(np.array([1, 0, 3, 2]), 2).tolist() == [1, 0]
    assert orders.vector_perm(np.array([2, 0, 3, 1]), 2) is None


def test_explain_reasons_for_every_host_node(cnn):
    rows = grouping.explain(cnn)
    assert [op for _, op, _ in rows] == ["Div", "Quant", "Mul", "Add"]
    assert all(isinstance(r, str) and r for _, _, r in rows)
    d = grouping.describe(cnn)
    assert {w for _, _, w, _ in d} == {"host", "partition 0"}


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_residual_cnn_with_uint_activations_is_one_partition(bits):
    """The residual Adds (p*a + q*b) and the global average pool stream in hardware: one partition, and the
    partitioned model computes what the streamlined one does."""
    m = qpass.load(MODELS / "digits_rescnn.onnx")
    r = qpass.optimize(m, calib=MODELS / "digits_rescnn.calib.npz", pipeline=qpass.load_pipeline(
        "dataflow", {"fakequant": {"weights": f"sym:{bits}", "activations": f"uint{bits}"}}))
    q = qonnx_model(r)
    pm = P.partition(q)
    assert len(pm.partitions) == 1
    host = {op for _, op, _ in pm.host_nodes()}
    assert host <= {"Div", "Quant", "Mul", "Add"}, pm.host_nodes()  # input quantiser and the float head
    built = build(next(iter(pm.partitions.values())), "p")
    kinds = [l.kind for l in built.layers]
    assert kinds.count("add") == 2 and "global_sum" in kinds
    ev = load_samples(MODELS / "digits_rescnn.eval.npz", m)
    sub = as_samples({"input": np.concatenate(list(ev.arrays["input"]))[:40, None]}, q)
    want = run_samples(q, sub)["logits"]
    got = run_samples(pm.parent, sub, executor=GoldenExecutor(pm.parent, partitions=pm.store))["logits"]
    np.testing.assert_array_equal(got, want)
