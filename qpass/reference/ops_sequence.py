"""Sequence and optional values, and the kernels of the ops that make and read them.

A value in the interpreter is a numpy array; a sequence is a 0-d object array holding a :class:`SeqValue` (an
immutable tuple of tensors, with the element type for an empty one), an empty optional a 0-d object array
holding None (what ``np.asarray(None)`` gives), and an optional holding an element is that element itself. So
the executor stores, frees and passes them like any tensor, and never stacks a sequence into one array.

    seq = as_value([a, b])          # a list fed for a sequence-typed graph input
    from_value(ex.run(...)[name])   # back to a list (a sequence), None (an empty optional) or the array
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from .registry import register


class SeqValue:
    """The tensors of one sequence value (not itself a Python sequence, so numpy keeps it as one object)."""

    __slots__ = ("items", "dtype")

    def __init__(self, items, dtype=None):
        self.items = tuple(np.asarray(x) for x in items)
        self.dtype = np.dtype(dtype) if dtype is not None else (self.items[0].dtype if self.items else
                                                                 np.dtype(np.float32))


def sequence(items, dtype=None) -> np.ndarray:
    """A sequence value holding ``items``."""
    return np.asarray(SeqValue(items, dtype))


def is_sequence(v: Any) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0 and isinstance(v[()], SeqValue)


def is_empty_optional(v: Any) -> bool:
    return v is None or (isinstance(v, np.ndarray) and v.dtype == object and v.ndim == 0 and v[()] is None)


def items(v: Any) -> list[np.ndarray]:
    """The tensors of a sequence value (ValueError for anything else)."""
    if not is_sequence(v):
        raise ValueError("expected a sequence value, got a tensor")
    return list(v[()].items)


def as_value(x: Any) -> np.ndarray:
    """A graph input as the interpreter holds it: a list or tuple becomes a sequence, None an empty optional."""
    if isinstance(x, (list, tuple)):
        return sequence(x)
    return np.asarray(x)


def from_value(v: Any) -> Any:
    """A value as onnx's reference and onnxruntime return it: a list for a sequence, None for an empty optional."""
    if is_sequence(v):
        return list(v[()].items)
    if is_empty_optional(v):
        return None
    return v


def _elem_dtype(node, default=np.float32) -> np.dtype:
    dt = node.attr("dtype", 0)
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dt)) if dt else np.dtype(default)


def _position(pos, n: int, inserting: bool) -> int:
    p = int(np.asarray(pos).reshape(-1)[0])
    hi = n if inserting else n - 1
    if not -n <= p <= hi:
        raise ValueError(f"position {p} is outside the sequence of length {n}")
    return p + n if p < 0 else p


@register("SequenceEmpty")
def sequence_empty(node):
    return sequence([], _elem_dtype(node))


@register("SequenceConstruct")
def sequence_construct(node, *tensors):
    return sequence(tensors)


@register("SequenceLength")
def sequence_length(node, seq):
    return np.array(len(items(seq)), np.int64)


@register("SequenceAt")
def sequence_at(node, seq, position):
    xs = items(seq)
    return xs[_position(position, len(xs), False)]


@register("SequenceInsert")
def sequence_insert(node, seq, tensor, position=None):
    xs = items(seq)
    at = len(xs) if position is None else _position(position, len(xs), True)
    return sequence(xs[:at] + [tensor] + xs[at:], seq[()].dtype)


@register("SequenceErase")
def sequence_erase(node, seq, position=None):
    xs = items(seq)
    at = len(xs) - 1 if position is None else _position(position, len(xs), False)
    return sequence(xs[:at] + xs[at + 1:], seq[()].dtype)


@register("SplitToSequence")
def split_to_sequence(node, x, split=None):
    axis = int(node.attr("axis", 0)) % x.ndim
    n = x.shape[axis]
    if split is None:
        parts = np.split(x, n, axis=axis)
        if not node.attr("keepdims", 1):
            parts = [np.squeeze(p, axis=axis) for p in parts]
        return sequence(parts, x.dtype)
    split = np.asarray(split).astype(np.int64)
    if split.ndim == 0:
        size = int(split)
        if size <= 0:
            raise ValueError(f"split {size} must be positive")
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
    else:
        sizes = [int(s) for s in split]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        raise ValueError(f"split {sizes} does not add up to the length {n} of axis {axis}")
    return sequence(np.split(x, np.cumsum(sizes)[:-1], axis=axis), x.dtype)


@register("ConcatFromSequence")
def concat_from_sequence(node, seq):
    xs = items(seq)
    if not xs:
        raise ValueError("ConcatFromSequence of an empty sequence")
    axis = int(node.attr("axis"))
    if node.attr("new_axis", 0):
        return np.stack(xs, axis=axis % (xs[0].ndim + 1))
    return np.concatenate(xs, axis=axis % xs[0].ndim)


def _check_optional(node) -> str | None:
    return None if node.has_input(0) or node.attr("type") is not None else "Optional with no input needs a type"


@register("Optional", check=_check_optional)
def optional(node, x=None):
    return np.asarray(None) if x is None else x


@register("OptionalHasElement")
def optional_has_element(node, x=None):
    return np.array(not is_empty_optional(x))


@register("OptionalGetElement")
def optional_get_element(node, x):
    if is_empty_optional(x):
        raise ValueError("OptionalGetElement of an empty optional")
    return x


def _check_sequence_map(ex, node) -> str | None:
    b = ex.bodies.get(node.name, {}).get("body")
    if b is None:
        return "SequenceMap needs a body"
    if len(b.inputs) != len(node.inputs) or len(b.outputs) != len(node.outputs):
        return (f"the body takes {len(b.inputs)} inputs and gives {len(b.outputs)} outputs for {len(node.inputs)} "
                f"inputs and {len(node.outputs)} outputs")
    return None


@register("SequenceMap", check=_check_sequence_map, with_executor=True)
def sequence_map(ex, node, seq, *others, scope=None):
    run = ex.bodies[node.name]["body"].runner(scope)
    n = len(items(seq))
    args = [items(v) if is_sequence(v) else None for v in (seq, *others)]
    if any(a is not None and len(a) != n for a in args):
        raise ValueError("SequenceMap's input sequences have different lengths")
    outs: list[list] = [[] for _ in node.outputs]
    for i in range(n):
        res = run([a[i] if a is not None else v for a, v in zip(args, (seq, *others))])
        for k, r in enumerate(res):
            outs[k].append(r)
    return tuple(sequence(o) for o in outs)
