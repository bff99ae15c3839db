"""smoothquant: a MatMul whose input has outlier channels (a LayerNorm with two huge gains, as in transformers)
loses most of its activation grid to them; migrating them into the weights raises the int8 output SQNR, and the
automatic choice leaves an input without outliers alone."""
import numpy as np
from onnx import helper

from ptq_cases import build, gain_db, init

K, M = 32, 16


def ln_matmul(gamma, seed=0):
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["n"], axis=-1),
             helper.make_node("MatMul", ["n", "w"], ["y"])]
    return build(nodes, ["N", K], "y", ["N", M],
                 [init("g", gamma), init("b", rng.normal(0, .1, K)), init("w", rng.normal(0, 0.3, (K, M)))])


X = np.random.default_rng(1).normal(0, 1, (96, 1, K)).astype(np.float32)


def test_outlier_channels_are_migrated_and_the_error_drops():
    gamma = np.ones(K)
    gamma[3], gamma[17] = 60.0, -40.0
    before, after, rep = gain_db(ln_matmul(gamma), X[:64], X[64:], "smoothquant", weights="int8")
    assert rep["n"]["migrated"] and rep["n"]["error_after"] < 0.2 * rep["n"]["error_before"]
    assert after > before + 2.0, (before, after)


def test_an_input_without_outliers_is_left_alone():
    before, after, rep = gain_db(ln_matmul(np.ones(K)), X[:64], X[64:], "smoothquant", weights="int8")
    assert not rep["n"]["migrated"] and "no outlier" in rep["n"]["why"]
    assert after == before
