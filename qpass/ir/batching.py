"""Running a model over a sample set: batching along the symbolic batch dimension, and stacking per sample.

Samples are concatenated along the model's dynamic leading dimension (``batch_size`` at a time) when every input
and every requested output carries the same symbolic batch dimension; otherwise each sample is one call. Both the
onnxruntime backend and the golden simulator use this, so they batch identically.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import onnx

from qpass.ir.samples import SampleSet, model_inputs
from qpass.ir.graph import shapes as tensor_shapes


def batchable(model: onnx.ModelProto, samples: SampleSet, outputs: list[str]) -> bool:
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


def iter_feeds(model: onnx.ModelProto, samples: SampleSet, outputs: list[str],
               batch_size: int = 64) -> Iterator[tuple[int, int, dict]]:
    """Yield (first sample index, number of samples, feed dict) per call."""
    n = len(samples)
    batched = batch_size > 1 and n > 1 and batchable(model, samples, outputs)
    step = batch_size if batched else 1
    for start in range(0, n, step):
        stop = min(n, start + step)
        if batched:
            feed = {k: np.concatenate(list(v[start:stop]), axis=0) for k, v in samples.arrays.items()}
            feed.update(samples.shared)
        else:
            feed = samples.feed(start)
        yield start, stop - start, feed


def run_stacked(call: Callable[[dict], list[np.ndarray]], model: onnx.ModelProto, samples: SampleSet,
                outputs: list[str], batch_size: int = 64) -> dict[str, np.ndarray]:
    """Run ``call(feed) -> outputs`` over every sample; stack each output on a new leading sample axis."""
    per_sample: dict[str, list[np.ndarray]] = {k: [] for k in outputs}
    for _, count, feed in iter_feeds(model, samples, outputs, batch_size):
        for k, arr in zip(outputs, call(feed)):
            per_sample[k].extend([arr] if count == 1 else np.split(arr, count, axis=0))
    return {k: np.stack(v) for k, v in per_sample.items()}
