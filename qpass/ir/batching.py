"""Running a model over a sample set: batching along the batch dimension, and stacking per sample.

Samples are concatenated along the model's dynamic leading dimension (``batch_size`` at a time) when every input
has a dynamic leading dimension and every requested output's leading dimension is that same batch dimension;
otherwise each sample is one call. Both the onnxruntime backend and the golden simulator use this, so they batch
identically.

By default the batch dimension is recognised by name: every input and every requested output carries the same
symbolic leading dimension. ``trace=True`` also traces it through the graph: exporters such as tf2onnx name each
input's and output's batch dimension differently (``unk__332`` in, ``unk__333`` out), so the model's shapes are
inferred twice with the inputs' batch symbols fixed to two different sizes (onnx shape inference with data
propagation, which resolves ``Reshape`` to -1, ``Shape``/``Gather``/``Expand`` chains and the like); an output
whose leading dimension follows the input size in both is batched. Either way it is a rule on the model's shapes,
deterministic, never a measurement. Shapes cannot show that an op keeps samples apart: a model with one that does
not (dynamic quantisation: one scale over the whole batch, ``SAMPLE_COUPLING_OPS``) is never batched. Tracing is
opt-in (``bench/golden_speed.py`` uses it).
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

import numpy as np
import onnx

from qpass.ir.samples import SampleSet, model_inputs
from qpass.ir.graph import all_nodes, shapes as tensor_shapes

#: ops whose numbers for one sample depend on the others in the same call: dynamic quantisation takes one scale and
#: zero point over the whole input (onnxruntime's com.microsoft DynamicQuantize* and the ONNX op alike). A model
#: holding one (in any body too) runs one sample per call, as it is deployed: its ``--eval`` figures and the
#: search's probes then do not depend on which samples share a call.
SAMPLE_COUPLING_OPS = ("DynamicQuantizeLinear", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul")

# two leading-dimension sizes no model dimension is expected to equal both of (an output dimension that follows
# the inputs' leading one in both inferences derives from it)
_TRACE_SIZES = (7, 13)


def _leading_dims(model: onnx.ModelProto, samples: SampleSet) -> list | None:
    """Each per-sample input's leading dimension as the model declares it; None unless all are named (symbolic)."""
    specs = {s.name: s for s in model_inputs(model)}
    dims = []
    for name, arr in samples.arrays.items():
        spec = specs.get(name)
        if spec is None or not spec.dims or not isinstance(spec.dims[0], str) or arr.ndim < 2:
            return None
        dims.append(spec.dims[0])
    return dims


def _inferred_leading(model: onnx.ModelProto, symbols: set, size: int) -> dict[str, int | str | None]:
    """Leading dimension of every tensor after shape inference with the inputs' batch symbols set to ``size``.

    The symbols are replaced wherever the model declares them (value_info too: onnx infers no com.microsoft op, so
    such an op's declared output shape carries the batch on); an inferred size overrides any other declared symbol.
    """
    trial = onnx.ModelProto()
    trial.CopyFrom(model)
    g = trial.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                dim.Clear()
                dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(trial, data_prop=True)
    return {k: v[0] for k, v in tensor_shapes(inferred).items() if v}


def traced_batch(model: onnx.ModelProto, symbols: set, outputs: list[str]) -> bool:
    """Whether every output's leading dimension derives from the inputs' leading ones, named ``symbols`` (see the
    module doc)."""
    try:
        runs = [_inferred_leading(model, symbols, size) for size in _TRACE_SIZES]
    except Exception:  # noqa: BLE001 - a model onnx cannot infer runs one sample per call
        return False
    return all(run.get(o) == size for o in outputs for run, size in zip(runs, _TRACE_SIZES))


def batchable(model: onnx.ModelProto, samples: SampleSet, outputs: list[str], trace: bool = False) -> bool:
    """Whether the samples can run ``batch_size`` per call for these outputs (see the module doc)."""
    dims = _leading_dims(model, samples)
    if not dims or couples_samples(model.graph):
        return False
    shp = tensor_shapes(model)
    if len(set(dims)) == 1 and all(o in shp and shp[o] and shp[o][0] == dims[0] for o in outputs):
        return True
    return trace and traced_batch(model, set(dims), outputs)


def couples_samples(graph: onnx.GraphProto) -> bool:
    """Whether ``graph`` or a graph nested in it holds a ``SAMPLE_COUPLING_OPS`` node."""
    return any(n.op_type in SAMPLE_COUPLING_OPS for n in all_nodes(graph))


def iter_feeds(model: onnx.ModelProto, samples: SampleSet, outputs: list[str],
               batch_size: int = 64, batched: bool | None = None) -> Iterator[tuple[int, int, dict]]:
    """Yield (first sample index, number of samples, feed dict) per call. ``batched``: the caller's
    ``batchable(...)`` answer (e.g. with ``trace=True``, worked out once for many runs); None: by name."""
    n = len(samples)
    batched = batch_size > 1 and n > 1 and (batchable(model, samples, outputs) if batched is None else batched)
    step = batch_size if batched else 1
    for start in range(0, n, step):
        stop = min(n, start + step)
        if batched:
            feed = {k: np.concatenate(list(v[start:stop]), axis=0) for k, v in samples.arrays.items()}
            feed.update(samples.shared)
        else:
            feed = samples.feed(start)
        yield start, stop - start, feed


#: with ``parallel``, once one call took at least this long, the calls after it run on every CPU this process may
#: use, one call per thread of a pool kept for the process (a session's ``run`` releases the GIL and computes each
#: call exactly as alone; the samples keep their order). Below it a hand-over costs more than it saves.
PARALLEL_MIN_SECONDS = 0.002
#: and at most this many bytes of outputs waiting in all (a call's outputs times the calls in flight)
PARALLEL_MAX_BYTES = 256 << 20

_pool: ThreadPoolExecutor | None = None
_in_pool = threading.local()


def cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(cpus(), thread_name_prefix="qpass-run", initializer=_mark_worker)
    return _pool


def _mark_worker() -> None:
    _in_pool.worker = True


def ordered_calls(call: Callable[[int, dict], list[np.ndarray]], feeds: Iterator[tuple[int, int, dict]],
                  parallel: bool = False) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """(first sample, samples, ``call(first sample, feed)``) for each of ``feeds`` (``iter_feeds``), in order.
    ``parallel``: once a call took PARALLEL_MIN_SECONDS, the later ones run ahead on up to ``cpus()`` threads (no
    more outputs waiting than PARALLEL_MAX_BYTES)."""
    first = next(feeds, None)
    if first is None:
        return
    t0 = time.perf_counter()
    out = call(first[0], first[2])
    slow = time.perf_counter() - t0 >= PARALLEL_MIN_SECONDS
    yield first[0], first[1], out
    ahead = min(cpus(), PARALLEL_MAX_BYTES // max(sum(np.asarray(a).nbytes for a in out), 1)) \
        if parallel and slow and not getattr(_in_pool, "worker", False) else 1  # (a call in the pool: no nesting)
    if ahead < 2:
        for start, count, feed in feeds:
            yield start, count, call(start, feed)
        return
    pool, waiting = _shared_pool(), deque()
    for start, count, feed in feeds:
        waiting.append((start, count, pool.submit(call, start, feed)))
        if len(waiting) >= ahead:
            s, c, f = waiting.popleft()
            yield s, c, f.result()
    while waiting:
        s, c, f = waiting.popleft()
        yield s, c, f.result()


def unbatch(arr: np.ndarray, count: int) -> list[np.ndarray]:
    """One call's output as the list of its ``count`` samples' outputs (split on axis 0 when batched)."""
    return [arr] if count == 1 else np.split(arr, count, axis=0)


def run_stacked(call: Callable[[dict], list[np.ndarray]], model: onnx.ModelProto, samples: SampleSet,
                outputs: list[str], batch_size: int = 64, batched: bool | None = None,
                parallel: bool = False) -> dict[str, np.ndarray]:
    """Run ``call(feed) -> outputs`` over every sample; stack each output on a new leading sample axis.
    ``parallel``: ``call`` may run on several threads at once (``ordered_calls``)."""
    per_sample: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
    feeds = iter_feeds(model, samples, outputs, batch_size, batched)
    for _, count, arrays in ordered_calls(lambda _, feed: call(feed), feeds, parallel):
        for k, arr in zip(outputs, arrays):
            per_sample[k].extend(unbatch(arr, count))
    return {k: np.stack(v) for k, v in per_sample.items()}
