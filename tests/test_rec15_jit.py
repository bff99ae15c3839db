"""The compiled MLAS kernels (``qpass.reference.mlas_jit``, numba: the ``fast`` extra) give the numpy emulation's
numbers bit for bit: the FMA-chain GEMM on stacked operands with and without C, K blocks of 256 and of MLAS's
shape-dependent stride, a crafted double rounding and float32-subnormal sums; the logistic / tanh approximations
on random, special and every-bit-pattern inputs; and whole LSTM / GRU nodes on random configurations (the
compiled LSTM cell where it applies: no peepholes, default activations) run with the compiled kernels and with the
numpy path (``recurrent._jit`` patched to None). Skipped without numba."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor, mlas
from qpass.reference.ops_float import recurrent

pytest.importorskip("numba")
from qpass.reference import mlas_jit  # noqa: E402

F32 = np.float32
RNG = np.random.default_rng(1515)
A1, B1 = F32(1 + 2.0 ** -12), F32(2.0 ** -24 * (1 - 2.0 ** -12 + 2.0 ** -24))  # float64 rounds 1 + A1 * B1 to
# a float32 midpoint whose even neighbour is 1; the fused result is 1 + 2^-23 (see test_rec15_fast_paths)


def _same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype == F32
    assert np.array_equal(np.isnan(x), np.isnan(y))
    assert np.array_equal(x[~np.isnan(x)].view(np.int32), y[~np.isnan(y)].view(np.int32))


@pytest.mark.parametrize("d, m, k, n, stride", [(2, 8, 64, 256, 256), (1, 5, 300, 7, None), (2, 3, 600, 16, 256),
                                                 (1, 1, 10, 3, None), (3, 2, 40, 1000, None)])
def test_gemm_equals_numpy_emulation(d, m, k, n, stride):
    a = RNG.standard_normal((d, m, k)).astype(F32)
    b = RNG.standard_normal((d, k, n)).astype(F32)
    c = RNG.standard_normal((d, m, n)).astype(F32)
    for cc in (None, c):
        _same(mlas_jit.packed_gemm(a, b, cc, stride), mlas.packed_gemm(a, mlas.Operand(b), cc, stride))
    _same(mlas_jit.packed_gemm(a[0], b[0], None, stride), mlas.packed_gemm(a[0], mlas.Operand(b[0]), None, stride))


def test_gemm_double_rounding_and_subnormals():
    a = np.array([[1.0, A1, 1.0], [2.0 ** -70, 2.0 ** -70, 1.0]], F32)
    b = np.array([[1.0, 2.0 ** -60], [B1, 2.0 ** -70], [0.0, 0.0]], F32)
    got = mlas_jit.packed_gemm(a, b)
    _same(got, mlas.packed_gemm(a, mlas.Operand(b)))
    assert got[0, 0] == F32(1 + 2.0 ** -23)  # the fused result, not float64's double rounding to 1
    assert 0 < got[1, 1] < 2.0 ** -126  # a float32-subnormal chain


def test_activations_equal_numpy_emulation():
    x = np.concatenate([RNG.standard_normal(3000).astype(F32) * s for s in (0.01, 1, 5, 30)] +
                       [np.array([np.nan, np.inf, -np.inf, 0, -0.0, 1e-40, -1e-40, 18, -18, 9, -9, 9.0001], F32)])
    bits = RNG.integers(0, 2 ** 32, 60000, dtype=np.uint64).astype(np.uint32).view(F32)
    with np.errstate(invalid="ignore", over="ignore"):
        for v in (x, bits, x[:100].reshape(4, 25), bits.reshape(-1, 3, 4)[:700]):  # small and large (blocked) paths
            _same(mlas_jit.logistic(v), mlas.logistic(v))
            _same(mlas_jit.tanh(v), mlas.tanh(v))


def _model(op, direction, hid, inp, seq, batch, attrs, const_w, const_r, peep):
    nd = 2 if direction == "bidirectional" else 1
    g = {"LSTM": 4, "GRU": 3}[op]
    v = {"x": RNG.standard_normal((seq, batch, inp)).astype(F32),
         "w": (RNG.standard_normal((nd, g * hid, inp)) * 0.4).astype(F32),
         "r": (RNG.standard_normal((nd, g * hid, hid)) * 0.4).astype(F32),
         "b": (RNG.standard_normal((nd, 2 * g * hid)) * 0.1).astype(F32),
         "lens": RNG.integers(1, seq + 1, batch).astype(np.int32),
         "h0": RNG.standard_normal((nd, batch, hid)).astype(F32)}
    names = ["x", "w", "r", "b", "lens", "h0"]
    if op == "LSTM":
        v["c0"] = RNG.standard_normal((nd, batch, hid)).astype(F32)
        names.append("c0")
        if peep:
            v["p"] = (RNG.standard_normal((nd, 3 * hid)) * 0.3).astype(F32)
            names.append("p")
    consts = {k for k, c in (("w", const_w), ("r", const_r)) if c}
    ins = [h.make_tensor_value_info(k, T.INT32 if k == "lens" else T.FLOAT, list(v[k].shape))
           for k in names if k not in consts]
    inits = [onnx.numpy_helper.from_array(v[k], k) for k in sorted(consts)]
    outs = ["y", "yh"] + (["yc"] if op == "LSTM" else [])
    node = h.make_node(op, names, outs, direction=direction, hidden_size=hid, **attrs)
    m = h.make_model(h.make_graph([node], "g", ins, [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs],
                                  inits), opset_imports=[h.make_opsetid("", 14)])
    return m, {k: v[k] for k in names if k not in consts}


CASES = [("LSTM", "bidirectional", {}, True, True, False, 3), ("LSTM", "forward", {"clip": 1.5}, True, True, True, 1),
         ("LSTM", "bidirectional", {"clip": 0.3, "input_forget": 1}, True, True, False, 3),
         ("LSTM", "reverse", {"input_forget": 1}, False, False, False, 3), ("LSTM", "forward", {}, True, False, True, 2),
         ("LSTM", "bidirectional", {"activations": ["Sigmoid", "Tanh", "Tanh", "HardSigmoid", "Tanh", "Relu"]},
          True, True, False, 2),
         ("GRU", "bidirectional", {}, True, True, False, 3), ("GRU", "forward", {"linear_before_reset": 1},
                                                               False, True, False, 1),
         ("GRU", "reverse", {"linear_before_reset": 1}, True, False, False, 4)]


@pytest.mark.parametrize("full", [False, True], ids=["lens", "full"])  # full: every step in one compiled call
@pytest.mark.parametrize("op, direction, attrs, const_w, const_r, peep, batch", CASES)
def test_recurrent_nodes_compiled_equal_numpy(monkeypatch, op, direction, attrs, const_w, const_r, peep, batch, full):
    m, feeds = _model(op, direction, 5, 4, 6, batch, attrs, const_w, const_r, peep)
    if full:
        feeds["lens"][:] = 6
    assert recurrent._jit() is mlas_jit
    fast = GoldenExecutor(m).run(feeds)
    monkeypatch.setattr(recurrent, "_jit", lambda: None)
    slow = GoldenExecutor(m).run(feeds)
    for k in slow:
        _same(fast[k], slow[k])


def test_dynamic_quantisation_codes_equal_numpy():
    """DynamicQuantizeLSTM's per-step quantisation of h, compiled: the same scales and centred codes as
    params_per_slice + quantize_linear (all-positive, all-negative, all-zero and wide slices)."""
    from qpass.reference.numerics import quantize_linear
    from qpass.reference.ops_float.dynamic_quant import params_per_slice
    for trial in range(120):
        d, m, k = RNG.integers(1, 3), RNG.integers(1, 9), RNG.integers(1, 70)
        a = (RNG.standard_normal((d, m, k)) * RNG.choice([1e-3, 1, 7, 100])).astype(F32)
        a = [a, np.abs(a), -np.abs(a), np.zeros_like(a)][trial % 4]
        s, z = params_per_slice(a)
        want = quantize_linear(a, s, z.astype(np.uint8), np.uint8, None).astype(F32) - z.astype(F32)
        codes, scales = mlas_jit.dq_centred(a)
        _same(codes, want)
        _same(scales, s)
    assert mlas_jit.dq_centred(np.full((1, 2, 3), np.nan, F32)) is None
