"""What an artifact really stores: the width of every weight as read from the file's initializer types (the claim
the search reports next to its bit count), and the file's size."""
from __future__ import annotations

import numpy as np
import onnx

from qpass.ops.common import LINEAR_OPS

#: the storage width of an initializer's element type (INT4 / UINT4 packed two to a byte, INT2 / UINT2 four)
TYPE_BITS = {onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2, onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT8: 8,
             onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT16: 16, onnx.TensorProto.UINT16: 16,
             onnx.TensorProto.FLOAT16: 16, onnx.TensorProto.BFLOAT16: 16, onnx.TensorProto.INT32: 32,
             onnx.TensorProto.FLOAT: 32, onnx.TensorProto.DOUBLE: 64}


#: the widths an ONNX file stores weights in: INT2 (packed, opset 25) up to 2 bits, INT4 (packed) up to 4, INT8 up
#: to 8; a wider weight stays float32 (lower_ort would store its codes as int16 / int32 + DequantizeLinear, which
#: onnxruntime 1.32's QDQ fusion turns into a QLinearConv / QGemm it then refuses to load: measured on the digits
#: CNN). ``onnx4``: a model the installed onnxruntime cannot run at opset 25 (no INT2; ``int2_storage``)
STORAGE_CLASSES = {"onnx": (2, 4, 8, 32), "onnx4": (4, 8, 32)}


def stored_bits(w: int, storage: str = "onnx") -> int:
    """The bits a ``w``-bit weight element takes in the artifact: ``onnx`` / ``onnx4`` the ONNX file's storage
    class, ``exact`` ``w`` itself (the hardware backends, whose words are ``w`` bits wide)."""
    if storage == "exact":
        return int(w)
    return next((b for b in STORAGE_CLASSES[storage] if b >= w), 32)


def float_in_file(w: int, storage: str = "onnx") -> bool:
    """Whether a ``w``-bit weight stays float32 in the artifact (wider than the file's integer classes)."""
    return storage != "exact" and stored_bits(w, storage) == 32


def storage_candidates(widths, storage: str = "onnx") -> list[int]:
    """The widest of ``widths`` in each storage class: a narrower one costs as much and loses more accuracy."""
    widths = sorted({int(w) for w in widths})
    if storage == "exact":
        return widths
    return [w for w in widths if not any(v > w and stored_bits(v, storage) == stored_bits(w, storage) for v in widths)]


def stored_weights(model: onnx.ModelProto) -> dict:
    """{weight initializer: (elements, stored bits per element)} of every linear layer's weight (input 1 of Conv,
    ConvTranspose, Gemm, MatMul), followed back through the nodes that only decode it (DequantizeLinear, Cast, ...:
    any node whose inputs are all initializers or decoded constants)."""
    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if n.op_type not in LINEAR_OPS or len(n.input) < 2:
            continue
        name = n.input[1]
        while name not in inits and name in producer:
            p = producer[name]
            if not p.input or not all(i in inits or i in producer for i in p.input if i):
                break
            name = p.input[0]
        if name in inits:
            t = inits[name]
            out[name] = (int(np.prod(t.dims)), TYPE_BITS.get(t.data_type, 32))
    return out


def artifact_summary(model: onnx.ModelProto) -> dict:
    """Bytes of the serialized file; weights' elements and average stored width; compression as stored against
    the same weights in float32 and int8."""
    w = stored_weights(model)
    params = sum(e for e, _ in w.values())
    bits = sum(e * b for e, b in w.values())
    avg = bits / params if params else None
    return {"file_bytes": model.ByteSize(), "weight_params": params, "weight_bits_stored": bits,
            "avg_stored_weight_bits": avg, "float32_stored": 32 / avg if avg else None,
            "int8_stored": 8 / avg if avg else None}


def build(model: onnx.ModelProto, calibration, fq_opts: dict):
    """The artifact of an assignment: (fake-quant QONNX model, the same lowered for onnxruntime, the pass context)
    from fakequant with ``fq_opts`` (its rules), lower_ort and int8_weights (the bitwidth pipeline's last passes),
    on a calibrated model (``calibration``)."""
    from qpass.pipeline.context import PassContext
    from qpass.pipeline.manager import PassManager, Pipeline
    from ..passes.fakequant import FakeQuant
    from ..passes.int8_weights import Int8Weights
    from ..passes.lower_ort import LowerOrt

    ctx = PassContext(progress=False)
    ctx.analyses.put(calibration)
    qonnx = PassManager(Pipeline("bitwidth-verify", [FakeQuant(**fq_opts)]), ctx).run(model)
    lowered = PassManager(Pipeline("bitwidth-verify", [LowerOrt(), Int8Weights()]), ctx).run(qonnx)
    return qonnx, lowered, ctx


def fakequant_options(opts, rules: list[dict]) -> dict:
    """fakequant's options for an assignment's ``rules`` under the search options ``opts`` (formats at 8 bits
    where no rule applies)."""
    from .options import format_spec

    return {"weights": format_spec(opts.weights, 8), "activations": format_spec(opts.activations, 8),
            "weight_granularity": opts.weight_granularity, "calibrator": opts.calibrator,
            "placement": opts.placement, "rules": rules}
