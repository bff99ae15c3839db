"""Issue 12/13, an LSTM on onnxruntime's DynamicQuantizeLSTM whose input channels span very different ranges and
carry offsets: ``smooth_lstm`` with a ``copies_budget`` gives the kernel K shifted copies of the input on one static
grid and W split into K parts (``lstm_dither``; off by default, switched on here by the quantize_qdq option
``lstm_copies_budget``). The float function is kept up to W's split, every calibration call lands on the same grid, and the int8 model is closer to float than without the rewrite."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import qpass
from ptq_cases import lstm_model
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import lstm_dither, smooth_lstm
from qpass.reference.ops_float.dynamic_quant import dynamic_quant_params

SEQ, I, H = 8, 12, 16
RNG = np.random.default_rng(1207)


def _lstm_model(w):
    return lstm_model(w, RNG, SEQ, H)


def _case(widths, offsets=0.0):
    """An LSTM whose input channel c spans about offsets[c] +- widths[c], each channel's weights scaled so that all
    matter alike; calibration and evaluation samples."""
    w = RNG.standard_normal((2, 4 * H, I)) * 0.4 / (widths + np.abs(offsets))
    m = _lstm_model(w)
    x = (RNG.standard_normal((48, SEQ, 1, I)) * widths / 3 + offsets).astype(np.float32)
    return m, bind_samples({"x": x[:24]}, m), bind_samples({"x": x[24:]}, m)


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_offset_and_wide_input_channels_the_int8_lstm_gains():
    m, calib, ev = _case(np.geomspace(0.5, 40, I), RNG.uniform(-30, 30, I))
    off = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"smooth_lstm": False}})
    scaled = qpass.optimize(m, calib=calib)
    res = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"lstm_copies_budget": lstm_dither.BUDGET}})
    (entry,) = res.report.results["quantization"]["smooth_lstm"].values()
    assert entry == {"smoothed": True, "copies": lstm_dither.MAX_COPIES}
    assert off.report.results["quantization"]["smooth_lstm"] == {}
    for r in (res, off):
        assert [n.op_type for n in r.model.graph.node].count("DynamicQuantizeLSTM") == 1
    assert not any(n.op_type in ("Pad", "Sub") for n in off.model.graph.node)
    ref = run_samples(m, ev)["h"]
    db = {k: sqnr_db(ref, run_samples(r.model, ev)["h"]) for k, r in (("off", off), ("scaled", scaled), ("dither", res))}
    assert db["dither"] > db["off"] + 6 and db["dither"] > db["scaled"] + 1.5, db  # 45.6, 33.6, 43.2


def test_float_function_is_kept_up_to_the_weight_split_and_every_call_is_on_one_grid():
    m, calib, ev = _case(np.geomspace(1, 30, I), RNG.uniform(-10, 10, I))
    before = m.SerializeToString()
    out, report = smooth_lstm.smooth(onnx.load_from_string(before), calib, copies_budget=lstm_dither.BUDGET)
    k = report["lstm"]["copies"]
    assert k == lstm_dither.MAX_COPIES and m.SerializeToString() == before
    assert [n.op_type for n in out.graph.node] == ["Concat", "Sub", "Pad", "LSTM", "Flatten"]
    w0, w1 = _inits(m)["W"], _inits(out)["W"]
    assert w1.shape == (2, 4 * H, k * I + 1) and not w1[..., -1].any()
    # K parts on one grid per row, the row's largest code exactly 127, summing to W within half a step
    step = np.abs(w0).max(-1, keepdims=True) / (k * lstm_dither.QMAX)
    codes = w1[..., :-1] / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    np.testing.assert_allclose(np.abs(codes).max(-1), lstm_dither.QMAX, atol=1e-3)
    total = w1[..., :-1].reshape(2, 4 * H, k, I).sum(2)
    assert np.all(np.abs(total - w0) <= step / 2 + 1e-6)
    # the rewritten float model == the original with W replaced by the parts' sum (shifts folded into B exactly)
    summed = onnx.load_from_string(before)
    summed.graph.initializer[0].CopyFrom(numpy_helper.from_array(total.astype(np.float32), "W"))
    np.testing.assert_allclose(run_samples(out, ev)["h"], run_samples(summed, ev)["h"], atol=3e-5)
    # every calibration call: the kernel's dynamic range is [lo, 0]: one scale, zero point 255
    probe = onnx.load_from_string(out.SerializeToString())
    probe.graph.output.append(helper.make_tensor_value_info("lstm_dither_x", TensorProto.FLOAT, None))
    xs = run_samples(probe, calib, outputs=["lstm_dither_x"])["lstm_dither_x"]
    params = {(float(s), int(z)) for s, z in (dynamic_quant_params(np.asarray(x, np.float32)) for x in xs)}
    assert len(params) == 1 and next(iter(params))[1] == 255


def test_copies_follow_the_mac_budget_in_graph_order():
    # oww-hey-mycroft's two bidirectional LSTMs: (96 in, 64 hidden), (128 in, 32 hidden)
    assert lstm_dither.copies([(2, 96, 64), (2, 128, 32)]) == [4, 2]
    assert lstm_dither.copies([(1, 12, 16)]) == [lstm_dither.MAX_COPIES]
    # an input much wider than the hidden state: one copy more at most
    assert lstm_dither.copies([(1, 1000, 8)]) == [2]
