"""Compare a quantized model against its float original on a sample set (accuracy, agreement, SQNR)."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from .backends.ort import run_samples
from .data import SampleSet
from .metrics import accuracy, agreement, sqnr_db


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
