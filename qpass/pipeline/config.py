"""``QuantConfig``: every user-facing quantisation setting in one dataclass (FINN's ``DataflowBuildConfig`` is the
model). The CLI fills it from its flags, ``qpass.optimize(model, calib, config=QuantConfig(...))`` takes it, and
``resolve()`` turns it into a pipeline (a built-in name or a pipeline file) with per-pass option overrides merged
into that pipeline's entries.

    cfg = QuantConfig(weights="sym:4", activations="uint4")       # default pipeline -> fakequant
    plan = cfg.resolve()                                            # plan.pipeline_name == "fakequant"
    plan.overrides == {"fakequant": {"weights": "sym:4", "activations": "uint4"}}
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qpass.errors import QpassError
from .files import load_pipeline
from .manager import Pipeline

FORMAT_FIELDS = {"weights": "weights", "activations": "activations", "bias": "bias", "accumulator": "accumulator",
                 "placement": "placement", "rounding": "rounding", "granularity": "weight_granularity",
                 "calibrator": "calibrator", "seed": "seed"}  # QuantConfig field -> fakequant option
QDQ_FLAGS = {"activation_dtype": "--activation-dtype", "per_tensor": "--per-tensor", "exclude": "--exclude",
             "target_cpu": "--target-cpu"}
#: the most threads (or worker processes) a setting may ask for: four per CPU
MAX_WORKERS = 4 * (os.cpu_count() or 1)


@dataclass
class QuantConfig:
    """Settings of one optimisation. Fields left at None keep the pipeline's own options."""

    #: built-in pipeline name or pipeline YAML file; "default" becomes "bitwidth" with ``bits="auto"``, "dataflow"
    #: with ``backend="hls"`` and "fakequant" with any format field (weights ... seed)
    pipeline: str | Path = "default"
    #: weight format (qpass.formats spec), e.g. sym:8, fixed:8,6, dfp:8, ternary, binary, bfp:4,16, pow2:-8,0
    weights: str | None = None
    #: activation format, e.g. uint8, int8, fixed:8,4, dfp:8, uint4
    activations: str | None = None
    #: bias format: auto (int32 at s_in*s_w), float, or a format spec
    bias: str | None = None
    #: accumulator format for placement "intrinsic", e.g. int16, fixed:24,0
    accumulator: str | None = None
    #: where activations are quantised: extrinsic or intrinsic
    placement: str | None = None
    #: weight rounding: ROUND, HALF_UP, HALF_DOWN, FLOOR, CEIL, UP, DOWN, STOCHASTIC
    rounding: str | None = None
    #: weight scale granularity: tensor, channel (row), group:G
    granularity: str | None = None
    #: activation range calibrator: minmax, percentile, entropy, mse, dfp (also the calibrate pass's method)
    calibrator: str | None = None
    #: seed for stochastic rounding
    seed: int | None = None
    #: quantize_qdq: activation integer type, int8 or uint8
    activation_dtype: str | None = None
    #: quantize_qdq: per-tensor instead of per-channel weight scales
    per_tensor: bool = False
    #: quantize_qdq: node-name glob patterns to leave in float
    exclude: tuple[str, ...] = ()
    #: quantize_qdq: CPUs the int8 model must be exact on: avx2 (no VNNI), vnni, arm or any (None: any)
    target_cpu: str | None = None
    #: "auto": search a width per layer (pipeline "bitwidth"); N (1-16): uniform sym:N weights, uintN activations
    bits: str | int | None = None
    #: accuracy target of bits "auto", e.g. relative_accuracy>=0.99 or sqnr>=30
    target: str | None = None
    #: what bits "auto" minimises: memory, bops or resources
    cost: str | None = None
    #: bits "auto" under a budget: average weight bits <= this
    avg_bits: float | None = None
    #: "static" (calibrated activation ranges) or "dynamic" (pipeline "dynamic": DynamicQuantizeLinear + MatMulInteger,
    #: ranges measured at run time, no calibration); None: static
    mode: str | None = None
        #: ort: an ONNX model onnxruntime runs; hls / rtl: the dataflow pipeline, QONNX kept for qpass.backends.hls/rtl
    backend: str = "ort"
    #: onnxruntime threads for calibration (and, in the CLI, evaluation)
    threads: int = 1
    #: keep QONNX quantisation ops (skip the lower_ort pass)
    qonnx: bool = False
    #: run the ONNX checker and shape inference between passes
    verify: bool = True

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> "QuantConfig":
        """A config from a mapping of field names (e.g. read from YAML); unknown names are a QpassError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise QpassError(f"unknown setting {', '.join(unknown)} (settings: {', '.join(sorted(known))})")
        return cls(**settings)

    def resolve(self) -> "ResolvedConfig":
        """The pipeline and per-pass overrides these settings stand for (a QpassError for contradictory ones)."""
        bits = self._resolve_bits()
        self._check_threads()
        name, overrides = self._resolve_pipeline_name(bits), self._resolve_overrides(bits)
        pipeline = load_pipeline(name, overrides)
        passes = {p.name for p in pipeline.flat_passes()}
        if "fakequant" in overrides and "fakequant" not in passes:
            raise QpassError(f"format options need a pipeline with the 'fakequant' pass ({name} has none)")
        if "quantize_qdq" in overrides and "quantize_qdq" not in passes:
            flags = [flag for f, flag in QDQ_FLAGS.items() if getattr(self, f)]
            raise QpassError(f"{' and '.join(flags)} {'applies' if len(flags) == 1 else 'apply'} only to the "
                             f"'quantize_qdq' pass, which pipeline {name} does not run")
        if "mixed_precision" in overrides and "mixed_precision" not in passes:
            after = next((p for p in ("auto_precision", "choose_dynamic") if p in passes), "quantize_qdq")  # last int8
            _add_after(pipeline, after, "mixed_precision", overrides["mixed_precision"], name)
        if bits == "auto" and "bitwidth" not in passes:
            raise QpassError(f"--bits auto needs a pipeline with the 'bitwidth' pass ({name} has none)")
        disabled = {"lower_ort"} if self.qonnx or self.backend in ("hls", "rtl") else set()
        return ResolvedConfig(name, overrides, pipeline, disabled, self.verify)

    def _resolve_bits(self) -> str | None:
        bits = None if self.bits is None else str(self.bits)
        if bits is not None and bits != "auto" and (not bits.isdigit() or not 1 <= int(bits) <= 16):
            raise QpassError(f"--bits takes 'auto' or a width from 1 to 16, not {bits!r}")
        # --target alone (no --bits) is the default int8 pipeline's mixed_precision pass
        if bits != "auto" and (self.cost or self.avg_bits is not None or (bits is not None and self.target)):
            raise QpassError("--target, --cost and --avg-bits go with --bits auto")
        if self.avg_bits is not None and not (isinstance(self.avg_bits, (int, float)) and math.isfinite(self.avg_bits)
                                              and self.avg_bits > 0):
            raise QpassError(f"--avg-bits takes a finite number greater than 0, not {self.avg_bits!r}")
        return bits

    def _check_threads(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or \
                not 1 <= self.threads <= MAX_WORKERS:
            raise QpassError(f"--threads takes a whole number from 1 to {MAX_WORKERS} (four per CPU), "
                             f"not {self.threads!r}")

    def _formats(self, bits: str | None) -> dict[str, Any]:
        """fakequant options from the format fields; a uniform width fills weights and activations left unset."""
        values = {opt: getattr(self, f) for f, opt in FORMAT_FIELDS.items()}
        if bits is not None and bits != "auto":
            n = int(bits)
            values["weights"] = values["weights"] or ("binary" if n == 1 else f"sym:{n}")
            values["activations"] = values["activations"] or ("binary" if n == 1 else f"uint{n}")
        return {k: v for k, v in values.items() if v is not None}

    def _resolve_pipeline_name(self, bits: str | None) -> str | Path:
        if self.mode not in (None, "static", "dynamic"):
            raise QpassError(f"--mode takes static or dynamic, not {self.mode!r}")
        if self.mode == "dynamic":
            if self.pipeline != "default" or bits is not None or self._formats(bits) or self.target \
                    or self.backend != "ort":
                raise QpassError("--mode dynamic is its own pipeline (MatMul/Gemm on run-time ranges): it takes no "
                                 "--pipeline, --bits, --target, format options or --backend hls")
            return "dynamic"
        if self.pipeline != "default":
            return self.pipeline
        if bits == "auto":
            return "bitwidth"
        if self.backend in ("hls", "rtl"):
            return "dataflow"
        return "fakequant" if self._formats(bits) else "default"

    def _resolve_overrides(self, bits: str | None) -> dict[str, dict]:
        overrides: dict[str, dict] = {}
        qdq: dict[str, Any] = {}
        if self.activation_dtype:
            qdq["activation_dtype"] = self.activation_dtype
        if self.per_tensor:
            qdq["per_channel"] = False
        if self.exclude and self.mode == "dynamic":
            overrides["quantize_dynamic"] = {"exclude": list(self.exclude)}
        elif self.exclude:
            qdq["exclude"] = list(self.exclude)
        if self.target_cpu:
            qdq["target_cpu"] = self.target_cpu
        if qdq:
            overrides["quantize_qdq"] = qdq
        if bits == "auto":
            bw = {k: v for k, v in (("target", self.target), ("cost", self.cost), ("avg_bits", self.avg_bits))
                  if v is not None}
            if self.avg_bits is not None and self.target is None:
                bw["target"] = None  # a budget alone: no accuracy target
            if self.backend in ("hls", "rtl"):
                bw["storage"] = "exact"  # hardware words are as wide as the width chosen (the ONNX file: INT4/INT8)
            overrides["bitwidth"] = bw
        elif self.target:
            overrides["mixed_precision"] = {"target": self.target}
        formats = self._formats(bits)
        if formats:
            overrides["fakequant"] = formats
        cal: dict[str, Any] = {}
        if self.threads != 1:
            cal["threads"] = self.threads
        if self.calibrator:
            cal["method"] = self.calibrator
        if cal:
            overrides["calibrate"] = cal
        return overrides


def _add_after(pipeline: Pipeline, after: str, name: str, options: dict, pipeline_name) -> None:
    """Insert pass ``name`` right after the top-level step ``after`` (a QpassError when there is none)."""
    from .registry import get_pass_class

    at = next((i for i, s in enumerate(pipeline.steps) if getattr(s, "name", None) == after), None)
    if at is None:
        raise QpassError(f"--target needs --bits auto or a pipeline with the '{after}' pass ({pipeline_name} has "
                         "none)")
    pipeline.steps.insert(at + 1, get_pass_class(name)(**options))


@dataclass
class ResolvedConfig:
    """What a QuantConfig resolves to: the pipeline to run, and the passes to skip."""

    #: the pipeline named after the defaults were applied (a built-in name or a file path)
    pipeline_name: str | Path
    #: option overrides by pass name, merged into the pipeline's entries
    overrides: dict[str, dict]
    pipeline: Pipeline
    disabled: set[str] = field(default_factory=set)
    verify: bool = True

    @property
    def needs_calibration(self) -> bool:
        return any("calibration_data" in p.inputs for p in self.pipeline.flat_passes())
