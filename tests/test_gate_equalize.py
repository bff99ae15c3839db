"""gate_equalize: a Conv -> HardSwish -> depthwise Conv block whose channels span 50x on one per-tensor int8 grid
(HardSwish blocks cross-layer equalization: it is not scale-equivariant) gets per-channel factors through an explicit
Mul on the gate path; the float network is unchanged and the int8 output error drops. Both the HardSwish node and
its decomposed form z * Clip(z + 3, 0, 6) (the / 6 goes into the next layer in fold_affine); a balanced block is
left alone. (A HardSwish node's gate is by default a 1x1 depthwise Conv, which inserts no float Mul:
tests/test_sqnr13o_conv_gate.py; the Mul form is tested here with conv_gate off.)"""
import numpy as np
import pytest
from onnx import helper

from ptq_cases import build, gain_db, init, quantize, sqnr

RNG = np.random.default_rng(0)
CIN, C = 64, 8  # the inserted Mul's 8 x 10 x 10 elements within 0.006 per Conv multiply-add (0.0017)
X = RNG.normal(0, 1, (40, 1, CIN, 10, 10)).astype(np.float32)


def block(imbalance: bool, fused: bool, seed=0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1, (C, CIN, 3, 3))
    b1 = rng.normal(0, 0.5, C) if imbalance else np.zeros(C)
    w2 = rng.normal(0, 1, (C, 1, 3, 3))
    w1 /= np.sqrt((w1 ** 2).sum(axis=(1, 2, 3), keepdims=True)) / 2  # every channel z ~ N(b1, 4) on x ~ N(0, 1)
    if imbalance:  # channel ranges from 0.05 to 5 (the small ones fall on a few codes of the shared grid), and
        # the depthwise layer (a batch norm folded in) brings them back to one size, as in MobileNetV3 / PP-LCNet
        f = 10.0 ** np.linspace(-1.3, 0.7, C)
        w1, b1, w2 = w1 * f[:, None, None, None], b1 * f, w2 / f[:, None, None, None]
    attrs = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["z"], **attrs)]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2)]
    if fused:
        nodes.append(helper.make_node("HardSwish", ["z"], ["h"]))
    else:
        nodes += [helper.make_node("Add", ["z", "three"], ["z3"]),
                  helper.make_node("Clip", ["z3", "lo", "hi"], ["g"]),
                  helper.make_node("Mul", ["g", "z"], ["h"])]  # the / 6: folded into w2 by fold_affine
        inits += [init("three", [3.0]), init("lo", 0.0), init("hi", 6.0)]
    nodes.append(helper.make_node("Conv", ["h", "w2"], ["y"], group=C, **attrs))
    return build(nodes, ["N", CIN, 10, 10], "y", ["N", C, 10, 10], inits)


@pytest.mark.parametrize("fused", [True, False], ids=["hardswish", "decomposed"])
def test_imbalanced_block_is_equalized_and_the_error_drops(fused):
    m = block(True, fused)
    before, after, rep = gain_db(m, X[:24], X[24:], "gate_equalize", weights="int8")
    (b,) = rep.values()
    assert b["equalized"] and b["error_after"] < 0.5 * b["error_before"], b
    assert after > before + 3.0, (before, after)


def test_the_float_network_is_unchanged():
    m = block(True, True)
    res = quantize(m, X[:24], {"gate_equalize": {"weights": "int8", "granularity": "channel", "activations": "uint8",
                                             "conv_gate": False}}, weights="float", activations="float")
    assert sqnr(m, res.model, X[24:]) > 100
    assert [n.op_type for n in res.model.graph.node].count("Mul") == 2  # the gate's scale and z * HardSigmoid


@pytest.mark.parametrize("fused", [True, False], ids=["hardswish", "decomposed"])
def test_balanced_block_is_left_alone(fused):
    before, after, rep = gain_db(block(False, fused), X[:24], X[24:], "gate_equalize", weights="int8")
    (b,) = rep.values()
    assert not b["equalized"] and after == before, b


def test_over_the_latency_budget_nothing_is_rewritten():
    """The inserted Mul touches 0.0017 elements per Conv multiply-add here: with a budget below that, no block."""
    m = block(True, True)
    res = quantize(m, X[:24], {"gate_equalize": {"max_elements": 0.001, "conv_gate": False}}, weights="int8")
    (b,) = res.facts["gate_equalize"].values()
    assert not b["equalized"] and b["why"] == "over the latency budget", b
    assert len(res.model.graph.node) == len(quantize(m, X[:24], None, weights="int8").model.graph.node)
