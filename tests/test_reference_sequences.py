"""Sequence and optional values in the reference interpreter (``qpass.reference.ops_sequence``), for the ops no
ONNX node test covers (ConcatFromSequence, SequenceErase) and for the values themselves: the interpreter
must give what onnxruntime gives, and never stack a sequence into one tensor."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor
from qpass.reference.ops_sequence import as_value, from_value, is_sequence

RNG = np.random.default_rng(15)


def _model(nodes, inputs, outputs):
    g = h.make_graph(nodes, "g", inputs, outputs)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _both(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    ex = GoldenExecutor(model)
    got = ex.run({k: as_value(v) for k, v in feeds.items()})
    return [from_value(got[o.name]) for o in model.graph.output], want


@pytest.mark.parametrize("axis, new_axis", [(0, 0), (1, 0), (-1, 0), (0, 1), (2, 1), (-1, 1)])
def test_concat_from_sequence_equals_onnxruntime(axis, new_axis):
    parts = [RNG.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    nodes = [h.make_node("SequenceConstruct", ["a", "b", "c"], ["s"]),
             h.make_node("ConcatFromSequence", ["s"], ["y"], axis=axis, new_axis=new_axis)]
    m = _model(nodes, [h.make_tensor_value_info(n, T.FLOAT, [2, 3]) for n in "abc"],
               [h.make_tensor_value_info("y", T.FLOAT, None)])
    (got,), (want,) = _both(m, dict(zip("abc", parts)))
    assert got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("position", [None, 0, 1, -1, -3])
def test_sequence_erase_equals_onnxruntime(position):
    seq = [RNG.standard_normal((i + 1,)).astype(np.float32) for i in range(3)]
    ins = ["s"] + ([] if position is None else ["p"])
    nodes = [h.make_node("SequenceErase", ins, ["t"]), h.make_node("SequenceLength", ["t"], ["n"])]
    inputs = [h.make_tensor_sequence_value_info("s", T.FLOAT, None)]
    feeds = {"s": seq}
    if position is not None:
        inputs.append(h.make_tensor_value_info("p", T.INT64, []))
        feeds["p"] = np.array(position, np.int64)
    m = _model(nodes, inputs, [h.make_tensor_sequence_value_info("t", T.FLOAT, None),
                               h.make_tensor_value_info("n", T.INT64, [])])
    (got_t, got_n), (want_t, want_n) = _both(m, feeds)
    assert int(got_n) == int(want_n) == 2
    assert len(got_t) == len(want_t) and all(np.array_equal(a, b) for a, b in zip(got_t, want_t))


def test_a_sequence_is_held_as_one_value_not_stacked():
    parts = [np.ones((2,), np.float32), np.zeros((2,), np.float32)]
    m = _model([h.make_node("SequenceConstruct", ["a", "b"], ["s"]), h.make_node("Identity", ["s"], ["t"])],
               [h.make_tensor_value_info(n, T.FLOAT, [2]) for n in "ab"],
               [h.make_tensor_sequence_value_info("t", T.FLOAT, None)])
    out = GoldenExecutor(m).run({"a": parts[0], "b": parts[1]})["t"]
    assert is_sequence(out) and [x.tolist() for x in from_value(out)] == [[1, 1], [0, 0]]


def test_position_outside_the_sequence_is_an_error():
    m = _model([h.make_node("SequenceErase", ["s", "p"], ["t"])],
               [h.make_tensor_sequence_value_info("s", T.FLOAT, None), h.make_tensor_value_info("p", T.INT64, [])],
               [h.make_tensor_sequence_value_info("t", T.FLOAT, None)])
    with pytest.raises(Exception, match="position 2 is outside the sequence of length 2"):
        GoldenExecutor(m).run({"s": as_value([np.zeros(1, np.float32)] * 2), "p": np.array(2, np.int64)})


def test_a_list_fed_for_a_sequence_input_is_not_stacked():
    """executor.run given a plain list for a sequence-typed graph input: a sequence of its 3 tensors (stacked, it
    would be one (3, 2, 3) tensor and SequenceLength would refuse it); a tensor input still takes a list as an
    array."""
    seq_in = h.make_tensor_sequence_value_info("s", T.FLOAT, None)
    m = _model([h.make_node("SequenceLength", ["s"], ["n"]), h.make_node("Identity", ["x"], ["y"])],
               [seq_in, h.make_tensor_value_info("x", T.FLOAT, [2])],
               [h.make_tensor_value_info("n", T.INT64, []), h.make_tensor_value_info("y", T.FLOAT, [2])])
    items = [RNG.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    got = GoldenExecutor(m).run({"s": items, "x": [1.0, 2.0]})
    assert int(got["n"]) == 3
    assert got["y"].dtype == np.float32 and got["y"].tolist() == [1.0, 2.0]
