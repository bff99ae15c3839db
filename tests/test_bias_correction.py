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


def test_the_passes_simulate_the_quantizer_the_pipeline_runs():
    """``auto`` formats come from the quantizing pass of the running pipeline; none where no single grid exists."""
    from qpass.passes.ptq_pass import quantizer_formats
    from qpass.pipeline.context import PassContext
    from qpass.pipeline.files import load_pipeline

    def formats(name, overrides=None, **given):
        ctx = PassContext(pipeline=load_pipeline(name, overrides))
        return quantizer_formats(ctx, **given)

    f = formats("default")
    assert (f.weights, f.granularity, f.activations) == ("int8_sym_narrow", "channel", "uint8")
    f = formats("default", {"quantize_qdq": {"per_channel": False, "activation_dtype": "int8"}})
    assert (f.granularity, f.activations) == ("tensor", "int8")
    f = formats("fakequant", {"fakequant": {"weights": "sym:4", "weight_granularity": "group:8"}})
    assert (f.weights, f.granularity) == ("sym:4", "group:8")
    assert formats("fakequant", {"fakequant": {"weights": "sym:4"}}, weights="sym:3").weights == "sym:3"
    assert formats("fakequant", {"fakequant": {"rounding": "STOCHASTIC"}}) is None
    assert formats("fakequant", {"fakequant": {"rules": [{"role": "weight", "format": "sym:4"}]}}) is None
    assert formats("bitwidth") is None
