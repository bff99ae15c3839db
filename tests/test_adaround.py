"""adaround: a layer whose inputs move together (strongly correlated channels) adds up its weights' rounding
errors coherently, so round-to-nearest is far from the best rounding for its output; rounding for output
reconstruction gets most of the error back at 4 bits. Where round-to-nearest is already exact (weights on the
grid) the automatic choice keeps it. The chosen roundings survive the quantizer exactly."""
import numpy as np
import pytest
from onnx import helper

import qpass
from ptq_cases import build, gain_db, init, quantize

K, M = 64, 8


def gemm(w):
    return build([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], ["N", K], "y", ["N", M],
                 [init("w", w), init("b", np.zeros(M))])


def correlated_inputs(n, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 1.5, (n, 1, 1))
    return (z + 0.05 * rng.normal(0, 1, (n, 1, K))).astype(np.float32)


W = np.random.default_rng(0).normal(0, 1, (M, K))


def test_correlated_rounding_errors_are_cancelled():
    x = correlated_inputs(160)
    before, after, rep = gain_db(gemm(W), x[:128], x[128:], {"adaround": {"weights": "sym:4"}}, weights="sym:4")
    (layer,) = rep.values()
    assert layer["kept"] and layer["loss_adaround"] < 0.1 * layer["loss_rtn"]
    assert after > before + 10.0, (before, after)


def test_a_work_bound_read_from_the_graph_keeps_round_to_nearest():
    """Over ``max_work`` (multiply-adds of the model's runs and the solver, from the shapes; no clock) the pass
    rounds nothing; within it, the same case gains as above."""
    x = correlated_inputs(160)
    before, after, rep = gain_db(gemm(W), x[:128], x[128:], {"adaround": {"weights": "sym:4", "max_work": 1e4}},
                                 weights="sym:4")
    assert rep == {} and after == before
    before, after, rep = gain_db(gemm(W), x[:128], x[128:], {"adaround": {"weights": "sym:4", "max_work": 1e9,
                                                                          "iters": 0}}, weights="sym:4")
    assert next(iter(rep.values()))["kept"] and after > before + 5.0


def test_weights_on_the_grid_keep_round_to_nearest():
    on_grid = np.round(W / np.abs(W).max(1, keepdims=True) * 7) / 7
    x = correlated_inputs(160)
    before, after, rep = gain_db(gemm(on_grid), x[:128], x[128:], {"adaround": {"weights": "sym:4"}},
                                 weights="sym:4")
    (layer,) = rep.values()
    assert not layer["kept"] and after == before


def test_the_quantizer_reproduces_the_chosen_codes():
    """The pass writes float weights on the grid: sym:4 round-to-nearest per channel (what fakequant does) gives
    back exactly those values, and they differ from round-to-nearest of the float weights."""
    from qpass.formats import parse_format
    from qpass.ir.graph import initializer_arrays
    x = correlated_inputs(96)
    res = quantize(gemm(W), x, {"adaround": {"weights": "sym:4"}}, weights="float", activations="float")
    w_ar = initializer_arrays(res.model.graph)["w"]
    fmt = parse_format("sym:4").for_weight("channel", 0, 1)
    assert np.array_equal(np.asarray(fmt(w_ar), np.float32), w_ar)
    assert not np.array_equal(np.asarray(fmt(W), np.float32), w_ar)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_rescnn"])
def test_w4a8_digits_beat_round_to_nearest(models_dir, name):
    """Through the CLI's configuration (--weights sym:4 selects the fakequant pipeline with the weight-side
    passes): output SQNR on the held-out set against round to nearest with every weight-side pass off."""
    from qpass.analysis.metrics import sqnr_db
    from qpass.ir.ort_session import run_samples
    from qpass.ir.samples import load_samples
    m = qpass.load(models_dir / f"{name}.onnx")
    ev = load_samples(models_dir / f"{name}.eval.npz", m)
    calib = models_dir / f"{name}.calib.npz"
    ref = run_samples(m, ev)
    out = m.graph.output[0].name
    runs = {}
    for label, disabled in (("rtn", {"equalize", "adaround", "bias_correction", "smoothquant"}), ("ptq", set())):
        res = qpass.optimize(m, calib=calib, config=qpass.QuantConfig(weights="sym:4"), disabled=disabled)
        got = run_samples(res.model, ev, optimize=False)[out]
        acc = float(np.mean(got.reshape(len(ev), -1).argmax(1) == ev.labels))
        runs[label] = (sqnr_db(ref[out], got), acc)
    float_acc = float(np.mean(ref[out].reshape(len(ev), -1).argmax(1) == ev.labels))
    assert runs["ptq"][0] > runs["rtn"][0] + 5.0, runs
    assert runs["ptq"][1] >= 0.99 * float_acc, (runs, float_acc)
