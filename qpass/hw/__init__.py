"""The hardware half of qpass: a FINN-style streaming dataflow design for a streamlined integer graph.

``kinds`` (one class per hardware layer kind, with its cost model), ``classify`` / ``grouping`` / ``partition``
(which nodes stream, in which partitions), ``builder`` (a partition's ``DataflowGraph`` of hardware layers),
``folding`` (PE/SIMD for a frame-rate target or a device budget), ``fifo_sim`` (FIFO sizing by a fast stream
simulation), ``design`` (folding, FIFO depths and the report of one partition). Backends (``qpass.backends``)
turn a folded ``DataflowGraph`` into code."""
from qpass.hw.devices import DEVICES, Device, get_device
from qpass.hw.fifo_refsim import simulate_with_depths
from qpass.hw.fifo_sim import FifoEdge, FifoResult, size_fifos
from qpass.hw.folding import FoldingResult, LayerFold, evaluate, fold_for_budget, fold_for_target
from qpass.hw.kinds import (MVTU, VVAU, AddStreams, ChannelwiseOp, Concat, Pool, Reorder, SlidingWindow,
                            Thresholding)
from qpass.hw.layers import Layer, Resources

__all__ = [
    "DEVICES", "Device", "get_device", "FifoEdge", "FifoResult", "simulate_with_depths", "size_fifos",
    "FoldingResult", "LayerFold", "evaluate", "fold_for_budget", "fold_for_target", "MVTU", "VVAU", "AddStreams",
    "ChannelwiseOp", "Concat", "Layer", "Pool", "Reorder", "Resources", "SlidingWindow", "Thresholding",
]
