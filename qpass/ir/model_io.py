"""Reading and writing ONNX files safely.

``load_model`` turns every way a file can be bad (missing, empty, not protobuf, truncated, external data
outside the model's folder, a graph that fails the checker) into a one-line ``ModelLoadError``.
``save_model`` writes atomically and deterministically.
"""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from .atomic import atomic_path
from qpass.errors import ModelLoadError
from qpass.ir.graph import topo_sort_nodes

PROTO_LIMIT = 2_000_000_000  # protobuf cannot serialize a message of 2 GiB or more
PROTO_MAX_DEPTH = 100  # protobuf's default recursion limit when parsing


def _fail(path: Path, reason: str) -> ModelLoadError:
    return ModelLoadError(f"cannot load model {path}: {reason}")


def _tensors_with_external_data(model: onnx.ModelProto):
    yield from external_data_helper._get_all_tensors(model)


def _check_external_data(model: onnx.ModelProto, base: Path, path: Path) -> bool:
    """Validate every external-data reference: it stays inside the model's folder and fits in its file."""
    base_resolved = base.resolve()
    found = False
    for tensor in _tensors_with_external_data(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        found = True
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        if not location:
            raise _fail(path, f"tensor {tensor.name!r} has external data without a location")
        if os.path.isabs(location):
            raise _fail(path, f"tensor {tensor.name!r} points to an absolute external-data path {location!r}")
        target = (base / location).resolve()
        if base_resolved != target and base_resolved not in target.parents:
            raise _fail(path, f"tensor {tensor.name!r} points outside the model's folder ({location!r})")
        if not target.is_file():
            raise _fail(path, f"external data file {location!r} for tensor {tensor.name!r} is missing")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise _fail(path, f"tensor {tensor.name!r} has a non-numeric external-data offset/length") from None
        size = target.stat().st_size
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise _fail(path, f"tensor {tensor.name!r} reads past the end of external data file {location!r}")
    return found


VALID_ELEM_TYPES = set(onnx.TensorProto.DataType.values())
#: element types packed below a byte (two 4-bit or four 2-bit values per byte)
_PACKED_BITS = {getattr(onnx.TensorProto, n): b for n, b in
                (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(onnx.TensorProto, n)}


def _check_element_types(model: onnx.ModelProto, path: Path) -> None:
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type not in VALID_ELEM_TYPES:
            raise _fail(path, f"tensor {vi.name!r} has an unknown element type {vi.type.tensor_type.elem_type}")
    for t in g.initializer:
        if t.data_type not in VALID_ELEM_TYPES or t.data_type == 0:
            raise _fail(path, f"initializer {t.name!r} has an unknown element type {t.data_type}")
        _check_raw_size(t, path)
        _check_strings(t, path)


def _check_strings(t: onnx.TensorProto, path: Path) -> None:
    """ONNX strings are UTF-8: a string initializer holding other bytes is corrupt."""
    if t.data_type != onnx.TensorProto.STRING:
        return
    for s in t.string_data:
        try:
            s.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(path, f"string initializer {t.name!r} holds bytes that are not UTF-8 (ONNX strings are "
                              "UTF-8)") from None


def _check_raw_size(t: onnx.TensorProto, path: Path) -> None:
    """An initializer's raw bytes must hold exactly what its dims and element type say."""
    if not t.HasField("raw_data") or t.data_location == onnx.TensorProto.EXTERNAL:
        return
    if any(d < 0 for d in t.dims):
        raise _fail(path, f"initializer {t.name!r} has a negative dimension {list(t.dims)}")
    try:
        bits = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * 8
    except (KeyError, TypeError, ValueError):
        return
    if t.data_type in _PACKED_BITS:
        bits = _PACKED_BITS[t.data_type]
    count = 1
    for d in t.dims:
        count *= d
    need = (count * bits + 7) // 8
    if t.data_type != onnx.TensorProto.STRING and len(t.raw_data) != need:
        raise _fail(path, f"initializer {t.name!r} holds {len(t.raw_data)} bytes but its dims {list(t.dims)} "
                          f"need {need} (file corrupt)")


def parse_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and parse a model file (with its external data), sort it topologically and run the checker."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file does not exist")
    if not path.is_file():
        raise _fail(path, "not a regular file")
    data = path.read_bytes()
    if not data:
        raise _fail(path, "file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        if any(word in str(exc).lower() for word in ("depth", "recursion", "nested too deep")):
            raise _fail(path, "subgraphs (If / Loop / Scan bodies) are nested deeper than protobuf reads "
                              f"({PROTO_MAX_DEPTH} message levels, about 30 nested If nodes)") from None
        raise _fail(path, f"not a valid ONNX protobuf ({type(exc).__name__}: file truncated or not ONNX)") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise _fail(path, "not an ONNX model (no graph found; file truncated or not ONNX)")
    if not model.graph.output:
        raise _fail(path, "the graph has no outputs (nothing to compute)")
    if not model.opset_import:
        raise _fail(path, "model declares no opset_import")
    _check_element_types(model, path)
    if _check_external_data(model, path.parent, path):
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise _fail(path, f"cannot read external data ({exc})") from None
    try:
        topo_sort_nodes(model.graph)
    except ValueError as exc:
        raise _fail(path, str(exc)) from None
    check_model(model, path)
    return model


def check_model(model: onnx.ModelProto, path: Path | str = "<model>") -> None:
    """Run the ONNX checker, turning failures into a one-line error."""
    try:
        if model.ByteSize() < PROTO_LIMIT:
            onnx.checker.check_model(model)
        else:  # too large to serialise in one message: check the graph structure only
            onnx.checker.check_graph(model.graph, onnx.checker.DEFAULT_CONTEXT)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _fail(Path(path), f"ONNX checker failed: {first}") from None


def serialize(model: onnx.ModelProto) -> bytes:
    return model.SerializeToString(deterministic=True)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically; models too large for one protobuf go to ``path.data`` beside it."""
    path = Path(path)
    if model.ByteSize() < PROTO_LIMIT:
        with atomic_path(path) as tmp:
            tmp.write_bytes(serialize(model))
        return path
    big = onnx.ModelProto()
    big.CopyFrom(model)
    data_name = path.name + ".data"
    with atomic_path(path.parent / data_name) as tmp_data:
        external_data_helper.convert_model_to_external_data(big, all_tensors_to_one_file=True, location=tmp_data.name)
        external_data_helper.write_external_data_tensors(big, str(path.parent))
        for tensor in _tensors_with_external_data(big):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
        with atomic_path(path) as tmp:
            tmp.write_bytes(serialize(big))
    return path
