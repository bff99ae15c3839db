"""Golden simulator: the numpy reference executor every other qpass backend is checked against bit for bit.

    from qpass.reference import GoldenExecutor, run_samples
    ex = GoldenExecutor(model)                      # raises UnsupportedOpError before computing anything
    y = ex.run({"input": x})["logits"]
    ex.stats                                        # per fused integer layer: accumulator range, overflow, ...
    outs = run_samples(model, samples)              # like qpass.ir.ort_session.run_samples

Float ops follow ONNX semantics in float32; QDQ layers (DequantizeLinear -> op -> QuantizeLinear) run as integer
kernels with onnxruntime's exact requantisation (``ops_integer``); QONNX Quant / BipolarQuant / Trunc /
MultiThreshold follow the qonnx reference (``ops_quant``). New ops are one function each (``register``).
"""
from __future__ import annotations

import numpy as np
import onnx

from qpass.ir.samples import SampleSet
from qpass.errors import UnsupportedOpError
from .executor import GoldenError, GoldenExecutor
from .registry import ONNX_DOMAIN, QONNX_DOMAIN, QPASS_DOMAIN, NodeInfo, register, supported_ops

__all__ = ["GoldenExecutor", "GoldenError", "UnsupportedOpError", "run_samples", "register", "supported_ops",
           "NodeInfo", "ONNX_DOMAIN", "QONNX_DOMAIN", "QPASS_DOMAIN"]


def run_samples(model: onnx.ModelProto, samples: SampleSet, outputs: list[str] | None = None, batch_size: int = 64,
                executor: GoldenExecutor | None = None, acc_bits: int | None = None,
                overflow: str = "saturate", partitions=None, batched: bool | None = None) -> dict[str, np.ndarray]:
    """Run every sample; return each output stacked on a new leading sample axis (the npz convention).

    Samples are concatenated along the model's batch dimension (batch_size at a time) when ``qpass.ir.batching``
    finds one (by name or traced through the graph), as ``qpass.ir.ort_session.run_samples`` does; otherwise each
    sample is one call.
    """
    from qpass.ir.batching import run_stacked

    ex = executor or GoldenExecutor(model, acc_bits=acc_bits, overflow=overflow, partitions=partitions)
    names = list(outputs or ex.output_names)
    def call(feed):
        res = ex.run(feed, names)  # one run for every output (not one per output)
        return [res[k] for k in names]

    return run_stacked(call, model, samples, names, batch_size, batched)
