"""16-bit activation quantizers in a QDQ model (A16W8: onnxruntime runs 16-bit QuantizeLinear / DequantizeLinear from
opset 21 on; its CPU kernels then compute the layers around them in float, between the 16-bit Q/DQ).

``widen(model, tensors)`` gives the activation quantizers (QuantizeLinear -> DequantizeLinear pairs, named by a
DequantizeLinear output) of ``tensors`` a 16-bit grid over exactly the same range: uint8 (scale s, zero point z)
becomes uint16 (s / 257, 257 z), int8 becomes int16 (s / 257, 257 z + 128) -- 65535 = 257 * 255, so the range ends
stay on the grid and a fused Relu's zero stays exact. The model is moved to opset 21 first (``upgrade_opset``); a
model the ONNX version converter cannot move gets ``None`` (16-bit activations unavailable).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.graph import consumers, main_opset, producers
from .normalize import upgrade_opset

#: the first opset whose QuantizeLinear / DequantizeLinear take 16-bit codes
OPSET_16BIT = 21
#: 8-bit code type -> (16-bit code type, zero point offset): the 16-bit grid of the same range
WIDER = {np.dtype(np.uint8): (np.uint16, 0), np.dtype(np.int8): (np.int16, 128)}


def at_16bit_opset(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` at an opset with 16-bit Q/DQ (converted when older), or None when the converter cannot."""
    if main_opset(model) >= OPSET_16BIT:
        return model
    out = upgrade_opset(model, OPSET_16BIT, [])
    return out if main_opset(out) >= OPSET_16BIT else None


def widen(model: onnx.ModelProto, tensors: set[str]) -> onnx.ModelProto | None:
    """A copy of ``model`` (a QDQ model) with the activation quantizers of ``tensors`` on 16 bits (see the module
    docstring); None when the model cannot be moved to opset 21."""
    base = at_16bit_opset(model)
    if base is None:
        return None
    m = onnx.ModelProto()
    m.CopyFrom(base)
    inits = {i.name: i for i in m.graph.initializer}
    prod, readers = producers(m.graph), consumers(m.graph)
    qs = {}
    for n in m.graph.node:
        q = prod.get(n.input[0]) if n.op_type == "DequantizeLinear" and n.output[0] in tensors else None
        if q is not None and q.op_type == "QuantizeLinear" and len(q.input) >= 3 and q.input[1] in inits:
            qs[q.name] = q
    types = {}
    for q in qs.values():
        scale = numpy_helper.to_array(inits[q.input[1]])
        zp = numpy_helper.to_array(inits[q.input[2]])
        if zp.dtype not in WIDER or np.ndim(scale) != 0:
            continue
        wide, offset = WIDER[zp.dtype]
        s_name, z_name = q.input[1] + "_16bit", q.input[2] + "_16bit"
        if s_name not in inits:
            m.graph.initializer.extend([
                numpy_helper.from_array((scale / np.float32(257)).astype(np.float32), s_name),
                numpy_helper.from_array((zp.astype(np.int64) * 257 + offset).astype(wide), z_name)])
            inits[s_name] = inits[z_name] = None
        for node in [q] + [r for r in readers.get(q.output[0], []) if r.op_type == "DequantizeLinear"]:
            node.input[1], node.input[2] = s_name, z_name
        types[q.output[0]] = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(wide))
    for vi in list(m.graph.value_info) + list(m.graph.output):
        if vi.name in types:
            vi.type.tensor_type.elem_type = types[vi.name]
    return m
