"""Compare a quantized model against its float original on a sample set (accuracy, agreement, SQNR)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.errors import UnsupportedOpError
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import SampleSet
from .metrics import accuracy, agreement, sqnr_db, top1


@dataclass
class Comparison:
    samples: int
    sqnr_db: float
    agreement: float
    float_accuracy: float | None = None
    quant_accuracy: float | None = None

    def lines(self) -> list[str]:
        out = [f"samples: {self.samples}", f"output SQNR vs float: {self.sqnr_db:.2f} dB",
               f"top-1 agreement with float: {100 * self.agreement:.2f}%"]
        if self.float_accuracy is not None:
            out.append(f"accuracy: float {100 * self.float_accuracy:.2f}%  quantized {100 * self.quant_accuracy:.2f}%"
                       f"  (delta {100 * (self.quant_accuracy - self.float_accuracy):+.2f} points)")
        return out


@dataclass
class BackendCheck:
    """The golden simulator against onnxruntime on the same samples."""

    samples: int
    identical_predictions: int
    max_abs_diff: float
    golden_accuracy: float | None
    saturation: dict

    def summary(self) -> str:
        return f"{self.identical_predictions}/{self.samples}"

    def lines(self) -> list[str]:
        out = [f"golden vs onnxruntime: identical predictions on {self.identical_predictions}/{self.samples} samples, "
               f"max |output diff| {self.max_abs_diff:.3g}"]
        if self.golden_accuracy is not None:
            out.append(f"golden accuracy: {100 * self.golden_accuracy:.2f}%")
        sat = {k: v for k, v in self.saturation.items() if v["saturated"]}
        total = sum(v["saturated"] for v in self.saturation.values())
        out.append(f"saturated elements (golden, all quantisers): {total}"
                   + (f" in {len(sat)} quantisers" if sat else ""))
        for name, v in sorted(sat.items(), key=lambda kv: -kv[1]["saturated"])[:8]:
            out.append(f"  {name}: {v['saturated']} of {v['outputs']} ({100 * v['saturated'] / max(v['outputs'], 1):.2f}%)")
        return out


@dataclass
class SkippedCheck:
    """A check that could not run (e.g. the golden simulator has no kernel for an op), and why."""

    reason: str

    def summary(self) -> str:
        return f"skipped: {self.reason}"

    def lines(self) -> list[str]:
        return [f"golden vs onnxruntime: skipped: {self.reason}"]


def check_backends(golden_model: onnx.ModelProto, ort_model: onnx.ModelProto, samples: SampleSet,
                   threads: int = 1) -> BackendCheck | SkippedCheck:
    """The golden simulator against onnxruntime; a SkippedCheck when the golden simulator cannot run the model
    (an op without a kernel: refused when the executor is built, before any computation)."""
    from qpass.reference import GoldenExecutor, run_samples as golden_run

    out_name = ort_model.graph.output[0].name
    try:
        ex = GoldenExecutor(golden_model)
    except UnsupportedOpError as exc:
        return SkippedCheck(str(exc))
    g = golden_run(golden_model, samples, outputs=[out_name], executor=ex)[out_name]
    r = run_samples(ort_model, samples, threads, outputs=[out_name])[out_name]
    same = int(np.sum(top1(g) == top1(r)))
    acc = accuracy(g, samples.labels) if samples.labels is not None else None
    sat = {k: v for k, v in ex.stats.items() if v.get("kind") == "quant"}
    return BackendCheck(len(samples), same, float(np.max(np.abs(g.astype(np.float64) - r))), acc, sat)


def compare(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, samples: SampleSet,
            threads: int = 1) -> Comparison:
    out_name = float_model.graph.output[0].name
    ref = run_samples(float_model, samples, threads, outputs=[out_name])[out_name]
    got = run_samples(quant_model, samples, threads, outputs=[out_name])[out_name]
    cmp = Comparison(len(samples), sqnr_db(ref, got), agreement(ref, got))
    if samples.labels is not None:
        cmp.float_accuracy = accuracy(ref, samples.labels)
        cmp.quant_accuracy = accuracy(got, samples.labels)
    return cmp
