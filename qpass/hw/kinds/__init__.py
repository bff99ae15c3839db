"""The hardware layer kinds, one module each, and the one table listing them.

Adding a kind: a module here with an ``HwKind`` subclass (``match``, ``out_order``, ``build``, its cost model
``Layer``), one entry in ``KINDS``, and an emitter per backend (``qpass.backends.hls.emit``). The classifier
(``qpass.hw.classify``), the builder (``qpass.hw.builder``) and the code generators go through this table only.
"""
from __future__ import annotations

from types import MappingProxyType
from collections.abc import Mapping

from qpass.hw.kinds.add import AddKind, AddStreams
from qpass.hw.kinds.base import HwKind, Verdict
from qpass.hw.kinds.channelwise import ChannelwiseKind, ChannelwiseOp
from qpass.hw.kinds.concat import Concat, ConcatKind
from qpass.hw.kinds.global_sum import GlobalSumKind
from qpass.hw.kinds.maxpool import MaxPoolKind, Pool
from qpass.hw.kinds.mvtu import MVTU, MvtuKind
from qpass.hw.kinds.reorder import Reorder, ReorderKind
from qpass.hw.kinds.swg import SlidingWindow, SwgKind
from qpass.hw.kinds.threshold import ThresholdKind, Thresholding
from qpass.hw.kinds.vvau import VVAU, VvauKind
from qpass.hw.kinds.window_max import WindowMaxKind

#: every kind, in the order the classifier asks them (the first to accept a node takes it; when none does, the
#: first one's reason is reported: the matrix unit before the depthwise unit, the stream join before the
#: channel-wise op)
KINDS: tuple[HwKind, ...] = (
    MvtuKind(), VvauKind(), SwgKind(), WindowMaxKind(), MaxPoolKind(), GlobalSumKind(), ThresholdKind(), AddKind(),
    ChannelwiseKind(), ConcatKind(), ReorderKind(),
)
KIND_BY_NAME: Mapping[str, HwKind] = MappingProxyType({k.name: k for k in KINDS})
#: the ONNX op types some kind may implement
SUPPORTED_OPS: frozenset[str] = frozenset(op for k in KINDS for op in k.ops)
#: kinds that compute something (a partition of layout-only nodes is not worth streaming)
COMPUTE_KINDS: frozenset[str] = frozenset(k.name for k in KINDS if k.compute and k.ops)

__all__ = ["KINDS", "KIND_BY_NAME", "SUPPORTED_OPS", "COMPUTE_KINDS", "HwKind", "Verdict", "MVTU", "VVAU",
           "SlidingWindow", "Pool", "Thresholding", "ChannelwiseOp", "AddStreams", "Concat", "Reorder"]
