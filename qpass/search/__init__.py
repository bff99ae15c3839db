"""Automatic bitwidth assignment under an accuracy target (or a memory budget) for weights, activations and
accumulators.

    from qpass import bitwidth
    a = bitwidth.search("models/digits_cnn.onnx", "models/digits_cnn.calib.npz", eval="models/digits_cnn.eval.npz",
                        target="relative_accuracy>=0.99")          # or cost="bops", or avg_bits=4
    print("\\n".join(a.lines()))                                    # per-layer table, compression, accuracy
    a.rules                                                         # fakequant rules reproducing the assignment
    a.write("out/")                                                 # Pareto front CSV (+ plot with matplotlib)

Modules: ``targets`` (target strings, metrics), ``sites`` (what fakequant quantises), ``probe`` (parametric model,
float-activation cache, per-site downstream sessions), ``sensitivity``, ``cost`` (memory / BOPs / dataflow
resources), ``optimize`` (Lagrangian path, measured refinement, knapsack), ``accumulators``, ``report``,
``result`` (a run's state, its fakequant rules, the ``Assignment``), ``core`` (the steps of a run). The pipeline pass
is ``qpass.search.bitwidth_pass`` (``qpass/pipelines/bitwidth.yaml``).
"""
from .core import run_search, search
from .cost import CostModel
from .options import COSTS, DEFAULT_CANDIDATES, DEFAULT_TARGET, BitwidthOptions
from .report import Assignment
from .targets import METRICS, Constraint, Target, output_metrics, parse_target

__all__ = ["search", "run_search", "Assignment", "BitwidthOptions", "parse_target", "Target", "Constraint",
           "METRICS", "COSTS", "CostModel", "output_metrics", "DEFAULT_CANDIDATES", "DEFAULT_TARGET"]
