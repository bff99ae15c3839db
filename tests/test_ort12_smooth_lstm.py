"""Issue 12, an LSTM on onnxruntime's DynamicQuantizeLSTM whose input channels span very different ranges: the kernel
rounds X per call on one 8-bit grid, so quantize_qdq's ``smooth_lstm`` divides each channel by its calibrated range (a Mul before
the LSTM) and multiplies W's input columns by it. The float model's function is unchanged, the int8 model is closer
to float than without the scaling, and inputs whose channels already span alike ranges are left alone."""
import numpy as np
import onnx
from onnx import numpy_helper

import qpass
from ptq_cases import lstm_model
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import smooth_lstm

SEQ, I, H = 8, 12, 16
RNG = np.random.default_rng(1207)


def _lstm_model(w):
    return lstm_model(w, RNG, SEQ, H)


def _case(widths):
    """An LSTM whose input channel c spans about +-widths[c], each channel's weights scaled so that all matter
    alike; calibration and evaluation samples."""
    w = RNG.standard_normal((2, 4 * H, I)) * 0.4 / widths
    m = _lstm_model(w)
    x = (RNG.standard_normal((48, SEQ, 1, I)) * widths / 3).astype(np.float32)
    return m, bind_samples({"x": x[:24]}, m), bind_samples({"x": x[24:]}, m)


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_wide_and_narrow_input_channels_get_equal_ranges_and_the_int8_lstm_gains():
    widths = np.geomspace(0.5, 40, I)
    m, calib, ev = _case(widths)
    res = qpass.optimize(m, calib=calib)
    off = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"smooth_lstm": False}})
    (entry,) = res.report.results["quantization"]["smooth_lstm"].values()
    assert entry["smoothed"] and entry["error_after"] < 0.9 * entry["error_before"]
    assert off.report.results["quantization"]["smooth_lstm"] == {}
    assert not any(n.op_type == "Mul" for n in off.model.graph.node)
    for r in (res, off):
        assert [n.op_type for n in r.model.graph.node].count("DynamicQuantizeLSTM") == 1
    (mul,) = [n for n in res.model.graph.node if n.op_type == "Mul"]
    inv = _inits(res.model)[mul.input[1]]
    assert inv.shape == (I,)
    # channels a decade apart end up within a factor of 2 of each other after the Mul
    xs = np.concatenate([calib.feed(i)["x"].reshape(-1, I) for i in range(len(calib))])
    spread = np.abs(xs * inv).max(0)
    assert spread.max() / spread.min() < 2 and np.abs(xs).max(0).max() / np.abs(xs).max(0).min() > 20
    ref = run_samples(m, ev)["h"]
    gain = sqnr_db(ref, run_samples(res.model, ev)["h"]) - sqnr_db(ref, run_samples(off.model, ev)["h"])
    assert gain > 3, gain


def test_float_model_is_unchanged_by_the_scaling():
    """The rewrite alone, on the float model: W's columns times s, X divided by s, outputs equal to float
    rounding."""
    widths = np.geomspace(1, 30, I)
    m, calib, ev = _case(widths)
    before = m.SerializeToString()
    smoothed, report = smooth_lstm.smooth(onnx.load_from_string(before), calib)
    assert report["lstm"]["smoothed"] and m.SerializeToString() == before
    assert [n.op_type for n in smoothed.graph.node] == ["Mul", "LSTM", "Flatten"]
    w0, w1 = _inits(m)["W"], _inits(smoothed)["W"]
    assert not np.allclose(w0, w1)
    ref = run_samples(m, ev)["h"]
    np.testing.assert_allclose(run_samples(smoothed, ev)["h"], ref, atol=2e-5)


def test_input_channels_of_alike_ranges_are_left_alone():
    m, calib, _ = _case(np.full(I, 3.0))
    res = qpass.optimize(m, calib=calib)
    assert not any(v["smoothed"] for v in res.report.results["quantization"]["smooth_lstm"].values())
    assert not any(n.op_type == "Mul" for n in res.model.graph.node)
