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

from qpass.ir.batching import iter_feeds, ordered_calls, run_stacked
from qpass.ir.samples import SampleSet
from ..errors import QpassError
from qpass.ir.light_model import light_copy, weight_bytes
from qpass.ir.model_io import PROTO_LIMIT, serialize

#: models of at least this many bytes reach onnxruntime with their large weights as values (``light_model``)
LIGHT_MIN_BYTES = 8 << 20


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
    so.log_severity_level = 4  # errors reach the user as one qpass line, not onnxruntime's own log
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    values = {}
    if isinstance(model, onnx.ModelProto):
        size = weight_bytes(model)  # the weights, from their dims: ByteSize would serialize the whole model
        if size >= PROTO_LIMIT:
            raise OrtError("model is over 2 GB in memory: save it with external data and run it from its file")
        if size >= LIGHT_MIN_BYTES and not optimized_path:  # big weights as values, not protobuf bytes
            model, values = light_copy(model)
            keep = [ort.OrtValue.ortvalue_from_numpy(v) for v in values.values()]
            so.add_external_initializers(list(values), keep)
        src = serialize(model)
    else:
        src = str(Path(model))
    try:
        # WeightBiasQuantization would silently re-quantise float weights that sit between quantised activations
        # to int8 (e.g. 10-16-bit fake-quant weights): the model that runs must be the model that was specified
        sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=["WeightBiasQuantization"])
    except Exception as exc:
        raise OrtError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None
    if values:
        sess._qpass_values = (values, keep)  # the session may read the handed-over buffers while it lives
    return sess


def iter_batches(sess: ort.InferenceSession, model: onnx.ModelProto, samples: SampleSet,
                 outputs: list[str] | None = None, batch_size: int = 64,
                 progress=None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Yield (number of samples, outputs) per call; outputs of batched calls are concatenated on axis 0."""
    outputs = outputs or [o.name for o in sess.get_outputs()]
    feeds = iter_feeds(model, samples, outputs, batch_size)
    for _, count, res in ordered_calls(lambda start, feed: _run(sess, outputs, feed, start), feeds, parallel=True):
        yield count, res
        if progress is not None:
            progress.update(count)


def _run(sess: ort.InferenceSession, outputs: list[str], feed: dict, start: int) -> list[np.ndarray]:
    try:
        return sess.run(outputs, feed)
    except Exception as exc:
        raise OrtError(f"onnxruntime failed on sample {start}: {_first_line(exc)}") from None


def run_samples(model: onnx.ModelProto, samples: SampleSet, threads: int = 1, optimize: bool = True,
                outputs: list[str] | None = None, batch_size: int = 64,
                sess: ort.InferenceSession | None = None, batched: bool | None = None) -> dict[str, np.ndarray]:
    """Run every sample; return each output stacked on a new leading sample axis (the npz convention).
    ``batched``: ``qpass.ir.batching.batchable``'s answer if the caller has it (else it is worked out per call)."""
    sess = sess or make_session(model, threads, optimize)
    names = outputs or [o.name for o in sess.get_outputs()]
    return run_stacked(lambda feed: _run(sess, names, feed, 0), model, samples, names, batch_size, batched,
                       parallel=True)


def optimized_graph(model: onnx.ModelProto, threads: int = 1) -> onnx.GraphProto:
    """The graph onnxruntime runs after its optimizer (fusions applied): ``optimized_model``'s graph."""
    return optimized_model(model, threads).graph


def optimized_model(model: onnx.ModelProto, threads: int = 1) -> onnx.ModelProto:
    """The model onnxruntime runs after its optimizer (fusions applied; a session of it with optimizations off runs
    the same kernels): ``optimized_session``'s model."""
    return optimized_session(model, threads)[0]


def optimized_session(model: onnx.ModelProto, threads: int = 1) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    """(the model onnxruntime runs after its optimizer, the optimized session of ``model`` that wrote it): for a
    caller that runs ``model`` too (one session build instead of two). On Linux the model is written to an
    anonymous in-memory file (nothing lands on disk); elsewhere to a temporary file removed at once."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("qpass-optimized")
        try:
            sess = make_session(model, threads, optimize=True, optimized_path=f"/proc/self/fd/{fd}")
            size = os.fstat(fd).st_size
            os.lseek(fd, 0, os.SEEK_SET)
            data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
            if len(data) == size and size:
                return onnx.load_from_string(data), sess
        finally:
            os.close(fd)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="qpass-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        sess = make_session(model, threads, optimize=True, optimized_path=path)
        return onnx.load(path, load_external_data=False), sess


def interleaved_times(sessions: dict, feed: dict, warmup: int = 3, rounds: int | None = None,
                      budget_s: float = 0.5, min_rounds: int = 20, max_rounds: int = 400) -> dict:
    """{key: [seconds per call]} of each session on ``feed``, runs interleaved (machine noise hits all alike) after
    ``warmup`` calls each; ``rounds`` rounds, or as many as ``budget_s`` allows within [min_rounds, max_rounds]."""
    import time

    for s in sessions.values():
        for _ in range(warmup):
            s.run(None, feed)
    if rounds is None:
        t = time.perf_counter()
        for s in sessions.values():
            s.run(None, feed)
        rounds = int(min(max_rounds, max(min_rounds, budget_s / max(time.perf_counter() - t, 1e-6))))
    times = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t)
    return times
