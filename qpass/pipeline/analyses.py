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

import onnx

from qpass.errors import PipelineError
from qpass.ir.graph import elem_types


class Analysis:
    #: what messages call it ("pass 'quantize_qdq' needs ranges")
    name: ClassVar[str] = ""
    #: False: only a pass establishes it (see ``Pass.provides``); True: ``compute`` builds it on request
    computable: ClassVar[bool] = False

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
        """The graph changed: keep what the pass preserves or just established, drop the rest."""
        preserves = tuple(preserves)
        for kind in list(self._cache):
            if kind not in self._fresh and not is_preserved(kind, preserves):
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
