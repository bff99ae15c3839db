"""A model's graph without the bytes of its large initializers, for handing a big model to onnxruntime quickly.

Serializing a 70 MB model to protobuf bytes and parsing them again costs about 0.1-0.2 s per onnxruntime session;
the analyses build dozens of sessions. ``light_copy`` keeps every field of the model and every small initializer,
and replaces each large raw-data initializer by a stub that names the same tensor (same name, type and dims) as
external data; its values go to onnxruntime as ``OrtValue`` s (``SessionOptions.add_external_initializers``), the
same bytes, so the session computes exactly what a session of the whole model computes.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

#: initializers of at least this many bytes go to onnxruntime as values, not as protobuf bytes
MIN_BYTES = 1 << 16
#: in-memory location named by the stubs (onnxruntime reads the values handed over, never this name)
LOCATION = "qpass-in-memory"
#: element types handed over as values (numpy and onnxruntime both hold them natively)
TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
         onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64}


def _put(msg, field, value) -> None:
    if hasattr(value, "extend"):  # a repeated field
        getattr(msg, field.name).extend(value)
    elif field.message_type is not None:
        getattr(msg, field.name).CopyFrom(value)
    else:
        setattr(msg, field.name, value)


def _stub(t: onnx.TensorProto) -> onnx.TensorProto:
    s = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims),
                         data_location=onnx.TensorProto.EXTERNAL)
    s.external_data.add(key="location", value=LOCATION)
    return s


def nbytes(t: onnx.TensorProto) -> int:
    """The bytes of ``t``'s values, from its dims and type (no pass over them: upb's ``ByteSize`` serializes the
    message, 0.13 s for a 69 MB model); 0 for values stored outside the model."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    if t.data_type not in TYPES:
        return t.ByteSize()
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def weight_bytes(model: onnx.ModelProto) -> int:
    """``nbytes`` of every main-graph initializer: what a model's serialized size is made of."""
    return sum(nbytes(t) for t in model.graph.initializer)


def light_copy(model: onnx.ModelProto, min_bytes: int = MIN_BYTES) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(the model with each main-graph initializer of >= ``min_bytes`` raw bytes replaced by an external-data stub,
    {name: its values}); ``model`` is not changed. Empty dict: nothing was large enough."""
    out = onnx.ModelProto()
    for f, v in model.ListFields():
        if f.name != "graph":
            _put(out, f, v)
    g, h = model.graph, out.graph
    for f, v in g.ListFields():
        if f.name != "initializer":
            _put(h, f, v)
    values: dict[str, np.ndarray] = {}
    for t in g.initializer:
        big = (t.data_type in TYPES and t.data_location != onnx.TensorProto.EXTERNAL and t.HasField("raw_data")
               and nbytes(t) >= min_bytes and t.name not in values)
        if big:
            values[t.name] = numpy_helper.to_array(t)
            h.initializer.append(_stub(t))
        else:
            h.initializer.add().CopyFrom(t)
    return out, values
