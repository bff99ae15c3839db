"""A model's outputs for many values of a few fed constants, with the heavy kernels' outputs kept and reused
(``OutputMemo``).

A search over a few quantizers' scales and zero points (``log_ranges``) runs the model once per candidate; most of
the time goes to the matrix kernels (oww-melspectrogram: the two STFT QLinearConvs, 70% of a run), whose outputs
depend only on the fed values upstream of them, and many candidates share those. So the model onnxruntime runs
after its optimizer (``optimized_model``: the fusions made, a QLinearConv's output scale a graph input it reads at
run time) is run with optimizations off, and each matrix kernel's output is kept under the fed values upstream of
it; a later candidate with the same values there is run from the kept output on (``cut_model``: the nodes after
it), so each node computes from the same inputs what it computes in the whole model. Every new cut is checked once
against the whole model on the first sample and given up if any value differs.
"""
from __future__ import annotations

import numpy as np
import onnx

from qpass.ir.fed_inputs import FedSession, cut_model
from qpass.ir.graph import elem_types, upstream
from qpass.ir.ort_session import OrtError, optimized_model, run_samples
from qpass.ir.samples import SampleSet
from .layer_errors import join_outputs

#: kept outputs per tensor (the latest), and in all (bytes): past either the oldest go
KEEP_PER_TENSOR = 8
KEEP_BYTES = 128 << 20
#: the kernels whose outputs are kept (op types, any domain; onnxruntime's fused and NCHWc forms included)
HEAVY = ("Conv", "MatMul", "Gemm")


def keep_bounded(kept: dict, t: str, key: bytes, v: np.ndarray) -> None:
    """Store ``v`` under ``kept[t][key]``; past KEEP_PER_TENSOR for ``t`` or KEEP_BYTES in all, the oldest of ``t``
    go."""
    k = kept[t]
    k[key] = v
    while len(k) > KEEP_PER_TENSOR or (len(k) > 1 and sum(a.nbytes for d in kept.values()
                                                           for a in d.values()) > KEEP_BYTES):
        k.pop(next(iter(k)))


def _out_type(node: onnx.NodeProto, types: dict) -> int | None:
    """The element type of a heavy kernel's output where onnxruntime's saved graph does not state it: a QLinear*
    kernel writes its output zero point's type, an *Integer kernel int32, the rest their first input's type."""
    if node.op_type.startswith("QLinear") and len(node.input) > 7:
        return types.get(node.input[7])
    if node.op_type.endswith("Integer"):
        return onnx.TensorProto.INT32
    return types.get(node.input[0]) if node.input else None


class OutputMemo:
    """``joined_outputs`` of ``session``'s model (a ``FedSession``, optimized) on ``samples`` for fed values,
    computed on onnxruntime's optimized graph with the heavy kernels' outputs kept (see the module doc)."""

    def __init__(self, session: FedSession, samples: SampleSet):
        self.fed, self.samples = session, samples
        self.model = session.optimized if session.optimized is not None else optimized_model(session.model)
        names = set(session.names)
        self.outputs = [o.name for o in self.model.graph.output]
        self.types = elem_types(self.model)  # a kept output's type must be stated (a fused kernel's is not inferred)
        for n in self.model.graph.node:
            if any(h in n.op_type for h in HEAVY) and n.output and n.output[0] not in self.types:
                t = _out_type(n, self.types)
                if t:
                    self.types[n.output[0]] = t
        self.keep = [o for n in self.model.graph.node if any(h in n.op_type for h in HEAVY)
                     for o in n.output[:1] if o and o not in self.outputs and o in self.types]
        self.up = {t: sorted(upstream(self.model.graph, t) & names) for t in self.keep}
        self.kept: dict[str, dict[bytes, np.ndarray]] = {t: {} for t in self.keep}
        self.parts: dict[tuple, FedSession | None] = {}
        self.runs = {"whole": 0, "part": 0}

    def _key(self, t: str, values: dict) -> bytes:
        return b"".join(np.asarray(values[n]).tobytes() for n in self.up[t])

    def _store(self, t: str, key: bytes, v: np.ndarray) -> None:
        keep_bounded(self.kept, t, key, v)

    def joined(self, values: dict) -> np.ndarray:
        """The joined outputs with ``values`` fed (every one of the session's fed names)."""
        keys = {t: self._key(t, values) for t in self.keep}
        cut = tuple(t for t in self.keep if keys[t] in self.kept[t])
        make = [t for t in self.keep if t not in cut]
        sess = self._part(cut, make)
        if sess is None:  # the fed session itself
            self.runs["whole"] += 1
            return join_outputs(run_samples(self.fed.model, self.fed.samples(self.samples, values), batch_size=1,
                                            sess=self.fed.sess))
        used = {i.name for i in sess.model.graph.input}
        arrays = {k: v for k, v in self.samples.arrays.items() if k in used}
        arrays.update({t: self.kept[t][keys[t]] for t in cut if t in used})
        shared = {**self.samples.shared, **{k: np.asarray(v, self.fed.dtypes[k]) for k, v in values.items()
                                            if k in used}}
        part_samples = SampleSet(arrays, shared, None, self.samples.source)
        if not getattr(sess, "checked", False) and not self._agrees(sess, part_samples, values):
            self.parts[(cut, tuple(make))] = None
            return self.joined(values)
        got = sess.run(part_samples, {}, self.outputs + make, batch_size=1)
        for t in make:
            self._store(t, keys[t], got[t])
        self.runs["part"] += 1
        return join_outputs({o: got[o] for o in self.outputs})

    def _part(self, cut: tuple, make: list[str]) -> FedSession | None:
        at = (cut, tuple(make))
        if at not in self.parts:
            self.parts[at] = None
            part = cut_model(self.model, self.outputs + make, cut, self.types)
            if part is not None:
                try:  # the fed values are graph inputs of the optimized model already
                    self.parts[at] = FedSession(part, [], optimize=False, outputs=make, types=self.types)
                except (OrtError, KeyError):
                    pass
        return self.parts[at]

    def _agrees(self, sess: FedSession, part_samples: SampleSet, values: dict) -> bool:
        """Whether the part gives the whole fed model's outputs on the first sample."""
        one = slice(0, 1)
        want = run_samples(self.fed.model, self.fed.samples(self.samples.subset(one), values), batch_size=1,
                           sess=self.fed.sess)
        got = sess.run(part_samples.subset(one), {}, self.outputs, batch_size=1)
        sess.checked = all(np.array_equal(want[o], got[o]) for o in self.outputs)
        return sess.checked
