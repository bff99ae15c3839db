"""equalize: a Conv -> ReLU -> Conv pair whose channels are badly balanced (the first layer writes some channels
100x wider than others and the second reads them 100x smaller: the same float network) wastes the int8 grids of
the activation between them and of the second layer's weights; cross-layer equalization gets the error back.
Also through a depthwise Conv and a ReLU6, and the automatic choice leaves a balanced pair alone."""
import numpy as np
import pytest
from onnx import helper

from ptq_cases import build, gain_db, init, quantize

RNG = np.random.default_rng(0)
X = RNG.normal(0, 1, (48, 1, 3, 8, 8)).astype(np.float32)


def conv_pair(imbalance: bool, act="Relu", depthwise=False, seed=0):
    rng = np.random.default_rng(seed)
    c = 8
    w1 = rng.normal(0, 1, (c, 3, 3, 3))
    b1 = rng.normal(0, 0.5, c)
    w2 = rng.normal(0, 1, (c, 1, 3, 3)) if depthwise else rng.normal(0, 1, (4, c, 3, 3))
    w1 /= np.abs(w1).max(axis=(1, 2, 3), keepdims=True)  # balanced: every channel's range is 1 on both sides
    w2 /= np.abs(w2).max(axis=(0, 2, 3), keepdims=True) if not depthwise else np.abs(w2).max(axis=(1, 2, 3),
                                                                                               keepdims=True)
    if imbalance:  # with a ReLU6, channels stay below 6 (where it clips, equalizing would change the network)
        f = 10.0 ** rng.uniform(-2, 1, c) / (10 if act == "Relu6" else 1)
        w1, b1 = w1 * f[:, None, None, None], b1 * f
        w2 = w2 / (f[:, None, None, None] if depthwise else f[None, :, None, None])
    attrs = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **attrs)]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2)]
    if act == "Relu6":
        nodes.append(helper.make_node("Clip", ["c1", "lo", "hi"], ["a"]))
        inits += [init("lo", 0.0), init("hi", 6.0)]
    else:
        nodes.append(helper.make_node("Relu", ["c1"], ["a"]))
    nodes.append(helper.make_node("Conv", ["a", "w2"], ["y"], group=c if depthwise else 1, **attrs))
    return build(nodes, ["N", 3, 8, 8], "y", ["N", c if depthwise else 4, 8, 8], inits)


@pytest.mark.parametrize("kind", ["relu", "relu6", "depthwise"])
def test_badly_balanced_pair_is_equalized_and_the_error_drops(kind):
    m = conv_pair(True, act="Relu6" if kind == "relu6" else "Relu", depthwise=kind == "depthwise")
    before, after, rep = gain_db(m, X[:32], X[32:], "equalize", weights="int8")
    (pair,) = rep.values()
    assert pair["equalized"] and pair["error_after"] < 0.5 * pair["error_before"]
    assert after > before + 3.0, (before, after)


def test_equalization_keeps_the_float_network():
    from ptq_cases import sqnr
    m = conv_pair(True)
    res = quantize(m, X[:32], "equalize", weights="float", activations="float")
    assert sqnr(m, res.model, X[32:]) > 100


def test_balanced_pair_is_left_alone():
    before, after, rep = gain_db(conv_pair(False), X[:32], X[32:], "equalize", weights="int8")
    (pair,) = rep.values()
    assert not pair["equalized"] and after == before


def prelu_pool_flatten_gemm(imbalance: bool, seed=1):
    """Conv -> PRelu -> MaxPool -> Flatten -> Gemm: PRelu and MaxPool commute with a positive per-channel scale, and
    Flatten maps conv channel c to the Gemm's input rows c * 16 .. c * 16 + 15."""
    rng = np.random.default_rng(seed)
    c = 8
    w1 = rng.normal(0, 1, (c, 3, 3, 3))
    w1 /= np.abs(w1).max(axis=(1, 2, 3), keepdims=True)
    b1 = rng.normal(0, 0.5, c)
    w2 = rng.normal(0, 1, (5, c * 16)) / 8
    if imbalance:
        f = 10.0 ** np.linspace(-2, 1, c)
        w1, b1, w2 = w1 * f[:, None, None, None], b1 * f, w2 / np.repeat(f, 16)[None, :]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "slope"], ["p"]),
             helper.make_node("MaxPool", ["p"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["m"], ["f"]),
             helper.make_node("Gemm", ["f", "w2"], ["y"], transB=1)]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2), init("slope", np.full((1, c, 1, 1), 0.1))]
    return build(nodes, ["N", 3, 8, 8], "y", ["N", 5], inits)


def test_extended_pairs_through_prelu_maxpool_and_flatten():
    from ptq_cases import sqnr
    m = prelu_pool_flatten_gemm(True)
    on = {"extended": True, "weights": "int8", "granularity": "channel", "activations": "uint8"}
    exact = quantize(m, X[:32], {"equalize": {**on, "auto": False}}, weights="float", activations="float")
    (forced,) = exact.facts["equalize"].values()
    assert forced["equalized"]
    assert sqnr(m, exact.model, X[32:]) > 100  # the channel map is right: the float network is unchanged
    before, after, rep = gain_db(m, X[:32], X[32:], {"equalize": {"extended": True}}, weights="int8")
    (pair,) = rep.values()
    assert pair["equalized"] and pair["error_after"] < 0.5 * pair["error_before"], pair
    assert after > before + 3.0, (before, after)


def test_without_extended_no_pair_through_prelu():
    _, _, rep = gain_db(prelu_pool_flatten_gemm(True), X[:32], X[32:], "equalize", weights="int8")
    assert rep == {}
