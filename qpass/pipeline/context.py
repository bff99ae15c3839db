"""What passes share during one pipeline run, kept apart by kind: the input data (``PassInputs``), the analyses
of the current graph (``AnalysisManager``) and what the run leaves for the user (``PassReport``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import onnx

from .analyses import AnalysisManager


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
class PassInputs:
    """Data given to a run (``Pass.inputs`` names the fields a pass needs)."""

    #: calibration samples (a qpass.ir.samples.SampleSet)
    calibration_data: Any = None
    #: held-out samples, with labels when there are any, for passes that measure accuracy (e.g. bitwidth)
    eval_data: Any = None

    def missing(self, names) -> list[str]:
        return [n for n in names if getattr(self, n) is None]


@dataclass
class PassReport:
    """What a run leaves for the user: pass records, log lines, per-pass results, model snapshots."""

    records: list[PassRecord] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    #: JSON-like summaries by key: "quantization" (quantize_qdq), "fakequant", "bitwidth", "integer_report"
    results: dict[str, Any] = field(default_factory=dict)
    #: the model right before the passes named in qpass.pipeline.run.SNAPSHOT_BEFORE
    snapshots: dict[str, onnx.ModelProto] = field(default_factory=dict)
    #: why a node stayed float, by node name (streamlining passes write it, integer_report reads it)
    streamline_notes: dict[str, str] = field(default_factory=dict)

    def facts(self) -> Mapping[str, Any]:
        """A read-only view by key: every result, plus "log", "snapshots" and "streamline_notes" when not empty."""
        extra = {"log": self.log, "snapshots": self.snapshots, "streamline_notes": self.streamline_notes}
        return MappingProxyType({**self.results, **{k: v for k, v in extra.items() if v}})


Instrument = Callable[[str, Any, onnx.ModelProto, "PassRecord | None"], None]


@dataclass
class PassContext:
    """Inputs, analyses, report and run options of one pipeline run (several PassManagers may share one)."""

    inputs: PassInputs = field(default_factory=PassInputs)
    analyses: AnalysisManager = field(default_factory=AnalysisManager)
    report: PassReport = field(default_factory=PassReport)
    dump_dir: Path | None = None
    verify: bool = True
    disabled: set[str] = field(default_factory=set)
    instruments: list[Instrument] = field(default_factory=list)
    progress: bool = True
    dump_count: int = 0
    #: where passes may fan independent work out (a qpass.pipeline.engines.Engine; None: serially, here)
    engine: Any = None
    #: the pipeline being run (set by PassManager.run): a pass may look at the passes after it, e.g. to simulate
    #: the quantizer that will run (qpass.passes.ptq_pass.quantizer_formats)
    pipeline: Any = None

    def log(self, message: str) -> None:
        self.report.log.append(message)
