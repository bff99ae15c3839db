"""Typed analyses and the analysis manager (LLVM's new pass manager is the model).

An analysis is a fact about the current graph, one class each; the class is the result type and the cache key.
``AnalysisManager.get(Kind, model)`` returns the cached result or computes it (``Kind.compute``); an analysis
without ``compute`` is established by a pass (``Pass.provides``, stored with ``put``). After a pass changed the
graph, the pass manager drops every cached analysis the pass does not list in ``Pass.preserves`` (its own new
results stay).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, TypeVar

import numpy as np
import onnx

from qpass.analysis.layer_errors import joined_outputs
from qpass.errors import PipelineError
from qpass.ir.graph import elem_types


class Analysis:
    #: what messages call it ("pass 'quantize_qdq' needs ranges")
    name: ClassVar[str] = ""
    #: False: only a pass establishes it (see ``Pass.provides``); True: ``compute`` builds it on request
    computable: ClassVar[bool] = False
    #: True: a fact about a fixed model (not the graph being rewritten): kept when a pass changes the graph
    fixed_model: ClassVar[bool] = False
    #: True: numbers of the graph a pass was given (``GraphOutputs``): dropped whenever a pass changes the graph,
    #: whatever it preserves or established
    exact_graph: ClassVar[bool] = False

    @classmethod
    def compute(cls, model: onnx.ModelProto) -> "Analysis":
        raise PipelineError(f"{cls.name} cannot be computed on request: a pass establishes it")


#: ``Pass.preserves`` of a pass that never changes the graph: every analysis stays valid
PRESERVES_ALL: tuple[type[Analysis], ...] = (Analysis,)

A = TypeVar("A", bound=Analysis)


def is_preserved(kind: type[Analysis], preserves: Iterable[type[Analysis]]) -> bool:
    return any(issubclass(kind, p) for p in preserves)


class AnalysisManager:
    """Cache of analysis results for the graph a pipeline is working on."""

    def __init__(self, *results: Analysis):
        self._cache: dict[type[Analysis], Analysis] = {}
        self._fresh: set[type[Analysis]] = set()
        for r in results:
            self.put(r)

    def get(self, kind: type[A], model: onnx.ModelProto) -> A:
        """The cached result of ``kind``, computed from ``model`` first if it can be (a PipelineError if not)."""
        if kind not in self._cache:
            if not kind.computable:
                raise PipelineError(f"no {kind.name} for this graph (a pass that establishes them must run first)")
            self._cache[kind] = kind.compute(model)
        return self._cache[kind]  # type: ignore[return-value]

    def cached(self, kind: type[A]) -> A | None:
        return self._cache.get(kind)  # type: ignore[return-value]

    def put(self, result: Analysis) -> None:
        """Store a result a pass established for the graph it returns."""
        self._cache[type(result)] = result
        self._fresh.add(type(result))

    def available(self) -> set[type[Analysis]]:
        return set(self._cache)

    def begin_pass(self) -> None:
        self._fresh.clear()

    def after_change(self, preserves: Iterable[type[Analysis]]) -> None:
        """The graph changed: keep what the pass preserves or just established, drop the rest (and every
        ``exact_graph`` analysis)."""
        preserves = tuple(preserves)
        for kind in list(self._cache):
            if kind.fixed_model or (kind in self._fresh and not kind.exact_graph):
                continue
            if kind.exact_graph or not is_preserved(kind, preserves):
                del self._cache[kind]


# ---------------------------------------------------------------------------------------------- the analyses
@dataclass
class Calibration(Analysis):
    """Activation ranges from the calibrate pass: ``ranges[tensor] = (lo, hi)`` of the primary method and
    ``observers[tensor][method]`` (every method calibrated)."""

    name: ClassVar[str] = "ranges"
    ranges: dict[str, Any]
    observers: dict[str, dict[str, Any]]


@dataclass
class TensorTypes(Analysis):
    """Element type of every tensor whose type is known (``qpass.ir.graph.elem_types``)."""

    name: ClassVar[str] = "tensor types"
    computable: ClassVar[bool] = True
    types: dict[str, int]

    @classmethod
    def compute(cls, model: onnx.ModelProto) -> "TensorTypes":
        return cls(elem_types(model))


@dataclass
class FloatOutputs(Analysis):
    """The float model's joined outputs (``layer_errors.joined_outputs``) on sample sets, for the passes after
    ``quantize_qdq`` that score their candidates against it (``choose_dynamic``, ``auto_precision``): one float run
    per sample set in a pipeline run instead of one per pass. A fact about ``model`` (the snapshot before
    quantisation), not about the graph being rewritten: kept when a pass changes the graph."""

    name: ClassVar[str] = "float outputs"
    fixed_model: ClassVar[bool] = True
    model: onnx.ModelProto
    outputs: dict[tuple, tuple[Any, Any]]  # samples key -> (the samples, kept alive: the key names memory; outputs)


@dataclass
class FloatValues(Analysis):
    """The float values the calibrate pass fetched, per calibration sample: ``values[tensor][i]`` is tensor's
    array in sample ``i`` of ``samples`` (as one call of ``model`` with optimizations off gives it), kept when
    they fit calibrate's ``keep_values_bytes``. For the passes that run the same graph on the same samples again
    (``choose_ranges``' capture): read, not re-run. A fact about the current graph: dropped when a pass changes
    it; a reader also checks that ``model`` and ``samples`` are the objects it has (``values_for``)."""

    name: ClassVar[str] = "float values"
    model: onnx.ModelProto
    samples: Any
    values: dict[str, list]

    def stacked(self, names: list[str], idx) -> dict[str, np.ndarray]:
        """``run_samples``' answer for ``names`` on ``samples.subset(idx)``: each stacked on a new sample axis."""
        return {n: np.stack([self.values[n][i] for i in idx]) for n in names}


def values_for(analyses: AnalysisManager, model: onnx.ModelProto, samples, names) -> FloatValues | None:
    """The cached ``FloatValues`` when it holds every one of ``names`` for this very ``model`` and ``samples``."""
    fv = analyses.cached(FloatValues)
    if fv is None or fv.model is not model or fv.samples is not samples or any(n not in fv.values for n in names):
        return None
    return fv


def _samples_key(samples) -> tuple:
    """Which memory ``samples`` reads (a subset's arrays are views): equal keys, equal samples while both live."""
    def at(v):
        v = np.asarray(v)
        return v.__array_interface__["data"][0], v.shape, v.strides, v.dtype.str

    return tuple(sorted((k, at(v)) for k, v in samples.arrays.items())) + tuple(
        sorted((k, at(v)) for k, v in samples.shared.items()))


def float_outputs(analyses: AnalysisManager, model: onnx.ModelProto, samples):
    """``joined_outputs(model, samples)``, computed once per pipeline run for the same model object and samples."""
    return _joined(FloatOutputs, analyses, model, samples)


@dataclass
class GraphOutputs(Analysis):
    """The joined outputs (``layer_errors.joined_outputs``) of the graph being rewritten, on sample sets: the
    int8 model that ``choose_dynamic`` scores as its static choice and ``auto_precision`` as its start, run once
    while no pass changes it. Dropped whenever a pass changes the graph (``exact_graph``); a reader also checks
    that ``model`` is the object it has."""

    name: ClassVar[str] = "graph outputs"
    exact_graph: ClassVar[bool] = True
    model: onnx.ModelProto
    outputs: dict[tuple, tuple[Any, Any]]  # as FloatOutputs'


def graph_outputs(analyses: AnalysisManager, model: onnx.ModelProto, samples):
    """``joined_outputs(model, samples)`` of the current graph, computed once while it stays unchanged."""
    return _joined(GraphOutputs, analyses, model, samples)


def _joined(kind, analyses: AnalysisManager, model: onnx.ModelProto, samples):
    have = analyses.cached(kind)
    if have is None or have.model is not model:
        have = kind(model, {})
        analyses.put(have)
    key = _samples_key(samples)
    if key not in have.outputs:
        have.outputs[key] = (samples, joined_outputs(model, samples))
    return have.outputs[key][1]
