"""Elementwise kernels: arithmetic, comparison and logic, unary math, activations, Clip, variadic Max / Min /
Sum / Mean, Where, Dropout (inference). They compute in the input dtype; transcendental functions go through
float64 and round once."""
from __future__ import annotations

import math

import numpy as np

from .. import mlas
from ..jit import compiled
from ..registry import register
from .common import F64, constant_input, wide


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
    """fmod=0: floor-mod, the remainder with the divisor's sign (Python's %, for floats too); fmod=1: C fmod (the
    dividend's sign)."""
    if int(node.attr("fmod", 0)):
        return np.fmod(a, b).astype(np.result_type(a, b))
    return np.remainder(a, b).astype(np.result_type(a, b))


@register("Pow")
def pow_(node, x, y):
    if x.dtype.kind == "f":
        return np.power(wide(x), wide(y).astype(F64)).astype(x.dtype)
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
_tanh64 = _unary(np.tanh, hi=True)


def _mlas():
    """MLAS's float32 tanh / logistic kernels: compiled (``mlas_jit``, the same bits) when numba is there, else
    the numpy emulation in ``mlas``."""
    return compiled("mlas_jit") or mlas


register("Tanh")(lambda node, x: _mlas().tanh(x) if x.dtype == np.float32 else _tanh64(node, x))  # as onnxruntime
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
    if x.dtype == np.float32:
        return _mlas().logistic(x)  # onnxruntime's MLAS approximation, bit for bit
    v = x.astype(F64)
    return (0.5 * (1.0 + np.tanh(0.5 * v))).astype(x.dtype)


@register("Relu")
def relu(node, x):
    return np.maximum(x, np.zeros((), x.dtype))


@register("LeakyRelu")
def leaky_relu(node, x):
    alpha = x.dtype.type(node.attr("alpha", 0.01))
    y = np.asarray(x * alpha)  # where(x >= 0, x, x * alpha), in place
    np.copyto(y, x, where=x >= 0)
    return y


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
    y = np.asarray(x * t(node.attr("alpha", 0.2)))
    y += t(node.attr("beta", 0.5))
    return np.clip(y, t(0), t(1), out=y)


@register("HardSwish")
def hard_swish(node, x):
    t = x.dtype.type
    y = np.asarray(x * t(1.0 / 6.0))  # x * clip(x / 6 + 1/2, 0, 1), the same operations in place
    y += t(0.5)
    np.clip(y, t(0), t(1), out=y)
    y *= x
    return y


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
        own = y is not x and isinstance(y, np.ndarray)
        y = np.minimum(y, np.asarray(hi).astype(x.dtype), out=y if own else None)  # in place on a new array
    return np.asarray(y).astype(x.dtype, copy=y is x)


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
    return (sum(wide(v) for v in xs) / len(xs)).astype(xs[0].dtype)


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


def _check_dropout(executor, node):
    """Inference (no training_mode, or a constant False) or a constant ratio of 0 is the identity; anything else
    draws a random mask nothing can reproduce."""
    if not node.has_input(2):
        return None
    training = constant_input(executor, node.inputs[2])
    if training is not None and not bool(np.asarray(training).reshape(-1)[0]):
        return None
    ratio = constant_input(executor, node.inputs[1]) if node.has_input(1) else 0.5
    if ratio is not None and float(np.asarray(ratio).reshape(-1)[0]) == 0.0:
        return None
    return "training_mode that is not a constant False, with a ratio that is not a constant 0: a random mask"


@register("Dropout", check=_check_dropout, with_executor=True)
def dropout(executor, node, x, ratio=None, training_mode=None):
    if len(node.outputs) > 1 and node.outputs[1]:
        return x, np.ones(x.shape, dtype=bool)
    return x
