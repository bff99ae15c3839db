"""Matrix-product kernels: MatMul, Gemm, Conv and ConvTranspose.

Integer-valued operands (the float tensors of streamlined QONNX models hold integer accumulators that pass 2^24)
are multiplied exactly: in float32 BLAS while the bound max|x| * (largest sum of |w| over one output channel)
stays below 2^24, so every partial sum in any order is an exact integer, else in float64 and rounded once.
Other float operands: Conv in float32 as onnxruntime's MLAS computes, one same-shape GEMM per sample (a sample's
numbers never depend on the batch it runs in: BLAS kernels change with the matrix shape); MatMul / Gemm with a
constant weight as MLAS's SGEMM (mlas_packed_gemm); other MatMul / Gemm and ConvTranspose in float64 rounded once. float64 inputs in float64. Einsum and Det in the input dtype;
MatMulInteger and ConvInteger exact."""
from __future__ import annotations

import numpy as np

from .. import im2col as ic
from .. import mlas, mlas_conv
from ..jit import compiled
from ..memo import kept
from ..ops_integer.arith import exact_matmul, l1_bound
from ..registry import register
from .common import F32, F64, constant_input, is_float, out_dtype, wide
from .recurrent import _jit

GATHER_MAX_ENTRIES = 1 << 16  # float32 Conv patch matrices up to this many entries per sample: one np.take
SAMPLE_CHUNK_BYTES = 1 << 24  # float32 Conv: patch matrices of at most this many bytes at a time (in cache)
ROW_BLOCK_BYTES = 1 << 20  # a larger sample's patch matrix: blocks of output rows of about this many bytes


def _integral(v: np.ndarray) -> bool:
    """Every element of ``v`` is an integer (a look at the first elements rejects most float tensors cheaply)."""
    head = v.flat[:64]
    if not np.array_equal(np.rint(head), head):
        return False
    return bool(np.array_equal(np.rint(v), v))


def _widened(ex, node, v: np.ndarray) -> np.ndarray:
    """``wide(v)``, kept on the executor for as long as the same array comes back (a constant weight is cast once,
    not on every call)."""
    if v.dtype == F64 or not is_float(v.dtype):
        return v
    return _kept(ex, node, v, "wide", wide)


def _kept(ex, node, v: np.ndarray, tag: str, fn):
    """``fn(v)``, kept on the executor under (``tag``, node) for as long as the same array comes back."""
    return kept(ex.scratch, (tag, node.name), (v,), lambda: fn(v))[0]


def exact_dtype(x: np.ndarray, w: np.ndarray, axis: int):
    """For integer-valued float operands ``x`` and weights ``w`` (reduced over every axis but ``axis``, the output
    channel): float32 when every partial sum provably stays below 2^24, else float64; None when the operands are
    not integer-valued (or not float32 / float16)."""
    if x.dtype.kind != "f" or w.dtype.kind != "f" or x.dtype == F64 or w.dtype == F64:
        return None
    if not (_integral(w) and _integral(x)):
        return None
    if not w.size or not x.size:
        return F32
    wa = np.abs(w.astype(F64))
    wl1 = wa.sum() if w.ndim < 2 else np.moveaxis(wa, axis, 0).reshape(w.shape[axis], -1).sum(axis=1).max()
    return F32 if float(np.abs(x).max()) * float(wl1) < 2.0 ** 24 else F64


def _packed_weight(ex, node, b: np.ndarray):
    """The float32 2-D B of a MatMul / Gemm when it is fixed at construction (onnxruntime packs such a weight
    once, at session creation) and not integer-valued (those take the exact path), as a C-contiguous (K, N) array
    kept on the executor with its 3-D view; else None."""
    def make():
        if b.dtype == F32 and b.ndim == 2 and constant_input(ex, node.inputs[1]) is not None and not _integral(b):
            return np.ascontiguousarray(b.T if node.attr("transB", 0) else b)
        return None

    return kept(ex.scratch, ("packed", node.name), (b,), make)[0]


def mlas_packed_gemm(a: np.ndarray, bk: np.ndarray, c=None) -> np.ndarray:
    """``a @ bk`` (+ ``c``, added first) of float32 ``a`` (..., K) and a packed weight ``bk`` (K, N) as
    onnxruntime's MLAS SGEMM computes it (K blocks of 256, one FMA chain per output and block, the blocks added to
    ``c`` in order): compiled when numba is there, else the numpy emulation (the same numbers, slower)."""
    k, n = bk.shape
    a2 = np.ascontiguousarray(a.reshape(-1, k), F32)
    jit = _jit()
    if jit is None:
        c2 = None if c is None else np.broadcast_to(np.asarray(c, F32), (a2.shape[0], n))
        y = mlas.packed_gemm(a2, mlas.Operand(bk), c2)
    else:
        y = np.empty((a2.shape[0], n), F32)
        if c is not None:
            y[...] = c
        if k:
            jit.gemm_into(a2, bk, y, c is not None)
        elif c is None:
            y[:] = 0
    return y.reshape(a.shape[:-1] + (n,))


WIDE_JIT_MIN_COLUMNS = 8  # float32 MatMul in float64: B at least this wide on the compiled kernel (vectorised on N)


def _wide_compiled(ex, node, a: np.ndarray, b: np.ndarray):
    """``float32(float64(a) @ float64(b))`` of float32 operands with a B of at least WIDE_JIT_MIN_COLUMNS columns,
    compiled (``mlas_jit.matmul_wide``: B read as float32, its C-contiguous copy kept while the same array comes
    back, as a Loop's carried weights do); None otherwise (numpy path)."""
    if a.dtype != F32 or b.dtype != F32 or b.ndim < 2 or b.shape[-1] < WIDE_JIT_MIN_COLUMNS:
        return None
    jit = _jit()
    return None if jit is None else jit.matmul_wide(a, _kept(ex, node, b, "c32", np.ascontiguousarray))


@register("MatMul", with_executor=True)
def matmul(ex, node, a, b):
    if is_float(a.dtype):
        bk = _packed_weight(ex, node, b) if a.dtype == F32 else None
        if bk is not None:  # float32 data, constant weight: as onnxruntime's MLAS computes it
            return mlas_packed_gemm(a, bk)
        # a B that comes back as the same array (a Loop's carried weight): its integer check once, not per call
        fractional = a.dtype == F32 and b.dtype == F32 and not _kept(ex, node, b, "integral", _integral)
        dt = None if fractional else exact_dtype(a, b, -1)
        if dt is None:
            y = _wide_compiled(ex, node, a, b)
            if y is not None:
                return y
            return np.matmul(wide(a), _widened(ex, node, b)).astype(out_dtype(a), copy=False)
        return np.matmul(a.astype(dt, copy=False), b.astype(dt, copy=False)).astype(out_dtype(a), copy=False)
    return np.matmul(a, b)


@register("Gemm", with_executor=True)
def gemm(ex, node, a, b, c=None):
    b0 = b
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    if a.dtype == F32 and alpha == 1.0 and not node.attr("transA", 0) and (
            c is None or (beta == 1.0 and np.asarray(c).dtype == F32)):
        bk = _packed_weight(ex, node, b0)
        if bk is not None:  # float32, constant weight: as onnxruntime's MLAS (C added first)
            return mlas_packed_gemm(a, bk, c)
    exact = exact_dtype(a, b, -1) if is_float(a.dtype) else None
    if exact == F32 and alpha == 1.0 and (c is None or (beta == 1.0 and _integral(np.asarray(c)))):
        y = a.astype(F32, copy=False) @ b.astype(F32, copy=False)  # exact integers below 2^24
        return (y if c is None else (y.astype(F64) + c).astype(F32)).astype(out_dtype(a), copy=False)
    if exact is None:
        bw = _widened(ex, node, b0)
        bw = bw.T if node.attr("transB", 0) else bw
    else:
        bw = wide(b)
    y = wide(a) @ bw
    y = y if alpha == 1.0 else alpha * y
    if c is not None:
        y = y + beta * wide(c)
    return y.astype(out_dtype(a))


def _biased(y, b, floats: bool, nd: int):
    """``y + b`` (b per output channel, ``nd`` trailing axes): in float32 for float32 data, else in float64 (exact
    integers, rounded once)."""
    if b is None:
        return y
    if floats:
        y += b.astype(F32, copy=False).reshape((1, -1) + (1,) * nd)
        return y
    return y.astype(F64, copy=False) + wide(b).reshape((1, -1) + (1,) * nd)


def _conv_gemm(node, x, wg, kernel, geom, per_sample: bool, ex=None):
    """(N, M, P) result of the grouped GEMMs ``wg`` (g, Mg, Kg) over the patch matrices of ``x``. ``per_sample``
    (float32): one stacked matmul over (sample, group), i.e. the same-shape BLAS GEMM once per sample and group,
    so a sample's numbers never depend on the batch it runs in (a BLAS kernel's summation order can change with
    the matrix shape and with a column's position in it); chunks of samples under the patch-memory budget. Else
    (exact integers, float64): per batch chunk, one GEMM per group over all the chunk's samples. Small float32
    patch matrices with an executor ``ex``: gathered by a flat index kept on it (``ic.gather_index``)."""
    begin, end, out = geom
    g, mg = wg.shape[:2]
    m, p, n = g * mg, int(np.prod(out)), x.shape[0]
    args = (kernel, node.attr("strides"), node.attr("dilations"), begin, end, out)
    if per_sample and ex is not None and 0 < p * wg.shape[2] * g <= GATHER_MAX_ENTRIES and \
            x.dtype == F32 and any(k > 1 for k in kernel):  # small images: the patch matrices by one gather
        key = ("gather", node.name, x.shape[1:])
        idx = ex.scratch.get(key)
        if idx is None:
            idx = ex.scratch[key] = ic.gather_index(x.shape[1:], *args)
        jit = compiled("float_jit")
        if jit is not None:  # the same entries, compiled
            cols = jit.gather_columns(x, idx).reshape(n, g, wg.shape[2], p)
        else:
            xz = np.empty((n, x[0].size + 1), F32)
            xz[:, :-1] = x.reshape(n, -1)
            xz[:, -1] = 0
            cols = np.take(xz, idx, axis=1).reshape(n, g, wg.shape[2], p)
        return np.matmul(wg, cols).reshape(n, m, p)
    jit = compiled("float_jit") if per_sample and x.dtype == F32 and len(kernel) == 2 else None
    if jit is not None and p * wg.shape[2] * g * wg.itemsize > SAMPLE_CHUNK_BYTES:  # one sample's patches: large
        return _row_blocks(jit, node, x, wg, kernel, geom)
    if per_sample:
        y = np.empty((n, m, p), F32)
        for lo, hi in ic.batch_chunks(n, p * wg.shape[2] * g * wg.itemsize, SAMPLE_CHUNK_BYTES):
            cols = ic.sample_columns(x[lo:hi], *args, F32).reshape(hi - lo, g, wg.shape[2], p)
            np.matmul(wg, cols, out=y[lo:hi].reshape(hi - lo, g, mg, p))
        return y
    ys = []
    for lo, hi in ic.batch_chunks(n, p * wg.shape[2] * g * wg.itemsize):
        cols = ic.columns(x[lo:hi], *args, wg.dtype)
        y = np.matmul(wg, cols.reshape(g, wg.shape[2], -1))  # (g, Mg, n * P): one GEMM per group
        ys.append(y.reshape(m, hi - lo, p).swapaxes(0, 1))
    return np.concatenate(ys) if len(ys) > 1 else ys[0]


def _row_blocks(jit, node, x, wg, kernel, geom):
    """(N, M, P) of a float32 2-D conv whose per-sample patch matrix is over ``SAMPLE_CHUNK_BYTES``: per sample,
    blocks of output rows (patches of ~``ROW_BLOCK_BYTES``, built compiled, in cache), one GEMM per block and
    group. Deterministic by shape; a sample's numbers never depend on its batch."""
    begin, _, (oh, ow) = geom
    g, mg, kg = wg.shape
    y = np.empty((x.shape[0], g * mg, oh * ow), F32)
    rb = max(1, ROW_BLOCK_BYTES // (g * kg * ow * 4))
    buf = np.empty((g * kg, rb * ow), F32)
    xc = np.ascontiguousarray(x)
    for s in range(x.shape[0]):
        ys = y[s].reshape(g, mg, oh * ow)
        for r0 in range(0, oh, rb):
            r1 = min(oh, r0 + rb)
            cols = jit.row_columns(xc[s], kernel, node.attr("strides"), node.attr("dilations"), begin, r0, r1, ow,
                                   buf[:, :(r1 - r0) * ow] if r1 - r0 == rb else None)
            ys[:, :, r0 * ow:r1 * ow] = np.matmul(wg, cols.reshape(g, kg, -1))
    return y


@register("Conv", with_executor=True)
def conv_node(ex, node, x, w, b=None):
    return conv(node, x, w, b, ex)


def _small_plan(node, x, w, b, ex):
    """For a float32 Conv of a non-integral float32 weight whose per-sample patch matrix is small (a gather): (the
    grouped weight, its bias, the gather index, the output spatial shape), kept on the executor per node and input
    shape while the same weight and bias come back; else None."""
    return kept(ex.scratch, ("small", node.name, x.shape[1:]), (w, b), lambda: _make_small_plan(node, x, w, b))[0]


def _make_small_plan(node, x, w, b):
    plan = None
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    g = int(node.attr("group", 1))
    if w.dtype == F32 and (b is None or b.dtype == F32) and not (g > 1 and w.shape[1] == 1) and \
            any(k > 1 for k in kernel) and not _integral(w):
        begin, end, out = ic.node_geometry(node, x.shape, kernel)
        if 0 < int(np.prod(out)) * w[0].size * g <= GATHER_MAX_ENTRIES:
            idx = ic.gather_index(x.shape[1:], kernel, node.attr("strides"), node.attr("dilations"), begin, end, out)
            plan = (w.reshape(g, w.shape[0] // g, -1), None if b is None else b.reshape(-1), idx, tuple(out))
    return plan


def conv(node, x, w, b=None, ex=None, relu: bool = False):
    """Conv of ``x`` and ``w`` (+ ``b``), then Relu when asked (in place); ``ex``: the executor, whose scratch keeps
    per-node gather indices. A small float32 conv (``_small_plan``) with the compiled kernels: the same numbers,
    the geometry resolved once, the patch matrix gathered and the bias (and Relu) applied in one pass each."""
    y = _nchwc(node, x, w, b, ex)
    if y is not None:
        return np.maximum(y, np.zeros((), y.dtype), out=y) if relu else y
    jit = compiled("float_jit") if ex is not None and x.dtype == F32 else None
    plan = _small_plan(node, x, w, b, ex) if jit is not None else None
    if plan is not None:
        wg, bias, idx, out = plan
        n, (g, mg, k) = x.shape[0], wg.shape
        y = np.matmul(wg, jit.gather_columns(x, idx).reshape(n, g, k, -1))
        return jit.bias_relu(y.reshape((n, g * mg, -1)), bias, relu).reshape((n, g * mg) + out)
    y = _conv(node, x, w, b, ex)
    return np.maximum(y, np.zeros((), y.dtype), out=y) if relu else y


def _nchwc(node, x, w, b, ex):
    """A float32 Conv as onnxruntime's MLAS kernels compute it (``mlas_conv``), bit for bit, when the executor can
    say whether the weight is a constant and it is not integral (integer-valued operands: the exact paths); else
    None. A constant weight (onnxruntime's NCHWc kernels, compiled here one output at a time: 1.5-2.5x slower than
    the BLAS path) only where the result is quantized: a QuantizeLinear reads it, so float32 rounding decides
    integer codes; a float model's Conv keeps the BLAS path, within float32 rounding of onnxruntime."""
    if ex is None or x.dtype != F32 or w.dtype != F32 or (b is not None and b.dtype != F32):
        return None
    key = ("const_weight", node.name)
    const = ex.scratch.get(key)
    if const is None:
        const = ex.scratch[key] = (constant_input(ex, node.inputs[1]) is not None,
                                   _quantized_output(ex, node.outputs[0]))
    if (const[0] and not const[1]) or _integral(w):  # a float model's Conv: no weight scan per call
        return None
    return mlas_conv.conv(node, x, w, b, const[0])


def _quantized_output(ex, name: str) -> bool:
    return any(n.op_type == "QuantizeLinear" and not n.domain and n.inputs[0] == name for n in ex.nodes)


def _conv(node, x, w, b, ex):
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    begin, end, out = ic.node_geometry(node, x.shape, kernel)
    g = int(node.attr("group", 1))
    exact = exact_dtype(x, w, 0) if is_float(x.dtype) else None
    floats = x.dtype == F32 and exact is None  # float32 data: float32 arithmetic
    if g > 1 and w.shape[1] == 1:  # depthwise: one multiply-add per tap, no patch matrix
        dt = exact or (F32 if floats else F64)
        y = ic.depthwise(x.astype(dt, copy=False), w.astype(dt, copy=False), kernel, node.attr("strides"),
                         node.attr("dilations"), begin, end, out, exact=exact == F32)  # F32: sums below 2^24
        return _biased(y, b, floats, len(out)).astype(out_dtype(x), order="C", copy=False)
    m = w.shape[0]
    dt = exact or (F32 if floats else F64)
    y = _conv_gemm(node, x, w.astype(dt, copy=False).reshape(g, m // g, -1), kernel, (begin, end, out), floats,
                   ex)
    y = _biased(y, b, floats, 1)
    return y.reshape(y.shape[:2] + tuple(out)).astype(out_dtype(x), order="C", copy=False)  # C order


@register("ConvTranspose")
def conv_transpose(node, x, w, b=None):
    g = int(node.attr("group", 1))
    kernel, strides, dil, begin, out = ic.conv_transpose_geometry(node, x, w)
    cols = ic.conv_transpose_columns(wide(x), wide(w), g)
    y = ic.col2im_transpose(cols, x.shape[2:], kernel, strides, dil, begin, out, F64)
    if b is not None:
        y = y + wide(b).reshape((1, -1) + (1,) * len(kernel))
    return y.astype(out_dtype(x))


@register("Einsum")
def einsum(node, *xs):
    """numpy's einsum in the input dtype, float32 for narrower floats (an equation without '->' sums the repeated
    letters and orders the rest alphabetically, as ONNX specifies)."""
    dt = xs[0].dtype
    narrow = is_float(dt) and dt.itemsize < 4
    y = np.einsum(node.attr("equation").replace(" ", ""), *[v.astype(np.float32) if narrow else v for v in xs])
    return np.asarray(y).astype(dt)


def _shifted(v, zero_point, axis_shape=None):
    """``v - zero_point`` as exact float64 integers (8-bit codes: every product and sum of the integer matrix
    product stays far below 2**53, so float64 BLAS is exact)."""
    v = np.asarray(v).astype(F64)
    if zero_point is None:
        return v
    z = np.asarray(zero_point).astype(F64)
    return v - (z.reshape(axis_shape) if axis_shape is not None and z.size > 1 else z)


@register("MatMulInteger", with_executor=True)
def matmul_integer(ex, node, a, b, a_zero_point=None, b_zero_point=None):
    """int32 result of (A - a_zero_point) @ (B - b_zero_point); zero points scalar, per row of A, per column
    of B. Exact (``exact_matmul``, bounded by ``l1_bound``); a constant B is shifted once per executor."""
    x = _shifted(a, a_zero_point, (-1, 1))
    w, wmax, wl1 = _shifted_weight(ex, node, b, b_zero_point)
    xmax = int(np.abs(x).max()) if x.size else 0
    y = exact_matmul(x, w, amax=xmax, bmax=wmax, bound=xmax * wl1)
    return np.rint(y).astype(np.int64).astype(np.int32)


def _shifted_weight(ex, node, b, b_zero_point):
    """(B - b_zero_point, its largest magnitude, its largest column sum of magnitudes), kept on the executor while
    the same arrays come back (a constant weight is shifted once, not on every call)."""
    def make():
        w = _shifted(b, b_zero_point)
        return w, int(np.abs(w).max()) if w.size else 0, l1_bound(1, w, -2)

    return kept(ex.scratch, ("shifted", node.name), (b, b_zero_point), make)[0]


@register("ConvInteger")
def conv_integer(node, x, w, x_zero_point=None, w_zero_point=None):
    """int32 Conv of (X - x_zero_point) with (W - w_zero_point) (w_zero_point scalar or per output channel)."""
    wz = (-1,) + (1,) * (w.ndim - 1)
    y = conv(node, _shifted(x, x_zero_point), _shifted(w, w_zero_point, wz))
    return np.rint(y).astype(np.int64).astype(np.int32)


@register("Det")
def det(node, x):
    return np.linalg.det(x).astype(x.dtype)
