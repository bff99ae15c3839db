"""Calibration: run the float model in onnxruntime over the calibration samples and record activation ranges.

The model is not augmented with reduction nodes: the float activations wanted are added as extra graph outputs
of a private copy, and each batch's values go straight into bounded-memory observers.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from tqdm import tqdm

from qpass.ir.ort_session import iter_batches, make_session
from qpass.analysis.calibrators import make_observer
from qpass.ir.graph import elem_types
from qpass.pipeline.analyses import PRESERVES_ALL, Calibration, TensorTypes
from qpass.pipeline.pass_base import Pass, PassResult

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def activation_tensors(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[str]:
    """Every float tensor of the main graph that is computed or fed at run time (not a constant)."""
    types = elem_types(model) if types is None else types
    inits = {i.name for i in model.graph.initializer}
    names: list[str] = []
    seen: set[str] = set()
    for vi in model.graph.input:
        if vi.name not in inits:
            names.append(vi.name)
            seen.add(vi.name)
    for n in model.graph.node:
        for o in n.output:
            if o and o not in seen:
                names.append(o)
                seen.add(o)
    return [t for t in names if types.get(t) in FLOAT_TYPES]


@dataclass
class CalibrateOptions:
    method: str | list = "minmax"  # one calibrator or a list (each tensor then gets one observer per method)
    batch_size: int = 64
    threads: int = 1
    percentile: float = 99.99
    bins: int = 2048


class Calibrate(Pass):
    name = "calibrate"
    inputs = ("calibration_data",)
    provides = (Calibration,)
    preserves = PRESERVES_ALL
    Options = CalibrateOptions

    def run(self, model, ctx):
        samples = ctx.inputs.calibration_data
        types = ctx.analyses.get(TensorTypes, model).types
        wanted = activation_tensors(model, types)
        aug = onnx.ModelProto()
        aug.CopyFrom(model)
        outputs = {o.name for o in aug.graph.output}
        for t in wanted:
            if t not in outputs:
                aug.graph.output.append(onnx.helper.make_tensor_value_info(t, types[t], None))
        sess = make_session(aug, threads=self.opts.threads, optimize=False)
        opts = {"percentile": self.opts.percentile, "bins": self.opts.bins}
        methods = [self.opts.method] if isinstance(self.opts.method, str) else list(self.opts.method)
        if "minmax" not in methods:
            methods.append("minmax")
        observers = {t: {m: make_observer(m, **opts) for m in methods} for t in wanted}
        with tqdm(total=len(samples), desc="calibrate", unit="sample", disable=not ctx.progress or None,
                  leave=False) as bar:
            for _, res in iter_batches(sess, aug, samples, wanted, self.opts.batch_size, progress=bar):
                for t, arr in zip(wanted, res):
                    for ob in observers[t].values():
                        ob.update(arr)
        primary = methods[0]
        ranges = {t: obs[primary].range() for t, obs in observers.items() if obs[primary].seen}
        ctx.analyses.put(Calibration(ranges, observers))
        return PassResult(model, False, [f"{len(ranges)} tensor ranges from {len(samples)} samples "
                                         f"({', '.join(methods)})"])
