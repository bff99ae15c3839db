"""ONNX ``QuantizeLinear`` / ``DequantizeLinear`` as qpass supports them: 8- and 16-bit integer codes, per tensor
or per axis, no blocked quantisation. Their kernels are standard ONNX (the reference computes them in
``qpass.reference.numerics``); what lives here is which variants qpass accepts and the code types.
"""
from __future__ import annotations

import numpy as np
import onnx

from qpass.ops.base import Attr, OpDef
from qpass.ops.common import ONNX_DOMAIN

#: the integer code types qpass quantises to (onnxruntime's QDQ kernels cover them all)
STORAGE_DTYPES = (np.int8, np.uint8, np.int16, np.uint16)


class QuantizeLinear(OpDef):
    op_type = "QuantizeLinear"
    domains = (ONNX_DOMAIN,)
    attrs = {"axis": Attr(int, 1), "block_size": Attr(int, 0), "output_dtype": Attr(int, 0),
             "saturate": Attr(int, 1)}

    @classmethod
    def shape_stand_in(cls, node):
        """None: ONNX infers the op itself."""
        return None

    @classmethod
    def check(cls, node) -> str | None:
        if cls.attr(node, "block_size"):
            return "blocked quantisation (block_size) is not supported"
        dt = cls.attr(node, "output_dtype")
        if dt and onnx.helper.tensor_dtype_to_np_dtype(dt) not in map(np.dtype, STORAGE_DTYPES):
            return f"output_dtype {onnx.TensorProto.DataType.Name(dt)} is not supported"
        return None

    @classmethod
    def axis(cls, node, ndim: int) -> int:
        """The quantisation axis of an input of rank ``ndim`` (negative axes counted from the end)."""
        return cls.attr(node, "axis") % max(ndim, 1)

    @classmethod
    def code_dtype(cls, node, zero_point) -> np.dtype:
        """The type of the codes: the zero point's, else ``output_dtype``, else uint8."""
        if zero_point is not None:
            return np.asarray(zero_point).dtype
        dt = cls.attr(node, "output_dtype")
        return onnx.helper.tensor_dtype_to_np_dtype(dt) if dt else np.dtype(np.uint8)

    @staticmethod
    def storage_dtype(bits: int, signed: bool) -> type:
        """The narrowest supported code type holding ``bits``-bit integers (8 or 16 bits)."""
        return {(8, True): np.int8, (8, False): np.uint8, (16, True): np.int16,
                (16, False): np.uint16}[(8 if bits <= 8 else 16, signed)]

    @staticmethod
    def code_range(dtype) -> tuple[int, int]:
        """[min, max] of the codes of type ``dtype`` (what QuantizeLinear saturates to)."""
        info = np.iinfo(dtype)
        return int(info.min), int(info.max)


class DequantizeLinear(QuantizeLinear):
    """Same attributes and checks as QuantizeLinear. (Opset 23's ``output_dtype`` of DequantizeLinear names the
    float output type; qpass checks it like QuantizeLinear's and so refuses it, as the reference always did.)"""

    op_type = "DequantizeLinear"
