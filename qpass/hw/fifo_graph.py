"""The layer graph the FIFO simulations run on: layers by name in topological order, with the producer of each
input port and the consumers of each output (layout-only ``Reorder`` layers spliced out as wires). A partition
input read by several layer ports becomes an ``InputFork`` layer: the top's fork pushes each input word into every
reader's FIFO at once, so a reader cannot take its words later than the others (a shortcut FIFO holds the long
branch's latency, as behind a layer's fork)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw.layers import Layer, PerChannel

SOURCE = "<input>"


def is_graph_input(name: str) -> bool:
    """A producer name in an edge list that is a partition input: SOURCE, or SOURCE followed by the input's name."""
    return name.startswith(SOURCE)


@dataclass(frozen=True)
class InputFork(PerChannel):
    """A partition input read by several layer ports: one input word (``pe`` elements) per cycle into every
    reader's FIFO at once (the RTL top's combinational ``qp_fork``: no pipeline stage)."""

    kind: ClassVar[str] = "input_fork"

    def pipeline_depth(self) -> int:
        return 0


def public_key(g: "LayerGraph", key: tuple[str, str, int]) -> tuple[str, str, int]:
    """A FIFO edge as callers name it: an ``InputFork``'s out-edges are the partition input's (SOURCE, reader, port)."""
    return (SOURCE, key[1], key[2]) if isinstance(g.layers.get(key[0]), InputFork) else key


def _input_forks(by: dict[str, Layer], edges: list[tuple[str, str]]) -> tuple[dict[str, Layer], list]:
    """Graph-input producers named in ``edges``: read by one port they become SOURCE; read by several an
    ``InputFork`` layer of that name (its word: the first reader's)."""
    ports: dict[str, int] = {}
    readers: dict[str, list[tuple[str, int]]] = {}
    for a, b in edges:
        p = ports[b] = ports.get(b, -1) + 1
        if a not in by and is_graph_input(a):
            readers.setdefault(a, []).append((b, p))
    forks = {}
    for a, rs in readers.items():
        if len(rs) > 1:
            c, p = by[rs[0][0]], rs[0][1]
            forks[a] = InputFork(a, channels=c.in_elems()[p], pe=c.in_elems()[p] // c.in_words()[p])
    return forks, [(SOURCE if a in readers and a not in forks else a, b) for a, b in edges]


@dataclass
class LayerGraph:
    layers: dict[str, Layer]
    order: list[str]  # topological, Reorders removed
    inputs: dict[str, list[str]]  # per layer, producer per input port (SOURCE for graph input)
    outputs: dict[str, list[tuple[str, int]]]  # per layer, (consumer, port)


def layer_graph(layers: Sequence[Layer], edges: Sequence[tuple[str, str]] | None) -> LayerGraph:
    layers = list(layers)
    by = {l.name: l for l in layers}
    if len(by) != len(layers):
        raise QpassError("duplicate layer names in the dataflow graph")
    if edges is None:
        edges = [(a.name, b.name) for a, b in zip(layers, layers[1:])]
    edges = [tuple(e) for e in edges]
    for a, b in edges:
        for n in (a, b):
            if n not in by and not (n == a and is_graph_input(a)):
                raise QpassError(f"edge ({a}, {b}) names unknown layer {n!r}")
    forks, edges = _input_forks(by, edges)
    by = {**forks, **by}
    # splice out Reorders: (p, r), (r, c) -> (p, c)
    for r in [l.name for l in layers if l.wire]:
        preds = [a for a, b in edges if b == r]
        if len(preds) > 1:
            raise QpassError(f"Reorder {r} has {len(preds)} inputs, expected 1")
        pred = preds[0] if preds and preds[0] != SOURCE else None
        el = by[r].elems
        if el and pred is not None and by[pred].out_elems() != el:
            raise QpassError(f"Reorder {r}: {el} elements but producer {pred} gives {by[pred].out_elems()}")
        new = []
        for a, b in edges:
            if b == r:
                continue
            if a == r:
                if pred is None:
                    raise QpassError(f"Reorder {r} at the graph input is not supported by the FIFO simulation")
                new.append((pred, b))
            else:
                new.append((a, b))
        edges = new
        del by[r]
    inputs = {n: [a for a, b in edges if b == n] for n in by}
    outputs: dict[str, list[tuple[str, int]]] = {n: [] for n in by}
    for n, l in by.items():
        nports = len(l.in_words())
        if not inputs[n]:
            inputs[n] = [SOURCE] * nports
        if len(inputs[n]) != nports:
            raise QpassError(f"{n} ({l.kind}) has {len(inputs[n])} inputs, expected {nports}")
        for p, src in enumerate(inputs[n]):
            if src == SOURCE:
                continue
            if by[src].out_elems() != l.in_elems()[p]:
                raise QpassError(f"edge {src} -> {n}: producer gives {by[src].out_elems()} elements per frame, "
                                 f"consumer port {p} takes {l.in_elems()[p]}")
            outputs[src].append((n, p))
    order = cm.topo_order([*forks, *(l.name for l in layers if l.name in by)], [e for e in edges if e[0] != SOURCE])
    return LayerGraph(by, order, inputs, outputs)


def tile(a: np.ndarray, frames: int, period: int) -> np.ndarray:
    return (a[None, :] + period * np.arange(frames)[:, None]).ravel()


def ceil_div(a, b):
    return -(-a // b)


def edge_maps(prod: Layer | None, cons: Layer, port: int) -> tuple[int, int]:
    """(elements per producer word, elements per consumer word) on an edge."""
    e = cons.in_elems()[port]
    wc = cons.in_words()[port]
    wp = wc if prod is None else prod.out_words()
    return e // wp, e // wc
