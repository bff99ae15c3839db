"""What every hardware layer kind answers (``HwKind``); the kinds themselves are listed in ``qpass.hw.kinds``."""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import QpassError

if TYPE_CHECKING:
    from qpass.hw.builder import Builder
    from qpass.hw.layers import Layer

#: (kind name, reason) when a kind implements a node; (None, reason) when it would but cannot
Verdict = tuple[str | None, str]


class HwKind:
    """One hardware layer kind (FINN's per-layer custom op): which ONNX nodes it implements (``ops``, ``match``),
    the stream order it writes (``out_order``), the ``HwLayer``s it builds (``build``) and its cost model
    (``model``: a ``qpass.hw.layers.Layer`` with cycles, resources, legal foldings and the FIFO-simulation
    program). Code generation lives with each backend (``qpass.backends.hls.emit``), keyed by ``name``."""

    #: the kind's name in decisions, ``HwLayer.kind`` and the backends' emitter tables
    name: ClassVar[str] = ""
    #: the ONNX op types it may implement (none: built only as part of another kind, e.g. a sliding window)
    ops: ClassVar[tuple[str, ...]] = ()
    #: False for layout-only kinds (no hardware; a partition made only of them is not worth streaming)
    compute: ClassVar[bool] = True
    #: fed by a depthwise sliding window whose word width it must share (``qpass.hw.design.fold``)
    window_pair: ClassVar[bool] = False
    #: the cost model of the layer it builds
    model: ClassVar["type[Layer] | None"] = None

    def match(self, node: gs.Node, data: list[gs.Tensor], outs: list[gs.Tensor]) -> Verdict | None:
        """For a node of one of ``ops`` whose streamed inputs and outputs are integer with static shapes: this
        kind's verdict, or None when the node is not of this kind's form (another kind may take it)."""
        return None

    def out_order(self, node: gs.Node, in_orders: list[np.ndarray]) -> tuple[np.ndarray | None, str | None]:
        """The stream order of the node's output given its inputs' orders, or (None, reason)."""
        raise QpassError(f"hardware kind {self.name!r} implements no node on its own")

    def prepare(self, b: "Builder") -> None:
        """Called once per partition before any layer is built (e.g. to claim nodes it will absorb)."""

    def build(self, node: gs.Node, b: "Builder") -> None:
        """Add the node's hardware layers (and output stream) to the builder."""
        raise QpassError(f"hardware kind {self.name!r} implements no node on its own")
