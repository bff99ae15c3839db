"""HLS code of each hardware layer kind: one module per kind (``emit(layer, input vars, output var, emission)``)
and the table from kind name to emitter. The calls must agree with the templates in ``templates/qpass_dataflow.h``;
every kind of ``qpass.hw.kinds.KINDS`` that builds layers has an entry (checked in the tests)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from qpass.backends.hls.emit import (add, channelwise, concat, global_sum, maxpool, mvtu, swg, threshold, vvau,
                                     window_max)
from qpass.backends.hls.emit.context import Emission

EMITTERS: Mapping[str, Callable] = MappingProxyType({
    "swg": swg.emit, "mvtu": mvtu.emit, "vvau": vvau.emit, "window_max": window_max.emit, "maxpool": maxpool.emit,
    "global_sum": global_sum.emit, "threshold": threshold.emit, "channelwise": channelwise.emit, "add": add.emit,
    "concat": concat.emit,
})

__all__ = ["EMITTERS", "Emission"]
