"""Weights of at most 2 bits stored as INT2, four to a byte (lower_ort's last step).

lower_ort stores a quantised weight of <= 4 bits as an INT4 initializer -> Cast(INT8) -> DequantizeLinear, which
onnxruntime folds at session load into the int8 layer it fuses (QLinearConv / QGemm / QLinearMatMul). Codes that all
lie in [-2, 1] (a 2-bit weight) fit INT2: ONNX reads INT2 from opset 25 (Cast, DequantizeLinear; at opset 21
onnxruntime 1.32 refuses it as an invalid graph), and onnxruntime 1.32 folds INT2 -> Cast(INT8) the same way
(measured: a Conv behind it fuses into the same QLinearConv, bit-identical to the INT8 / INT4 files).

Raising the opset from 21 to 25 changes no op's meaning (between them ONNX only added element types and the
``round_mode`` / ``output_dtype`` / ``precision`` attributes, whose defaults keep the old behaviour); the raise is
made only when the installed onnxruntime has a CPU kernel for every op of the model at its opset-25 version, so the
file still runs (``missing_kernels``). Otherwise the weights stay INT4.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.graph import all_nodes

#: the opset whose Cast / DequantizeLinear read INT2 / UINT2
INT2_OPSET = 25
#: the IR version that carries INT2 / UINT2 tensors
INT2_IR_VERSION = 11
INT2_RANGE = (-2, 1)
ONNX_DOMAINS = ("", "ai.onnx")


def missing_kernels(op_types, opset: int = INT2_OPSET) -> list[str]:
    """The ONNX op types (of ``op_types``) that the installed onnxruntime cannot run on CPU at ``opset``: no CPU
    kernel whose version range holds the op's version at that opset (unknown ops count as missing)."""
    import onnxruntime.capi.onnxruntime_pybind11_state as ort_c

    ranges: dict[str, list] = {}
    for k in ort_c.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider" and k.domain in ONNX_DOMAINS:
            ranges.setdefault(k.op_name, []).append(k.version_range)
    missing = []
    for op in sorted(set(op_types)):
        try:
            v = onnx.defs.get_schema(op, opset).since_version
        except Exception:  # noqa: BLE001  (onnx.defs.SchemaError: no such op at that opset)
            missing.append(op)
            continue
        if not any(lo <= v <= hi for lo, hi in ranges.get(op, ())):
            missing.append(op)
    return missing


def model_takes_int2(model: onnx.ModelProto, extra_ops=("QuantizeLinear", "DequantizeLinear", "Cast", "Clip")) -> bool:
    """Whether ``model`` (and the quantisation ops lowering adds, ``extra_ops``) can move to opset 25 and still run
    in the installed onnxruntime."""
    ops = [n.op_type for n in all_nodes(model.graph) if n.domain in ONNX_DOMAINS]
    return not missing_kernels(ops + list(extra_ops))


def _int2_proto(name: str, codes: np.ndarray) -> onnx.TensorProto:
    """An INT2 initializer holding ``codes`` (in [-2, 1]), four per byte, lowest bits first (the ONNX layout)."""
    v = codes.reshape(-1).astype(np.uint8) & np.uint8(0x3)
    v = np.concatenate([v, np.zeros((-v.size) % 4, np.uint8)]).reshape(-1, 4)
    packed = v[:, 0] | (v[:, 1] << 2) | (v[:, 2] << 4) | (v[:, 3] << 6)
    return onnx.helper.make_tensor(name, onnx.TensorProto.INT2, list(codes.shape), packed.astype(np.uint8).tobytes(),
                                   raw=True)


def int2_candidates(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """INT4 initializers read only by ``Cast(to=INT8)`` nodes whose codes all lie in [-2, 1]."""
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    out = []
    for t in model.graph.initializer:
        if t.data_type != onnx.TensorProto.INT4 or not readers.get(t.name):
            continue
        if not all(n.op_type == "Cast" and n.domain in ONNX_DOMAINS and
                   any(a.name == "to" and a.i == onnx.TensorProto.INT8 for a in n.attribute)
                   for n in readers[t.name]):
            continue
        codes = numpy_helper.to_array(t).astype(np.int8)
        if codes.size and INT2_RANGE[0] <= codes.min() and codes.max() <= INT2_RANGE[1]:
            out.append(t)
    return out


def store_int2(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` (opset >= 21, lowered) with every INT4 weight whose codes fit 2 bits stored as INT2 and the
    opset raised to 25, when the installed onnxruntime runs every op at 25; else ``model`` itself. Returns
    (model, number of INT2 initializers)."""
    if not int2_candidates(model) or not model_takes_int2(model, ()):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    todo = int2_candidates(out)
    for t in todo:
        t.CopyFrom(_int2_proto(t.name, numpy_helper.to_array(t).astype(np.int8)))
    for o in out.opset_import:
        if o.domain in ONNX_DOMAINS:
            o.version = max(o.version, INT2_OPSET)
    out.ir_version = max(out.ir_version, INT2_IR_VERSION)
    return out, len(todo)
