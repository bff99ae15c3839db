"""The compiled float32 depthwise convolution (qpass.reference.float_jit) gives the numpy path's numbers bit for
bit (products rounded, summed in kernel order) on every form the numpy path picks (flat rows, strided phases,
channels-last, by taps, channel multipliers), and the float32 Conv of one sample does not depend on the batch it
runs in."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qpass.reference import im2col as ic

pytest.importorskip("numba")

CASES = [  # (C, mult, H, W, kernel, strides, dilations, pads)
    (8, 1, 40, 56, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),      # flat rows
    (6, 1, 30, 100, (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),     # strided flat (phases)
    (72, 1, 12, 14, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),     # channels-last
    (4, 3, 11, 9, (3, 2), (2, 1), (1, 2), (0, 1, 2, 0)),       # multiplier, by taps
    (5, 1, 7, 20, (1, 4), (1, 3), (1, 1), (0, 0, 0, 0)),       # wide kernel row, stride 3
]


@pytest.mark.parametrize("case", CASES)
def test_depthwise_jit_equals_numpy(case, monkeypatch):
    c, mult, h, w, kernel, strides, dil, pads = case
    rng = np.random.default_rng(sum(case[:4]))
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * mult, 1) + kernel).astype(np.float32)
    begin, end, out = ic.geometry((h, w), kernel, strides, dil, pads)
    got = ic.depthwise(x, wt, kernel, strides, dil, begin, end, out)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    want = ic.depthwise(x, wt, kernel, strides, dil, begin, end, out)
    assert got.shape == want.shape == (3, c * mult) + tuple(out)
    assert np.array_equal(got, want)
    # and the sum really is float32 products in order: float64 differs somewhere
    assert not np.array_equal(got, ic.depthwise(x.astype(np.float64), wt.astype(np.float64), kernel, strides, dil,
                                                 begin, end, out).astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 3, 40, 50), (3, 5, 4096), (2, 4, 9, 8, 9)])
def test_batch_norm_jit_equals_numpy(shape, monkeypatch):
    from onnx import helper

    from qpass.reference.ops_float.reductions import batch_norm
    from qpass.reference.registry import NodeInfo

    rng = np.random.default_rng(len(shape))
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0].flat[:3] = [np.nan, np.inf, -0.0]
    params = [rng.standard_normal(c).astype(np.float32) for _ in range(3)] + [rng.random(c).astype(np.float32)]
    node = NodeInfo.from_proto(helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3),
                               {"": 15})
    ex = SimpleNamespace(scratch={})
    got = batch_norm(ex, node, x, *params)
    assert batch_norm(ex, node, x, *params) is not got  # the cached factors give the same numbers
    assert np.array_equal(batch_norm(ex, node, x, *params), got, equal_nan=True)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    want = batch_norm(SimpleNamespace(scratch={}), node, x, *params)
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want, equal_nan=True)
