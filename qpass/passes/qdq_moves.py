"""Moves of activation quantizers in a QDQ model: to 16 bits (``widen``), to float (``bypass``), and the float
value a quantizer reads (``float_sources``, which ``choose_dynamic`` quantizes at run time instead).

16-bit activation quantizers in a QDQ model (A16W8: onnxruntime runs 16-bit QuantizeLinear / DequantizeLinear from
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

from qpass.ir.graph import consumers, main_opset, producers, topo_sort_nodes
from .normalize import upgrade_opset

#: activations quantize_qdq folds into their producer's output quantizer (``plan``: Relu, Clip(0, m))
FUSED = ("Relu", "Clip")
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


def float_sources(m: onnx.ModelProto, tensors: set[str], float_model: onnx.ModelProto | None) -> dict[str, str]:
    """{DQ output of an activation pair in ``tensors``: the float tensor its QuantizeLinear reads}, adding to ``m``
    (in place) a copy of ``float_model``'s Relu / Clip where quantize_qdq had fused it into the quantizer (the
    quantizer's range did its clipping)."""
    prod, readers = producers(m.graph), consumers(m.graph)
    float_prod = producers(float_model.graph) if float_model is not None else {}
    float_inits = {i.name: i for i in float_model.graph.initializer} if float_model is not None else {}
    have_inits = {i.name for i in m.graph.initializer}
    have_nodes = {n.name for n in m.graph.node}
    out = {}
    for n in list(m.graph.node):
        q = prod.get(n.input[0]) if n.op_type == "DequantizeLinear" and n.output[0] in tensors else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        # the float model's name for the value: this DQ's output, or that of another DQ of the same quantizer
        act = next((float_prod[d.output[0]] for d in [n] + readers.get(q.output[0], [])
                    if d.op_type == "DequantizeLinear" and d.output[0] in float_prod), None)
        before = prod.get(src)
        if act is not None and act.op_type in FUSED and (before is None or before.op_type != act.op_type):
            node = onnx.NodeProto()
            node.CopyFrom(act)
            node.input[0], node.output[0] = src, src + "_activation"
            node.name = act.name + "_float"
            if node.name not in have_nodes:
                m.graph.node.append(node)
                have_nodes.add(node.name)
            for x in node.input[1:]:
                if x in float_inits and x not in have_inits:
                    m.graph.initializer.append(float_inits[x])
                    have_inits.add(x)
            src = node.output[0]
        out[n.output[0]] = src
    return out


def bypass(model: onnx.ModelProto, tensors: set[str], float_model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A copy of a QDQ model with the activation Q -> DQ pairs of ``tensors`` (DQ output names) removed: their
    readers read the float value (``float_sources``)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    readers = consumers(m.graph)
    rename = float_sources(m, tensors, float_model)
    prod = producers(m.graph)
    drop = []
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] in rename:
            drop.append(n)
            q = prod[n.input[0]]
            if len(readers.get(q.output[0], [])) == 1:
                drop.append(q)
    for n in m.graph.node:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    for n in drop:
        m.graph.node.remove(n)
    outs = {o.name for o in m.graph.output}
    for name, float_name in rename.items():  # a graph output keeps its name: the float producer writes it
        if name in outs:
            for n in m.graph.node:
                n.output[:] = [name if o == float_name else o for o in n.output]
                n.input[:] = [name if x == float_name else x for x in n.input]
    topo_sort_nodes(m.graph)
    return m
