"""The reference interpreter's table lookups equal the arithmetic they replace, bit for bit.

8-bit QLinearAdd / QLinearMul run as a 256 x 256 table of output codes and 8-bit DequantizeLinear as a table of
256 values; the tables are built by the same float32 / FMA emulation, and here every broadcast orientation (which
changes the FMA order of onnxruntime's Add kernel), both 8-bit types and the int8-in-uint8 shift are compared
against the direct computation."""
import numpy as np
import pytest

from qpass.reference.numerics import dequantize_linear
from qpass.reference.ops_integer.elementwise import qlinear_add, qlinear_mul

SHAPES = [((3, 4, 5), (3, 4, 5)), ((1,), (3, 4)), ((3, 4), (1,)), ((2, 3, 1), (1, 3, 4)), ((1, 1), (5, 1)),
          ((4, 1), (1,)), ((), (3,)), ((1,), (1,))]


@pytest.mark.parametrize("fn", [qlinear_add, qlinear_mul])
@pytest.mark.parametrize("dtype,shift", [(np.uint8, 0), (np.int8, 0), (np.int8, 128)])
def test_code_pair_table_equals_arithmetic(fn, dtype, shift):
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype)
    seen = set()
    for i in range(40):
        sa_, sb_ = SHAPES[i % len(SHAPES)]
        a = np.asarray(rng.integers(info.min, info.max + 1, size=sa_)).astype(dtype)
        b = np.asarray(rng.integers(info.min, info.max + 1, size=sb_)).astype(dtype)
        za, zb, zc = (int(v) for v in rng.integers(info.min, info.max + 1, size=3))
        sa, sb, sc = (np.float32(v) for v in rng.uniform(1e-3, 0.2, size=3))
        direct = fn(a, za, sa, b, zb, sb, zc, sc, dtype, shift)
        table = fn(a, za, sa, b, zb, sb, zc, sc, dtype, shift, {})
        assert direct.dtype == table.dtype == np.dtype(dtype)
        assert direct.shape == table.shape == np.broadcast_shapes(a.shape, b.shape)
        assert np.array_equal(direct, table), (i, sa_, sb_)
        seen.update(np.unique(direct).tolist())
    assert len(seen) > 100  # the cases exercise the whole code range, not just saturation


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_dequantize_table_equals_arithmetic(dtype):
    info = np.iinfo(dtype)
    q = np.arange(info.min, info.max + 1).astype(dtype).repeat(3)  # > 256 elements: the table path
    for scale, zp in [(np.float32(0.0173), dtype(3)), (np.float32(3.1e-5), None), (np.float32(1.0), dtype(-1 if info.min else 255))]:
        got = dequantize_linear(q, scale, zp, None)
        z = 0 if zp is None else int(zp)
        want = ((q.astype(np.int64) - z).astype(np.float32) * scale).astype(np.float32)
        assert got.dtype == np.float32 and np.array_equal(got, want)
