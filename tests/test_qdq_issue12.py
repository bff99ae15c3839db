"""Issue 12, what quantize_qdq could not do: embedding tables whose rows only float ops read (stored as int8 rows),
LSTMs on onnxruntime's DynamicQuantizeLSTM, MatMuls inside If / Loop bodies; small built graphs in, the stored
arrays, the kernels onnxruntime runs and the numbers (golden interpreter == onnxruntime) out."""
from collections import Counter

import numpy as np
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
