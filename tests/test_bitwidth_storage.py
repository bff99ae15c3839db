"""The ONNX artifact stores the widths chosen: <= 2-bit weights as INT2 (opset 25), <= 4-bit as INT4, and the
search's memory cost counts what the file stores."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session, optimized_graph
from qpass.ops.common import QONNX_DOMAIN
from qpass.passes import int2_storage
from qpass.pipeline.files import pipeline_from_dict
from qpass.search.artifact import artifact_summary, stored_bits
from qpass.search.core import file_storage
from qpass.search.options import BitwidthOptions

LOWER = pipeline_from_dict({"passes": ["lower_ort"]})
RNG = np.random.default_rng(3)
W = RNG.standard_normal((8, 4, 3, 3)).astype(np.float32)
S = np.abs(RNG.standard_normal((8, 1, 1, 1))).astype(np.float32) * 0.5 + 0.1
X = RNG.random((2, 4, 6, 6)).astype(np.float32)


def quant(name, x, s, bits, signed, narrow=0):
    return helper.make_node("Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [name], domain=QONNX_DOMAIN,
                            signed=signed, narrow=narrow, rounding_mode="ROUND"), [
        numpy_helper.from_array(np.asarray(s, np.float32), f"{name}_s"),
        numpy_helper.from_array(np.float32(0), f"{name}_z"), numpy_helper.from_array(np.float32(bits), f"{name}_b")]


def conv_model(w_bits: int) -> onnx.ModelProto:
    """uint8 activation -> Conv with a w_bits signed per-channel weight -> uint8 activation (QONNX)."""
    qa, ia = quant("xq", "x", 1 / 255, 8, 0)
    qw, iw = quant("wq", "w", S, w_bits, 1, narrow=1)
    qy, iy = quant("y", "c", 0.05, 8, 0)
    conv = helper.make_node("Conv", ["xq", "wq"], ["c"], pads=[1, 1, 1, 1])
    g = helper.make_graph([qa, qw, conv, qy], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, X.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 6, 6])],
                          [numpy_helper.from_array(W, "w")] + ia + iw + iy)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])


def as_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same file with every INT2 / INT4 initializer stored as INT8 codes at opset 21."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.data_type in (TensorProto.INT2, TensorProto.INT4):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.int8), t.name))
    out.opset_import[0].version, out.ir_version = 21, 10
    return out


def test_two_bit_weights_stored_as_int2_and_fused():
    lowered = qpass.optimize(conv_model(2), pipeline=LOWER).model
    int2 = [t for t in lowered.graph.initializer if t.data_type == TensorProto.INT2]
    assert len(int2) == 1 and len(int2[0].raw_data) == (W.size + 3) // 4  # four codes a byte
    assert [o.version for o in lowered.opset_import if o.domain == ""] == [25] and lowered.ir_version >= 11
    codes = np.clip(np.round(W / S), -1, 1)
    np.testing.assert_array_equal(numpy_helper.to_array(int2[0]).astype(np.int8), codes)
    assert stored_bits(2) == 2 and artifact_summary(lowered)["avg_stored_weight_bits"] == 2
    assert "QLinearConv" in [n.op_type for n in optimized_graph(lowered).node]  # folded and fused at load
    y2 = make_session(lowered).run(None, {"x": X})[0]
    y8 = make_session(as_int8(lowered)).run(None, {"x": X})[0]
    np.testing.assert_array_equal(y2, y8)  # bit-identical to the same codes stored in int8


def test_three_and_four_bit_weights_stay_int4():
    for bits in (3, 4):
        lowered = qpass.optimize(conv_model(bits), pipeline=LOWER).model
        types = {t.data_type for t in lowered.graph.initializer}
        assert TensorProto.INT4 in types and TensorProto.INT2 not in types
        assert [o.version for o in lowered.opset_import if o.domain == ""] == [21]


def test_no_int2_where_onnxruntime_cannot_run_opset_25(monkeypatch):
    assert int2_storage.missing_kernels(["Conv", "QuantizeLinear", "Cast", "NoSuchOp"]) == ["NoSuchOp"]
    monkeypatch.setattr(int2_storage, "missing_kernels", lambda ops, opset=25: ["Conv"])
    lowered = qpass.optimize(conv_model(2), pipeline=LOWER).model
    assert TensorProto.INT2 not in {t.data_type for t in lowered.graph.initializer}
    assert [o.version for o in lowered.opset_import if o.domain == ""] == [21]
    opts = file_storage(BitwidthOptions(), conv_model(2))
    assert opts.storage == "onnx4" and opts.weight_candidates == [4, 8, 16] and stored_bits(2, opts.storage) == 4


@pytest.mark.parametrize("storage,bits", [("onnx", (2, 2, 4, 4, 8, 32)), ("onnx4", (4, 4, 4, 4, 8, 32)),
                                          ("exact", (1, 2, 3, 4, 8, 16))])
def test_memory_cost_counts_stored_bits(storage, bits):
    assert tuple(stored_bits(w, storage) for w in (1, 2, 3, 4, 8, 16)) == bits


def test_search_cost_is_what_the_file_stores():
    """--avg-bits 3 on the digits CNN needs 2-bit layers: the file stores them as INT2, and the search's memory
    cost is the file's stored weight bits exactly."""
    from conftest import MODELS
    from qpass import search as bitwidth
    from qpass.ir.samples import load_samples

    m = qpass.load(MODELS / "digits_cnn.onnx")
    a = bitwidth.search(m, load_samples(MODELS / "digits_cnn.calib.npz", m), avg_bits=3)
    art = artifact_summary(a.model)
    assert TensorProto.INT2 in {t.data_type for t in a.model.graph.initializer}
    assert a.met and art["avg_stored_weight_bits"] <= 3
    assert a.cost == art["weight_bits_stored"]
