"""Weight-only MatMul layers with <= 4-bit weights as com.microsoft ``MatMulNBits`` (lower_ort's step before INT2).

Why, and when (onnxruntime 1.32, AMD EPYC avx2 avx512f avx512_vnni; bench/bitwidth_nbits.py):

- A MatMul whose input is a dequantised activation and whose weight is INT4 -> Cast(INT8) -> DequantizeLinear is
  fused by onnxruntime into the integer QLinearMatMul: exact, and 1.6-4.1x faster than ``MatMulNBits`` at its
  exact (float32) accuracy level 0 on every shape measured (M 1-128, K / N 384-4096). It stays as it is.
- A MatMul whose input is float (weight-only quantisation) with that weight is rewritten by onnxruntime itself, at
  session load, into ``MatMulNBits(bits=8, accuracy_level=4)``, which quantises the activations per block to int8 on
  the fly: the file no longer computes the model (max |error| 0.3 on a 384 x 1536 layer against the definition).
  Lowered here to ``MatMulNBits(bits=4, accuracy_level=0)`` instead: the same 4-bit codes, computed in float32 with
  the dequantised weights, which is the definition (bit for bit as ``qpass.reference.ops_nbits`` computes it,
  tested), 4-bit storage plus one float32 scale per column and block, and faster than a float32 MatMul where the
  weights dominate (M = 1: 1.9-4.9x at 2048-4096 square), slower on small layers and at M >= 8 (up to 1.8x).

The rule is structural, never a measured time: the MatMul's input not produced by a DequantizeLinear, its weight a
2-D INT4 / INT2 constant read through Cast(INT8) -> DequantizeLinear with zero point 0 and one scale per tensor or
per column. Codes ``c`` in [-8, 7] are stored as ``c + 8`` with MatMulNBits' default zero point 8.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qpass.ir.graph import all_nodes

MS_DOMAIN = "com.microsoft"
ONNX_DOMAINS = ("", "ai.onnx")
PACKED_TYPES = (onnx.TensorProto.INT4, onnx.TensorProto.INT2)


def block_size(k: int) -> int:
    """128 where K holds a block of it (one scale per column and block: fewer blocks, smaller file), else 32 (the
    smallest block MLAS's AVX512 float kernel for M = 1 takes)."""
    return 128 if k >= 128 else 32


def _attr(node, name, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _weight_chain(mm, producer, inits, readers):
    """(codes [K, N] int8, scale [N] float32, nodes to drop) when input 1 of ``mm`` is a packed constant read only
    through Cast(INT8) -> DequantizeLinear (zero point 0, per tensor or per column), else None."""
    dq = producer.get(mm.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.domain not in ONNX_DOMAINS or len(dq.input) < 2:
        return None
    cast = producer.get(dq.input[0])
    if cast is None or cast.op_type != "Cast" or _attr(cast, "to") != onnx.TensorProto.INT8:
        return None
    t = inits.get(cast.input[0])
    s = inits.get(dq.input[1])
    z = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
    if t is None or t.data_type not in PACKED_TYPES or len(t.dims) != 2 or s is None:
        return None
    if any(len(readers.get(x, ())) != 1 for x in (cast.output[0], dq.output[0], cast.input[0])):
        return None
    k, n = t.dims
    scale = numpy_helper.to_array(s).astype(np.float32).reshape(-1)
    axis = _attr(dq, "axis", 1)
    if not (scale.size == 1 or (scale.size == n and axis in (1, -1))) or np.any(scale <= 0):
        return None
    if z is not None and np.any(numpy_helper.to_array(z) != 0):
        return None
    codes = numpy_helper.to_array(t).astype(np.int8)
    return codes, np.broadcast_to(scale, (n,)).astype(np.float32), [cast, dq]


def _nbits_inputs(name: str, codes: np.ndarray, scale: np.ndarray):
    """(B uint8 [N, blocks, bs / 2], scales float32 [N * blocks], attributes) of MatMulNBits."""
    k, n = codes.shape
    bs = block_size(k)
    nb = -(-k // bs)
    q = np.full((n, nb * bs), 8, np.uint8)
    q[:, :k] = (codes.T.astype(np.int16) + 8).astype(np.uint8)
    q = q.reshape(n, nb, bs)
    packed = (q[:, :, 0::2] | (q[:, :, 1::2] << 4)).astype(np.uint8)
    return (numpy_helper.from_array(packed, f"{name}_nbits"),
            numpy_helper.from_array(np.repeat(scale, nb).astype(np.float32), f"{name}_nbits_scale"),
            {"K": int(k), "N": int(n), "bits": 4, "block_size": bs, "accuracy_level": 0})


def lower_matmul_nbits(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` (lowered) with every weight-only MatMul of a packed <= 4-bit weight as MatMulNBits; returns
    (model, layers rewritten). ``model`` itself when there is none."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list] = {}
    for n in g.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    inits = {t.name: t for t in g.initializer}
    todo = []
    for mm in g.node:
        if mm.op_type != "MatMul" or mm.domain not in ONNX_DOMAINS or len(mm.input) != 2:
            continue
        a = producer.get(mm.input[0])
        if a is not None and a.op_type == "DequantizeLinear":
            continue  # fused into the integer QLinearMatMul: exact and faster
        chain = _weight_chain(mm, producer, inits, readers)
        if chain is not None:
            todo.append((mm, chain))
    if not todo:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    drop_nodes, drop_inits, new = set(), set(), {}
    for mm, (codes, scale, chain) in todo:
        b, s, attrs = _nbits_inputs(mm.output[0], codes, scale)
        new[mm.name + "\0" + mm.output[0]] = helper.make_node(
            "MatMulNBits", [mm.input[0], b.name, s.name], list(mm.output), name=(mm.name or mm.output[0]) + "_nbits",
            domain=MS_DOMAIN, **attrs), [b, s]
        drop_nodes.update(id_of(n) for n in chain)
        drop_inits.update(x for n in chain for x in n.input)
    nodes = []
    for n in out.graph.node:
        key = n.name + "\0" + (n.output[0] if n.output else "")
        if n.op_type == "MatMul" and key in new:
            node, extra = new[key]
            nodes.append(node)
            out.graph.initializer.extend(extra)
        elif id_of(n) not in drop_nodes:
            nodes.append(n)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    used = {x for n in all_nodes(out.graph) for x in n.input}
    keep = [t for t in out.graph.initializer if t.name not in drop_inits or t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    if not any(o.domain == MS_DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return out, len(todo)


def id_of(node: onnx.NodeProto) -> tuple:
    return (node.op_type, tuple(node.input), tuple(node.output))
