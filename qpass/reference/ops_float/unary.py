"""More elementwise kernels: trigonometric and hyperbolic functions, the activations Selu, Celu,
ThresholdedRelu, Softsign, Shrink, Mish, Swish, SwiGLU, Hardmax, the tests IsNaN and IsInf, and the bitwise ops. They
compute in the input dtype (float32 like onnxruntime)."""
from __future__ import annotations

import numpy as np

from ..registry import register
from .common import is_float


def _unary(fn):
    def k(node, x):
        return np.asarray(fn(x)).astype(x.dtype)
    return k


for _name, _fn in {"Sin": np.sin, "Cos": np.cos, "Tan": np.tan, "Asin": np.arcsin, "Acos": np.arccos,
                   "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh, "Asinh": np.arcsinh, "Acosh": np.arccosh,
                   "Atanh": np.arctanh, "Softsign": lambda x: x / (1 + np.abs(x)),
                   "BitwiseNot": np.invert}.items():
    register(_name)(_unary(_fn))


def _param(node, name, default, x):
    return x.dtype.type(node.attr(name, default))


@register("Selu")
def selu(node, x):
    a, g = _param(node, "alpha", 1.67326319217681884765625, x), _param(node, "gamma", 1.05070102214813232421875, x)
    return np.where(x > 0, g * x, g * a * np.expm1(x)).astype(x.dtype)


@register("Celu")
def celu(node, x):
    a = _param(node, "alpha", 1.0, x)
    return (np.maximum(x, 0) + np.minimum(0, a * np.expm1(x / a))).astype(x.dtype)


@register("ThresholdedRelu")
def thresholded_relu(node, x):
    return np.where(x > _param(node, "alpha", 1.0, x), x, 0).astype(x.dtype)


@register("Shrink")
def shrink(node, x):
    lambd, bias = float(node.attr("lambd", 0.5)), float(node.attr("bias", 0.0))
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0)).astype(x.dtype)


@register("Mish")
def mish(node, x):
    return (x * np.tanh(np.logaddexp(x.dtype.type(0), x))).astype(x.dtype)


@register("Swish")
def swish(node, x):
    a = _param(node, "alpha", 1.0, x)
    with np.errstate(over="ignore"):
        return (x / (1 + np.exp(-a * x))).astype(x.dtype)


@register("Hardmax")
def hardmax(node, x):
    """1 at the first maximum along ``axis`` (before opset 13: of the input coerced to 2-D at ``axis``)."""
    axis = int(node.attr("axis", -1 if node.opset >= 13 else 1)) % max(x.ndim, 1)
    v = x.reshape(int(np.prod(x.shape[:axis])), -1) if node.opset < 13 else x
    a = axis if node.opset >= 13 else 1
    first = np.expand_dims(np.argmax(v, axis=a), a)
    y = np.zeros_like(v)
    np.put_along_axis(y, first, 1, axis=a)
    return y.reshape(x.shape)


@register("IsNaN")
def is_nan(node, x):
    return np.isnan(x.astype(np.float32) if not is_float(x.dtype) or x.dtype.num >= 256 else x)


@register("IsInf")
def is_inf(node, x):
    v = x.astype(np.float32) if x.dtype.num >= 256 else x
    pos = np.isposinf(v) if int(node.attr("detect_positive", 1)) else np.zeros(v.shape, bool)
    neg = np.isneginf(v) if int(node.attr("detect_negative", 1)) else np.zeros(v.shape, bool)
    return pos | neg


register("BitwiseAnd")(lambda node, a, b: np.bitwise_and(a, b))
register("BitwiseOr")(lambda node, a, b: np.bitwise_or(a, b))
register("BitwiseXor")(lambda node, a, b: np.bitwise_xor(a, b))


@register("BitShift")
def bit_shift(node, x, y):
    fn = np.left_shift if node.attr("direction") == "LEFT" else np.right_shift
    return fn(x, y.astype(x.dtype)).astype(x.dtype)


@register("SwiGLU")
def swiglu(node, a, b):
    """a * sigmoid(alpha * a) * b."""
    with np.errstate(over="ignore"):
        gate = (1 / (1 + np.exp(-_param(node, "alpha", 1.0, a) * a))).astype(a.dtype)
    return (a * gate * b).astype(a.dtype)
