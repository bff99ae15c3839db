"""Sample data for calibration, evaluation and ``qpass run``.

Convention (``.npz``): keys are the model's input names; each array stacks samples on a new leading axis and
each sample has exactly the shape one inference call takes, so an input of shape (1, 3, 32, 32) is given as
(N, 1, 3, 32, 32). A 0-d array is shared by all samples. The key ``labels`` (integers, shape (N,)) is reserved
for evaluation labels. Arrays are checked against the model: names, shapes, dtypes, and finite values.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from qpass.errors import CalibrationDataError

LABELS_KEY = "labels"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    dims: tuple  # ints, strings (dim_param) or None


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.dtype(np.float32)
        except (KeyError, ValueError, TypeError):
            raise CalibrationDataError(f"model input {vi.name!r} has an unknown element type {tt.elem_type}") from None
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim) \
            if tt.HasField("shape") else None
        specs.append(InputSpec(vi.name, np.dtype(dtype), dims))
    return specs


@dataclass
class SampleSet:
    arrays: dict[str, np.ndarray]  # per-sample inputs, (N, *sample_shape)
    shared: dict[str, np.ndarray]  # 0-d inputs used by every sample
    labels: np.ndarray | None
    source: str = "<memory>"

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 1

    def feed(self, i: int) -> dict[str, np.ndarray]:
        f = {k: np.asarray(v[i]) for k, v in self.arrays.items()}  # a 0-d sample stays an array, not a scalar
        f.update(self.shared)
        return f

    def feeds(self):
        for i in range(len(self)):
            yield self.feed(i)

    def subset(self, idx) -> "SampleSet":
        labels = None if self.labels is None else self.labels[idx]
        return SampleSet({k: v[idx] for k, v in self.arrays.items()}, dict(self.shared), labels, self.source)


#: the most bytes an .npz may inflate to (QPASS_MAX_DATA_BYTES overrides): an 800 KB archive can hold gigabytes
MAX_DATA_BYTES = 4 * 2**30


def max_data_bytes() -> int:
    try:
        return int(os.environ.get("QPASS_MAX_DATA_BYTES", MAX_DATA_BYTES))
    except ValueError:
        raise CalibrationDataError("QPASS_MAX_DATA_BYTES must be a whole number of bytes") from None


def _check_members(path: Path) -> None:
    """Read every member's .npy header (not its data) and refuse members whose declared size they do not hold,
    and archives that would inflate past ``max_data_bytes()``."""
    total, limit = 0, max_data_bytes()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise CalibrationDataError(f"{path}: member {info.filename!r} is not an .npy array")
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f, max_header_size=100_000)
                except (ValueError, OSError, EOFError) as exc:
                    raise CalibrationDataError(f"{path}: member {info.filename!r} is not a valid .npy array "
                                               f"({type(exc).__name__})") from None
                header = f.tell()
            if dtype.hasobject:
                raise CalibrationDataError(f"{path}: member {info.filename!r} holds Python objects, not numbers")
            need = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if need > info.file_size - header:
                raise CalibrationDataError(f"{path}: member {info.filename!r} declares shape {tuple(shape)} but holds "
                                           f"only {info.file_size - header} bytes (truncated or corrupt)")
            total += info.file_size
            if total > limit:
                raise CalibrationDataError(f"{path} inflates to more than {limit / 2**30:.1f} GiB (set "
                                           f"QPASS_MAX_DATA_BYTES to allow more)")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"data file {path} does not exist")
    if not path.is_file():
        raise CalibrationDataError(f"data file {path} is not a regular file (a directory, FIFO or device)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            magic = f.read(6)
        kind = "a .npy array, not an .npz archive" if magic == b"\x93NUMPY" else "not a valid .npz file"
        raise CalibrationDataError(f"cannot read {path}: {kind} (save with numpy.savez(path, input_name=array))")
    try:
        _check_members(path)
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError, zlib.error) as exc:
        raise CalibrationDataError(f"cannot read {path}: not a valid .npz file ({type(exc).__name__})") from None


def _dtype_compatible(have: np.dtype, want: np.dtype) -> bool:
    kinds = {"f": "f", "i": "iu", "u": "iu", "b": "b"}
    return have.kind in kinds.get(want.kind, want.kind)


def bind_samples(raw: dict[str, np.ndarray], model: onnx.ModelProto, source: str = "<data>",
                 allow_extra: bool = True) -> SampleSet:
    """Check ``raw`` against the model's inputs and return a SampleSet (arrays cast to the model's dtypes)."""
    specs = model_inputs(model)
    names = [s.name for s in specs]
    missing = [n for n in names if n not in raw]
    if missing:
        have = ", ".join(sorted(raw)) or "nothing"
        raise CalibrationDataError(f"{source} has no array for model input {missing[0]!r} (it has: {have})")
    extra = sorted(set(raw) - set(names) - {LABELS_KEY})
    if extra and not allow_extra:
        raise CalibrationDataError(f"{source} has arrays for unknown inputs: {', '.join(extra)}")
    arrays, shared, n = {}, {}, None
    for spec in specs:
        arr = raw[spec.name]
        if not _dtype_compatible(arr.dtype, spec.dtype):
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} expects {spec.dtype} but the array is {arr.dtype}")
        if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
            raise CalibrationDataError(f"{source}: input {spec.name!r} contains NaN or Inf values")
        if arr.dtype.kind in "iu" and spec.dtype.kind in "iu" and arr.size:
            info = np.iinfo(spec.dtype)
            if arr.min() < info.min or arr.max() > info.max:
                raise CalibrationDataError(f"{source}: input {spec.name!r} has values outside {spec.dtype}")
        arr = arr.astype(spec.dtype, copy=False)
        if arr.ndim == 0 and spec.dims is not None and len(spec.dims) != 0:
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} is 0-d but the model expects rank {len(spec.dims)} "
                f"(stack samples on a new leading axis: shape (N, {', '.join(map(str, spec.dims))}))")
        if arr.ndim == 0:
            shared[spec.name] = arr
            continue
        sample_shape = arr.shape[1:]
        if spec.dims is not None:
            if len(sample_shape) != len(spec.dims) or any(
                    isinstance(d, int) and d > 0 and d != s for d, s in zip(spec.dims, sample_shape)):
                want = "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in spec.dims) + ")"
                raise CalibrationDataError(
                    f"{source}: input {spec.name!r} samples have shape {tuple(sample_shape)} but the model takes "
                    f"{want} (stack samples on a new leading axis: array shape (N, ...))")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise CalibrationDataError(
                f"{source}: input {spec.name!r} has {arr.shape[0]} samples, other inputs have {n}")
        arrays[spec.name] = arr
    if n == 0:
        raise CalibrationDataError(f"{source} holds no samples")
    labels = raw.get(LABELS_KEY)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise CalibrationDataError(f"{source}: 'labels' must be integer class indices, not {labels.dtype} "
                                       "(save them as e.g. numpy.int64)")
        if n is not None and labels.shape[:1] != (n,):
            raise CalibrationDataError(f"{source}: 'labels' has {labels.shape[:1]} entries for {n} samples")
    return SampleSet(arrays, shared, labels, source)


def load_samples(path: str | Path, model: onnx.ModelProto) -> SampleSet:
    return bind_samples(load_npz(path), model, str(path))


def default_calib_path(model_path: str | Path) -> Path:
    """``MODEL.calib.npz`` beside ``MODEL.onnx``."""
    p = Path(model_path)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".calib.npz")


def as_samples(data, model: onnx.ModelProto) -> SampleSet:
    if isinstance(data, SampleSet):
        return data
    if isinstance(data, dict):
        return bind_samples({k: np.asarray(v) for k, v in data.items()}, model, "calibration data")
    return load_samples(data, model)
