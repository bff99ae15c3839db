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

Method: (1) with unbounded FIFOs, the as-soon-as-possible (ASAP) schedule is computed layer by layer
in topological order by a max-plus recurrence that numpy evaluates in closed form:
start_i = i + max(0, cummax_j(ready_j - j)). (2) Other feasible schedules with the same output
times are derived from it: a chosen set of layers runs as late as possible (a reverse cumulative
minimum from their consumers' read times, the sinks keeping their ASAP output times) and then reads
as early as those late writes allow; the rest stay ASAP. Any such per-layer choice is consistent.
(3) The depth of an edge is its maximum occupancy in the chosen schedule, rounded up to a power of
two (min 2). The schedule meets all these FIFO bounds at full throughput, so in the max-plus model
the real execution with these depths (least fixpoint of the same constraints, input not throttled)
is no later anywhere: no deadlock, no throughput loss. The set of late layers is picked among
"all ASAP" (what FINN's large-FIFO RTL simulation measures), "all late", "late upstream of the
bottleneck" (what back-pressure does), then refined greedily, minimising the total FIFO words.
A fork whose branches differ in latency gets a deep FIFO on its short branch (a residual shortcut
holds the long branch's latency in words) and shallow ones elsewhere.
``size_fifos(verify=True)`` recomputes the bounded-FIFO schedule with the chosen depths by monotone
fixpoint sweeps; ``simulate_with_depths`` is a slow cycle-stepped reference (a full out-FIFO freezes
the whole HLS pipeline, the input DMA pushes as fast as accepted) for checking small designs.
Not modelled: AXI/DMA stalls, memory-port contention, weight-stream FIFOs; a missing input word is
a bubble (flushable pipeline) whereas a default HLS pipeline freezes its in-flight iterations; the
per-layer pipeline depths are assumptions (cost_models.pipeline_depth); the search minimises FIFO
words, not bits or BRAM; depths are in producer words (element widths are not tracked).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qpass.hw import cost_models as cm
from qpass.hw.layers import (AddStreams, ChannelwiseOp, Concat, Layer, MVTU, Pool, Reorder,
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
    words_per_frame: int  # producer words (consumer words on a graph-input edge)
    occupancy: int  # max occupancy in the chosen feasible schedule
    depth: int  # occupancy rounded up to a power of two, min 2
    occupancy_asap: int  # every layer as early as possible, unbounded FIFOs (FINN large-FIFO style)
    occupancy_late: int  # producers as late as possible, consumers as early as possible


@dataclass
class FifoResult:
    edges: list[FifoEdge]
    period_cycles: int  # pipeline rate P (slowest layer)
    measured_period: float  # sink frame-to-frame time (bounded FIFOs when verified)
    latency_cycles: int  # first input word to last output word of frame 0
    frames: int
    verified: bool  # verify=True and the bounded-FIFO schedule kept the period
    sweeps: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def depths(self) -> dict[tuple[str, str, int], int]:
        return {(e.src, e.dst, e.port): e.depth for e in self.edges}

    def edge(self, src: str, dst: str, port: int | None = None) -> FifoEdge:
        for e in self.edges:
            if e.src == src and e.dst == dst and (port is None or e.port == port):
                return e
        raise QpassError(f"no FIFO edge {src} -> {dst}")

    def depth(self, src: str, dst: str, port: int | None = None) -> int:
        return self.edge(src, dst, port).depth

    def table(self) -> str:
        head = ("from", "to", "port", "words/frame", "occupancy", "depth", "asap occ.", "late occ.")
        rows = [head] + [(e.src, e.dst, str(e.port), str(e.words_per_frame), str(e.occupancy), str(e.depth),
                          str(e.occupancy_asap), str(e.occupancy_late)) for e in self.edges]
        w = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append(f"period {self.period_cycles} cycles (measured {self.measured_period:g}), latency "
                     f"{self.latency_cycles} cycles, {'verified' if self.verified else 'not verified'}; "
                     f"{self.frames} frames, {self.sweeps} sweeps in {self.elapsed_s * 1e3:.1f} ms")
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


class _Sim:
    """Vectorised schedules of a layer graph over F frames (times are float64 cycles)."""

    def __init__(self, g: _Graph, frames: int):
        self.g, self.F = g, frames
        self.progs = {n: program(g.layers[n]) for n in g.order}
        self.P = max(p.n for p in self.progs.values())
        F = frames
        self.idx, self.wr, self.rd, self.lat = {}, {}, {}, {}
        for n, pr in self.progs.items():
            self.idx[n] = np.arange(pr.n * F, dtype=np.float64)
            self.wr[n] = _tile(pr.writes, F, pr.n)
            self.rd[n] = [_tile(r, F, pr.n) for r in pr.reads]
            self.lat[n] = pr.lat
        # per edge (src, dst, port): need[k] = producer word holding consumer word k's last element,
        # first[j] = first consumer word needing producer word j, done[j] = consumer word releasing j
        self.edges: list[tuple[str, str, int]] = []
        self.need, self.first, self.done, self.nwords = {}, {}, {}, {}
        self.src_time = {}
        for n in g.order:
            for p, src in enumerate(g.inputs[n]):
                key = (src, n, p)
                self.edges.append(key)
                ep, ec = _edge_maps(None if src == SOURCE else g.layers[src], g.layers[n], p)
                nc = len(self.rd[n][p])
                npw = nc * ec // ep
                k, j = np.arange(nc), np.arange(npw)
                self.need[key] = _ceil_div((k + 1) * ec, ep) - 1
                self.first[key] = (j * ep) // ec
                self.done[key] = _ceil_div((j + 1) * ep, ec) - 1
                self.nwords[key] = npw // F
                if src == SOURCE:  # the input DMA releases frame f at f*P, one word per cycle
                    wpf = npw // F
                    self.src_time[key] = (j // wpf) * float(self.P) + (j % wpf)

    def writes(self, s, n):
        return s[n][self.wr[n]] + self.lat[n]

    def src_writes(self, s, key):
        return self.src_time[key] if key[0] == SOURCE else self.writes(s, key[0])

    def releases(self, r, key):
        return r[(key[1], key[2])][self.done[key]]

    def _pass(self, n, s, caps):
        g = self.g
        idx = self.idx[n]
        ready = np.full(len(idx), -np.inf)
        for p, src in enumerate(g.inputs[n]):
            key = (src, n, p)
            avail = self.src_writes(s, key)[self.need[key]] + 1.0
            it = self.rd[n][p]
            ready[it] = np.maximum(ready[it], avail)
        if caps:
            for c, p in g.outputs[n]:
                key = (n, c, p)
                d = caps.get(key)
                if d is None:
                    continue
                rel = s[c][self.rd[c][p]][self.done[key]]
                if len(rel) > d:
                    it = self.wr[n][d:]
                    ready[it] = np.maximum(ready[it], rel[:-d] + 1.0 - self.lat[n])
        return idx + np.maximum(0.0, np.maximum.accumulate(ready - idx))

    def schedule(self, caps=None, init=None, max_sweeps: int = 200):
        """Least (as-soon-as-possible) schedule with FIFO capacities ``caps`` (None: unbounded), by
        monotone Gauss-Seidel sweeps (forward for data, backward for back-pressure) from ``init``,
        a lower bound. Returns (schedule, converged, sweeps)."""
        order = self.g.order
        s = {n: (init[n].copy() if init else np.zeros_like(self.idx[n])) for n in order}
        bound = 8.0 * (self.F + 2) * self.P + 8 * sum(len(v) for v in self.idx.values()) / self.F
        for sweep in range(1, max_sweeps + 1):
            changed = False
            for seq in ((order, order[::-1]) if caps else (order,)):
                for n in seq:
                    new = np.maximum(self._pass(n, s, caps), s[n])
                    if not np.array_equal(new, s[n]):
                        changed, s[n] = True, new
            if not changed:
                return s, True, sweep
            if max(float(v[-1]) for v in s.values()) > bound:
                return s, False, sweep
        return s, False, max_sweeps

    def reads(self, s):
        return {(n, p): s[n][self.rd[n][p]] for n in self.g.order for p in range(len(self.rd[n]))}

    def mixed(self, s_asap, late_set):
        """A feasible schedule: layers in ``late_set`` as late as possible (deadlines from their
        consumers' reads, the sinks keeping their as-soon-as-possible output times) and then reading
        as early as those late writes allow; all other layers as soon as possible. Any choice of
        ``late_set`` is consistent: a late producer still writes before each consumer reads.
        Returns (write times per layer, read times per (layer, port))."""
        g = self.g
        w, r_late, l_late = {}, {}, {}
        for n in reversed(g.order):
            idx, wr = self.idx[n], self.wr[n]
            if n not in late_set:
                lt = s_asap[n]
            else:
                dl = np.full(len(idx), np.inf)
                if not g.outputs[n]:
                    dl[wr] = s_asap[n][wr]
                for c, p in g.outputs[n]:
                    dl[wr] = np.minimum(dl[wr], r_late[(c, p)][self.first[(n, c, p)]] - 1.0 - self.lat[n])
                lt = idx + np.minimum.accumulate((dl - idx)[::-1])[::-1]
                if np.any(lt < s_asap[n] - 1e-9):
                    raise QpassError(f"internal error: infeasible late schedule at {n}")
            l_late[n] = lt
            w[n] = lt[wr] + self.lat[n]
            for p in range(len(self.rd[n])):
                r_late[(n, p)] = lt[self.rd[n][p]]
        # early reads for late layers: u = cummax(a), a = ready - i on reading iterations and
        # late - i on writing ones; the cap u <= late - i never binds (late - i is non-decreasing)
        r = {}
        for n in g.order:
            if n not in late_set:
                for p in range(len(self.rd[n])):
                    r[(n, p)] = r_late[(n, p)]
                continue
            idx, lt = self.idx[n], l_late[n]
            a = np.full(len(idx), -np.inf)
            for p, src in enumerate(g.inputs[n]):
                key, it = (src, n, p), self.rd[n][p]
                avail = lt[it] if src == SOURCE else w[src][self.need[key]] + 1.0
                a[it] = np.maximum(a[it], avail - idx[it])
            a[self.wr[n]] = lt[self.wr[n]] - idx[self.wr[n]]
            t = idx + np.maximum(0.0, np.maximum.accumulate(a))
            if np.any(t > lt + 1e-9):
                raise QpassError(f"internal error: early-read schedule exceeds the late one at {n}")
            for p in range(len(self.rd[n])):
                r[(n, p)] = t[self.rd[n][p]]
        return w, r

    def mixed_occupancies(self, s_asap, late_set) -> dict:
        w, r = self.mixed(s_asap, late_set)
        # graph-input words arrive just in time (the DMA is back-pressured); when late layers exist
        # the last frame is excluded: its tail has no deadline and may sit arbitrarily late
        wof = lambda k: (r[(k[1], k[2])][self.first[k]] - 1.0) if k[0] == SOURCE else w[k[0]]  # noqa: E731
        return self.occupancies(wof, r, self.F - 1 if late_set else self.F)

    def ancestors(self, names) -> set[str]:
        seen, todo = set(), list(names)
        while todo:
            n = todo.pop()
            for src in self.g.inputs[n]:
                if src != SOURCE and src not in seen:
                    seen.add(src)
                    todo.append(src)
        return seen

    def occupancies(self, w_of, r, measured_frames: int) -> dict:
        return {key: _occupancy(w_of(key), self.releases(r, key), self.nwords[key] * measured_frames)
                for key in self.edges}

    def sink_ends(self, s) -> np.ndarray:
        sinks = [n for n in self.g.order if not self.g.outputs[n]]
        return np.max([self.writes(s, n).reshape(self.F, -1)[:, -1] for n in sinks], axis=0)


def size_fifos(layers: Sequence[Layer], edges: Sequence[tuple[str, str]] | None = None, frames: int = 3,
               search_evals: int = 16, verify: bool = False, verify_sweeps: int = 400) -> FifoResult:
    """Per-edge FIFO depths for a chain (edges=None) or DAG of layers; see the module docstring.
    Input ports are numbered in the order their edges appear in ``edges``.

    Three feasible full-throughput schedules are compared and the one with the fewest total FIFO
    words kept: all layers as soon as possible (what a large-FIFO simulation measures), all layers
    late, and late only upstream of the bottleneck (what back-pressure does in hardware: upstream
    layers wait for the bottleneck, downstream ones are eager). Each is sufficient on its own, and so
    is any per-layer mix, which a greedy search then refines (``search_evals`` schedule evaluations
    in total, ~50 ms each for a CNV-sized design; 3 disables the search).
    ``verify`` recomputes the bounded-FIFO schedule with the chosen depths (a monotone fixpoint; can
    take seconds on large designs) and checks that it keeps the period."""
    t0 = time.perf_counter()
    if frames < 3:
        raise QpassError("simulate at least 3 frames")
    sim = _Sim(_build_graph(layers, edges), frames)
    P, F = sim.P, frames
    s_asap, _, sweeps = sim.schedule()
    occ_asap = sim.occupancies(lambda k: sim.src_writes(s_asap, k), sim.reads(s_asap), F)
    names = list(sim.g.order)
    bottlenecks = [n for n in names if sim.progs[n].n == P]
    candidates = {
        "upstream of the bottleneck late": sim.ancestors(bottlenecks),
        "all late": set(names),
        "all as soon as possible": set(),
    }
    def cost(o):
        return sum(_pow2_depth(v) for k, v in o.items() if k[0] != SOURCE)

    best, evals = None, 0
    occ_late = None
    for label, late_set in candidates.items():
        occ = sim.mixed_occupancies(s_asap, late_set)
        evals += 1
        if label == "all late":
            occ_late = occ
        if best is None or cost(occ) < best[0]:
            best = (cost(occ), label, occ, late_set)
    c_best, label, occ, late_set = best
    # greedy refinement: toggle one layer between late and as-soon-as-possible, trying the layers
    # at the largest FIFOs first, keeping a toggle when the total shrinks (deterministic budget)
    improved = True
    while improved and evals < search_evals:
        improved = False
        big = sorted(occ, key=lambda k: -occ[k])
        order = list(dict.fromkeys(n for k in big for n in k[:2] if n != SOURCE))
        for n in order:
            if evals >= search_evals:
                break
            trial = late_set ^ {n}
            o = sim.mixed_occupancies(s_asap, trial)
            evals += 1
            if cost(o) < c_best:
                c_best, occ, late_set, improved = cost(o), o, trial, True
                label = "greedy per-layer late/early choice"
    depths = {k: _pow2_depth(v) for k, v in occ.items()}
    ends = sim.sink_ends(s_asap)
    notes = [f"schedule: {label}; {len(late_set)} of {len(names)} layers late; {evals} schedules evaluated"]
    verified, measured, latency = False, float(ends[-1] - ends[-2]), int(ends[0]) + 1
    if verify:
        caps = {k: d for k, d in depths.items() if k[0] != SOURCE}
        s, conv, n = sim.schedule(caps, init=s_asap, max_sweeps=verify_sweeps)
        sweeps += n
        e = sim.sink_ends(s)
        measured, latency = float(e[-1] - e[-2]), int(e[0]) + 1
        verified = bool(conv and measured <= P)
        if not verified:
            notes.append("warning: the bounded-FIFO schedule did not converge at full throughput")
    out = [FifoEdge(k[0], k[1], k[2], sim.nwords[k], occ[k], depths[k], occ_asap[k], occ_late[k])
           for k in sim.edges]
    return FifoResult(out, P, measured, latency, F, verified, sweeps, time.perf_counter() - t0, notes)


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

