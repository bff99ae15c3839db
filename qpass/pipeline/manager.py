"""The pass manager: runs a pipeline of passes over a private copy of a model.

After every pass it re-checks the graph (ONNX checker + strict shape inference), records wall time and node-count
change, optionally dumps the model, and keeps ``ctx.facts`` consistent with what each pass requires, provides and
invalidates. ``Repeat`` runs a group of passes to a fixed point.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

import onnx

from qpass.errors import PipelineError, QpassError
from qpass.ir.model_io import PROTO_LIMIT, save_model
from .pass_base import Pass, PassResult


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    changed: bool
    notes: list[str] = field(default_factory=list)
    iteration: int | None = None


@dataclass
class PassContext:
    """What passes share during one pipeline run: configuration, facts, records and instruments."""

    config: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    records: list[PassRecord] = field(default_factory=list)
    dump_dir: Path | None = None
    verify: bool = True
    disabled: set[str] = field(default_factory=set)
    instruments: list[Callable[[str, Pass, onnx.ModelProto, PassRecord | None], None]] = field(default_factory=list)
    progress: bool = True
    _dump_count: int = 0

    def log(self, message: str) -> None:
        self.facts.setdefault("log", []).append(message)


@dataclass
class Repeat:
    """Run ``passes`` in order, again and again, until none of them changes the graph (at most ``max_iter``)."""

    passes: list[Pass]
    max_iter: int = 20
    name: str = "repeat"

    def describe(self) -> str:
        return f"repeat[{', '.join(p.describe() for p in self.passes)}]"


Step = Union[Pass, Repeat]


@dataclass
class Pipeline:
    name: str
    steps: list[Step]
    description: str = ""

    def flat_passes(self):
        for s in self.steps:
            if isinstance(s, Repeat):
                yield from s.passes
            else:
                yield s

    def describe(self) -> str:
        return " -> ".join(s.describe() for s in self.steps)


def verify_model(model: onnx.ModelProto, after: str) -> onnx.ModelProto:
    """Checker + strict shape inference; returns the model with inferred value_info."""
    try:
        if model.ByteSize() >= PROTO_LIMIT:
            onnx.checker.check_graph(model.graph, onnx.checker.DEFAULT_CONTEXT)
            return model
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"the graph is invalid after pass {after!r}: {first}") from None


class PassManager:
    def __init__(self, pipeline: Pipeline, ctx: PassContext | None = None):
        self.pipeline = pipeline
        self.ctx = ctx or PassContext()

    def check_requirements(self) -> None:
        """Fail before any work if a pass needs a fact that nothing before it provides."""
        have = set(self.ctx.facts)
        for p in self.pipeline.flat_passes():
            if p.name in self.ctx.disabled:
                continue
            missing = [r for r in p.requires if r not in have]
            if missing:
                hint = _providers_hint(missing)
                raise PipelineError(f"pass {p.name!r} needs {', '.join(missing)}{hint}")
            have.update(p.provides)

    def run(self, model: onnx.ModelProto) -> onnx.ModelProto:
        self.check_requirements()
        work = onnx.ModelProto()
        work.CopyFrom(model)  # the one private copy: the caller's model is never touched
        for step in self.pipeline.steps:
            if isinstance(step, Repeat):
                work = self._run_repeat(step, work)
            else:
                work, _ = self._run_pass(step, work)
        return work

    def _run_repeat(self, rep: Repeat, model: onnx.ModelProto) -> onnx.ModelProto:
        for it in range(1, rep.max_iter + 1):
            any_changed = False
            for p in rep.passes:
                model, changed = self._run_pass(p, model, iteration=it)
                any_changed |= changed
            if not any_changed:
                return model
        self.ctx.log(f"{rep.describe()} reached max_iter={rep.max_iter} before a fixed point")
        return model

    def _run_pass(self, p: Pass, model: onnx.ModelProto, iteration: int | None = None):
        if p.name in self.ctx.disabled:
            return model, False
        missing = [r for r in p.requires if r not in self.ctx.facts]
        if missing:
            raise PipelineError(f"pass {p.name!r} needs {', '.join(missing)}{_providers_hint(missing)}")
        for inst in self.ctx.instruments:
            inst("before", p, model, None)
        before = len(model.graph.node)
        t0 = time.perf_counter()
        try:
            result = p.run(model, self.ctx)
        except QpassError:
            raise
        except Exception as exc:  # a pass bug must still reach the user as one line
            raise PipelineError(f"pass {p.name!r} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, PassResult):
            raise PipelineError(f"pass {p.name!r} returned {type(result).__name__}, not PassResult")
        out = result.model
        if result.changed:
            for fact in p.invalidates:
                self.ctx.facts.pop(fact, None)
            if self.ctx.verify:
                out = verify_model(out, p.name)
        for fact in p.provides:
            self.ctx.facts.setdefault(fact, True)
        rec = PassRecord(p.describe(), time.perf_counter() - t0, before, len(out.graph.node), result.changed,
                         list(result.notes), iteration)
        self.ctx.records.append(rec)
        if self.ctx.dump_dir is not None:
            self.ctx._dump_count += 1
            suffix = f"_it{iteration}" if iteration else ""
            save_model(out, Path(self.ctx.dump_dir) / f"{self.ctx._dump_count:02d}_{p.name}{suffix}.onnx")
        for inst in self.ctx.instruments:
            inst("after", p, out, rec)
        return out, result.changed


def _providers_hint(missing) -> str:
    from qpass.pipeline.registry import providers_of

    names = providers_of(missing)
    if names:
        return f" (run {' or '.join(repr(n) for n in names)} before it)"
    if "calibration_data" in missing:
        return " (give calibration data with --calib NPZ)"
    return ""
