"""Which quantised-ONNX dialect a model is written in, and which number formats it uses.

- **QONNX**: qonnx's ``Quant`` / ``IntQuant`` / ``BipolarQuant`` / ``Trunc`` / ``FloatQuant`` / ``MultiThreshold``
  (domains ``qonnx.custom_op.general``, ``finn.custom_op.general``, ``onnx.brevitas``, ``qpass``);
- **QCDQ**: ``QuantizeLinear -> Clip -> DequantizeLinear`` (Brevitas' and qonnx's export of narrow grids);
- **QDQ**: ``QuantizeLinear -> DequantizeLinear`` pairs and stored codes -> ``DequantizeLinear`` (onnxruntime's
  ``quantize_static`` QDQ format);
- **QOperator**: integer operators (``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm`` / ``QLinearAdd`` ...,
  ``ConvInteger`` / ``MatMulInteger`` with constant scales);
- **dynamic**: ``DynamicQuantizeLinear`` (scales chosen at run time, onnxruntime's ``quantize_dynamic``).

A model can mix them; ``dialects`` lists every one found, ``name`` the main one (the first of QONNX, dynamic,
QOperator, QCDQ, QDQ present), "float" when there is none.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.datatypes import get_annotations
from qpass.ops.common import QONNX_DOMAINS, QPASS_DOMAIN, attr

QONNX_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc", "FloatQuant", "MultiThreshold")
QOPERATOR_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul",
                 "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearLeakyRelu",
                 "QLinearSigmoid", "QLinearSoftmax", "QAttention", "MatMulIntegerToFloat")
ORDER = ("QONNX", "dynamic", "QOperator", "QCDQ", "QDQ")
DTYPE_NAMES = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT16: "int16",
               onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT4: "int4",
               onnx.TensorProto.UINT4: "uint4", onnx.TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
               onnx.TensorProto.FLOAT8E5M2: "float8e5m2"}


@dataclass
class DialectInfo:
    name: str
    dialects: list[str]
    #: number formats, each with how many quantisers use it, e.g. {"Quant int4 narrow ROUND": 3}
    formats: Counter = field(default_factory=Counter)
    #: qonnx datatype annotations found: {datatype: tensors}
    annotations: Counter = field(default_factory=Counter)

    @property
    def quantized(self) -> bool:
        return self.name != "float"


def _const(consts: dict, name: str):
    return consts.get(name)


def _quant_format(n, consts) -> str:
    bits = _const(consts, n.input[3]) if len(n.input) > 3 else None
    b = "?" if bits is None else f"{float(np.asarray(bits).reshape(-1)[0]):g}"
    signed, narrow = int(attr(n, "signed", 1)), int(attr(n, "narrow", 1 if n.op_type != "Trunc" else 0))
    z = _const(consts, n.input[2]) if len(n.input) > 2 else None
    s = _const(consts, n.input[1]) if len(n.input) > 1 else None
    parts = [f"{n.op_type} {'' if signed else 'u'}int{b}"]
    if narrow:
        parts.append("narrow")
    if z is not None and np.any(np.asarray(z) != 0):
        parts.append("zero point")
    if s is not None and np.size(s) > 1:
        parts.append("per-channel")
    parts.append(str(attr(n, "rounding_mode", "ROUND" if n.op_type != "Trunc" else "FLOOR")).upper())
    return " ".join(parts)


def _qdq_format(n, elem: dict, consts) -> str:
    dt = elem.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    dt = dt or (attr(n, "output_dtype", 0) or (elem.get(n.input[0]) if n.op_type == "DequantizeLinear" else None)
                or onnx.TensorProto.UINT8)
    s = consts.get(n.input[1])
    per = " per-channel" if s is not None and np.size(s) > 1 else (" run-time scale" if s is None else "")
    return f"{DTYPE_NAMES.get(dt, onnx.TensorProto.DataType.Name(dt).lower())}{per}"


def detect_dialect(model: onnx.ModelProto) -> DialectInfo:
    """The dialects and number formats of ``model`` (see the module docstring)."""
    from qpass.ir.graph import elem_types

    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    elem = elem_types(model)
    producer = {o: n for n in g.node for o in n.output}
    found, formats = set(), Counter()
    for n in g.node:
        qonnx = (n.domain in QONNX_DOMAINS or n.domain == QPASS_DOMAIN) and n.op_type in QONNX_OPS
        if qonnx:
            found.add("QONNX")
            if n.op_type in ("Quant", "IntQuant", "Trunc"):
                formats[_quant_format(n, consts)] += 1
            else:
                formats[n.op_type] += 1
        elif n.op_type in QOPERATOR_OPS and n.domain in ("", "ai.onnx", "com.microsoft"):
            found.add("QOperator")
            formats[f"{n.op_type}"] += 1
        elif n.op_type == "DynamicQuantizeLinear":
            found.add("dynamic")
            formats["DynamicQuantizeLinear uint8 run-time scale"] += 1
        elif n.op_type == "DequantizeLinear" and n.domain in ("", "ai.onnx"):
            src = producer.get(n.input[0])
            found.add("QCDQ" if src is not None and src.op_type == "Clip" else "QDQ")
            formats[f"DequantizeLinear {_qdq_format(n, elem, consts)}"] += 1
    dialects = [d for d in ORDER if d in found]
    ann = Counter(get_annotations(model).values())
    return DialectInfo(dialects[0] if dialects else "float", dialects, formats, ann)
