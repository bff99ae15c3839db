"""Float weights for MatMul / Gemm layers whose activation is not 8-bit quantized (float or 16-bit).

onnxruntime 1.32 rewrites, at session load, every ``DequantizeLinear(constant 2/4/8-bit weight) -> MatMul / Gemm``
whose other input is not an 8-bit quantized activation into ``com.microsoft::MatMulNBits(accuracy_level=4)``, which
quantizes the activation per block to int8 on the fly (checked: float input, 16-bit Q/DQ input, MatMul and Gemm).
The file then no longer computes the model it describes (a 16-bit activation is computed on 8 bits; the reference
interpreter and onnxruntime differ by up to 0.6 on paraphrase-minilm) -- so such a layer gets its weight as a float32
initializer holding exactly the DequantizeLinear values ``(q - zero_point) * scale`` (what the layer computed),
which onnxruntime runs in its float kernel. 8-bit-activation layers keep the integer form (QLinearMatMul / QGemm);
blocked (``block_size``) weights are left as they are.
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper

from qpass.ir.graph import drop_unread, producers
from qpass.reference.numerics import dequantize_linear

#: the layers onnxruntime's DequantizeLinear -> MatMulNBits rewrite matches
LAYERS = ("MatMul", "Gemm")
#: code types of an 8-bit quantized activation (a layer reading one is fused into an integer kernel instead)
EIGHT_BIT = (onnx.TensorProto.UINT8, onnx.TensorProto.INT8)


def _constant_dq(node: onnx.NodeProto | None, inits: dict) -> bool:
    return (node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")
            and all(x in inits for x in node.input if x)
            and not any(a.name == "block_size" and a.i for a in node.attribute))


def code_bytes(n: onnx.NodeProto, inits: dict) -> int:
    """Bytes per code of a QuantizeLinear / DequantizeLinear (by its zero point's type; none: uint8)."""
    zp = inits.get(n.input[2]) if len(n.input) > 2 else None
    return 1 if zp is None or zp.data_type in EIGHT_BIT else 2


def _eight_bit_activation(name: str, prod: dict, inits: dict) -> bool:
    """The activation is a DequantizeLinear output with 8-bit codes."""
    dq = prod.get(name)
    return dq is not None and dq.op_type == "DequantizeLinear" and code_bytes(dq, inits) == 1


def float_copy(m: onnx.ModelProto, dq: onnx.NodeProto, inits: dict) -> str:
    """The name of a float32 initializer (``<output>_float``, added to ``m`` and ``inits`` once) holding the values
    of the constant DequantizeLinear ``dq``."""
    name = dq.output[0] + "_float"
    if name not in inits:
        q, scale, zp = (numpy_helper.to_array(inits[x]) if x else None for x in (list(dq.input) + ["", ""])[:3])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        inits[name] = numpy_helper.from_array(dequantize_linear(q, scale, zp, axis), name)
        m.graph.initializer.append(inits[name])
    return name


def float_weights_where_unfused(m: onnx.ModelProto) -> int:
    """Give ``m`` (in place) float32 weights on every MatMul / Gemm whose weight is a constant DequantizeLinear
    and whose activation is not 8-bit quantized; returns how many layers changed."""
    inits = {i.name: i for i in m.graph.initializer}
    prod = producers(m.graph)
    changed = 0
    for n in m.graph.node:
        if n.op_type not in LAYERS or n.domain not in ("", "ai.onnx") or len(n.input) < 2:
            continue
        dq = prod.get(n.input[1])
        if not _constant_dq(dq, inits) or _eight_bit_activation(n.input[0], prod, inits):
            continue
        n.input[1] = float_copy(m, dq, inits)
        changed += 1
    if changed:
        drop_unread(m, ("DequantizeLinear",))
    return changed
