"""OpDef: every fact qpass knows about one op it defines or treats specially, in one class (qonnx's ``CustomOp``).

An op class is never instantiated; its methods are classmethods taking the node. A node may be an onnx
``NodeProto``, an onnx-graphsurgeon ``Node`` or the reference interpreter's ``NodeInfo``: attributes are read with
``attr``, which applies the schema's defaults and types. Constant inputs arrive as numpy arrays (None when the
input is computed at run time).

- ``attrs``: the attribute schema, ``{name: Attr(kind, default, allowed)}``.
- ``check(node)``: None, or why the node's attributes are not supported (every user refuses such a node).
- ``infer_shape(node, input_shapes)``: the output shapes; ``shape_stand_in(node)``: a standard ONNX node with the
  same output shape for ONNX shape inference (qonnx's ``make_shape_compatible_op``), None when there is none.
- ``quantizer``: the op rounds its input onto an integer grid (Quant, BipolarQuant, Trunc).
- ``execute(node, *inputs)``: numpy float32, the definition of the op's numbers (None: not executable here).
- ``saturated(node, *inputs)``: how many elements a clipping quantiser saturated (the reference's statistics).
- ``int_range(node, consts)``: the exact integer range of the output when it is integer codes, else None.
- ``lower(builder, node, opset)``: rewrite the node as standard ONNX computing bit-identical values, appending to
  ``builder`` (a ``qpass.ir.builder.GraphBuilder``); raise UnsupportedOpError when it cannot. None: no lowering.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qpass.ops.common import attr as _raw_attr

F32 = np.float32


@dataclass(frozen=True)
class Attr:
    """One attribute: its kind (``int``, ``float``, ``str``), default, and the allowed values when restricted
    (string values compare upper-cased, as qonnx resolves rounding modes)."""

    kind: type
    default: Any
    allowed: tuple | None = None

    def coerce(self, value):
        if value is None:
            return None
        if self.kind is str:
            value = value.decode() if isinstance(value, bytes) else str(value)
            return value.upper() if self.allowed is not None else value
        return self.kind(value)


class OpDef:
    """Base of every op class (see the module docstring)."""

    op_type: ClassVar[str] = ""
    domains: ClassVar[tuple[str, ...]] = ()
    attrs: ClassVar[dict[str, Attr]] = {}
    quantizer: ClassVar[bool] = False
    #: numpy semantics ``execute(node, *inputs)``, or None when the op does not run in the reference here
    execute: ClassVar[Callable | None] = None
    #: ``lower(builder, node, opset)``, or None when the op has no lowering to standard ONNX
    lower: ClassVar[Callable | None] = None
    #: ``saturated(node, *inputs) -> (elements, saturated elements) | None`` for a quantiser that clips, else None
    saturated: ClassVar[Callable | None] = None

    @classmethod
    def attr(cls, node, name: str):
        """The attribute's value, its schema default when absent, converted to the schema's kind."""
        spec = cls.attrs[name]
        return spec.coerce(_raw_attr(node, name, spec.default))

    @classmethod
    def check(cls, node) -> str | None:
        """None when every attribute with restricted values holds an allowed one, else the reason."""
        for name, spec in cls.attrs.items():
            if spec.allowed is not None:
                v = cls.attr(node, name)
                if v not in spec.allowed:
                    return f"{name} {v!r} is not one of {', '.join(map(str, spec.allowed))}"
        return None

    @classmethod
    def infer_shape(cls, node, input_shapes: list) -> list:
        """Output shapes from input shapes; the default is element-wise (the shape of input 0)."""
        return [input_shapes[0]]

    @classmethod
    def shape_stand_in(cls, node: onnx.NodeProto) -> onnx.NodeProto | None:
        """The default, element-wise: Identity from input 0 to output 0."""
        return onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)

    @classmethod
    def int_range(cls, node, consts: list) -> tuple[float, float] | None:
        return None


def scalar(v) -> float:
    """The first element of a (size-1) array, as qonnx reads bit widths."""
    return float(np.asarray(v).reshape(-1)[0])


def f32(v) -> np.ndarray:
    return np.asarray(v, dtype=F32)


def const_value(t) -> np.ndarray | None:
    """The value of a graphsurgeon tensor when it is a constant, else None (what a lowering can fold)."""
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None
