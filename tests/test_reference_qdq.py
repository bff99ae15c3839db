"""QuantizeLinear / DequantizeLinear variants beyond the ONNX node tests: float8 without saturation, blocks that
do not divide the axis, 4-/2-bit codes with zero points, against onnx's own reference implementation."""
import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

from qpass.errors import UnsupportedOpError
from qpass.reference import GoldenExecutor

RNG = np.random.default_rng(1515)
X = (RNG.standard_normal((3, 7)) * 300).astype(np.float32)
X[0, :4] = [np.inf, -np.inf, np.nan, 0.5]


def _q_model(code: int, inits, **attrs):
    ins = ["x", "s"] + (["z"] if len(inits) > 1 else [])
    g = h.make_graph([h.make_node("QuantizeLinear", ins, ["y"], **attrs),
                      h.make_node("DequantizeLinear", ["y"] + ins[1:], ["d"],
                                  **{k: v for k, v in attrs.items() if k != "saturate"})], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [3, 7])],
                     [h.make_tensor_value_info("y", code, None), h.make_tensor_value_info("d", T.FLOAT, None)],
                     initializer=inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


def _same(model, x=X):
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = GoldenExecutor(model).run({"x": x})
    for w, name in zip(want, ("y", "d")):
        g = got[name]
        assert g.dtype == w.dtype and g.shape == w.shape, name
        assert np.array_equal(g.astype(np.float32), w.astype(np.float32), equal_nan=True), (name, g, w)


@pytest.mark.parametrize("code, saturate", [(T.FLOAT8E4M3FN, 0), (T.FLOAT8E4M3FN, 1), (T.FLOAT8E5M2, 0),
                                            (T.FLOAT8E5M2, 1), (T.FLOAT8E4M3FNUZ, 1), (T.FLOAT8E5M2FNUZ, 0)])
def test_float8_with_and_without_saturation(code, saturate):
    s = h.make_tensor("s", T.FLOAT, [], [0.5])
    z = h.make_tensor("z", code, [], [0.0])
    _same(_q_model(code, [s, z], saturate=saturate))


@pytest.mark.parametrize("code", [T.INT4, T.UINT4, T.INT2, T.UINT2, T.INT8, T.UINT16])
def test_blocks_that_do_not_divide_the_axis(code):
    """Axis 1 of length 7 in blocks of 3: the last block holds one column."""
    lo = -2 if code == T.INT2 else -8 if code == T.INT4 else 0 if code in (T.UINT4, T.UINT2) else 5
    scales = np.abs(RNG.standard_normal((3, 3))).astype(np.float32) * 40 + 1
    zps = np.full((3, 3), lo + 1, np.int64)
    s = h.make_tensor("s", T.FLOAT, [3, 3], scales.reshape(-1))
    z = h.make_tensor("z", code, [3, 3], zps.reshape(-1).tolist())
    _same(_q_model(code, [s, z], axis=1, block_size=3), np.clip(np.nan_to_num(X), -1e4, 1e4))  # onnx's casts of inf/NaN are undefined


def test_unknown_output_type_is_refused_at_construction():
    s = h.make_tensor("s", T.FLOAT, [], [0.5])
    with pytest.raises(UnsupportedOpError, match="not a quantised type"):
        GoldenExecutor(_q_model(T.INT32, [s, h.make_tensor("z", T.INT32, [], [0])]))


def test_float4_codes_round_half_to_even():
    s = h.make_tensor("s", T.FLOAT, [], [1.0])
    z = h.make_tensor("z", T.FLOAT4E2M1, [], [0.0])
    got = GoldenExecutor(_q_model(T.FLOAT4E2M1, [s, z])).run({"x": X})
    assert got["y"].dtype == np.dtype(ml_dtypes.float4_e2m1fn)
    assert float(got["y"][0, 3]) == 0.5 and float(got["d"][0, 0]) == 6.0  # inf saturates to the largest value
