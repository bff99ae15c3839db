"""QONNX-style datatype annotations, stored in ``graph.quantization_annotation`` so they survive in .onnx files.

Names: INTn, UINTn, BIPOLAR ({-1, +1}), BINARY ({0, 1}), TERNARY ({-1, 0, +1}), FIXED<w,i>, SCALEDINT<b>, FLOAT32.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import onnx

KEY = "finn_datatype"


@dataclass(frozen=True)
class IntType:
    """An integer datatype given by its exact value range."""

    lo: int
    hi: int

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def bits(self) -> int:
        if self.signed:
            return max(bits_for_signed(self.lo), bits_for_signed(self.hi))
        return max(1, math.ceil(math.log2(self.hi + 1))) if self.hi > 0 else 1

    @property
    def name(self) -> str:
        if (self.lo, self.hi) == (-1, 1):
            return "TERNARY"
        if (self.lo, self.hi) == (0, 1):
            return "BINARY"
        return f"INT{self.bits}" if self.signed else f"UINT{self.bits}"

    def contains(self, other: "IntType") -> bool:
        return self.lo <= other.lo and other.hi <= self.hi


def bits_for_signed(v: int) -> int:
    """Smallest two's complement width holding v."""
    if v >= 0:
        return max(1, v.bit_length() + 1)
    return max(1, (-v - 1).bit_length() + 1)


def int_type_from_name(name: str) -> IntType | None:
    if name == "BIPOLAR":
        return IntType(-1, 1)
    if name == "BINARY":
        return IntType(0, 1)
    if name == "TERNARY":
        return IntType(-1, 1)
    m = re.fullmatch(r"(U?)INT(\d+)", name)
    if not m:
        return None
    b = int(m.group(2))
    return IntType(0, 2**b - 1) if m.group(1) else IntType(-(2 ** (b - 1)), 2 ** (b - 1) - 1)


def set_annotation(model: onnx.ModelProto, tensor: str, dtype: str) -> None:
    for ann in model.graph.quantization_annotation:
        if ann.tensor_name == tensor:
            for kv in ann.quant_parameter_tensor_names:
                if kv.key == KEY:
                    kv.value = dtype
                    return
            kv = ann.quant_parameter_tensor_names.add()
            kv.key, kv.value = KEY, dtype
            return
    ann = model.graph.quantization_annotation.add()
    ann.tensor_name = tensor
    kv = ann.quant_parameter_tensor_names.add()
    kv.key, kv.value = KEY, dtype


def get_annotations(model: onnx.ModelProto) -> dict[str, str]:
    out = {}
    for ann in model.graph.quantization_annotation:
        for kv in ann.quant_parameter_tensor_names:
            if kv.key == KEY:
                out[ann.tensor_name] = kv.value
    return out


def prune_annotations(model: onnx.ModelProto) -> None:
    """Drop annotations of tensors that no longer exist."""
    g = model.graph
    live = {i.name for i in g.input} | {i.name for i in g.initializer}
    for n in g.node:
        live.update(n.output)
    keep = [a for a in g.quantization_annotation if a.tensor_name in live]
    if len(keep) != len(g.quantization_annotation):
        del g.quantization_annotation[:]
        g.quantization_annotation.extend(keep)
