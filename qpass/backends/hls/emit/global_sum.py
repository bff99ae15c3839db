"""``qpass::global_acc_pool``: the sum over all pixels per channel."""
from __future__ import annotations

from qpass.backends.hls.c_values import cpp_type


def emit(l, ins, out, e) -> None:
    L = l.layer
    (ti,), to = e.types(l)
    e.call(l, f"qpass::global_acc_pool<{L.channels}, {L.pe}, {L.ifm_dim[0] * L.ifm_dim[1]}, {cpp_type(ti)}, "
              f"{cpp_type(to)}>({ins[0]}, {out});")
