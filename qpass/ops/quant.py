"""QONNX ``Quant`` (also named ``IntQuant``): uniform integer quantisation, output dequantised to float.

    Quant(x, scale, zeropt, bitwidth; signed=1, narrow=1, rounding_mode="ROUND")
    y = x / scale + zeropt; y = clip(y, min_int, max_int); y = round_mode(y); out = (y - zeropt) * scale

(qonnx: ``signed`` and ``narrow`` are required attributes with default 1; a 1-bit signed Quant is the sign function
``where(y >= 0, 1, -1)``.) Float32 arithmetic in the order written.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from qpass.errors import UnsupportedOpError
from qpass.ops.base import Attr, F32, OpDef, const_value, f32, scalar
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN, ROUNDING_MODES, int_bounds
from qpass.ops.qdq import QuantizeLinear
from qpass.ops.rounding import lower_rounding, round_array

#: the opset whose QuantizeLinear / DequantizeLinear / Cast read INT4 and UINT4 (packed 4-bit storage)
PACKED_OPSET = 21


class Quant(OpDef):
    op_type = "Quant"
    quantizer = True
    domains = (QONNX_DOMAIN, QPASS_DOMAIN)
    attrs = {"signed": Attr(int, 1), "narrow": Attr(int, 1),
             "rounding_mode": Attr(str, "ROUND", ROUNDING_MODES)}

    @classmethod
    def grid(cls, node, bits: int) -> tuple[int, int]:
        """[min_int, max_int] of the node's integer grid at ``bits``."""
        return int_bounds(int(bits), bool(cls.attr(node, "signed")), bool(cls.attr(node, "narrow")))

    @classmethod
    def is_sign(cls, node, bits) -> bool:
        """qonnx's special case: a 1-bit signed Quant is a sign function."""
        return scalar(bits) == 1 and bool(cls.attr(node, "signed"))

    @classmethod
    def execute(cls, node, x, scale, zeropt, bitwidth):
        """y = clamp(x/scale + zeropt, min_int, max_int), rounded, then (y - zeropt) * scale."""
        x, scale, zeropt = f32(x), f32(scale), f32(zeropt)
        y = x / scale + zeropt
        if cls.is_sign(node, bitwidth):
            y = np.where(y >= 0, F32(1), F32(-1))
        else:
            lo, hi = cls.grid(node, scalar(bitwidth))
            y = np.clip(y, F32(lo), F32(hi))
            y = round_array(y, cls.attr(node, "rounding_mode"))
        return ((y - zeropt) * scale).astype(F32)

    @classmethod
    def saturated(cls, node, x, scale, zeropt, bitwidth) -> tuple[int, int] | None:
        """(elements, elements outside the integer grid before rounding); None for the sign function."""
        if cls.is_sign(node, bitwidth):
            return None
        y = np.asarray(x).astype(F32) / np.asarray(scale).astype(F32) + np.asarray(zeropt).astype(F32)
        lo, hi = cls.grid(node, int(scalar(bitwidth)))
        return int(y.size), int(np.count_nonzero((y < lo) | (y > hi)))

    @classmethod
    def params(cls, node, consts: list):
        """(scale f32, zeropt f64, bits, signed, narrow, rounding mode) when scale, zeropt and bit width are
        constants, else None."""
        if len(consts) < 4 or any(c is None for c in consts[1:4]):
            return None
        s, z, b = consts[1:4]
        return (np.asarray(s).astype(np.float32), np.asarray(z).astype(np.float64), int(scalar(b)),
                bool(cls.attr(node, "signed")), bool(cls.attr(node, "narrow")), cls.attr(node, "rounding_mode"))

    @classmethod
    def is_codes(cls, node, consts: list) -> bool:
        """The output is integer codes: scale 1 and one integral zero point."""
        p = cls.params(node, consts)
        return p is not None and bool(np.all(p[0] == 1)) and bool(np.all(p[1] == np.round(p[1]))) \
            and np.size(p[1]) == 1

    @classmethod
    def int_range(cls, node, consts: list) -> tuple[float, float] | None:
        if not cls.is_codes(node, consts):
            return None
        bits, z = cls.params(node, consts)[2], scalar(consts[2])
        lo, hi = (-1, 1) if cls.is_sign(node, bits) else cls.grid(node, bits)
        return lo - z, hi - z

    @classmethod
    def lowering(cls, node, opset: int) -> str:
        """How ``lower`` rewrites the node at ``opset``: "packed" (a constant of <= 4 bits stored as INT4 codes,
        opset >= 21), "constant" (stored 8-bit codes), "wide" (a constant of 9-32 bits, e.g. a bias, stored as
        int16 / int32 codes), "qdq" (QuantizeLinear -> (Clip) -> DequantizeLinear) or "float" (emulation)."""
        x, s_t, z_t, bw_t = node.inputs[:4]
        scale, zp, bits = const_value(s_t), const_value(z_t), const_value(bw_t)
        if bits is None:
            raise UnsupportedOpError(f"Quant node {node.name!r} has a run-time bit width; qpass needs a constant")
        bits = int(scalar(bits))
        signed, mode = bool(cls.attr(node, "signed")), cls.attr(node, "rounding_mode")
        lo, hi = cls.grid(node, bits)
        native = (scale is not None and zp is not None and mode in ("ROUND", "HALF_EVEN")
                  and np.all(zp == np.round(zp)) and np.all(np.mod(zp, 2) == 0)  # round(v+z) = round(v)+z: even z
                  and np.all(scale > 0) and np.unique(zp).size == 1
                  and bits > 1 and (bits <= 8 or (opset >= 21 and (lo, hi) == _full_16_bit(signed))))
        axis = _per_axis(scale, len(x.shape) if x.shape is not None else None) if native else "no"
        if native and axis != "no" and isinstance(x, gs.Constant) and signed and bits <= 8 and np.all(zp == 0):
            return "packed" if bits <= 4 and opset >= PACKED_OPSET else "constant"
        if native and axis != "no":
            return "qdq"
        wide = (isinstance(x, gs.Constant) and scale is not None and zp is not None and np.all(zp == 0)
                and mode in ("ROUND", "HALF_EVEN") and signed and 8 < bits <= 32 and np.all(scale > 0))
        if wide and _per_axis(scale, len(x.shape)) != "no":
            return "wide"
        return "float"

    @classmethod
    def lower(cls, b, node: gs.Node, opset: int) -> None:
        """QuantizeLinear -> (Clip) -> DequantizeLinear when onnxruntime's integer kernels compute the same
        values (ROUND, even integral zero point, positive per-tensor or per-axis scale, 2-8 bits, or the full
        16-bit range at opset >= 21: onnxruntime has no 16-bit Clip); a constant input becomes stored codes +
        DequantizeLinear (packed INT4 codes -> Cast(INT8) at <= 4 bits and opset >= 21, which onnxruntime folds
        at load into the int8 layer it fuses); otherwise float32 emulation."""
        how = cls.lowering(node, opset)
        scale, zp = const_value(node.inputs[1]), const_value(node.inputs[2])
        bits = int(scalar(const_value(node.inputs[3])))
        signed, mode = bool(cls.attr(node, "signed")), cls.attr(node, "rounding_mode")
        lo, hi = cls.grid(node, bits)
        if how == "float":
            _lower_float(b, node, scale, zp, lo, hi, cls.is_sign(node, bits), mode)
            return
        x = node.inputs[0]
        axis = _per_axis(scale, len(x.shape) if x.shape is not None else None)
        if how == "qdq":
            _lower_qdq(b, node, scale, zp, axis, bits, signed, lo, hi)
        elif how == "wide":
            _lower_wide_constant(b, node, scale, axis, lo, hi, np.int16 if bits <= 16 and opset >= 21 else np.int32)
        else:
            _lower_constant(b, node, scale, axis, lo, hi, how == "packed")

    @classmethod
    def packed_storage(cls, node) -> bool:
        """Whether the lowering stores the node's codes packed (INT4) once the model is at opset 21."""
        return cls.lowering(node, PACKED_OPSET) == "packed"


def _full_16_bit(signed: bool) -> tuple[int, int]:
    return QuantizeLinear.code_range(QuantizeLinear.storage_dtype(16, signed))


def _per_axis(scale: np.ndarray, x_rank: int | None) -> int | None | str:
    """None for a scalar scale, the axis for a scale varying along one axis, 'no' otherwise."""
    if scale.size == 1:
        return None
    nontrivial = [i for i, d in enumerate(scale.shape) if d != 1]
    if len(nontrivial) != 1 or x_rank is None:
        return "no"
    return x_rank - scale.ndim + nontrivial[0]


def _lower_constant(b, node, scale, axis, lo, hi, packed: bool) -> None:
    """A quantised constant (weights). Packed: INT4 codes -> Cast(INT8) -> DequantizeLinear (int8 weights of at
    most 4 bits cannot saturate onnxruntime's int16 pair sums). Else its codes stored as uint8 + 128, the encoding
    onnxruntime's x86 integer kernels compute exactly (int8 weights saturate int16 pair sums on AVX2; see
    quantize_qdq)."""
    v = np.asarray(node.inputs[0].values, np.float32) / scale.astype(np.float32)
    codes = np.round(np.clip(v, np.float32(lo), np.float32(hi))).astype(np.int16)
    flat = scale.reshape(-1).astype(np.float32)
    attrs = {"axis": int(axis)} if axis is not None else {}
    if packed:
        stored = b.op("Cast", [_int4_constant(b, codes)], {"to": onnx.TensorProto.INT8}, dtype=np.int8)
        z_c = np.zeros(flat.shape, np.int8) if axis is not None else np.int8(0)
        zdt = np.int8
    else:
        stored = b.const((codes + 128).astype(np.uint8), np.uint8)
        z_c = np.full(flat.shape, 128, np.uint8) if axis is not None else np.uint8(128)
        zdt = np.uint8
    b.op("DequantizeLinear", [stored, b.const(flat if axis is not None else flat[0]), b.const(z_c, zdt)],
         attrs, out=node.outputs[0])


def _lower_wide_constant(b, node, scale, axis, lo, hi, dtype) -> None:
    """A constant of more than 8 bits (zero point 0) as its integer codes + DequantizeLinear: the same float32
    values as the definition (``float(int(y)) == y`` for every float32 code ``y`` the clip allows; the one float32
    above ``hi``, 2**(bits-1), is stored as ``hi``, which converts back to it), and a bias onnxruntime fuses into the
    integer layer."""
    v = np.asarray(node.inputs[0].values, np.float32) / scale.astype(np.float32)
    y = np.round(np.clip(v, np.float32(lo), np.float32(hi)))
    codes = np.clip(y.astype(np.int64), lo, hi).astype(dtype)
    flat = scale.reshape(-1).astype(np.float32)
    attrs = {"axis": int(axis)} if axis is not None else {}
    z_c = np.zeros(flat.shape, dtype) if axis is not None else dtype(0)
    b.op("DequantizeLinear", [b.const(codes, dtype), b.const(flat if axis is not None else flat[0]),
                              b.const(z_c, dtype)], attrs, out=node.outputs[0])


def _int4_constant(b, codes: np.ndarray) -> gs.Constant:
    """An INT4 initializer holding ``codes`` (in [-8, 7]), two per byte, low nibble first (the ONNX layout)."""
    nib = codes.reshape(-1).astype(np.uint8) & np.uint8(0xF)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    name = b.names(f"{b.base}_int4")
    proto = onnx.helper.make_tensor(name, onnx.TensorProto.INT4, list(codes.shape),
                                    (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes(), raw=True)
    return gs.Constant(name, LazyValues(proto))


def _lower_qdq(b, node, scale, zp, axis, bits, signed, lo, hi) -> None:
    npdt = QuantizeLinear.storage_dtype(bits, signed)
    flat = scale.reshape(-1).astype(np.float32)
    s_c = b.const(flat if axis is not None else flat[0])
    z0 = int(zp.reshape(-1)[0])
    z_c = b.const(np.full(flat.shape, z0) if axis is not None else z0, npdt)
    attrs = {"axis": int(axis)} if axis is not None else {}
    q = b.op("QuantizeLinear", [node.inputs[0], s_c, z_c], attrs, dtype=npdt)
    if (lo, hi) != QuantizeLinear.code_range(npdt):
        q = b.op("Clip", [q, b.const(lo, npdt), b.const(hi, npdt)], dtype=npdt)
    b.op("DequantizeLinear", [q, s_c, z_c], attrs, out=node.outputs[0])


def _lower_float(b, node, scale, zp, lo, hi, sign: bool, mode: str) -> None:
    x, s_t, z_t = node.inputs[:3]
    s_f = s_t if scale is None else b.const(scale.astype(np.float32))
    z_f = z_t if zp is None else b.const(zp.astype(np.float32))
    y = b.op("Add", [b.op("Div", [x, s_f]), z_f])
    if sign:
        cond = b.op("GreaterOrEqual", [y, b.const(0.0)], dtype=np.bool_)
        y = b.op("Where", [cond, b.const(1.0), b.const(-1.0)])
    else:
        y = b.op("Clip", [y, b.const(lo), b.const(hi)])
        y = lower_rounding(b, y, mode)
    b.op("Mul", [b.op("Sub", [y, z_f]), s_f], out=node.outputs[0])
