"""The pass manager: runs a pipeline of passes over a private copy of a model.

Before any work it checks that every pass will have its inputs and analyses (simulating which analyses each pass
establishes and which survive the passes that change the graph). After every pass it re-checks the graph (ONNX
checker + strict shape inference), drops the analyses the pass did not preserve, records wall time and node-count
change, and optionally dumps the model. ``Repeat`` runs a group of passes to a fixed point.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import onnx

from qpass.errors import PipelineError, QpassError
from qpass.ir.model_io import PROTO_LIMIT, save_model
from .analyses import is_preserved
from .context import PassContext, PassRecord
from .pass_base import Pass, PassResult


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
        data = model.SerializeToString()  # once for both (each would serialize the proto again: 0.1 s per 70 MB)
        onnx.checker.check_model(data)
        return onnx.shape_inference.infer_shapes(data, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"the graph is invalid after pass {after!r}: {first}") from None


class PassManager:
    def __init__(self, pipeline: Pipeline, ctx: PassContext | None = None):
        self.pipeline = pipeline
        self.ctx = ctx or PassContext()

    def check_requirements(self) -> None:
        """Fail before any work if a pass will lack an input or an analysis: one that is not computable and that no
        earlier pass establishes, or that a pass changing the graph in between does not preserve (each Repeat group
        is simulated twice, as its passes run again)."""
        have = {kind: "" for kind in self.ctx.analyses.available()}  # analysis -> the pass that established it
        dropped: dict = {}  # analysis -> (established by, dropped by)
        for p in self._simulated_passes():
            self._refuse_if_lacking(p, have, dropped)
            for kind in [k for k in have if not is_preserved(k, p.preserves)]:
                dropped[kind] = (have.pop(kind), p.name)
            for kind in p.provides:
                have[kind] = p.name
                dropped.pop(kind, None)

    def _refuse_if_lacking(self, p: Pass, have, dropped: dict) -> None:
        missing = [k for k in p.requires if k not in have and not k.computable]
        missing_inputs = self.ctx.inputs.missing(p.inputs)
        if missing or missing_inputs:
            raise PipelineError(_requirement_message(p, missing, missing_inputs, dropped))

    def _simulated_passes(self):
        for step in self.pipeline.steps:
            passes = step.passes * 2 if isinstance(step, Repeat) else [step]
            yield from (p for p in passes if p.name not in self.ctx.disabled)

    def run(self, model: onnx.ModelProto) -> onnx.ModelProto:
        self.check_requirements()
        self.ctx.pipeline = self.pipeline
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
        self._refuse_if_lacking(p, self.ctx.analyses.available(), {})
        self.ctx.analyses.begin_pass()
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
            self.ctx.analyses.after_change(p.preserves)
            if self.ctx.verify:
                out = verify_model(out, p.name)
        rec = PassRecord(p.describe(), time.perf_counter() - t0, before, len(out.graph.node), result.changed,
                         list(result.notes), iteration)
        self.ctx.report.records.append(rec)
        if self.ctx.dump_dir is not None:
            self.ctx.dump_count += 1
            suffix = f"_it{iteration}" if iteration else ""
            save_model(out, Path(self.ctx.dump_dir) / f"{self.ctx.dump_count:02d}_{p.name}{suffix}.onnx")
        for inst in self.ctx.instruments:
            inst("after", p, out, rec)
        return out, result.changed


def _requirement_message(p: Pass, missing: list, missing_inputs: list[str], dropped: dict) -> str:
    """One line: what ``p`` lacks and what to do about it."""
    from qpass.pipeline.registry import providers_of

    head = f"pass {p.name!r} needs {', '.join([k.name for k in missing] + missing_inputs)}"
    names = providers_of(missing) if missing else []
    gone = [k for k in missing if k in dropped]
    if gone:
        established, dropper = dropped[gone[0]]
        fix = " or ".join(repr(n) for n in names) or (repr(established) if established else "")
        return head + f", which {dropper!r} drops as it changes the graph" + (f" (run {fix} after {dropper!r})"
                                                                               if fix else "")
    if names:
        return head + f" (run {' or '.join(repr(n) for n in names)} before it)"
    if "calibration_data" in missing_inputs:
        return head + " (give calibration data with --calib NPZ)"
    return head
