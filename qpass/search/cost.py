"""What a width assignment costs: weight memory, bit operations, or a dataflow resource estimate.

* ``memory`` (default): weight memory in bits, sum over linear layers of parameters x the weight's stored width
  (``storage="onnx"``: the ONNX file's INT2 / INT4 / INT8 class, ``artifact.stored_bits``). Activation
  widths do not change it; the search narrows them afterwards as a second objective (activation bits per sample).
* ``bops``: bit operations per sample, sum over linear layers of MACs x weight width x input-activation width
  (32 where the input stays float); BOPs as in Baskin et al. / van Baalen et al. (Bayesian bits).
* ``latency``: onnxruntime's measured time of the artifact in microseconds (``latency.latency_table``: the
  all-8-bit file plus, per layer, the measured change when that layer's weights are stored in another class).
* ``resources``: qpass.hw's FINN-style estimate of each linear layer as a matrix-vector unit (LUT, BRAM18,
  URAM, DSP at the folding given by ``fps``, fully folded PE = SIMD = 1 without it), summed as fractions of a
  device (``device``, default xc7z020) in percent.

Every cost is a sum of per-layer terms ``term(layer, w_bits, a_bits)``; the search uses ``total`` and ``delta``.
"""
from __future__ import annotations

from qpass.hw import MVTU, evaluate, fold_for_target, get_device
from ..errors import QpassError
from .artifact import stored_bits
from .latency import latency_term
from .options import COSTS
from .sites import Site

FLOAT_BITS = 32


class CostModel:
    def __init__(self, kind: str, sites: list[Site], options: dict | None = None, storage: str = "onnx"):
        if kind not in COSTS:
            raise QpassError(f"unknown bitwidth cost {kind!r} (known: {', '.join(COSTS)})")
        self.kind = kind
        self.storage = storage
        self.options = dict(options or {})
        self.layers = [s for s in sites if s.kind == "weight"]
        self.acts = [s for s in sites if s.kind == "activation"]
        self.unit = {"memory": "bits", "bops": "BOPs", "resources": "% of device", "latency": "us"}[kind]
        self._cache: dict = {}
        self._site_layers: dict[str, list[Site]] = {}
        for l in self.layers:
            self._site_layers.setdefault(l.key, []).append(l)
            if l.input_site:
                self._site_layers.setdefault(l.input_site, []).append(l)
        if kind == "resources":
            self._res_setup()
        if kind == "latency":
            if "table" not in self.options:
                raise QpassError("cost='latency' is measured by the search (run_search), not given")
            t = self.options["table"]
            self.unit = f"us (onnxruntime, {t['threads']} thread{'s' if t['threads'] > 1 else ''})"

    # ------------------------------------------------------------------ per-layer terms
    def term(self, layer: Site, w: int, a: int | None, acc: int | None = None) -> float:
        if self.kind == "memory":
            return float(layer.size * stored_bits(w, self.storage))
        if self.kind == "latency":
            return latency_term(self.options["table"], layer, w, self.storage)
        a = FLOAT_BITS if a is None else a
        if self.kind == "bops":
            return float(layer.macs) * w * a
        key = (layer.key, w, a, acc)
        if key not in self._cache:
            self._cache[key] = self._resource_term(layer, w, a, acc)
        return self._cache[key]

    def _layer_bits(self, layer: Site, widths: dict, fixed: dict) -> tuple[int, int | None]:
        w = widths.get(layer.key, fixed.get(layer.key, FLOAT_BITS))
        a = None
        if layer.input_site:
            a = widths.get(layer.input_site, fixed.get(layer.input_site))
        return w, a

    def total(self, widths: dict, fixed: dict | None = None, acc: dict | None = None) -> float:
        fixed = fixed or {}
        acc = acc or {}
        t = self.options["table"]["base"] if self.kind == "latency" else 0.0
        for l in self.layers:
            w, a = self._layer_bits(l, widths, fixed)
            t += self.term(l, w, a, acc.get(l.node))
        return t

    def delta(self, widths: dict, key: str, new: int, fixed: dict | None = None) -> float:
        """Cost change when site ``key`` moves to width ``new`` (only the layers it touches are recomputed)."""
        fixed = fixed or {}
        d = 0.0
        trial = dict(widths)
        trial[key] = new
        for l in self._site_layers.get(key, ()):
            w0, a0 = self._layer_bits(l, widths, fixed)
            w1, a1 = self._layer_bits(l, trial, fixed)
            d += self.term(l, w1, a1) - self.term(l, w0, a0)
        return d

    def secondary(self, widths: dict) -> float:
        """Tie-breaking second objective: activation bits per sample (memory), weight bits otherwise."""
        if self.kind in ("memory", "latency"):
            return float(sum(s.size * widths.get(s.key, FLOAT_BITS) for s in self.acts))
        return float(sum(s.size * widths.get(s.key, FLOAT_BITS) for s in self.layers))

    def touches(self, key: str) -> bool:
        """Whether the primary cost depends on site ``key``."""
        if self.kind in ("memory", "latency"):
            return any(l.key == key for l in self.layers)
        return bool(self._site_layers.get(key))

    # ------------------------------------------------------------------ resources (qpass.hw)
    def _res_setup(self) -> None:
        try:
            self.device = get_device(self.options.get("device", "xc7z020"))
        except QpassError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise QpassError(f"cost='resources': the dataflow estimator failed: {type(exc).__name__}: {exc}") from None
        self.fps = self.options.get("fps")
        self.clock_ns = float(self.options.get("clock_ns", self.device.clock_ns))
        self.unit = f"% of {self.device.part}"

    def _resource_term(self, layer: Site, w: int, a: int, acc: int | None) -> float:
        shape = layer.layer_shape
        try:
            unit = MVTU(name=layer.node, mw=int(shape["mw"]), mh=int(shape["mh"]),
                        num_vectors=int(shape["num_vectors"]), w_bits=int(w), a_bits=int(a), a_signed=False,
                        acc_bits=acc)
            if self.fps:
                res = fold_for_target([unit], float(self.fps), self.clock_ns).total
            else:
                res = evaluate([unit], self.clock_ns).total
        except QpassError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise QpassError(f"cost='resources': the dataflow estimator failed on {layer.node!r}: "
                             f"{type(exc).__name__}: {exc}") from None
        d = self.device
        frac = 0.0
        for used, cap in ((res.lut, d.lut), (res.bram18, d.bram18), (res.uram, d.uram), (res.dsp, d.dsp)):
            if used:
                frac += used / cap if cap else float("inf")
        return 100.0 * frac
