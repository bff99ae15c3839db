"""Standard ONNX float ops with ONNX attribute semantics and defaults.

Elementwise ops compute in the input dtype (float32 stays float32, like onnxruntime). Reductions over many terms
(Conv, ConvTranspose, Gemm, MatMul, pooling sums, Softmax, ReduceMean, BatchNormalization) and transcendental
functions are evaluated in float64 and rounded once to float32: deterministic (independent of BLAS blocking and
threads) and at least as accurate as onnxruntime's float32 kernels.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from . import im2col as ic
from .registry import register

F32, F64 = np.float32, np.float64


def _out_dtype(*xs):
    for x in xs:
        if x is not None and np.asarray(x).dtype.kind == "f":
            return np.asarray(x).dtype
    return np.dtype(F32)


def _hi(x):
    """float64 working copy for accurate reductions (other dtypes unchanged)."""
    x = np.asarray(x)
    return x.astype(F64) if x.dtype.kind == "f" else x


def _axes_arg(node, axes_input, attr="axes", since=13):
    """Axes given as an attribute before opset ``since`` and as an optional input from then on."""
    if node.opset >= since:
        return None if axes_input is None else [int(a) for a in np.asarray(axes_input).reshape(-1)]
    v = node.attr(attr)
    return None if v is None else [int(a) for a in v]


# ---------------------------------------------------------------- elementwise


def _binary(fn):
    def k(node, a, b):
        return fn(a, b)
    return k


register("Add")(_binary(np.add))
register("Sub")(_binary(np.subtract))
register("Mul")(_binary(np.multiply))


@register("Div")
def div(node, a, b):
    if a.dtype.kind in "iu":
        q = np.floor_divide(a, b)
        adjust = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return (q + adjust).astype(np.result_type(a, b))  # C-style truncation toward zero
    return np.divide(a, b)


@register("Mod")
def mod(node, a, b):
    """fmod=0: integer remainder with the divisor's sign (Python's %); fmod=1: C fmod (the dividend's sign)."""
    if int(node.attr("fmod", 0)) or a.dtype.kind == "f":
        return np.fmod(a, b).astype(np.result_type(a, b))
    return np.remainder(a, b).astype(np.result_type(a, b))


@register("Pow")
def pow_(node, x, y):
    if x.dtype.kind == "f":
        return np.power(_hi(x), _hi(y).astype(F64)).astype(x.dtype)
    return np.power(x, y).astype(x.dtype)


def _unary(fn, hi=False):
    def k(node, x):
        if hi and x.dtype.kind == "f":
            return fn(x.astype(F64)).astype(x.dtype)
        return fn(x)
    return k


register("Abs")(_unary(np.abs))
register("Neg")(_unary(np.negative))
register("Sign")(_unary(np.sign))
register("Floor")(_unary(np.floor))
register("Ceil")(_unary(np.ceil))
register("Round")(_unary(np.rint))  # half to even, as ONNX specifies
register("Sqrt")(_unary(np.sqrt, hi=True))
register("Exp")(_unary(np.exp, hi=True))
register("Log")(_unary(np.log, hi=True))
register("Tanh")(_unary(np.tanh, hi=True))
register("Reciprocal")(_unary(lambda x: 1.0 / x, hi=True))
register("Not")(_unary(np.logical_not))
register("Identity")(_unary(lambda x: x))


def _erf64(x):
    try:
        from scipy.special import erf  # type: ignore
        return erf(x)
    except ImportError:  # pragma: no cover - scipy is optional
        return np.vectorize(math.erf, otypes=[F64])(x)


register("Erf")(_unary(_erf64, hi=True))


@register("Sigmoid")
def sigmoid(node, x):
    v = x.astype(F64)
    return (0.5 * (1.0 + np.tanh(0.5 * v))).astype(x.dtype)


@register("Relu")
def relu(node, x):
    return np.maximum(x, np.zeros((), x.dtype))


@register("LeakyRelu")
def leaky_relu(node, x):
    alpha = x.dtype.type(node.attr("alpha", 0.01))
    return np.where(x >= 0, x, x * alpha).astype(x.dtype)


@register("PRelu")
def prelu(node, x, slope):
    return np.where(x < 0, x * slope.astype(x.dtype), x).astype(x.dtype)


@register("Elu")
def elu(node, x):
    alpha = float(node.attr("alpha", 1.0))
    v = x.astype(F64)
    return np.where(v >= 0, v, alpha * np.expm1(v)).astype(x.dtype)


@register("Softplus")
def softplus(node, x):
    return np.logaddexp(0.0, x.astype(F64)).astype(x.dtype)


@register("HardSigmoid")
def hard_sigmoid(node, x):
    t = x.dtype.type
    y = x * t(node.attr("alpha", 0.2)) + t(node.attr("beta", 0.5))
    return np.clip(y, t(0), t(1)).astype(x.dtype)


@register("HardSwish")
def hard_swish(node, x):
    t = x.dtype.type
    return (x * np.clip(x * t(1.0 / 6.0) + t(0.5), t(0), t(1))).astype(x.dtype)


@register("Gelu")
def gelu(node, x):
    v = x.astype(F64)
    if node.attr("approximate", "none") == "tanh":
        y = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    else:
        y = 0.5 * v * (1 + _erf64(v / math.sqrt(2)))
    return y.astype(x.dtype)


@register("Clip")
def clip(node, x, lo=None, hi=None):
    if node.opset < 11:
        lo = node.attr("min", -3.4028234663852886e38)
        hi = node.attr("max", 3.4028234663852886e38)
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo).astype(x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi).astype(x.dtype))
    return y.astype(x.dtype)


def _variadic(fn):
    def k(node, *xs):
        y = xs[0]
        for v in xs[1:]:
            y = fn(y, v)
        return y
    return k


register("Max")(_variadic(np.maximum))
register("Min")(_variadic(np.minimum))
register("Sum")(_variadic(np.add))


@register("Mean")
def mean_(node, *xs):
    return (sum(_hi(v) for v in xs) / len(xs)).astype(xs[0].dtype)


register("Equal")(_binary(np.equal))
register("Less")(_binary(np.less))
register("Greater")(_binary(np.greater))
register("LessOrEqual")(_binary(np.less_equal))
register("GreaterOrEqual")(_binary(np.greater_equal))
register("And")(_binary(np.logical_and))
register("Or")(_binary(np.logical_or))
register("Xor")(_binary(np.logical_xor))


@register("Where")
def where(node, cond, x, y):
    return np.where(cond.astype(bool), x, y)


@register("Dropout")
def dropout(node, x, ratio=None, training_mode=None):
    if training_mode is not None and bool(np.asarray(training_mode)):
        raise ValueError("Dropout in training mode is not deterministic")
    if len(node.outputs) > 1 and node.outputs[1]:
        return x, np.ones(x.shape, dtype=bool)
    return x


# ---------------------------------------------------------------- matrix products


@register("MatMul")
def matmul(node, a, b):
    if a.dtype.kind == "f":
        return np.matmul(a.astype(F64), b.astype(F64)).astype(_out_dtype(a))
    return np.matmul(a, b)


@register("Gemm")
def gemm(node, a, b, c=None):
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    y = alpha * (_hi(a) @ _hi(b))
    if c is not None:
        y = y + beta * _hi(c)
    return y.astype(_out_dtype(a))


def _conv_geometry(node, x, kernel):
    return ic.geometry(x.shape[2:], kernel, node.attr("strides"), node.attr("dilations"), node.attr("pads"),
                       node.attr("auto_pad", "NOTSET"))


@register("Conv")
def conv(node, x, w, b=None):
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    begin, end, out = _conv_geometry(node, x, kernel)
    g = int(node.attr("group", 1))
    per_sample = int(np.prod(out)) * int(np.prod(w.shape[1:])) * g * 8
    ys = []
    for lo, hi in ic.batch_chunks(x.shape[0], per_sample):
        cols = ic.im2col(_hi(x[lo:hi]), kernel, node.attr("strides"), node.attr("dilations"), begin, end, out)
        ys.append(grouped_matmul(cols, _hi(w), g))  # (N, M, P)
    y = np.concatenate(ys) if len(ys) > 1 else ys[0]
    if b is not None:
        y = y + _hi(b).reshape(1, -1, 1)
    return y.reshape(y.shape[:2] + tuple(out)).astype(_out_dtype(x))


def grouped_matmul(cols: np.ndarray, w: np.ndarray, g: int) -> np.ndarray:
    """cols (N, *out, C*k) and weights (M, C/g, *k) -> (N, M, prod(out)), groups as a batched matmul."""
    n = cols.shape[0]
    kk = cols.shape[-1] // (w.shape[1] * g) if w.shape[1] else 0
    cols = cols.reshape(n, -1, g, w.shape[1] * kk)  # (N, P, g, Kg)
    p = cols.shape[1]
    m = w.shape[0]
    wr = w.reshape(g, m // g, -1)  # (g, Mg, Kg)
    a = cols.transpose(2, 0, 1, 3).reshape(g, n * p, -1)  # (g, N*P, Kg)
    y = np.matmul(a, wr.transpose(0, 2, 1))  # (g, N*P, Mg)
    return y.reshape(g, n, p, m // g).transpose(1, 0, 3, 2).reshape(n, m, p)


def conv_transpose_geometry(node, x, w):
    n = x.ndim - 2
    kernel = list(node.attr("kernel_shape") or w.shape[2:])
    strides = list(node.attr("strides") or [1] * n)
    dil = list(node.attr("dilations") or [1] * n)
    outpad = list(node.attr("output_padding") or [0] * n)
    pads = list(node.attr("pads") or [0] * (2 * n))
    auto_pad = node.attr("auto_pad", "NOTSET") or "NOTSET"
    out_shape = node.attr("output_shape")
    begin, end, out = [], [], []
    for i in range(n):
        full = strides[i] * (x.shape[2 + i] - 1) + outpad[i] + (kernel[i] - 1) * dil[i] + 1
        if out_shape is not None and len(out_shape):
            o = int(out_shape[-n + i])
            total = full - o
            if auto_pad == "SAME_UPPER":
                b = total - total // 2
            else:
                b = total // 2
            e = total - b
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            o = x.shape[2 + i] * strides[i]
            total = full - o
            b = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            e = total - b
        else:
            b, e = (0, 0) if auto_pad == "VALID" else (pads[i], pads[n + i])
            o = full - b - e
        begin.append(b)
        end.append(e)
        out.append(o)
    return kernel, strides, dil, begin, out


def col2im_transpose(cols: np.ndarray, in_spatial, kernel, strides, dil, begin, out, dtype) -> np.ndarray:
    """Scatter-add ``cols`` (N, M, *in, *k) into the ConvTranspose output (N, M, *out): one pass per kernel tap."""
    n = len(kernel)
    N, M = cols.shape[:2]
    full = [max((in_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1, begin[i] + out[i]) for i in range(n)]
    buf = np.zeros((N, M) + tuple(full), dtype=dtype)
    for tap in np.ndindex(*kernel):
        sl = tuple(slice(tap[i] * dil[i], tap[i] * dil[i] + (in_spatial[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(n))
        buf[(slice(None), slice(None)) + sl] += cols[(Ellipsis,) + tap]
    crop = tuple(slice(begin[i], begin[i] + out[i]) for i in range(n))
    return buf[(slice(None), slice(None)) + crop]


def conv_transpose_columns(x: np.ndarray, w: np.ndarray, g: int) -> np.ndarray:
    """x (N, C, *in), w (C, M/g, *k) -> per-tap contributions (N, M, *in, *k)."""
    N, C = x.shape[:2]
    ins = x.shape[2:]
    k = w.shape[2:]
    cg, mg = C // g, w.shape[1]
    xr = x.reshape(N, g, cg, -1).transpose(1, 0, 3, 2).reshape(g, -1, cg)  # (g, N*P, Cg)
    wr = w.reshape(g, cg, -1)  # (g, Cg, Mg*kk)
    y = np.matmul(xr, wr)  # (g, N*P, Mg*kk)
    y = y.reshape((g, N) + tuple(ins) + (mg,) + tuple(k))
    nd = len(ins)
    # (g, N, *in, Mg, *k) -> (N, g, Mg, *in, *k)
    perm = [1, 0, 2 + nd] + list(range(2, 2 + nd)) + list(range(3 + nd, 3 + 2 * nd))
    y = y.transpose(perm)
    return y.reshape((N, g * mg) + tuple(ins) + tuple(k))


@register("ConvTranspose")
def conv_transpose(node, x, w, b=None):
    g = int(node.attr("group", 1))
    kernel, strides, dil, begin, out = conv_transpose_geometry(node, x, w)
    cols = conv_transpose_columns(_hi(x), _hi(w), g)
    y = col2im_transpose(cols, x.shape[2:], kernel, strides, dil, begin, out, F64)
    if b is not None:
        y = y + _hi(b).reshape((1, -1) + (1,) * len(kernel))
    return y.astype(_out_dtype(x))


# ---------------------------------------------------------------- pooling and normalisation


def _pool_geometry(node, x):
    kernel = list(node.attr("kernel_shape"))
    return kernel, ic.geometry(x.shape[2:], kernel, node.attr("strides"), node.attr("dilations"), node.attr("pads"),
                               node.attr("auto_pad", "NOTSET"), bool(node.attr("ceil_mode", 0)))


def _check_maxpool(node):
    if len(node.outputs) > 1 and node.outputs[1]:
        return "the Indices output is not supported"
    if int(node.attr("storage_order", 0)) != 0:
        return "storage_order=1 is not supported"
    return None


def _lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


@register("MaxPool", check=_check_maxpool)
def max_pool(node, x):
    kernel, (begin, end, out) = _pool_geometry(node, x)
    w = ic.windows(x, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, _lowest(x.dtype))
    return w.max(axis=tuple(range(-len(kernel), 0))).astype(x.dtype)


def avg_pool_counts(node, x_shape, kernel, begin, end, out):
    """Divisor per output position: valid inputs, or inputs + explicit pads with count_include_pad."""
    spatial = x_shape[2:]
    ones = np.ones((1, 1) + tuple(spatial), F64)
    if int(node.attr("count_include_pad", 0)):
        ones = np.pad(ones, [(0, 0), (0, 0)] + list(zip(begin, end)), constant_values=1.0)
        b0 = [0] * len(begin)
        w = ic.windows(ones, kernel, node.attr("strides"), node.attr("dilations"), b0, b0, out, 0.0)
    else:
        w = ic.windows(ones, kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
    return w.sum(axis=tuple(range(-len(kernel), 0)))


@register("AveragePool")
def average_pool(node, x):
    kernel, (begin, end, out) = _pool_geometry(node, x)
    w = ic.windows(_hi(x), kernel, node.attr("strides"), node.attr("dilations"), begin, end, out, 0.0)
    s = w.sum(axis=tuple(range(-len(kernel), 0)))
    return (s / avg_pool_counts(node, x.shape, kernel, begin, end, out)).astype(x.dtype)


@register("GlobalAveragePool")
def global_average_pool(node, x):
    return _hi(x).mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


@register("GlobalMaxPool")
def global_max_pool(node, x):
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


def _check_bn(node):
    if int(node.attr("training_mode", 0)):
        return "training_mode=1 is not supported (inference only)"
    if len([o for o in node.outputs if o]) > 1:
        return "running-statistics outputs (training) are not supported"
    return None


@register("BatchNormalization", check=_check_bn)
def batch_norm(node, x, scale, b, mean, var):
    eps = float(node.attr("epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = _hi(scale).reshape(shape) / np.sqrt(_hi(var).reshape(shape) + eps)
    return ((_hi(x) - _hi(mean).reshape(shape)) * inv + _hi(b).reshape(shape)).astype(x.dtype)


@register("LayerNormalization")
def layer_norm(node, x, scale, b=None):
    axis = int(node.attr("axis", -1)) % x.ndim
    eps = float(node.attr("epsilon", 1e-5))
    v = _hi(x)
    ax = tuple(range(axis, x.ndim))
    mu = v.mean(axis=ax, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=ax, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps) * _hi(scale)
    if b is not None:
        y = y + _hi(b)
    return y.astype(x.dtype)


def _softmax_axes(node, x):
    axis = int(node.attr("axis", -1 if node.opset >= 13 else 1)) % max(x.ndim, 1)
    return axis


@register("Softmax")
def softmax(node, x):
    axis = _softmax_axes(node, x)
    v = _hi(x)
    if node.opset < 13:  # coerced to 2-D at ``axis``
        shp = v.shape
        v = v.reshape(int(np.prod(shp[:axis])), -1)
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).reshape(shp).astype(x.dtype)
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


@register("LogSoftmax")
def log_softmax(node, x):
    axis = _softmax_axes(node, x)
    v = _hi(x)
    if node.opset < 13:
        shp = v.shape
        v = v.reshape(int(np.prod(shp[:axis])), -1)
        m = v.max(axis=1, keepdims=True)
        return (v - m - np.log(np.exp(v - m).sum(axis=1, keepdims=True))).reshape(shp).astype(x.dtype)
    m = v.max(axis=axis, keepdims=True)
    return (v - m - np.log(np.exp(v - m).sum(axis=axis, keepdims=True))).astype(x.dtype)


def _reduce(fn, since, hi=True):
    def k(node, x, axes=None):
        ax = _axes_arg(node, axes, since=since)
        keep = bool(node.attr("keepdims", 1))
        if ax is None or len(ax) == 0:
            if node.attr("noop_with_empty_axes", 0) and ax is not None:
                return x
            ax = list(range(x.ndim))
        v = _hi(x) if hi else x
        return np.asarray(fn(v, axis=tuple(a % x.ndim for a in ax), keepdims=keep)).astype(x.dtype)
    return k


register("ReduceMean")(_reduce(np.mean, 18))
register("ReduceSum")(_reduce(np.sum, 13))
register("ReduceMax")(_reduce(np.max, 18, hi=False))
register("ReduceMin")(_reduce(np.min, 18, hi=False))
register("ReduceProd")(_reduce(np.prod, 18))


# ---------------------------------------------------------------- shape / layout


@register("Reshape")
def reshape(node, x, shape=None):
    if node.opset < 5:
        shape = node.attr("shape")
    shape = [int(d) for d in np.asarray(shape).reshape(-1)]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


@register("Flatten")
def flatten(node, x):
    axis = int(node.attr("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return x.reshape(outer, inner)


@register("Transpose")
def transpose(node, x):
    perm = node.attr("perm")
    return np.transpose(x, None if perm is None else list(perm))


@register("Squeeze")
def squeeze(node, x, axes=None):
    ax = _axes_arg(node, axes)
    if ax is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(a % x.ndim for a in ax))


@register("Unsqueeze")
def unsqueeze(node, x, axes=None):
    ax = _axes_arg(node, axes)
    r = x.ndim + len(ax)
    y = x
    for a in sorted(a % r for a in ax):
        y = np.expand_dims(y, a)
    return y


@register("Concat")
def concat(node, *xs):
    return np.concatenate([np.asarray(v) for v in xs], axis=int(node.attr("axis")))


@register("Split")
def split(node, x, split_=None):
    axis = int(node.attr("axis", 0)) % x.ndim
    n_out = len(node.outputs)
    sizes = node.attr("split") if node.opset < 13 else (None if split_ is None else list(np.asarray(split_)))
    dim = x.shape[axis]
    if sizes is None or len(sizes) == 0:
        n = int(node.attr("num_outputs", n_out))
        chunk = -(-dim // n)
        sizes = [min(chunk, dim - i * chunk) for i in range(n)]
    idx = np.cumsum([int(s) for s in sizes])[:-1]
    return tuple(np.split(x, idx, axis=axis))


@register("Slice")
def slice_(node, x, starts=None, ends=None, axes=None, steps=None):
    if node.opset < 10:
        starts, ends, axes = node.attr("starts"), node.attr("ends"), node.attr("axes")
    starts = [int(v) for v in np.asarray(starts).reshape(-1)]
    ends = [int(v) for v in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    sl = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        dim = x.shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
            sl[a] = slice(s, e, st)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
            sl[a] = slice(s, None if e < 0 else e, st)
    return x[tuple(sl)]


@register("Gather")
def gather(node, x, idx):
    axis = int(node.attr("axis", 0)) % x.ndim
    idx = np.asarray(idx).astype(np.int64)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take(x, idx, axis=axis)


@register("Shape")
def shape(node, x):
    s = list(np.shape(x))
    start = node.attr("start", 0)
    end = node.attr("end", None)
    return np.asarray(s[start:end], dtype=np.int64)


@register("Size")
def size(node, x):
    return np.asarray(np.size(x), dtype=np.int64)


def _check_cast(node):
    to = node.attr("to")
    try:
        dt = onnx.helper.tensor_dtype_to_np_dtype(int(to))
    except Exception:  # noqa: BLE001
        return f"cast to ONNX type {to} is not supported"
    if dt.kind not in "biuf":
        return f"cast to {onnx.TensorProto.DataType.Name(int(to))} is not supported"
    return None


@register("Cast", check=_check_cast)
def cast(node, x):
    dt = onnx.helper.tensor_dtype_to_np_dtype(int(node.attr("to")))
    if dt == np.bool_:
        return x != 0
    if dt.kind in "iu" and x.dtype.kind == "f":
        return np.trunc(x).astype(dt)
    return x.astype(dt)


def _check_constant(node):
    ok = {"value", "value_float", "value_floats", "value_int", "value_ints"}
    if not set(node.attrs) & ok:
        return f"Constant with attribute {sorted(node.attrs)} is not supported"
    return None


@register("Constant", check=_check_constant)
def constant(node):
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    if "value_float" in a:
        return np.asarray(a["value_float"], F32)
    if "value_floats" in a:
        return np.asarray(a["value_floats"], F32)
    if "value_int" in a:
        return np.asarray(a["value_int"], np.int64)
    return np.asarray(a["value_ints"], np.int64)


@register("ConstantOfShape")
def constant_of_shape(node, shp):
    v = node.attr("value")
    v = np.zeros(1, F32) if v is None else np.asarray(v).reshape(-1)
    return np.full([int(d) for d in np.asarray(shp).reshape(-1)], v[0], dtype=v.dtype)


@register("Expand")
def expand(node, x, shp):
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shp).reshape(-1)))
    return np.broadcast_to(x, target).copy()


@register("Tile")
def tile(node, x, reps):
    return np.tile(x, [int(r) for r in np.asarray(reps).reshape(-1)])


@register("Range")
def range_(node, start, limit, delta):
    return np.arange(start.item(), limit.item(), delta.item()).astype(np.asarray(start).dtype)


def _check_pad(node):
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        return f"Pad mode {mode!r} is not supported"
    return None


@register("Pad", check=_check_pad)
def pad(node, x, pads=None, value=None, axes=None):
    if node.opset < 11:
        pads, value = node.attr("pads"), node.attr("value", 0.0)
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    n = len(pads) // 2
    ax = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in np.asarray(axes).reshape(-1)]
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, a in enumerate(ax[:n]):
        begin[a], end[a] = pads[i], pads[n + i]
    # negative pads crop
    sl = tuple(slice(max(0, -b), x.shape[a] - max(0, -e)) for a, (b, e) in enumerate(zip(begin, end)))
    x = x[sl]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
    mode = node.attr("mode", "constant")
    if mode == "constant":
        v = 0 if value is None else np.asarray(value).reshape(-1)[0] if np.size(value) else 0
        return np.pad(x, widths, mode="constant", constant_values=v)
    return np.pad(x, widths, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


# ---------------------------------------------------------------- Resize


_COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_crop_and_resize",
                "half_pixel_symmetric", "tf_half_pixel_for_nn")


def _check_resize(node):
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} is not supported (nearest and linear are)"
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    if ctm not in _COORD_MODES:
        return f"coordinate_transformation_mode {ctm!r} is not supported"
    if int(node.attr("antialias", 0)):
        return "antialias=1 is not supported"
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "keep_aspect_ratio_policy other than 'stretch' is not supported"
    if node.attr("nearest_mode", "round_prefer_floor") not in ("round_prefer_floor", "round_prefer_ceil", "floor",
                                                                "ceil"):
        return f"nearest_mode {node.attr('nearest_mode')!r} is not supported"
    return None


def _nearest(x, mode):
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    frac = x - np.floor(x)
    if mode == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(x), np.round(x))
    return np.where(frac == 0.5, np.floor(x), np.round(x))


@register("Resize", check=_check_resize)
@register("Upsample", check=_check_resize)
def resize(node, x, roi=None, scales=None, sizes=None):
    nd = x.ndim
    if node.op_type == "Upsample" or node.opset < 11:  # (X, scales)
        scales, roi, sizes = (node.attr("scales") if roi is None else roi), None, None
    axes = node.attr("axes")
    axes = list(range(nd)) if axes is None else [int(a) % nd for a in axes]
    in_shape = [x.shape[a] for a in axes]
    if sizes is not None and np.size(sizes):
        out_shape = [int(s) for s in np.asarray(sizes).reshape(-1)]
        sc = [F32(o) / F32(i) for o, i in zip(out_shape, in_shape)]
    else:
        sc = [F32(s) for s in np.asarray(scales, F32).reshape(-1)]
        out_shape = [int(np.floor(F32(i) * s)) for i, s in zip(in_shape, sc)]
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    nmode = node.attr("nearest_mode", "round_prefer_floor") if node.opset >= 11 else "floor"
    extrap = F32(node.attr("extrapolation_value", 0.0))
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, F32).reshape(-1)
    y = x.astype(F64) if mode == "linear" else x
    oob_masks = []
    for j, a in enumerate(axes):
        n_in, n_out, s = in_shape[j], out_shape[j], sc[j]
        if n_in == n_out and s == 1 and ctm != "tf_crop_and_resize":
            continue
        o = np.arange(n_out, dtype=F32)
        if ctm == "asymmetric":
            c = o / s
        elif ctm == "align_corners":
            c = o * F32(n_in - 1) / F32(n_out - 1) if n_out > 1 else np.zeros_like(o)
        elif ctm == "pytorch_half_pixel":
            c = (o + F32(0.5)) / s - F32(0.5) if n_out > 1 else np.zeros_like(o)
        elif ctm == "tf_half_pixel_for_nn":
            c = (o + F32(0.5)) / s
        elif ctm == "half_pixel_symmetric":
            adj = F32(n_out) / (s * F32(n_in))
            center = F32(n_in) / F32(2)
            off = center * (F32(1) - adj)
            c = off + (o + F32(0.5)) / s - F32(0.5)
        elif ctm == "tf_crop_and_resize":
            start, end = roi[a], roi[nd + a]
            if n_out > 1:
                c = start * F32(n_in - 1) + o * (end - start) * F32(n_in - 1) / F32(n_out - 1)
            else:
                c = np.full_like(o, F32(0.5) * (start + end) * F32(n_in - 1))
        else:  # half_pixel
            c = (o + F32(0.5)) / s - F32(0.5)
        c = np.asarray(c, F32)
        if ctm == "tf_crop_and_resize":
            oob = (c < 0) | (c > n_in - 1)
            shape = [1] * nd
            shape[a] = -1
            oob_masks.append(oob.reshape(shape))
        if mode == "nearest":
            idx = _nearest(c.astype(F64), nmode).astype(np.int64)
            idx = np.clip(idx, 0, n_in - 1)
            y = np.take(y, idx, axis=a)
        else:
            cc = np.clip(c, 0, n_in - 1).astype(F64)
            i0 = np.minimum(np.floor(cc).astype(np.int64), n_in - 1)
            i1 = np.minimum(i0 + 1, n_in - 1)
            w1 = cc - i0
            shape = [1] * nd
            shape[a] = -1
            w1 = np.where(i0 == i1, 0.5, w1).reshape(shape)
            y = np.take(y, i0, axis=a) * (1 - w1) + np.take(y, i1, axis=a) * w1
    if mode == "linear":
        y = y.astype(x.dtype)
    for m in oob_masks:
        y = np.where(m, extrap.astype(y.dtype), y)
    return y
