"""Small graphs built to need one weight-side post-training method each, and a way to measure what a method buys:
the output SQNR of the quantized graph against the float graph on held-out samples, with and without it."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.run import as_pipeline, run_passes


def init(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def build(nodes, x_shape, out, out_shape, inits, opset=17):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def quantize(model, calib, method=None, weights="sym:4", activations="uint8"):
    """The result of normalize -> [method] -> calibrate -> quantizer on ``calib`` (x arrays); the quantizer is
    quantize_qdq (int8 for onnxruntime) for ``weights="int8"``, else fakequant + lower_ort."""
    quantizer = ["quantize_qdq"] if weights == "int8" else \
        [{"fakequant": {"weights": weights, "activations": activations}}, "lower_ort"]
    passes = ["normalize"] + ([method] if method else []) + ["calibrate"] + quantizer
    ctx = PassContext(inputs=PassInputs(calibration_data=bind_samples({"x": calib}, model)), progress=False)
    return run_passes(model, as_pipeline(passes), ctx)


def sqnr(model, quantized, x) -> float:
    """Output SQNR (dB) of ``quantized`` against ``model`` on ``x``, the quantized model run as specified
    (onnxruntime without graph optimizations: the same numbers on every CPU)."""
    s = bind_samples({"x": x}, model)
    ref, got = run_samples(model, s), run_samples(quantized, s, optimize=False)
    k = model.graph.output[0].name
    return sqnr_db(ref[k], got[k])


def gain_db(model, calib, held_out, method, **fmt):
    """(SQNR without, SQNR with ``method``, the method's report) on ``held_out``."""
    base = quantize(model, calib, None, **fmt)
    res = quantize(model, calib, method, **fmt)
    name = method if isinstance(method, str) else next(iter(method))
    return sqnr(model, base.model, held_out), sqnr(model, res.model, held_out), res.facts.get(name)


def lstm_model(w, rng, seq, hidden):
    """A bidirectional LSTM (input weights ``w``: (2, 4 * hidden, I); R and B drawn from ``rng``) reading x of
    shape (seq, 1, I), its final hidden states flattened to the output ``h``."""
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y", "yh"], hidden_size=hidden,
                              direction="bidirectional", name="lstm"),
             helper.make_node("Flatten", ["yh"], ["h"], axis=0)]
    inits = [init("W", w), init("R", rng.standard_normal((2, 4 * hidden, hidden)) * 0.3),
             init("B", rng.standard_normal((2, 8 * hidden)) * 0.1)]
    return build(nodes, [seq, 1, w.shape[-1]], "h", None, inits)
