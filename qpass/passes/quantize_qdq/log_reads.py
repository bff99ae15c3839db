"""The float values ``log_ranges`` re-measures, kept and reused (``ReadMemo``).

After narrowing one range, the search re-measures the ranges after it on the model quantized so: the float values
their QuantizeLinears read. A read depends only on the quantizers upstream of it, so it is kept under the values
of those quantizers' scales and zero points and reused while they stay the same (oww-melspectrogram: narrowing
the first STFT output leaves the second's read as it was). A read that must be measured again is computed from
the kept reads upstream of it where there are some: the part of the model between (``cut_model``), unoptimized as
the whole-model run is, so each node computes from the same inputs what it computes there; each such part is
checked once, on the first sample, against the whole-model run that gives its first reads (as ``OutputMemo``
checks its parts), and dropped if any value differs.
"""
from __future__ import annotations

import numpy as np
import onnx

from qpass.analysis.fed_outputs import keep_bounded
from qpass.ir.fed_inputs import FedSession, cut_model
from qpass.ir.graph import elem_types, upstream
from qpass.ir.ort_session import OrtError
from qpass.ir.samples import SampleSet


class ReadMemo:
    """Reads of the candidates' QuantizeLinears (``reads_of``: candidate -> the tensor its QuantizeLinear reads) in
    ``model`` with the scale / zero-point initializers ``slots`` fed (``full``: the whole model's unoptimized
    ``FedSession`` with every read an output)."""

    def __init__(self, model, slots: dict, reads_of: dict, full: FedSession, samples: SampleSet):
        self.model, self.slots, self.full, self.samples = model, slots, full, samples
        self.read = {t: reads_of.get(t, t) for t in slots}
        ups = {t: upstream(model.graph, r) for t, r in self.read.items()}
        #: the candidates whose quantizer parameters a candidate's read depends on
        self.up = {t: [u for u in slots if any(n in ups[t] for n in slots[u])] for t in slots}
        self.kept: dict[str, dict[bytes, np.ndarray]] = {t: {} for t in slots}
        self.parts: dict[tuple, FedSession | None] = {}
        self.types = elem_types(model)
        self.runs = {"full": 0, "part": 0}

    def _key(self, t: str, values: dict) -> bytes:
        return b"".join(np.asarray(values[n]).tobytes() for u in self.up[t] for n in self.slots[u])

    def _keep(self, t: str, key: bytes, v: np.ndarray) -> None:
        keep_bounded(self.kept, t, key, v)

    def reads(self, values: dict, names: list[str]) -> dict[str, np.ndarray]:
        """{candidate: its read} for ``names`` with the parameters ``values``."""
        keys = {t: self._key(t, values) for t in self.slots}
        out = {t: self.kept[t][keys[t]] for t in names if keys[t] in self.kept[t]}
        miss = [t for t in names if t not in out]
        if not miss:
            return out
        cut = [t for t in self.slots if t not in miss and keys[t] in self.kept[t]]
        got = self._part(miss, cut, keys, values) if cut else None
        if got is None:
            self.runs["full"] += 1
            todo = [t for t in self.slots if keys[t] not in self.kept[t]]  # every read not kept: later cuts
            vals = self.full.run(self.samples, values, list(dict.fromkeys(self.read[t] for t in todo)))
            got = {t: vals[self.read[t]] for t in todo}
        for t, v in got.items():
            self._keep(t, keys[t], v)
        return {t: out[t] if t in out else got[t] for t in names}

    def _part(self, miss: list[str], cut: list[str], keys: dict, values: dict) -> dict | None:
        """The reads ``miss`` computed from the kept reads of ``cut``; None where no part of the model fits."""
        at = tuple(sorted(cut)), tuple(miss)
        if at not in self.parts:
            self.parts[at] = self._part_session(miss, cut)
        sess = self.parts[at]
        if sess is None:
            return None
        used = {i.name for i in sess.model.graph.input}
        arrays = {k: v for k, v in self.samples.arrays.items() if k in used}
        arrays.update({self.read[t]: self.kept[t][keys[t]] for t in cut if self.read[t] in used})
        fed = {k: v for k, v in values.items() if k in sess.names}
        targets = list(dict.fromkeys(self.read[t] for t in miss))
        part_samples = SampleSet(arrays, dict(self.samples.shared), None, self.samples.source)
        if not getattr(sess, "checked", False):  # once: the whole model's reads, and the part's on the first sample
            whole = self.full.run(self.samples, values, targets)
            self.runs["full"] += 1
            one = sess.run(part_samples.subset(slice(0, 1)), fed, targets, batch_size=1)
            sess.checked = all(np.array_equal(whole[r][:1], one[r]) for r in targets)
            if not sess.checked:
                self.parts[at] = None
            return {t: whole[self.read[t]] for t in miss}
        vals = sess.run(part_samples, fed, targets, batch_size=1)
        self.runs["part"] += 1
        return {t: vals[self.read[t]] for t in miss}

    def _part_session(self, miss: list[str], cut: list[str]) -> FedSession | None:
        targets = list(dict.fromkeys(self.read[t] for t in miss))
        part = cut_model(self.model, targets, [self.read[t] for t in cut], self.types)
        if part is None or not any(self.read[t] in {i.name for i in part.graph.input} for t in cut):
            return None
        have = {i.name for i in part.graph.initializer}
        names = [n for pair in self.slots.values() for n in pair if n in have]
        try:
            return FedSession(part, names, optimize=False, outputs=targets, types=self.types)
        except (OrtError, KeyError):
            return None
