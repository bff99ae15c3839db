"""A slow cycle-stepped reference for given FIFO depths (for checking small designs and tests): the input DMA
pushes as fast as accepted; a full out-FIFO at a layer's write stage freezes that layer's whole pipeline (HLS stall
semantics)."""
from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qpass.errors import QpassError
from qpass.hw.fifo_graph import SOURCE, ceil_div, edge_maps, layer_graph, public_key
from qpass.hw.layers import Layer


@dataclass
class RefSimResult:
    deadlock: bool
    cycles: int
    frames_done: int
    frame_end: list[int]  # cycle of the last output word of each completed frame
    max_occupancy: dict[tuple[str, str, int], int]

    @property
    def period(self) -> float | None:
        if len(self.frame_end) < 2:
            return None
        return float(self.frame_end[-1] - self.frame_end[-2])


def simulate_with_depths(layers: Sequence[Layer], depths: Mapping[tuple[str, str, int], int],
                         edges: Sequence[tuple[str, str]] | None = None, frames: int = 3,
                         max_cycles: int | None = None) -> RefSimResult:
    """Cycle-stepped check of given FIFO depths: the input DMA pushes as fast as accepted; a full
    out-FIFO at a layer's write stage freezes that layer's whole pipeline (HLS stall semantics).
    Slow (pure Python, one step per layer per cycle): for small designs and tests."""
    sim = _RefSim(layer_graph(layers, edges), depths, frames)
    F = frames
    limit = max_cycles or (F + 4) * sim.period * 4 + 10_000
    frame_end: list[int] = []
    last_progress, t = 0, 0
    while t < limit:
        progress = sim.step(sim.actions(), t, frame_end)
        t += 1
        if progress:
            last_progress = t
        if len(frame_end) >= F:
            break
        if t - last_progress > 2 * sim.period + 1000:
            break
    occ = {public_key(sim.g, (e["src"], n, p)): e["maxocc"] for (n, p), e in sim.ein.items()}
    return RefSimResult(len(frame_end) < F, t, len(frame_end), frame_end, occ)


class _RefSim:
    """Per-layer iteration and pipeline state and per-edge FIFO state of the cycle-stepped simulation."""

    def __init__(self, g, depths, frames: int):
        self.g = g
        progs = {n: g.layers[n].program() for n in g.order}
        self.period = max(p.n for p in progs.values())
        self.st = {}
        for n in g.order:
            pr = progs[n]
            is_read = []
            for rd in pr.reads:
                m = np.zeros(pr.n, dtype=bool)
                m[rd] = True
                is_read.append(m.tolist())
            w = np.zeros(pr.n, dtype=bool)
            w[pr.writes] = True
            self.st[n] = dict(it=0, tot=pr.n * frames, n=pr.n, is_read=is_read, is_write=w.tolist(),
                              pipe=deque([False] * max(1, pr.lat)), rd=[0] * len(pr.reads), wr=0)
        self.ein = {}  # (dst, port) -> edge state
        for n in g.order:
            for p, src in enumerate(g.inputs[n]):
                if src == SOURCE:
                    continue
                ep, ec = edge_maps(g.layers[src], g.layers[n], p)
                key = public_key(g, (src, n, p))
                if key not in depths:
                    raise QpassError(f"no depth given for FIFO {src} -> {n} port {p}")
                self.ein[(n, p)] = dict(src=src, dst=n, port=p, ep=ep, ec=ec, depth=int(depths[key]), w=0,
                                        maxocc=0)
        self.eout = {n: [self.ein[(c, p)] for c, p in g.outputs[n]] for n in g.order}
        self.sinks = [n for n in g.order if not g.outputs[n]]
        self.sink_words = {n: g.layers[n].out_words() for n in self.sinks}

    def _released(self, e) -> int:
        return (self.st[e["dst"]]["rd"][e["port"]] * e["ec"]) // e["ep"]

    def actions(self) -> list[tuple[str, bool, bool]]:
        """(layer, writes this cycle, issues an iteration this cycle) of every layer not frozen by a full FIFO."""
        acts = []
        for n in self.g.order:
            s = self.st[n]
            head = s["pipe"][0]
            if head and any(e["w"] - self._released(e) >= e["depth"] for e in self.eout[n]):
                continue
            issue = False
            if s["it"] < s["tot"]:
                i = s["it"] % s["n"]
                issue = True
                for p, src in enumerate(self.g.inputs[n]):
                    if src != SOURCE and s["is_read"][p][i]:
                        e = self.ein[(n, p)]
                        if e["w"] < ceil_div((s["rd"][p] + 1) * e["ec"], e["ep"]):
                            issue = False
                            break
            acts.append((n, head, issue))
        return acts

    def step(self, acts, t: int, frame_end: list[int]) -> bool:
        """Apply one cycle's actions; returns whether anything moved."""
        progress = False
        for n, head, issue in acts:
            s = self.st[n]
            s["pipe"].popleft()
            if head:
                progress = True
                for e in self.eout[n]:
                    e["w"] += 1
                s["wr"] += 1
                if n in self.sink_words and s["wr"] % self.sink_words[n] == 0 and n == self.sinks[0]:
                    frame_end.append(t)
            if issue:
                progress = True
                i = s["it"] % s["n"]
                for p in range(len(s["rd"])):
                    if s["is_read"][p][i]:
                        s["rd"][p] += 1
                s["pipe"].append(s["is_write"][i])
                s["it"] += 1
            else:
                s["pipe"].append(False)
        for (n, p), e in self.ein.items():
            released = (self.st[n]["rd"][p] * e["ec"]) // e["ep"]
            e["maxocc"] = max(e["maxocc"], e["w"] - released)
        return progress
