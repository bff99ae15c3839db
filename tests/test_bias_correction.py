"""bias_correction: a layer whose rounding errors all lean one way (every weight a third of a step above the grid,
inputs with a large positive mean) shifts its output mean; the empirical correction removes the shift. Where the
error has no mean (zero-mean inputs) the automatic choice leaves the bias alone."""
import numpy as np
from onnx import helper

from ptq_cases import build, gain_db, init

K, M = 32, 8


def gemm(w, bias=True):
    inputs = ["x", "w", "b"] if bias else ["x", "w"]
    inits = [init("w", w)] + ([init("b", np.zeros(M))] if bias else [])
    return build([helper.make_node("Gemm", inputs, ["y"], transB=1)], ["N", K], "y", ["N", M], inits)


def biased_weights(seed=0):
    """sym:4 weights: each row's max is exactly 7 steps; the rest sit 0.35 steps above a grid point."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-6, 6, (M, K)).astype(np.float64) + 0.35
    codes[:, 0] = 7.0
    return codes * 0.1


def test_biased_rounding_error_is_corrected():
    rng = np.random.default_rng(1)
    x = (2.0 + rng.uniform(0, 0.2, (128, 1, K))).astype(np.float32)
    for bias in (True, False):  # a Gemm without a bias gets one
        before, after, rep = gain_db(gemm(biased_weights(), bias), x[:96], x[96:],
                                     {"bias_correction": {"weights": "sym:4"}}, weights="sym:4")
        (layer,) = rep.values()
        assert layer["channels"] == M, rep
        assert after > before + 10.0, (before, after)


def test_zero_mean_inputs_leave_the_bias_alone():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (128, 1, K)).astype(np.float32)
    before, after, rep = gain_db(gemm(biased_weights()), x[:96], x[96:],
                                 {"bias_correction": {"weights": "sym:4"}}, weights="sym:4")
    (layer,) = rep.values()
    assert layer["channels"] == 0 and after == before
