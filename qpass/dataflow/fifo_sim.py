"""FIFO depths from a fast stream-level simulation in Python (no RTL).

Model (assumptions, stated honestly):
- Every layer is one HLS loop with II=1 over a fixed per-frame iteration program. Iteration i may
  read one word from some input ports and may write one output word; its reads happen when it
  issues, its write ``pipeline_depth`` cycles later. The programs follow the finn-hlslib loop nests:
  * MVTU: V x NF x SF iterations; reads at nf == 0 (the input vector is buffered and reused for the
    other NF row folds), writes at sf == SF-1 (one PE-wide word per row fold).
  * SlidingWindow: prefill K padded rows (reading only real pixels; padding is generated), then per
    output row max(write, read) iterations writing the OW*K*K*C/SIMD window words while prefetching
    the next ``stride`` input rows (K + stride row buffers), as in slidingwindow.h.
  * Pool (stride == kernel): one iteration per input word, plus OW*C/PE output iterations after each
    K-th input row; GlobalAvgPool emits C/PE words after the whole frame.
  * Thresholding / ChannelwiseOp / AddStreams: one word in (from each input), one word out.
  * Concat: per pixel, C_i/SIMD iterations reading input i in turn, each writing one word.
  * Reorder is a wire (spliced out). An edge whose producer and consumer words differ in size has an
    implicit data-width converter: a consumer word needs the producer word holding its last element;
    a producer word leaves the FIFO when the consumer word holding its last element is read.
  * A layer feeding several consumers writes each word to all its out-FIFOs at once (a fork).
- Cycle semantics: a word written in cycle t is readable from t+1; a FIFO slot freed by a read in
  cycle t is reusable from t+1 (conservative).
- The pipeline rate P is the slowest layer's iteration count (= its ``cycles()``); the input DMA
  releases frame f from cycle f*P on, one word per cycle.

Method: (1) with unbounded FIFOs, the as-soon-as-possible schedule is computed layer by layer in
topological order by a max-plus recurrence that numpy evaluates in closed form:
start_i = i + max(0, cummax_j(ready_j - j)). (2) The sink's output times are kept and every other
event is pushed as late as possible (a reverse cumulative minimum), so each word is produced just
before its earliest consumer needs it. (3) The depth of an edge is its maximum occupancy in that
as-late-as-possible schedule, rounded up to a power of two (min 2). This schedule meets every FIFO
bound at full throughput; in the max-plus model (flushable pipelines) the real as-soon-as-possible
execution with these depths can only be earlier, so it neither deadlocks nor loses throughput.
A fork whose branches have different latencies therefore gets a deep FIFO on its short branch
(a residual shortcut) and shallow ones elsewhere; the "as soon as possible" occupancy (what FINN's
large-FIFO RTL simulation measures) is reported alongside. ``simulate_with_depths`` is a slow
cycle-stepped reference (stall-the-pipeline on a full FIFO) used to check depths on small designs.
Not modelled: AXI/DMA stalls, memory-port contention, HLS pipeline stalls on empty inputs beyond
the issue stage, FIFO element widths (depths are in producer words).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qpass.dataflow import cost_models as cm
from qpass.dataflow.layers import (AddStreams, ChannelwiseOp, Concat, Layer, MVTU, Pool, Reorder,
                                   SlidingWindow, Thresholding)
from qpass.errors import QpassError

SOURCE = "<input>"


@dataclass(frozen=True)
class _Prog:
    n: int  # iterations per frame
    reads: tuple[np.ndarray, ...]  # per input port: the iteration reading each word, ascending
    writes: np.ndarray  # the iteration writing each output word, ascending
    lat: int


def program(layer: Layer) -> _Prog:
    """The per-frame iteration program of a layer (see the module docstring)."""
    lat = cm.pipeline_depth(layer.kind, getattr(layer, "simd", 1))
    if isinstance(layer, MVTU):
        sf, nf = layer.mw // layer.simd, layer.mh // layer.pe
        i = np.arange(layer.num_vectors * nf * sf)
        r = i % (nf * sf)
        return _Prog(len(i), (i[r < sf],), i[r % sf == sf - 1], lat)
    if isinstance(layer, SlidingWindow):
        return _swg_program(layer, lat)
    if isinstance(layer, Pool):
        return _pool_program(layer, lat)
    if isinstance(layer, (Thresholding, ChannelwiseOp)):
        i = np.arange(layer.cycles())
        return _Prog(len(i), (i,), i, lat)
    if isinstance(layer, AddStreams):
        i = np.arange(layer.cycles())
        return _Prog(len(i), (i, i), i, lat)
    if isinstance(layer, Concat):
        per_px = [c // layer.simd for c in layer.channels]
        port = np.repeat(np.arange(len(per_px)), per_px)
        port = np.tile(port, layer.pixels)
        i = np.arange(len(port))
        return _Prog(len(i), tuple(i[port == p] for p in range(len(per_px))), i, lat)
    raise QpassError(f"{layer.name}: no stream program for layer kind {layer.kind}")


def _swg_program(l: SlidingWindow, lat: int) -> _Prog:
    if l.dilation != 1:
        raise QpassError(f"{l.name}: the FIFO simulation supports dilation 1 only")
    (ph, pw), (oh, ow), (kh, kw), (sh, sw) = l.padded_dim, l.ofm_dim, l.kernel, l.stride
    cf = l.ifm_ch // l.simd
    real_row = (np.arange(ph) >= l.pad) & (np.arange(ph) < l.pad + l.ifm_dim[0])
    real_col = (np.arange(pw) >= l.pad) & (np.arange(pw) < l.pad + l.ifm_dim[1])
    # a padded row as a sequence of pw*cf word slots: which slots are real stream reads
    row_slots = np.repeat(real_col, cf)
    n0 = pw * kh * cf
    wb, rb = ow * kw * kh * cf, sh * pw * cf
    m = max(wb, rb)
    n = n0 + oh * m
    reads, writes = [], []
    for y in range(min(kh, ph)):  # prefill
        if real_row[y]:
            reads.append(y * pw * cf + np.flatnonzero(row_slots))
    for r in range(oh):
        base = n0 + r * m
        writes.append(base + np.arange(wb))
        for dy in range(sh):
            y = kh + r * sh + dy
            if y < ph and real_row[y]:
                reads.append(base + dy * pw * cf + np.flatnonzero(row_slots))
    reads = np.concatenate(reads) if reads else np.zeros(0, dtype=np.int64)
    if len(reads) != l.in_words()[0]:
        raise QpassError(f"{l.name}: sliding-window program reads {len(reads)} words, expected {l.in_words()[0]}")
    return _Prog(n, (reads,), np.concatenate(writes), lat)


def _pool_program(l: Pool, lat: int) -> _Prog:
    (ih, iw), (oh, ow), (kh, kw) = l.ifm_dim, l.ofm_dim, l.kernel
    cf = l.channels // l.pe
    if l.pool == "global_avg":
        n_in = ih * iw * cf
        i = np.arange(n_in + cf)
        return _Prog(len(i), (i[:n_in],), i[n_in:], lat)
    # per input row: iw*cf reads; after every kh-th row (while output rows remain): ow*cf writes
    kinds = []
    for y in range(ih):
        kinds.append(np.zeros(iw * cf, dtype=bool))
        if (y + 1) % kh == 0 and (y + 1) // kh <= oh:
            kinds.append(np.ones(ow * cf, dtype=bool))
    is_write = np.concatenate(kinds)
    i = np.arange(len(is_write))
    return _Prog(len(i), (i[~is_write],), i[is_write], lat)


# ------------------------------------------------------------------------------------- graph

@dataclass
class _Graph:
    layers: dict[str, Layer]
    order: list[str]  # topological, Reorders removed
    inputs: dict[str, list[str]]  # per layer, producer per input port (SOURCE for graph input)
    outputs: dict[str, list[tuple[str, int]]]  # per layer, (consumer, port)


def _build_graph(layers: Sequence[Layer], edges: Sequence[tuple[str, str]] | None) -> _Graph:
    layers = list(layers)
    by = {l.name: l for l in layers}
    if len(by) != len(layers):
        raise QpassError("duplicate layer names in the dataflow graph")
    if edges is None:
        edges = [(a.name, b.name) for a, b in zip(layers, layers[1:])]
    edges = [tuple(e) for e in edges]
    for a, b in edges:
        for n in (a, b):
            if n not in by:
                raise QpassError(f"edge ({a}, {b}) names unknown layer {n!r}")
    # splice out Reorders: (p, r), (r, c) -> (p, c)
    for r in [l.name for l in layers if isinstance(l, Reorder)]:
        preds = [a for a, b in edges if b == r]
        if len(preds) > 1:
            raise QpassError(f"Reorder {r} has {len(preds)} inputs, expected 1")
        pred = preds[0] if preds else None
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
    order = cm.topo_order([l.name for l in layers if l.name in by], edges)
    return _Graph(by, order, inputs, outputs)


def _tile(a: np.ndarray, frames: int, period: int) -> np.ndarray:
    return (a[None, :] + period * np.arange(frames)[:, None]).ravel()


def _ceil_div(a, b):
    return -(-a // b)


# -------------------------------------------------------------------------------- fast model

@dataclass(frozen=True)
class FifoEdge:
    src: str
    dst: str
    port: int
    words_per_frame: int  # producer words
    occupancy: int  # max occupancy in the as-late-as-possible schedule (what is needed)
    depth: int  # occupancy rounded up to a power of two, min 2
    occupancy_asap: int  # max occupancy when every layer runs as early as possible (FINN-style)


@dataclass
class FifoResult:
    edges: list[FifoEdge]
    period_cycles: int  # pipeline rate P (slowest layer)
    measured_period: float  # sink frame-to-frame time in the simulated schedule (== P expected)
    latency_cycles: int  # first input word to last output word of frame 0 (as soon as possible)
    frames: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def depths(self) -> dict[tuple[str, str, int], int]:
        return {(e.src, e.dst, e.port): e.depth for e in self.edges}

    def depth(self, src: str, dst: str, port: int | None = None) -> int:
        for e in self.edges:
            if e.src == src and e.dst == dst and (port is None or e.port == port):
                return e.depth
        raise QpassError(f"no FIFO edge {src} -> {dst}")

    def edge(self, src: str, dst: str, port: int | None = None) -> FifoEdge:
        for e in self.edges:
            if e.src == src and e.dst == dst and (port is None or e.port == port):
                return e
        raise QpassError(f"no FIFO edge {src} -> {dst}")

    def table(self) -> str:
        head = ("from", "to", "port", "words/frame", "occupancy", "depth", "asap occupancy")
        rows = [head] + [(e.src, e.dst, str(e.port), str(e.words_per_frame), str(e.occupancy), str(e.depth),
                          str(e.occupancy_asap)) for e in self.edges]
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append(f"period {self.period_cycles} cycles (measured {self.measured_period:g}), latency "
                     f"{self.latency_cycles} cycles, {self.frames} frames simulated in {self.elapsed_s * 1e3:.1f} ms")
        return "\n".join(lines + self.notes)


def _edge_maps(prod: Layer | None, cons: Layer, port: int) -> tuple[int, int]:
    """(elements per producer word, elements per consumer word) on an edge."""
    e = cons.in_elems()[port]
    wc = cons.in_words()[port]
    wp = wc if prod is None else prod.out_words()
    return e // wp, e // wc


def _occupancy(w: np.ndarray, rel: np.ndarray, measured: int) -> int:
    """Max over the first ``measured`` writes of #words resident: written at <= t, not released before t."""
    if measured <= 0:
        return 0
    t = w[:measured]
    occ = np.searchsorted(w, t, side="right") - np.searchsorted(rel, t, side="left")
    return int(occ.max())


def _pow2_depth(occ: int) -> int:
    return max(2, 1 << max(0, int(occ) - 1).bit_length())


def size_fifos(layers: Sequence[Layer], edges: Sequence[tuple[str, str]] | None = None, frames: int = 4) -> FifoResult:
    """Per-edge FIFO depths for a chain (edges=None) or DAG of layers; see the module docstring.
    Input ports are numbered in the order their edges appear in ``edges``."""
    t0 = time.perf_counter()
    if frames < 2:
        raise QpassError("simulate at least 2 frames")
    g = _build_graph(layers, edges)
    progs = {n: program(g.layers[n]) for n in g.order}
    period = max(p.n for p in progs.values())
    F = frames
    # ---- forward: as soon as possible, unbounded FIFOs, input released at frame f*P
    s_asap, w_asap, r_asap = {}, {}, {}
    for n in g.order:
        pr, lay = progs[n], g.layers[n]
        tot = pr.n * F
        idx = np.arange(tot, dtype=np.float64)
        ready = np.full(tot, -np.inf)
        for p, src in enumerate(g.inputs[n]):
            it = _tile(pr.reads[p], F, pr.n)
            k = np.arange(len(it))
            if src == SOURCE:
                wpf = len(pr.reads[p])
                avail = (k // wpf) * period + (k % wpf) + 1.0
            else:
                ep, ec = _edge_maps(g.layers[src], lay, p)
                avail = w_asap[src][_ceil_div((k + 1) * ec, ep) - 1] + 1.0
            ready[it] = np.maximum(ready[it], avail)
        s = idx + np.maximum(0.0, np.maximum.accumulate(ready - idx))
        s_asap[n] = s
        w_asap[n] = s[_tile(pr.writes, F, pr.n)] + pr.lat
        for p in range(len(pr.reads)):
            r_asap[(n, p)] = s[_tile(pr.reads[p], F, pr.n)]
    # ---- backward: as late as possible while the sinks keep their as-soon-as-possible output times
    w_alap, r_alap, l_alap = {}, {}, {}
    for n in reversed(g.order):
        pr, lay = progs[n], g.layers[n]
        tot = pr.n * F
        idx = np.arange(tot, dtype=np.float64)
        wr = _tile(pr.writes, F, pr.n)
        dl = np.full(tot, np.inf)
        if not g.outputs[n]:
            dl[wr] = s_asap[n][wr]
        for c, p in g.outputs[n]:
            ep, ec = _edge_maps(lay, g.layers[c], p)
            j = np.arange(len(wr))
            dl[wr] = np.minimum(dl[wr], r_alap[(c, p)][(j * ep) // ec] - 1.0 - pr.lat)
        lt = idx + np.minimum.accumulate((dl - idx)[::-1])[::-1]
        if np.any(lt < s_asap[n] - 1e-9):
            raise QpassError(f"internal error: infeasible late schedule at {n}")
        l_alap[n] = lt
        w_alap[n] = lt[wr] + pr.lat
        for p in range(len(pr.reads)):
            r_alap[(n, p)] = lt[_tile(pr.reads[p], F, pr.n)]
    # ---- reads as early as the late writes allow (writing iterations stay put): u = cummax(a) with
    # a = ready - i on reading iterations and late - i on writing ones; the cap u <= late - i never
    # binds because late - i is non-decreasing, so this stays a feasible schedule
    r_need = {}
    for n in g.order:
        pr = progs[n]
        lt = l_alap[n]
        tot = pr.n * F
        idx = np.arange(tot, dtype=np.float64)
        a = np.full(tot, -np.inf)
        for p, src in enumerate(g.inputs[n]):
            it = _tile(pr.reads[p], F, pr.n)
            if src == SOURCE:
                avail = lt[it]
            else:
                ep, ec = _edge_maps(g.layers[src], g.layers[n], p)
                k = np.arange(len(it))
                avail = w_alap[src][_ceil_div((k + 1) * ec, ep) - 1] + 1.0
            a[it] = np.maximum(a[it], avail - idx[it])
        wr = _tile(pr.writes, F, pr.n)
        a[wr] = lt[wr] - idx[wr]
        t = idx + np.maximum(0.0, np.maximum.accumulate(a))
        if np.any(t > lt + 1e-9):
            raise QpassError(f"internal error: early-read schedule exceeds the late one at {n}")
        for p in range(len(pr.reads)):
            r_need[(n, p)] = t[_tile(pr.reads[p], F, pr.n)]
    # ---- occupancies (words of the last frame are excluded: the schedule's tail is unconstrained)
    out = []
    for n in g.order:
        lay = g.layers[n]
        for p, src in enumerate(g.inputs[n]):
            prod = None if src == SOURCE else g.layers[src]
            ep, ec = _edge_maps(prod, lay, p)
            wp = lay.in_elems()[p] // ep
            j = np.arange(wp * F)
            done = _ceil_div((j + 1) * ep, ec) - 1
            occ = {}
            for tag, wt, rt in (("alap", w_alap, r_need), ("asap", w_asap, r_asap)):
                if prod is None:
                    w = (r_alap[(n, p)] - 1.0) if tag == "alap" else (j // wp) * period + (j % wp) * 1.0
                else:
                    w = wt[src]
                occ[tag] = _occupancy(w, rt[(n, p)][done], wp * (F - 1))
            out.append(FifoEdge(src, n, p, wp, occ["alap"], _pow2_depth(occ["alap"]), occ["asap"]))
    sinks = [n for n in g.order if not g.outputs[n]]
    ends = [w_asap[n].reshape(F, -1)[:, -1] for n in sinks]
    latency = int(max(e[0] for e in ends)) + 1
    measured = float(max(e[-1] - e[-2] for e in ends))
    res = FifoResult(out, period, measured, latency, F, time.perf_counter() - t0)
    if measured > period:
        res.notes.append(f"warning: simulated frame period {measured:g} exceeds the slowest layer's {period}")
    return res


# ------------------------------------------------------------------- reference (slow) simulator

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
    g = _build_graph(layers, edges)
    progs = {n: program(g.layers[n]) for n in g.order}
    period = max(p.n for p in progs.values())
    F = frames
    limit = max_cycles or (F + 4) * period * 4 + 10_000
    st = {}
    for n in g.order:
        pr = progs[n]
        is_read = []
        for rd in pr.reads:
            m = np.zeros(pr.n, dtype=bool)
            m[rd] = True
            is_read.append(m.tolist())
        w = np.zeros(pr.n, dtype=bool)
        w[pr.writes] = True
        st[n] = dict(it=0, tot=pr.n * F, n=pr.n, is_read=is_read, is_write=w.tolist(),
                     pipe=deque([False] * max(1, pr.lat)), rd=[0] * len(pr.reads), wr=0)
    ein = {}  # (dst, port) -> edge state
    for n in g.order:
        for p, src in enumerate(g.inputs[n]):
            if src == SOURCE:
                continue
            ep, ec = _edge_maps(g.layers[src], g.layers[n], p)
            key = (src, n, p)
            if key not in depths:
                raise QpassError(f"no depth given for FIFO {src} -> {n} port {p}")
            ein[(n, p)] = dict(src=src, dst=n, port=p, ep=ep, ec=ec, depth=int(depths[key]), w=0, maxocc=0)
    eout = {n: [ein[(c, p)] for c, p in g.outputs[n]] for n in g.order}
    sinks = [n for n in g.order if not g.outputs[n]]
    sink_words = {n: g.layers[n].out_words() for n in sinks}
    frame_end: list[int] = []
    last_progress, t = 0, 0
    while t < limit:
        acts = []
        for n in g.order:
            s = st[n]
            head = s["pipe"][0]
            if head:
                ok = True
                for e in eout[n]:
                    released = (st[e["dst"]]["rd"][e["port"]] * e["ec"]) // e["ep"]
                    if e["w"] - released >= e["depth"]:
                        ok = False
                        break
                if not ok:
                    continue
            issue = False
            if s["it"] < s["tot"]:
                i = s["it"] % s["n"]
                issue = True
                for p, src in enumerate(g.inputs[n]):
                    if src != SOURCE and s["is_read"][p][i]:
                        e = ein[(n, p)]
                        if e["w"] < _ceil_div((s["rd"][p] + 1) * e["ec"], e["ep"]):
                            issue = False
                            break
            acts.append((n, head, issue))
        progress = False
        for n, head, issue in acts:
            s = st[n]
            s["pipe"].popleft()
            if head:
                progress = True
                for e in eout[n]:
                    e["w"] += 1
                s["wr"] += 1
                if n in sink_words and s["wr"] % sink_words[n] == 0 and n == sinks[0]:
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
        for (n, p), e in ein.items():
            released = (st[n]["rd"][p] * e["ec"]) // e["ep"]
            e["maxocc"] = max(e["maxocc"], e["w"] - released)
        t += 1
        if progress:
            last_progress = t
        if len(frame_end) >= F:
            break
        if t - last_progress > 2 * period + 1000:
            break
    occ = {(e["src"], n, p): e["maxocc"] for (n, p), e in ein.items()}
    return RefSimResult(len(frame_end) < F, t, len(frame_end), frame_end, occ)

