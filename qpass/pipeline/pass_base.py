"""The pass protocol: a pass is a small class with a name, the inputs and analyses it needs, the analyses it
establishes and those that stay valid when it changes the graph.

``run(model, ctx)`` returns ``PassResult(model, changed)`` (qonnx's contract). The pass manager owns the model it
hands to a pass (one private copy per pipeline run), so a pass may rewrite it in place or return a new one; it never
sees the caller's model. Pipeline files find a pass by ``name`` in ``qpass.pipeline.registry.PASSES``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx

from qpass.errors import PipelineError
from .analyses import Analysis


@dataclass
class PassResult:
    model: onnx.ModelProto
    changed: bool
    notes: list[str] = field(default_factory=list)


@dataclass
class NoOptions:
    pass


class Pass:
    #: registry name, used in pipeline files
    name: ClassVar[str] = ""
    #: fields of ``ctx.inputs`` (qpass.pipeline.context.PassInputs) that must be given, e.g. "calibration_data"
    inputs: ClassVar[tuple[str, ...]] = ()
    #: analyses the pass reads with ``ctx.analyses.get``: computable ones, or ones an earlier pass established
    requires: ClassVar[tuple[type[Analysis], ...]] = ()
    #: analyses the pass establishes (``ctx.analyses.put``)
    provides: ClassVar[tuple[type[Analysis], ...]] = ()
    #: analyses still valid after the pass changed the graph (the rest are dropped); PRESERVES_ALL: never changes it
    preserves: ClassVar[tuple[type[Analysis], ...]] = ()
    #: dataclass of the pass's options; fields are the option names accepted in pipeline files
    Options: ClassVar[type] = NoOptions

    def __init__(self, **options: Any):
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise PipelineError(
                f"pass {self.name!r} has no option {', '.join(unknown)} (options: {', '.join(sorted(known)) or 'none'})"
            )
        try:
            self.opts = self.Options(**options)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"pass {self.name!r}: bad options: {exc}") from None

    def run(self, model: onnx.ModelProto, ctx) -> PassResult:
        """Rewrite ``model`` (owned by the pass manager) using ``ctx`` (a qpass.pipeline.manager.PassContext)."""
        raise NotImplementedError

    def describe(self) -> str:
        changed = {}
        for f in dataclasses.fields(self.opts):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if getattr(self.opts, f.name) != default:
                changed[f.name] = getattr(self.opts, f.name)
        return self.name + (f"({', '.join(f'{k}={v}' for k, v in changed.items())})" if changed else "")
