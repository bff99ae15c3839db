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

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.graph import consumers, main_opset, producers, topo_sort_nodes
from .normalize import upgrade_opset
from .weight_only import code_bytes, float_weights_where_unfused

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
    float_weights_where_unfused(m)  # a 16-bit MatMul / Gemm: onnxruntime would compute it on 8 bits
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
    float_weights_where_unfused(m)  # a float MatMul / Gemm: onnxruntime would quantize its input to int8
    return m


#: the graph cost of a QDQ model as onnxruntime's CPU kernels run it, in float-MAC equivalents per sample: an 8-bit
#: MAC of a MatMul / Gemm / ConvTranspose costs a quarter of a float one (avx512_vnni / avx2 dot products: 64 int8
#: against 16 float lanes per instruction), a Conv what ``CONV_COSTS`` says, every byte a standalone kernel reads or
#: writes one, every kernel a fixed dispatch overhead
INT8_MAC, FLOAT_MAC, BYTE, KERNEL = 0.25, 1.0, 1.0, 2.0e4
MATRIX_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Conv cost per kind and precision (``qdq_moves_costs.json``, fitted by bench/ptq13_conv_costs.py to onnxruntime
#: 1.32's single-layer times at 1 thread over every Conv of the packaged zoo; avx2 avx512f avx512_vnni):
#: mac * M*N*K + row * M*N + col * M*K (x groups) + tap * M*T (T > 1) + in * X, with M output positions, N output
#: channels and K = input channels x taps T per group, X input elements. Integer kernels pay per output position
#: and tap (NHWC im2col): a first layer on 3 channels runs 1.4-2.8x slower on int8 than float, a 64-channel 3x3
#: 0.3-0.4x
CONV_COSTS = Path(__file__).with_name("qdq_moves_costs.json")


#: pooling on 8-bit codes that onnxruntime runs in NHWC only where an integer Conv before it put the tensor there;
#: elsewhere (after a float Conv) its generic NCHW uint8 kernel: ``u8_nchw_maxpool`` per input element (the
#: table's; mtcnn-rnet / onet with their first Conv in float: 1.2-1.4x the int8 model's latency)
NCHW_SLOW_U8 = ("MaxPool",)


def conv_costs() -> dict:
    """``CONV_COSTS``' table: {"kinds": {kind: {"int8" | "float": {"mac", "row", "col", "tap", "in"}}},
    "u8_nchw_maxpool": cost per input element}."""
    return json.loads(CONV_COSTS.read_text())


def tensor_dims(*models: onnx.ModelProto, inputs: dict | None = None) -> dict[str, list[int]]:
    """Per-sample dims (unknown and symbolic dims 1) of every tensor of ``models`` that shape inference types;
    ``inputs``: {graph input: one sample's shape}, to resolve symbolic dims (an image's height and width)."""
    from qpass.ir.graph import shapes
    from qpass.ir.light_model import light_copy

    out: dict[str, list[int]] = {}
    for model in models:
        model = light_copy(model)[0]  # the big weights' shapes without their bytes (paraphrase-minilm-l3: 3x faster)
        if inputs:
            model = with_input_dims(model, inputs)
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # noqa: BLE001 - an unshaped graph: what its value_info says
            pass
        for k, v in shapes(model).items():
            out.setdefault(k, [d if isinstance(d, int) and d > 0 else 1 for d in v])
    return out


def per_sample_cost(model: onnx.ModelProto, samples) -> float:
    """``graph_cost`` of one run of ``model`` on one of ``samples`` (a SampleSet: its shapes resolve symbolic
    dims)."""
    return graph_cost(model, tensor_dims(model, inputs=sample_shapes(samples)))


def sample_shapes(samples) -> dict[str, tuple]:
    """{graph input: the shape of one sample} of a SampleSet."""
    return {k: np.shape(v)[1:] for k, v in samples.arrays.items()}


def with_input_dims(model: onnx.ModelProto, inputs: dict) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for vi in m.graph.input:
        shape = inputs.get(vi.name)
        if shape is not None and len(shape) == len(vi.type.tensor_type.shape.dim):
            for d, v in zip(vi.type.tensor_type.shape.dim, shape):
                d.dim_value = int(v)
    return m


def integer_layers(model: onnx.ModelProto) -> set[tuple]:
    """The output names (a tuple per node) of the nodes onnxruntime runs on integer kernels: every activation input
    an 8-bit DequantizeLinear output and the output read only by 8-bit QuantizeLinear nodes (a MatMul / Gemm may
    write float: ``FLOAT_OUT``)."""
    inits = {i.name: i for i in model.graph.initializer}
    prod, readers = producers(model.graph), consumers(model.graph)

    def eight_bit(x: str, op: str) -> bool:
        n = prod.get(x)
        return n is not None and n.op_type == op and code_bytes(n, inits) == 1

    out = set()
    for n in model.graph.node:
        acts = [x for x in n.input if x and x not in inits and not (x in prod and prod[x].op_type ==
                                                                    "DequantizeLinear" and prod[x].input[0] in inits)]
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not acts or \
                not all(eight_bit(x, "DequantizeLinear") for x in acts):
            continue
        outs = [r for o in n.output for r in readers.get(o, [])]
        if n.op_type in FLOAT_OUT or (outs and all(r.op_type == "QuantizeLinear" and code_bytes(r, inits) == 1
                                                   for r in outs)):
            out.add(tuple(n.output))
    return out


def graph_cost(model: onnx.ModelProto, dims: dict[str, list[int]]) -> float:
    """Deterministic latency estimate of a QDQ ``model`` (``INT8_MAC`` ...): the ``integer_layers`` run on integer
    kernels that absorb their Q/DQ; every other activation Q/DQ is a kernel of its own moving its elements; every
    other layer runs in float. ``dims``: ``tensor_dims`` (a name it lacks: the name without the ``_activation``
    suffix ``float_sources`` adds, else 1 element)."""
    inits = {i.name: i for i in model.graph.initializer}
    prod, readers = producers(model.graph), consumers(model.graph)
    ints = integer_layers(model)
    table = conv_costs()

    def elems(name: str) -> float:
        return float(np.prod(dims.get(name, dims.get(name.removesuffix("_activation"), [1]))))

    total = 0.0
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" or n.op_type == "QuantizeLinear":
            if n.input[0] in inits:
                if any(tuple(r.output) not in ints for r in readers.get(n.output[0], [])):
                    total += KERNEL + elems(n.output[0]) * 5 * BYTE  # onnxruntime does not fold it: every run
                continue  # a weight's, read by the integer kernel
            near = readers.get(n.output[0], []) if n.op_type == "DequantizeLinear" else \
                [prod[n.input[0]]] if n.input[0] in prod else []
            if not (near and all(tuple(r.output) in ints for r in near)):
                total += KERNEL + elems(n.output[0]) * (4 + code_bytes(n, inits)) * BYTE
        elif n.op_type == "Conv" and len(n.input) > 1 and len(dims.get(n.input[1]) or []) >= 3:
            total += KERNEL + conv_cost(n, dims, elems, table["kinds"], tuple(n.output) in ints)
        elif n.op_type in NCHW_SLOW_U8 and tuple(n.output) in ints and not _after_integer_conv(n, prod, ints):
            total += KERNEL + elems(n.input[0]) * table["u8_nchw_maxpool"]
        elif n.op_type in MATRIX_OPS and len(n.input) > 1:
            total += KERNEL + _macs(n, dims, elems) * (INT8_MAC if tuple(n.output) in ints else FLOAT_MAC)
        elif n.op_type in RECURRENT and len(n.input) > 2:
            total += KERNEL + lstm_macs(*(dims.get(x) or [1] for x in n.input[1:3]), dims.get(n.input[0]) or [1]) \
                * (INT8_MAC if n.op_type == "DynamicQuantizeLSTM" else FLOAT_MAC)
        else:
            total += KERNEL + sum(elems(o) for o in n.output if o) * (2 if tuple(n.output) in ints else 8) * BYTE
    return total


#: layers onnxruntime runs on integers with a float output (QGemm, MatMulIntegerToFloat)
FLOAT_OUT = ("MatMul", "Gemm")


#: recurrent layers costed by their multiply-adds: onnxruntime's float LSTM and its integer DynamicQuantizeLSTM
RECURRENT = ("LSTM", "DynamicQuantizeLSTM")


def lstm_macs(w_dims: list[int], r_dims: list[int], x_dims: list[int]) -> float:
    """Multiply-adds of one LSTM call: every step's input and recurrent products (W [D, 4H, I] or [D, I, 4H], R
    likewise with H; X [T, N, I] per sample)."""
    def size(dims) -> float:
        return float(np.prod([max(int(d), 1) for d in dims]))

    return size(x_dims) / max(int(x_dims[-1]), 1) * (size(w_dims) + size(r_dims))


def _macs(n, dims: dict, elems) -> float:
    w = dims.get(n.input[1]) or [1]
    if n.op_type == "Conv":
        return elems(n.output[0]) / max(w[0], 1) * float(np.prod(w))
    if n.op_type == "ConvTranspose":
        return elems(n.input[0]) / max(w[0], 1) * float(np.prod(w))
    a = dims.get(n.input[0]) or [1]
    trans_a = any(at.name == "transA" and at.i for at in n.attribute)
    k = a[0] if n.op_type == "Gemm" and trans_a else a[-1]
    return elems(n.output[0]) * float(k)


def conv_kind(group: int, cin_g: int, taps: int) -> str:
    """``CONV_COSTS``' kind of a Conv: "depthwise" (one input channel per group, groups > 1), "thin" (a window and
    fewer than ``MIN_INTEGER_DEPTH`` products per output: im2col over few channels), else "dense"."""
    from .quantize_qdq.speed import MIN_INTEGER_DEPTH

    if group > 1 and cin_g == 1:
        return "depthwise"
    return "thin" if taps > 1 and cin_g * taps < MIN_INTEGER_DEPTH else "dense"


def conv_cost(n, dims: dict, elems, table: dict, integer: bool) -> float:
    """A Conv's cost from ``table`` (``conv_costs``) on its integer kernel or in float."""
    w = dims[n.input[1]]
    group = next((at.i for at in n.attribute if at.name == "group"), 1) or 1
    taps = int(np.prod(w[2:]))
    c = table[conv_kind(group, w[1], taps)]["int8" if integer else "float"]
    out_c = dims.get(n.output[0], [1, w[0]])
    m = elems(n.output[0]) / max(out_c[1] if len(out_c) > 1 else w[0], 1)  # output positions
    n_g, k = w[0] / group, w[1] * taps
    return group * m * (c["mac"] * n_g * k + c["row"] * n_g + c["col"] * k) + c["tap"] * m * taps * (taps > 1) \
        + c["in"] * elems(n.input[0])


def _after_integer_conv(n, prod: dict, ints: set) -> bool:
    """Whether the nearest Conv / MatMul / Gemm up ``n``'s first input (through Q/DQ and elementwise ops) is an
    integer layer: onnxruntime's NHWC layout reaches ``n`` from there."""
    for _ in range(16):
        n = prod.get(n.input[0]) if n.input else None
        if n is None:
            return False
        if n.op_type in MATRIX_OPS:
            return tuple(n.output) in ints
    return False


def float_segment(model: onnx.ModelProto, tensor: str, tensors: set[str], most: int = 8) -> list[str]:
    """``tensor`` and the activation quantizers (DQ outputs in ``tensors``) after it up to the next Conv / MatMul /
    Gemm: what goes to float with the layer that writes ``tensor``, so no 8-bit op is left between two float layers
    (a uint8 MaxPool there runs onnxruntime's slow NCHW kernel: ``NCHW_SLOW_U8``)."""
    readers = consumers(model.graph)
    out, todo = [tensor], [tensor]
    while todo and len(out) < most:
        for r in readers.get(todo.pop(0), []):
            if r.op_type in MATRIX_OPS:
                continue
            for q in (q for o in r.output for q in readers.get(o, []) if q.op_type == "QuantizeLinear"):
                for d in readers.get(q.output[0], []):
                    if d.op_type == "DequantizeLinear" and d.output[0] in tensors and d.output[0] not in out:
                        out.append(d.output[0])
                        todo.append(d.output[0])
    return out[:most]
