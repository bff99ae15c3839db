"""Op registry of the golden simulator: one function per (domain, op type).

A kernel is ``fn(node: NodeInfo, *inputs) -> array | tuple[array, ...]``; absent optional inputs arrive as
``None`` (trailing absent inputs are simply not passed, so Python defaults apply). An optional ``check(node)``
runs at executor construction and returns a reason string when the node's attributes are not supported, so every
"unsupported" error comes before any computation.

    @register("Relu")
    def relu(node, x):
        return np.maximum(x, 0).astype(x.dtype)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import onnx
from onnx import numpy_helper

from qpass.ops.common import ONNX_DOMAIN, QONNX_DOMAIN, QPASS_DOMAIN, canonical_domain


@dataclass(frozen=True)
class Kernel:
    fn: Callable
    check: Callable | None = None
    with_executor: bool = False  # fn(executor, node, *inputs) and check(executor, node): e.g. nested models


_KERNELS: dict[tuple[str, str], Kernel] = {}


def register(op_type: str, domain: str | tuple[str, ...] = ONNX_DOMAIN, check: Callable | None = None,
             with_executor: bool = False):
    """Decorator: register ``fn`` as the kernel of ``op_type`` in one or several domains."""
    domains = (domain,) if isinstance(domain, str) else tuple(domain)

    def deco(fn):
        for d in domains:
            _KERNELS[(canonical_domain(d), op_type)] = Kernel(fn, check, with_executor)
        return fn

    return deco


def lookup(domain: str | None, op_type: str) -> Kernel | None:
    return _KERNELS.get((canonical_domain(domain), op_type))


def supported_ops() -> dict[str, list[str]]:
    """``{domain: sorted op types}`` of every registered kernel."""
    out: dict[str, list[str]] = {}
    for d, op in _KERNELS:
        out.setdefault(d, []).append(op)
    return {d: sorted(v) for d, v in sorted(out.items())}


def _attr_value(a: onnx.AttributeProto) -> Any:
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8") for s in v]
    return v


@dataclass
class NodeInfo:
    """What a kernel sees of its node: names, decoded attributes and the opset version of its domain."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 0
    proto: onnx.NodeProto | None = None

    @classmethod
    def from_proto(cls, node: onnx.NodeProto, opsets: dict[str, int], index: int = 0) -> "NodeInfo":
        dom = canonical_domain(node.domain)
        return cls(name=node.name or f"{node.op_type}_{index}", op_type=node.op_type, domain=dom,
                   inputs=list(node.input), outputs=list(node.output),
                   attrs={a.name: _attr_value(a) for a in node.attribute},
                   opset=opsets.get(dom, 1 if dom else 0), proto=node)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    @property
    def label(self) -> str:
        op = self.op_type if not self.domain else f"{self.domain}::{self.op_type}"
        return f"{op} node {self.name!r}"
