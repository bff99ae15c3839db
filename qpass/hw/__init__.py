"""Analytical half of a FINN-style streaming dataflow backend: layer descriptions, cycle and
resource models, folding for a frame-rate target or a device budget, and FIFO sizing by a fast
stream simulation. Independent of ONNX; a graph pass turns nodes into these layer descriptions."""
from qpass.hw.devices import DEVICES, Device, get_device
from qpass.hw.fifo_sim import FifoEdge, FifoResult, simulate_with_depths, size_fifos
from qpass.hw.folding import FoldingResult, LayerFold, evaluate, fold_for_budget, fold_for_target
from qpass.hw.layers import (MVTU, AddStreams, ChannelwiseOp, Concat, Layer, Pool, Reorder, Resources,
                                   SlidingWindow, Thresholding)

__all__ = [
    "DEVICES", "Device", "get_device", "FifoEdge", "FifoResult", "simulate_with_depths", "size_fifos",
    "FoldingResult", "LayerFold", "evaluate", "fold_for_budget", "fold_for_target", "MVTU", "AddStreams",
    "ChannelwiseOp", "Concat", "Layer", "Pool", "Reorder", "Resources", "SlidingWindow", "Thresholding",
]
