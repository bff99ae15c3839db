"""Calibration: run the float model in onnxruntime over the calibration samples and record activation ranges.

The model is not augmented with reduction nodes: the float activations wanted are added as extra graph outputs
of a private copy, and each batch's values go straight into bounded-memory observers. Values inside If / Loop /
Scan bodies are observed too, every iteration, by running each body as its own onnxruntime model on the inputs
it sees (``qpass.analysis.subgraph_values``). Integer and boolean values, and float values read only as shapes,
scales or indices (``qpass.analysis.value_roles``), are never calibrated.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from tqdm import tqdm

from qpass.ir.batching import unbatch
from qpass.ir.ort_session import iter_batches, make_session
from qpass.analysis.calibrators import make_observer
from qpass.analysis.subgraph_values import BodyValues
from qpass.analysis.value_roles import index_only_values
from qpass.ir.graph import elem_types
from qpass.pipeline.analyses import PRESERVES_ALL, Calibration, FloatValues, TensorTypes
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
    #: keep the fetched float values of every sample as the ``FloatValues`` analysis when they fit in this many
    #: bytes (choose_ranges then reads them instead of running the model again); 0: never
    keep_values_bytes: int = 64 * 2**20


class Calibrate(Pass):
    name = "calibrate"
    inputs = ("calibration_data",)
    provides = (Calibration,)
    preserves = PRESERVES_ALL
    Options = CalibrateOptions

    def run(self, model, ctx):
        samples = ctx.inputs.calibration_data
        types = ctx.analyses.get(TensorTypes, model).types
        skip = index_only_values(model)
        wanted = [t for t in activation_tensors(model, types) if t not in skip]
        opts = {"percentile": self.opts.percentile, "bins": self.opts.bins}
        methods = [self.opts.method] if isinstance(self.opts.method, str) else list(self.opts.method)
        if "minmax" not in methods:
            methods.append("minmax")
        observers = {t: {m: make_observer(m, **opts) for m in methods} for t in wanted}

        def observe(name, arr):
            if name not in observers:
                observers[name] = {m: make_observer(m, **opts) for m in methods}
            for ob in observers[name].values():
                ob.update(arr)

        control = BodyValues(model, self.opts.threads, observe, skip)
        inits = {i.name for i in model.graph.initializer}
        fetch = wanted + [x for x in control.needed if x not in set(wanted) | inits]
        aug = _with_outputs(model, wanted, fetch[len(wanted):], types)
        sess = make_session(aug, threads=self.opts.threads, optimize=False)
        kept: dict[str, list] | None = {t: [] for t in fetch} if self.opts.keep_values_bytes > 0 else None
        size = 0
        with tqdm(total=len(samples), desc="calibrate", unit="sample", disable=not ctx.progress or None,
                  leave=False) as bar:
            for count, res in iter_batches(sess, aug, samples, fetch, self.opts.batch_size, progress=bar):
                if kept is not None:
                    size += sum(a.nbytes for a in res)
                    if size > self.opts.keep_values_bytes:
                        kept = None
                    else:
                        for t, arr in zip(fetch, res):
                            kept[t].extend(unbatch(arr, count))
                for t, arr in zip(wanted, res):
                    for ob in observers[t].values():
                        ob.update(arr)
                if control:
                    control.run(dict(zip(fetch, res)))
        primary = methods[0]
        ranges = {t: obs[primary].range() for t, obs in observers.items() if obs[primary].seen}
        ctx.analyses.put(Calibration(ranges, observers))
        if kept is not None:
            ctx.analyses.put(FloatValues(model, samples, kept))
        notes = [f"{len(ranges)} tensor ranges from {len(samples)} samples ({', '.join(methods)})"]
        inside = len(observers) - len(wanted)
        if inside:
            notes.append(f"{inside} of them inside If/Loop/Scan bodies")
        notes += [f"not calibrated inside: {why}" for why in control.problems]
        return PassResult(model, False, notes)


def _with_outputs(model: onnx.ModelProto, typed: list[str], untyped: list[str], types: dict) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``typed`` (float activations) and ``untyped`` (any value)."""
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    outputs = {o.name for o in aug.graph.output}
    for t in typed:
        if t not in outputs:
            aug.graph.output.append(onnx.helper.make_tensor_value_info(t, types[t], None))
    aug.graph.output.extend(onnx.helper.make_value_info(t, onnx.TypeProto()) for t in untyped if t not in outputs)
    return aug
