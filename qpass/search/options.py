"""Options of the bitwidth search (the ``bitwidth`` pass's options and ``qpass.search.search``'s keywords).

Kept free of imports from ``qpass.passes`` so that the pass module can import it while the passes register.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import QpassError
from ..formats import parse_format
from .artifact import storage_candidates, stored_bits
from .targets import parse_target

COSTS = ("memory", "bops", "resources", "latency")
#: onnx: weights cost what the ONNX file stores (INT2 up to 2 bits, INT4 up to 4, INT8 up to 8: artifact.stored_bits), the
#: widest width of each storage class is the candidate, activations the cost does not see stay at activation_bits
#: (a narrower uint8 grid saves nothing in the file and costs onnxruntime a Clip); exact: every width as given
#: (the hardware backends' words)
#: (onnx4: an ONNX file without INT2, for a model onnxruntime cannot run at opset 25; the search picks it itself)
STORAGES = ("onnx", "onnx4", "exact")
DEFAULT_CANDIDATES = (2, 3, 4, 5, 6, 7, 8, 10, 12, 16)
#: activations wider than 8 bits leave onnxruntime's integer kernels (its QDQ layers read 8-bit codes)
DEFAULT_ACTIVATION_CANDIDATES = (2, 3, 4, 5, 6, 7, 8)
DEFAULT_TARGET = "relative_accuracy>=0.99"


@dataclass
class BitwidthOptions:
    target: str | None = None  # e.g. "relative_accuracy>=0.99", "sqnr>=30"; default relative_accuracy>=0.99
    cost: str = "memory"  # memory | bops | resources
    avg_bits: float | None = None  # fixed-budget form: min error s.t. average weight bits <= avg_bits
    candidates: Any = None  # widths to try: a list, or {"weight": [...], "activation": [...]}
    weights: str = "sym:{W}"  # weight format family ({W} = width); per-channel by weight_granularity
    activations: str = "uint{W}"  # activation format family: uint{W} / int{W} (affine), dfp:{W}, ...
    weight_granularity: str = "channel"
    calibrator: str = "minmax"  # the observer whose range sets activation scales (must have been calibrated)
    activation_bits: int = 8  # avg_bits form: every activation's width; target form: the starting width of
    #                           activations the cost does not see (all of them under memory), narrowed afterwards
    placement: str = "extrinsic"  # intrinsic: also search narrower (saturating) accumulators
    min_accumulator_bits: int = 8
    exclude: list = field(default_factory=list)  # node / tensor globs left in float
    margin: float = 1.0  # search: lost-sample rates at their margin-sigma Wilson upper bound (0: plain counts)
    seed: int = 0  # hold-out split and sub-sampling of the search samples
    holdout: float | None = None  # fraction of the samples kept out of the search, used only to verify; None: half
    #                               (needs 2 x Target.min_samples()), 0: verify on the search samples (not held out)
    max_samples: int = 2000  # search samples at most (a seeded subset beyond)
    max_evals: int = 1500  # measured assignments at most
    max_backoff: int = 30  # widening steps after a missed held-out check
    cost_options: dict = field(default_factory=dict)  # resources: device, fps, clock_ns
    threads: int = 1
    batch_size: int = 256
    storage: str = "onnx"  # onnx | onnx4 | exact (see STORAGES)
    report_dir: str | None = None  # write <stem>_pareto.csv / _table.csv / _sensitivity.csv / _pareto.png here

    def __post_init__(self):
        if self.cost not in COSTS:
            raise QpassError(f"unknown bitwidth cost {self.cost!r} (known: {', '.join(COSTS)})")
        if self.target is not None and self.avg_bits is not None:
            raise QpassError("bitwidth: give either a target (minimise the cost) or avg_bits (minimise the error "
                             "within a weight-memory budget), not both")
        if self.avg_bits is not None:
            try:
                self.avg_bits = float(self.avg_bits)
            except (TypeError, ValueError):
                raise QpassError(f"bitwidth: avg_bits must be a number, got {self.avg_bits!r}") from None
            if not (math.isfinite(self.avg_bits) and self.avg_bits > 0):
                raise QpassError(f"bitwidth: avg_bits must be a positive number, got {self.avg_bits!r}")
        elif self.target is None:
            self.target = DEFAULT_TARGET
        if self.target is not None:
            parse_target(self.target)
        if self.placement not in ("extrinsic", "intrinsic"):
            raise QpassError(f"bitwidth: placement must be extrinsic or intrinsic, not {self.placement!r}")
        if not (isinstance(self.margin, (int, float)) and 0.0 <= float(self.margin) <= 5.0):
            raise QpassError(f"bitwidth: margin must be a number of standard deviations in [0, 5], got "
                             f"{self.margin!r}")
        if self.holdout is not None and not 0.0 <= float(self.holdout) < 1.0:
            raise QpassError(f"bitwidth: holdout must be a fraction in [0, 1), got {self.holdout!r}")
        for name in ("max_samples", "max_evals", "threads", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise QpassError(f"bitwidth: {name} must be a positive integer, got {getattr(self, name)!r}")
        if isinstance(self.exclude, str):
            self.exclude = [self.exclude]
        if not isinstance(self.exclude, (list, tuple)) or not all(isinstance(e, str) for e in self.exclude):
            raise QpassError(f"bitwidth: exclude must be a list of node / tensor name globs, got {self.exclude!r}")
        if isinstance(self.activation_bits, bool) or not isinstance(self.activation_bits, int) \
                or not 1 <= self.activation_bits <= 32:
            raise QpassError(f"bitwidth: activation_bits must be a width in [1, 32], got {self.activation_bits!r}")
        if not isinstance(self.min_accumulator_bits, int) or not 2 <= self.min_accumulator_bits <= 64:
            raise QpassError(f"bitwidth: min_accumulator_bits must be in [2, 64], got {self.min_accumulator_bits!r}")
        if not isinstance(self.cost_options, dict):
            raise QpassError(f"bitwidth: cost_options must be a mapping (device, fps, clock_ns), got "
                             f"{self.cost_options!r}")
        if self.storage not in STORAGES:
            raise QpassError(f"bitwidth: storage must be one of {', '.join(STORAGES)}, not {self.storage!r}")
        self.weight_candidates, self.activation_candidates = _candidates(self.candidates)
        self.weight_candidates = storage_candidates(self.weight_candidates, self.storage)
        check_template(self.weights, "weight", self.weight_candidates)
        if self.avg_bits is None:
            check_template(self.activations, "activation", self.activation_candidates)
        else:
            check_template(self.activations, "activation", [self.activation_bits])
            least = stored_bits(self.weight_candidates[0], self.storage)
            if self.avg_bits < least:
                why = (f"the ONNX file stores a weight in at least {least} bits (INT{least})" if self.storage != "exact"
                       else f"the narrowest weight candidate is {least} bits")
                raise QpassError(f"bitwidth: avg_bits={self.avg_bits:g} is below what can be stored: {why}")


def _widths(v, what: str) -> list[int]:
    if isinstance(v, str):
        v = [p for p in v.replace(",", " ").split()]
    try:
        out = sorted({int(x) for x in v})
    except (TypeError, ValueError):
        raise QpassError(f"bitwidth: {what} candidates must be integers, got {v!r}") from None
    if not out or out[0] < 1 or out[-1] > 32:
        raise QpassError(f"bitwidth: {what} candidates must be widths in [1, 32], got {v!r}")
    return out


def _candidates(c) -> tuple[list[int], list[int]]:
    if c is None:
        return list(DEFAULT_CANDIDATES), list(DEFAULT_ACTIVATION_CANDIDATES)
    if isinstance(c, dict):
        unknown = set(c) - {"weight", "weights", "activation", "activations"}
        if unknown:
            raise QpassError(f"bitwidth: candidates keys are weight and activation, not {sorted(unknown)}")
        w = c.get("weight", c.get("weights", DEFAULT_CANDIDATES))
        a = c.get("activation", c.get("activations", DEFAULT_ACTIVATION_CANDIDATES))
        return _widths(w, "weight"), _widths(a, "activation")
    w = _widths(c, "bitwidth")
    return w, list(w)


def format_spec(template: str, W: int) -> str:
    return template.replace("{W}", str(int(W))).replace("{w}", str(int(W)))


def check_template(template: str, role: str, widths) -> None:
    """Fail early, with the offending width, when the template does not give a format this search supports."""
    if not isinstance(template, str) or "{W}" not in template.replace("{w}", "{W}"):
        raise QpassError(f"bitwidth: the {role} format must be a spec template with {{W}} (e.g. "
                         f"{'sym:{W}' if role == 'weight' else 'uint{W}'}), got {template!r}")
    for W in widths:
        try:
            fmt = parse_format(format_spec(template, W))
        except QpassError as exc:
            raise QpassError(f"bitwidth: candidate width {W} does not work for {role} format {template!r}: "
                             f"{exc}") from None
        if role == "activation" and fmt.word_width is None:
            raise QpassError(f"bitwidth: activation format {template!r} gives {fmt.name}; the search supports "
                             f"affine (intW/uintW), fixed and dfp activations")
        if role == "weight" and fmt.word_width is None:
            raise QpassError(f"bitwidth: weight format {template!r} gives {fmt.name}, which has no word width")
