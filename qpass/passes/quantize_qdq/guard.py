"""Is a lossy remedy for x86 CPUs without VNNI acceptable for this model?

``pair_scale`` and ``seven_bit`` keep every layer exact on every CPU at int8 speed by coarsening the weight grid of
layers whose int16 pair sums could saturate; most models lose about 1 dB of output SQNR, but a model whose outputs
hinge on discrete decisions (a table-structure decoder) can lose far more. The check runs the float model, the full
int8 quantization (what VNNI / ARM CPUs would run) and the remedied one on up to ``SAMPLES`` calibration samples,
the quantized ones simulated on their grid (onnxruntime without graph optimizations: DequantizeLinear -> float op ->
QuantizeLinear, the same on every CPU), and compares output SQNR; when the remedy costs more than
``avx2_max_loss_db`` on some output, the pass re-quantizes with the exact uint8 + 128 encoding instead.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples

SAMPLES = 32
LOSSY = ("pair_scale", "seven_bit")


def needs_check(opts, encodings: dict, samples) -> bool:
    return samples is not None and opts.avx2_max_loss_db is not None and any(e in LOSSY for e in encodings.values())


def remedy_loss_db(float_model: onnx.ModelProto, remedied: onnx.ModelProto, full_int8: onnx.ModelProto,
                   samples) -> float:
    """The most output SQNR (dB) ``remedied`` loses against ``full_int8`` on the first calibration samples."""
    s = samples.subset(slice(0, SAMPLES)) if len(samples) > SAMPLES else samples
    ref = run_samples(float_model, s)
    full, rem = (run_samples(m, s, optimize=False) for m in (full_int8, remedied))
    losses = [sqnr_db(ref[k], full[k]) - sqnr_db(ref[k], rem[k]) for k in ref
              if ref[k].dtype.kind == "f" and np.isfinite(sqnr_db(ref[k], full[k]))]
    return max(losses, default=0.0)


def with_options(opts, **changes):
    return dataclasses.replace(opts, **changes)
