"""How a case's model runs on each runner: a factory ``model -> (feeds -> outputs in graph order)``."""
from __future__ import annotations

import ctypes
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper


def _reference_session(model: onnx.ModelProto) -> Callable[[dict], list]:
    from ..executor import GoldenExecutor
    from ..ops_sequence import as_value, from_value

    ex = GoldenExecutor(model)
    names = [o.name for o in model.graph.output]

    def run(feeds: dict) -> list:
        res = ex.run({k: as_value(v) for k, v in feeds.items()}, names)
        return [from_value(res[n]) for n in names]

    return run


def _packed(dtype) -> bool:
    """numpy has no such dtype (ml_dtypes: bfloat16, float8/float4, 4- and 2-bit ints); onnxruntime's Python
    binding takes and returns these only as raw OrtValue buffers."""
    return np.dtype(dtype).num >= 256  # NPY_USERDEF: a dtype numpy itself does not define


def _to_ortvalue(ort, x: np.ndarray):
    x = np.ascontiguousarray(x)
    if not _packed(x.dtype):
        return ort.OrtValue.ortvalue_from_numpy(x)
    ov = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), onnx.helper.np_dtype_to_tensor_dtype(x.dtype))
    raw = numpy_helper.from_array(x).raw_data
    ctypes.memmove(ov.data_ptr(), raw, len(raw))
    return ov


def _from_ortvalue(ov) -> np.ndarray:
    et = ov.element_type()
    if not _packed(onnx.helper.tensor_dtype_to_np_dtype(et)):
        return ov.numpy()
    raw = ctypes.string_at(ov.data_ptr(), ov.tensor_size_in_bytes())
    return numpy_helper.to_array(onnx.helper.make_tensor("y", et, ov.shape(), raw, raw=True))


def _onnxruntime_session(model: onnx.ModelProto) -> Callable[[dict], list]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 4  # failures are reported per case, not logged
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    declared = [vi.type.tensor_type.elem_type for vi in model.graph.output if vi.type.HasField("tensor_type")]
    packed_out = any(_packed(onnx.helper.tensor_dtype_to_np_dtype(t)) for t in declared if t)

    def run(feeds: dict) -> list:
        if not packed_out and not any(isinstance(v, np.ndarray) and _packed(v.dtype) for v in feeds.values()):
            return sess.run(None, feeds)
        outs = sess.run_with_ort_values(None, {k: _to_ortvalue(ort, v) for k, v in feeds.items()})
        return [_from_ortvalue(o) for o in outs]

    return run


SessionFactory = Callable[[onnx.ModelProto], Callable[[dict], list]]
SESSIONS: Mapping[str, SessionFactory] = MappingProxyType({
    "reference": _reference_session, "onnxruntime": _onnxruntime_session})
