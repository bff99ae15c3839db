"""ONNX Runtime backend: sessions with chosen threads and optimisation level, and runs over sample sets.

Samples are batched along a dynamic leading dimension when every input and every requested output carries
the same symbolic batch dimension; otherwise each sample is one call.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
import onnxruntime as ort

from ..data import SampleSet, model_inputs
from ..errors import QpassError
from ..graph_utils import shapes as tensor_shapes
from ..model_io import PROTO_LIMIT, serialize


class OrtError(QpassError):
    pass


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_session(model: onnx.ModelProto | str | os.PathLike, threads: int = 1, optimize: bool = True,
                 optimized_path: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if isinstance(model, onnx.ModelProto):
        if model.ByteSize() >= PROTO_LIMIT:
            raise OrtError("model is over 2 GB in memory: save it with external data and run it from its file")
        src = serialize(model)
    else:
        src = str(Path(model))
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OrtError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def _batch_symbol(model: onnx.ModelProto, samples: SampleSet, outputs: list[str]) -> bool:
    specs = {s.name: s for s in model_inputs(model)}
    syms = set()
    for name, arr in samples.arrays.items():
        dims = specs[name].dims
        if not dims or not isinstance(dims[0], str) or arr.ndim < 2:
            return False
        syms.add(dims[0])
    if len(syms) != 1:
        return False
    sym = syms.pop()
    shp = tensor_shapes(model)
    return all(o in shp and shp[o] and shp[o][0] == sym for o in outputs)


def iter_batches(sess: ort.InferenceSession, model: onnx.ModelProto, samples: SampleSet,
                 outputs: list[str] | None = None, batch_size: int = 64,
                 progress=None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (number of samples, outputs) per call; outputs of batched calls are concatenated on axis 0."""
    outputs = outputs or [o.name for o in sess.get_outputs()]
    n = len(samples)
    batched = batch_size > 1 and n > 1 and _batch_symbol(model, samples, outputs)
    step = batch_size if batched else 1
    for start in range(0, n, step):
        stop = min(n, start + step)
        if batched:
            feed = {k: np.concatenate(list(v[start:stop]), axis=0) for k, v in samples.arrays.items()}
            feed.update(samples.shared)
        else:
            feed = samples.feed(start)
        try:
            res = sess.run(outputs, feed)
        except Exception as exc:
            raise OrtError(f"onnxruntime failed on sample {start}: {_first_line(exc)}") from None
        if progress is not None:
            progress.update(stop - start)
        yield stop - start, res


def run_samples(model: onnx.ModelProto, samples: SampleSet, threads: int = 1, optimize: bool = True,
                outputs: list[str] | None = None, batch_size: int = 64,
                sess: ort.InferenceSession | None = None) -> dict[str, np.ndarray]:
    """Run every sample; return each output stacked on a new leading sample axis (the npz convention)."""
    sess = sess or make_session(model, threads, optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    per_sample: dict[str, list[np.ndarray]] = {k: [] for k in names}
    lead = {k: v.shape[1] for k, v in samples.arrays.items()}
    sample_lead = next(iter(lead.values()), 1)
    for count, res in iter_batches(sess, model, samples, names, batch_size):
        for k, arr in zip(names, res):
            if count == 1:
                per_sample[k].append(arr)
            else:
                per_sample[k].extend(np.split(arr, count, axis=0) if sample_lead else [arr])
    return {k: np.stack(v) for k, v in per_sample.items()}
