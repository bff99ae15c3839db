"""The int8 vertical slice: float zoo models -> QDQ models that plain onnxruntime runs, with accuracy kept."""
import numpy as np
import onnx
import pytest

import qpass
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import load_samples
from qpass.analysis.evaluate import compare
from qpass.ir.graph import op_histogram

from conftest import DIGITS, MODELS, STRUCTURAL


@pytest.mark.parametrize("name", DIGITS)
def test_digits_int8_accuracy_within_one_point(name, quantized_digits):
    src = qpass.load(MODELS / f"{name}.onnx")
    res = quantized_digits(name)
    ev = load_samples(MODELS / f"{name}.eval.npz", src)
    cmp = compare(src, res.model, ev)
    assert cmp.float_accuracy > 0.95
    assert abs(cmp.quant_accuracy - cmp.float_accuracy) <= 0.01
    assert cmp.sqnr_db > 30  # int8 on these models: ~35-41 dB measured


@pytest.mark.parametrize("name", DIGITS)
def test_onnxruntime_fuses_integer_kernels(name, quantized_digits, tmp_path):
    """The QDQ pattern must be one onnxruntime turns into integer ops, not float ops between Q/DQ."""
    res = quantized_digits(name)
    opt = tmp_path / "opt.onnx"
    make_session(res.model, optimize=True, optimized_path=str(opt))
    ops = op_histogram(onnx.load(opt).graph)
    float_compute = {k for k in ops if k in ("Conv", "Gemm", "MatMul", "Add")}
    assert not float_compute, f"left in float after ORT fusion: {ops}"
    assert any(k.endswith(("QLinearConv", "QGemm", "QLinearMatMul")) for k in ops)


def test_bias_is_int32_with_input_times_weight_scale(quantized_digits):
    m = quantized_digits("digits_cnn").model
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    checked = 0
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3:
            continue
        prod = {o: p for p in m.graph.node for o in p.output}
        bias_dq, w_dq, x_dq = prod[n.input[2]], prod[n.input[1]], prod[n.input[0]]
        assert inits[bias_dq.input[0]].dtype == np.int32
        s_b = inits[bias_dq.input[1]]
        s_w = inits[w_dq.input[1]]
        s_x = inits[x_dq.input[1]]
        np.testing.assert_array_equal(s_b, (np.float32(s_x) * s_w).astype(np.float32))
        checked += 1
    assert checked == 4


def _conv_weight_codes(m):
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    dq = next(n for n in m.graph.node if conv.input[1] in n.output)
    q, s, zp = (inits[x] for x in dq.input)
    assert q.dtype == np.int8 and not zp.any()  # plain int8 (onnxruntime's u8s8 kernels)
    assert s.shape == (q.shape[0],)  # one scale per output channel
    codes = q.astype(np.int64)
    assert codes.min() >= -127 and codes.max() <= 127
    return codes


def _digits_cnn_for(target):
    # 8-bit logits (float_outputs off): with float logits pair_scale's 3.45 dB loss on digits_cnn passes the guard's
    # 3 dB and the guard picks uint8+128; this test is about the int8 pair encoding
    qdq = {"target_cpu": target, "float_outputs": False}
    return qpass.optimize(MODELS / "digits_cnn.onnx", calib=MODELS / "digits_cnn.calib.npz",
                          pipeline=qpass.load_pipeline("default", {"quantize_qdq": qdq})).model


def test_weights_are_symmetric_per_channel(quantized_digits):
    """Target any CPU: max-abs maps to 127 unless a same-sign pair of the u8s8 kernels' int16 sums would pass 128
    codes; then that channel's scale keeps the largest pair at 127 or 128 (issue 12: int8 weights replace the
    uint8 + 128 encoding). With target vnni, max-abs always maps to 127. The default (auto) is this machine's kind."""
    from qpass.passes.quantize_qdq.target import detect_target

    codes = _conv_weight_codes(_digits_cnn_for("any"))
    flat = codes.reshape(codes.shape[0], -1)  # digits_cnn's first conv: one input channel, pairs along the kernel
    pad = np.concatenate([flat, np.zeros((flat.shape[0], flat.shape[1] % 2), np.int64)], axis=1)
    a, b = pad[:, 0::2], pad[:, 1::2]
    widest = np.maximum((np.maximum(a, 0) + np.maximum(b, 0)).max(1), -(np.minimum(a, 0) + np.minimum(b, 0)).min(1))
    maxabs = np.abs(flat).max(axis=1)
    assert (widest <= 128).all()
    assert ((maxabs == 127) | (widest >= 127)).all()
    vnni = _digits_cnn_for("vnni")
    assert (np.abs(_conv_weight_codes(vnni)).reshape(codes.shape[0], -1).max(axis=1) == 127).all()
    default = quantized_digits("digits_cnn").model
    np.testing.assert_array_equal(_conv_weight_codes(default), _conv_weight_codes(_digits_cnn_for(detect_target())))


@pytest.mark.parametrize("name", STRUCTURAL)
def test_structural_graphs_load_normalise_quantize(name):
    path = MODELS / "structural" / f"{name}.onnx"
    src = qpass.load(path)
    res = qpass.optimize(src, calib=MODELS / "structural" / f"{name}.calib.npz")
    kinds = op_histogram(res.model.graph)
    assert kinds.get("QuantizeLinear", 0) >= 1
    samples = load_samples(MODELS / "structural" / f"{name}.calib.npz", src)
    cmp = compare(src, res.model, samples)
    assert cmp.sqnr_db > 25, cmp.lines()
    out = run_samples(res.model, samples)
    assert all(np.isfinite(v).all() for v in out.values())


def test_opset_upgraded_and_initializer_inputs_removed():
    res = qpass.optimize(MODELS / "structural" / "opset9_gemm.onnx",
                         pipeline=qpass.pipeline.files.pipeline_from_dict({"passes": ["normalize"]}))
    m = res.model
    assert [o.version for o in m.opset_import if o.domain == ""] == [17]
    inits = {i.name for i in m.graph.initializer}
    assert not inits & {i.name for i in m.graph.input}
    onnx.checker.check_model(m)


def test_dynamic_batch_is_kept(quantized_digits):
    m = quantized_digits("digits_cnn").model
    dim0 = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    sess = make_session(m)
    out = sess.run(None, {"input": np.zeros((5, 1, 8, 8), np.float32)})[0]
    assert out.shape == (5, 10)


def test_caller_model_is_not_modified():
    src = qpass.load(MODELS / "digits_cnn.onnx")
    before = src.SerializeToString(deterministic=True)
    qpass.optimize(src, calib=MODELS / "digits_cnn.calib.npz")
    assert src.SerializeToString(deterministic=True) == before
