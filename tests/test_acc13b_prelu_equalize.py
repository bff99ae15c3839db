"""prelu_equalize: Conv -> PRelu -> Conv whose channels span 100x on one per-tensor int8 grid gets per-channel factors
through the PRelu (PRelu(z / s) = PRelu(z) / s for s > 0, whatever the slope's sign): no op inserted, the float
network unchanged, the int8 output error drops; a balanced pair and a pair through Relu are left alone."""
import numpy as np
from onnx import helper

from ptq_cases import build, gain_db, init, quantize, sqnr

RNG = np.random.default_rng(0)
CIN, C = 16, 8
X = RNG.normal(0, 1, (40, 1, CIN, 10, 10)).astype(np.float32)


def pair(imbalance: bool, act: str = "PRelu", seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (C, CIN, 3, 3))
    w1 /= np.sqrt((w1 ** 2).sum(axis=(1, 2, 3), keepdims=True)) / 2
    b1 = rng.normal(0, 0.5, C)
    w2 = rng.normal(0, 1, (C, C, 3, 3))
    if imbalance:  # channel ranges 0.05 to 5 between the layers; the second layer brings them back to one size
        f = 10.0 ** np.linspace(-1.3, 0.7, C)
        w1, b1, w2 = w1 * f[:, None, None, None], b1 * f, w2 / f[None, :, None, None]
    attrs = {"pads": [1, 1, 1, 1]}
    inits = [init("w1", w1), init("b1", b1), init("w2", w2)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["z"], **attrs)]
    if act == "PRelu":  # slopes of both signs, as mtcnn's
        inits.append(init("slope", np.linspace(-0.6, 0.9, C).reshape(C, 1, 1)))
        nodes.append(helper.make_node("PRelu", ["z", "slope"], ["h"]))
    else:
        nodes.append(helper.make_node(act, ["z"], ["h"]))
    nodes.append(helper.make_node("Conv", ["h", "w2"], ["y"], **attrs))
    return build(nodes, ["N", CIN, 10, 10], "y", ["N", C, 10, 10], inits)


def test_imbalanced_pair_is_equalized_and_the_error_drops():
    """The int8-check choice (``choose: int8``; the default since session 13 is the closed-form noise model:
    tests/test_sqnr13p_prelu_equalize.py)."""
    before, after, rep = gain_db(pair(True), X[:24], X[24:], {"prelu_equalize": {"choose": "int8"}}, weights="int8")
    (p,) = rep["pairs"].values()
    assert p["kept"] and p["alpha"] == 0.25, rep
    assert min(np.subtract(rep["final_sqnr_db"], rep["held_out_sqnr_db"])) > 3.0, rep  # on both folds
    assert after > before + 3.0, (before, after)


def test_the_float_network_is_unchanged_and_no_op_is_inserted():
    m = pair(True)
    res = quantize(m, X[:24], {"prelu_equalize": {"weights": "int8", "granularity": "channel",
                                                  "activations": "uint8"}}, weights="float", activations="float")
    assert res.facts["prelu_equalize"]["pairs"]  # it ran
    assert sqnr(m, res.model, X[24:]) > 100
    assert [n.op_type for n in res.model.graph.node] == [n.op_type for n in m.graph.node]


def test_balanced_pair_is_left_alone():
    before, after, rep = gain_db(pair(False), X[:24], X[24:], "prelu_equalize", weights="int8")
    assert rep["pairs"] and not any(p["kept"] for p in rep["pairs"].values()), rep
    assert after == before


def test_relu_pair_is_not_its_business():
    _, _, rep = gain_db(pair(True, "Relu"), X[:24], X[24:], "prelu_equalize", weights="int8")
    assert rep in (None, {}), rep
