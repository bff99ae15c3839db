"""Models whose chosen initializers are graph inputs, so that one onnxruntime session evaluates many values of them.

A search that tries many values of a few constants (an activation quantizer's scale and zero point, a bias) would
otherwise build a model copy and a session per candidate: for a small model the session build costs as much as the
run (oww-melspectrogram: 2.9 ms to build, 4.2 ms to run 8 samples). onnxruntime reads a QuantizeLinear's or a
QLinearConv's scale and zero point when it runs, and still fuses a DequantizeLinear -> Conv -> QuantizeLinear
group whose parameters are graph inputs; whether the outputs are the same as with the values built in is the
caller's to check (``FedSession.agrees``): a kernel that folds a constant at load would differ.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qpass.ir.ort_session import make_session, optimized_session, run_samples
from qpass.ir.samples import SampleSet


def fed_copy(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers ``names`` are graph inputs of the same type and shape instead."""
    names = set(names)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    moved = [i for i in m.graph.initializer if i.name in names]
    if len(moved) != len(names):
        raise KeyError(f"not initializers of the model: {sorted(names - {i.name for i in moved})}")
    keep = [i for i in m.graph.initializer if i.name not in names]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    for i in moved:
        m.graph.input.append(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)))
    return m


def initializer_values(model: onnx.ModelProto, names) -> dict[str, np.ndarray]:
    """{name: value} of the initializers ``names`` of ``model``."""
    names = set(names)
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in names}


class FedSession:
    """One session of ``fed_copy(model, names)`` (with ``outputs`` added as graph outputs: any tensor of the model,
    float unless ``types`` says otherwise); ``run`` feeds it a sample set and values for ``names``. ``keep_optimized``
    (with ``optimize``): ``optimized`` is the model onnxruntime's optimizer made of it, written by the session's own
    build (``optimized_session``)."""

    def __init__(self, model: onnx.ModelProto, names, optimize: bool = True, outputs=(), types: dict | None = None,
                 keep_optimized: bool = False):
        self.names = list(dict.fromkeys(names))
        m = fed_copy(model, self.names)
        have = {o.name for o in m.graph.output}
        for t in dict.fromkeys(outputs):
            if t not in have:
                m.graph.output.append(helper.make_tensor_value_info(t, (types or {}).get(t, onnx.TensorProto.FLOAT),
                                                                    None))
        self.model = m
        self.dtypes = {k: v.dtype for k, v in initializer_values(model, self.names).items()}
        self.optimized, self.sess = None, None
        if keep_optimized and optimize:
            try:
                self.optimized, self.sess = optimized_session(m)
            except (ValueError, OSError):  # the optimized graph not to be had (the session may be): a caller's to see
                pass
        self.sess = self.sess or make_session(m, optimize=optimize)

    def samples(self, samples: SampleSet, values: dict) -> SampleSet:
        """``samples`` with ``values`` (every one of ``names``, cast to the initializers' types) fed to each call."""
        fed = {k: np.asarray(values[k], self.dtypes[k]) for k in self.names}
        return SampleSet(samples.arrays, {**samples.shared, **fed}, samples.labels, samples.source)

    def run(self, samples: SampleSet, values: dict, outputs: list[str] | None = None,
            batch_size: int = 64) -> dict[str, np.ndarray]:
        """``run_samples`` of the session on ``samples`` with ``values`` fed."""
        return run_samples(self.model, self.samples(samples, values), outputs=outputs, batch_size=batch_size,
                           sess=self.sess)


def cut_model(model: onnx.ModelProto, targets: list[str], cut, types: dict | None = None) -> onnx.ModelProto | None:
    """The part of ``model`` that computes ``targets`` from the tensors ``cut`` (graph inputs of the result, element
    type from ``types``, float by default; shape unstated) and the model's own inputs: the nodes between, in the
    model's order, and the initializers they read. None where a node on the way holds a graph (its outer-scope reads
    are not traced here). A cut tensor no target depends on is left out."""
    made = {o: n for n in model.graph.node for o in n.output if o}
    inits = {i.name for i in model.graph.initializer}
    cut, need, cut_used, todo = set(cut), set(), [], list(targets)
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        if t in cut:
            cut_used.append(t)
        elif t in made:
            n = made[t]
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
                return None
            need.add(id(n))
            todo.extend(n.input)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    nodes = [n for n in g.node if id(made.get(next((o for o in n.output if o), None))) in need]
    keep_inits = [i for i in g.initializer if i.name in seen and i.name in inits]
    inputs = [i for i in g.input if i.name in seen and i.name not in inits]
    inputs += [helper.make_tensor_value_info(t, (types or {}).get(t, onnx.TensorProto.FLOAT), None)
               for t in sorted(cut_used)]
    outputs = [helper.make_tensor_value_info(t, (types or {}).get(t, onnx.TensorProto.FLOAT), None)
               for t in targets]
    for field, items in ((g.node, nodes), (g.initializer, keep_inits), (g.input, inputs), (g.output, outputs)):
        del field[:]
        field.extend(items)
    del g.value_info[:]
    return m
