"""prelu_equalize's default choice (session 13): per-channel factors through the PRelu minimise a closed-form model
of the rounding noise at the second layers' outputs (``pair_noise``), and a pair is kept only where one session
with its grids as fed fake quantizers measures the model-output noise drop. Built cases: a Conv -> PRelu -> Conv
pair whose channels span 100x on one per-tensor grid (the error drops by > 6 dB, the float network unchanged); a
balanced pair (no candidate) and a pair whose grid-setting channels matter most downstream (the model sees a gain,
the output check refuses it: file byte-identical); the vectorised search agrees with the model it searches."""
import numpy as np
import onnx
from onnx import helper

from ptq_cases import build, gain_db, init, quantize, sqnr
from qpass.passes.pair_noise import PairNoise
from test_acc13b_prelu_equalize import X, pair

NOISE = {"prelu_equalize": {"choose": "noise"}}


def test_imbalanced_pair_is_equalized_and_the_error_drops():
    before, after, rep = gain_db(pair(True), X[:24], X[24:], NOISE, weights="int8")
    (p,) = rep["pairs"].values()
    assert p["kept"] and p["output_drop"] > 0.5 and min(p["factors"].values()) > 1, rep  # shrinks only
    assert after > before + 6.0, (before, after)  # 6.43 -> 17.47 dB


def test_the_float_network_is_unchanged_and_no_op_is_inserted():
    m = pair(True)
    res = quantize(m, X[:24], {"prelu_equalize": {"choose": "noise", "weights": "int8", "granularity": "channel",
                                                  "activations": "uint8"}}, weights="float", activations="float")
    assert any(p["kept"] for p in res.facts["prelu_equalize"]["pairs"].values())
    assert sqnr(m, res.model, X[24:]) > 100
    assert [n.op_type for n in res.model.graph.node] == [n.op_type for n in m.graph.node]


def test_balanced_pair_is_left_alone():
    before, after, rep = gain_db(pair(False), X[:24], X[24:], NOISE, weights="int8")
    assert rep["pairs"] and not any(p["kept"] for p in rep["pairs"].values()), rep
    assert after == before


def weighted_downstream(seed=3) -> onnx.ModelProto:
    """Conv(8) -> PRelu -> Conv 1x1 (identity) -> Conv 1x1 (8 -> 1): channels 0 and 1 span 10x the others, set the
    PRelu grid's range and reach the output 100x as strongly. Shrinking them leaves their own noise as it was
    and cuts the others' 16x: the second layer's outputs (what the model sees, every output alike) gain, the
    model's output (dominated by channels 0 and 1) does not."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (8, 16, 3, 3))
    w1[:2] *= 10
    w3 = np.full((1, 8, 1, 1), 0.01)
    w3[0, :2] = 1.0
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["z", "slope"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["u"]),
             helper.make_node("Conv", ["u", "w3"], ["y"])]
    inits = [init("w1", w1), init("b1", rng.normal(0, 0.1, 8)), init("w2", np.eye(8).reshape(8, 8, 1, 1)),
             init("w3", w3), init("slope", np.full((8, 1, 1), 0.9))]
    return build(nodes, ["N", 16, 10, 10], "y", ["N", 1, 10, 10], inits)


def test_a_pair_the_model_output_check_refuses_is_left_alone():
    m = weighted_downstream()
    _, _, rep = gain_db(m, X[:24], X[24:], NOISE, weights="int8")
    (p,) = rep["pairs"].values()
    assert p["modelled_drops"] and max(p["modelled_drops"]) > 0.3 and not p["kept"], rep  # the check refuses
    a, b = (quantize(m, X[:24], meth, weights="int8").model for meth in (NOISE, None))
    assert a.SerializeToString() == b.SerializeToString()


def test_the_vectorised_moves_are_the_model():
    rng = np.random.default_rng(5)
    c, o = 9, 6
    st = PairNoise(grids=[(-rng.uniform(0, 3, c), rng.uniform(0, 3, c), rng.uniform(0.5, 1, c))],
                   g=rng.uniform(0.1, 2, c), seconds=[(rng.uniform(0, 1, (o, c)), rng.uniform(0, 2, c))],
                   w_weight=0.7)
    s, lev = 2 ** rng.uniform(-1, 1, c), 2.0 ** (np.arange(-4, 5) / 4)
    direct = np.array([[st.noise(np.where(np.arange(c) == i, v, s)) for v in lev] for i in range(c)])
    np.testing.assert_allclose(st.moves(s, lev), direct, rtol=1e-12)
    best = st.best(4.0, shrink_only=True)
    assert (best >= 1).all() and st.noise(best) < st.noise(np.ones(c))
