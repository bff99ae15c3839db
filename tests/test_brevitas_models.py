"""The Brevitas-trained digits CNNs of models/train_brevitas.py (W4A4, W2A2, W1A1), committed as QONNX and as QCDQ:
qpass's reference interpreter against the ``qonnx`` package's own executor, an independent reference, on the whole
eval set; then streamlining and the HLS C simulation against the reference.

No torch: the exports and their eval data are committed files. qonnx is a test dependency (skipped without it).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

import qpass
from qpass.ir.samples import load_samples
from qpass.reference import run_samples

from conftest import MODELS

DIR = MODELS / "brevitas"  # models/train_brevitas.py writes here

NETS = {"digits_w4a4": 4, "digits_w2a2": 2, "digits_w1a1": 1}
DIALECTS = ("qonnx", "qcdq")
#: Brevitas' QCDQ export refuses binary quantisers ("Binary quant not supported"): the 1-bit net is QONNX only
EXPORTS = [(n, d) for n in NETS for d in DIALECTS if not (d == "qcdq" and NETS[n] == 1)]
QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")
#: float32 accuracy of the brevitas nets on the 360 eval images is far above these; a broken export is not
MIN_ACCURACY = {"digits_w4a4": 0.95, "digits_w2a2": 0.9, "digits_w1a1": 0.8}


def path_of(name: str, dialect: str):
    return DIR / f"{name}.{dialect}.onnx"


def eval_data(name: str):
    ev = np.load(DIR / f"{name}.eval.npz")
    return ev["input"], ev["labels"]


def reference_logits(name: str, dialect: str) -> np.ndarray:
    m = qpass.load(path_of(name, dialect))
    return run_samples(m, load_samples(DIR / f"{name}.eval.npz", m))["logits"].reshape(-1, 10)


def fixed_batch(model: onnx.ModelProto, n: int) -> onnx.ModelProto:
    """The model with its symbolic batch dimension set to n (qonnx's executor allocates every tensor from the
    model's shapes); intermediate shapes are dropped and inferred again by qonnx."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {t.name for t in m.graph.initializer}  # Brevitas lists its parameters as graph inputs too
    for vi in [i for i in m.graph.input if i.name not in inits] + list(m.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        if d.dim_param or not d.dim_value:
            d.Clear()
            d.dim_value = n
    del m.graph.value_info[:]
    return m


def qonnx_logits(name: str, dialect: str) -> np.ndarray:
    """``qonnx.core.onnx_exec.execute_onnx`` on a ModelWrapper (after qonnx's clean-up and InferShapes), the whole
    eval set as one batch."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model

    x, _ = eval_data(name)
    x = np.concatenate(list(x))  # (N, 1, 8, 8)
    mw = ModelWrapper(fixed_batch(onnx.load(path_of(name, dialect)), len(x)))
    mw = cleanup_model(mw).transform(InferShapes())
    return execute_onnx(mw, {mw.graph.input[0].name: x})[mw.graph.output[0].name].reshape(-1, 10)


def op_histogram(path) -> Counter:
    m = onnx.load(path)
    return Counter(("qonnx::" if n.domain in QONNX_DOMAINS else "") + n.op_type for n in m.graph.node)


@pytest.mark.parametrize("name,dialect", EXPORTS)
def test_committed_export_is_its_dialect(name, dialect):
    ops = op_histogram(path_of(name, dialect))
    quant = "qonnx::BipolarQuant" if NETS[name] == 1 else "qonnx::Quant"
    if dialect == "qonnx":
        assert ops[quant] >= 3 and ops["QuantizeLinear"] == 0, ops  # weights of 3 layers + activations
    else:
        assert not any(k.startswith("qonnx::") for k in ops), ops
        assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 3, ops
    assert ops["Conv"] == 2, ops
    m = onnx.load(path_of(name, dialect))
    inits = {t.name for t in m.graph.initializer}  # as exported: Brevitas lists its parameters as inputs too
    assert [i.name for i in m.graph.input if i.name not in inits] == ["input"]
    assert [o.name for o in m.graph.output] == ["logits"]
    x, labels = eval_data(name)
    assert x.shape == (360, 1, 1, 8, 8) and x.dtype == np.float32 and labels.shape == (360,)


@pytest.mark.parametrize("name,dialect", EXPORTS)
def test_reference_matches_qonnx_executor(name, dialect):
    ours = reference_logits(name, dialect)
    theirs = qonnx_logits(name, dialect)
    _, labels = eval_data(name)
    assert ours.shape == theirs.shape == (360, 10)
    np.testing.assert_array_equal(ours.argmax(1), theirs.argmax(1))
    assert np.abs(ours - theirs).max() <= 1e-5
    assert np.mean(ours.argmax(1) == labels) >= MIN_ACCURACY[name]


@pytest.mark.parametrize("name", [n for n in NETS if (n, "qcdq") in EXPORTS])
def test_qcdq_export_computes_what_the_qonnx_export_does(name):
    """Brevitas' two exports of one trained net: the same numbers in qpass's reference interpreter."""
    a, b = reference_logits(name, "qonnx"), reference_logits(name, "qcdq")
    np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
    assert np.abs(a - b).max() <= 1e-5


@pytest.mark.parametrize("name", NETS)
def test_streamlined_and_csim_equal_the_reference(name, tmp_path, ap_types):
    """Brevitas QONNX -> qpass streamline (the trained quantisation kept) -> HLS export -> g++ C simulation."""
    from qpass.api import qonnx_model
    from qpass.backends import hls
    from qpass.reference import GoldenExecutor

    path = path_of(name, "qonnx")
    ref = reference_logits(name, "qonnx")
    r = qpass.optimize(path, calib=DIR / f"{name}.calib.npz", pipeline="streamline")
    sl = qonnx_model(r)
    x, _ = eval_data(name)
    y = GoldenExecutor(sl).run({"input": np.concatenate(list(x))})["logits"].reshape(-1, 10)
    # integer parts identical: one code off moves a logit by a whole step, far above float32 rounding
    np.testing.assert_array_equal(y.argmax(1), ref.argmax(1))
    assert np.abs(y - ref).max() <= 1e-6 * max(1.0, np.abs(ref).max())
    res = hls.export(sl, tmp_path / name)
    cmp = hls.compare_with_golden(res, DIR / f"{name}.eval.npz")
    assert cmp.frames == 360 and cmp.mismatches == 0, cmp.summary()


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("route", [("qonnx_to_qcdq", "qdq_to_qonnx"), ("qonnx_to_qdq", "qdq_to_qonnx")],
                         ids=["qcdq", "qdq"])
def test_committed_qonnx_round_trips_leave_the_reference_unchanged(name, route):
    """QONNX -> QCDQ -> QONNX and QONNX -> QDQ -> QONNX on the trained exports: the model converted back gives the
    same logits as the export, bit for bit, on the whole eval set. The converted model in between gives the same
    classes and logits within float32 rounding: its last layer reads DequantizeLinear outputs and runs as
    onnxruntime's integer kernel computes it (integer sums times float32 scales), where the QONNX model is exact."""
    from qpass.passes.dialects import detect_dialect
    from qpass.pipeline.run import run_passes

    src = qpass.load(path_of(name, "qonnx"))
    want = reference_logits(name, "qonnx")
    there = run_passes(src, ["normalize", route[0]], snapshots=False).model
    back = run_passes(there, [route[1]], snapshots=False).model
    assert "QONNX" not in detect_dialect(there).dialects and "QONNX" in detect_dialect(back).dialects
    got = {k: run_samples(m, load_samples(DIR / f"{name}.eval.npz", m))["logits"].reshape(-1, 10)
           for k, m in (("there", there), ("back", back))}
    np.testing.assert_array_equal(got["back"], want)
    np.testing.assert_array_equal(got["there"].argmax(1), want.argmax(1))
    np.testing.assert_allclose(got["there"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
