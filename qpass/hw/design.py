"""Folding, FIFO sizing and the per-layer report of a partition's ``DataflowGraph``.

``fold_design`` folds every partition of a design together with ``fold_for_target`` (a frame-rate target, fewest
LUTs) or ``fold_for_budget`` (fastest design fitting a device) and applies a FINN folding file (``fold``: one
partition); ``fifo_depths`` sizes the FIFOs with ``size_fifos``; ``report_table`` prints the per-layer table
(folding, cycles, resources, types, FIFO depths); ``design_total`` / ``check_budget`` hold the whole design
(layers, FIFOs, width converters) to one device budget.
"""
from __future__ import annotations

from qpass.errors import QpassError
from qpass.hw.dataflow_graph import DataflowGraph
from qpass.hw.devices import get_device
from qpass.hw.fifo_sim import size_fifos
from qpass.hw.folding import FoldingResult, evaluate, fold_for_budget, fold_for_target
from qpass.hw.kinds import KIND_BY_NAME
from qpass.hw.layers import Resources


def _enforce_pairs(dg: DataflowGraph) -> list[str]:
    """A depthwise sliding window and its VVAU share one word width (the window order is per channel fold)."""
    notes = []
    for l in dg.layers:
        if KIND_BY_NAME[l.kind].window_pair:
            swg = dg.layer(dg.streams[l.inputs[0]].producer)
            p = max(swg.layer.simd, l.layer.pe)
            if swg.layer.simd != p or l.layer.pe != p:
                notes.append(f"{swg.name}/{l.name}: SIMD = PE = {p} (a depthwise window is read one channel fold "
                             "at a time)")
                swg.layer = swg.layer.folded(1, p)
                l.layer = l.layer.folded(p, 1)
    return notes


def fold(dg: DataflowGraph, *, target_fps: float | None = None, clock_ns: float = 10.0, device=None,
         utilisation: float = 0.8, strategy: str = "min_lut", overrides: dict | None = None,
         estimate=None) -> FoldingResult:
    """One partition folded on its own (``fold_design`` of a one-partition design); ``overrides`` is a FINN folding
    file's content; ``estimate`` the resource model the search uses (``qpass.hw.folding``: the layers' own by
    default). The result is applied to ``dg`` and returned."""
    notes = fold_design([dg], target_fps=target_fps, clock_ns=clock_ns, device=device, utilisation=utilisation,
                        strategy=strategy, folding=overrides, estimate=estimate)
    dg.folding.notes += notes
    return dg.folding


def fifo_depths(dg: DataflowGraph, frames: int = 3, rtl_converters: bool = False) -> dict[tuple[str, str, int], int]:
    """Depth (in words of the producer) of every stream edge (producer or '<input>', consumer, port);
    ``rtl_converters``: sized for the RTL top's FIFO + width-converter pairs (``qpass.hw.fifo_sim.size_fifos``) and
    shrunk to their occupancy under back-pressure, which Verilator confirms cycle by cycle (no deadlock, full
    throughput: bench/results/rtl_sim_digits.txt). Without it (HLS) the depths are not shrunk: an HLS kernel's
    pipeline stalls as a whole and has a fill latency the stream model does not know, and nothing here can run it
    with bounded streams (C simulation streams are unbounded, no RTL cosimulation without Vitis)."""
    layers, edges = dg.cost_layers(), dg.stream_edges()
    try:
        res = size_fifos(layers, edges, frames=frames, rtl_converters=rtl_converters, shrink=rtl_converters)
        dg.fifos = res
        depths = dict(res.depths)
    except QpassError as exc:  # e.g. a multi-input layer reading a partition input: no simulation
        dg.fifos = None
        dg.fifo_notes.append(f"FIFO simulation not applicable ({exc}); FIFOs hold one frame")
        depths = {}
    out = {}
    for l in dg.layers:
        for port, s in enumerate(l.inputs):
            src = dg.streams[s].producer or "<input>"
            d = depths.get((src, l.name, port))
            if d is None:  # no simulation: a FIFO that holds a whole frame can never block
                d = max(2, 1 << max(0, int(l.layer.in_words()[port]) - 1).bit_length())
            out[(src, l.name, port)] = int(d)
    return out


def report_table(dg: DataflowGraph, depths: dict | None = None) -> str:
    """Per-layer table: kind, folding, cycles, resources, element types, implemented ONNX nodes."""
    res = dg.folding
    head = ("layer", "kind", "PE", "SIMD", "cycles", "LUT", "BRAM18", "DSP", "in", "weights", "acc", "out",
            "FIFO in", "ONNX nodes")
    rows = []
    for l in dg.layers:
        L = l.layer
        r = L.resources()
        p = l.params
        ins = "+".join(dg.streams[s].dtype.name for s in l.inputs)
        w = p["w_type"].name if "w_type" in p else "-"
        acc = p["acc_type"].name if "acc_type" in p else "-"
        thr = f" thr{p['thresholds'].shape[1]}" if "thresholds" in p else ""
        out = dg.streams[l.output].dtype.name + thr
        fifo = ",".join(str(depths.get((dg.streams[s].producer or "<input>", l.name, i), "")) for i, s in
                        enumerate(l.inputs)) if depths else ""
        rows.append((l.name, L.kind, str(L.fold[0]), str(L.fold[1]), str(L.cycles()), str(r.lut), str(r.bram18),
                     str(r.dsp), ins, w, acc, out, fifo, ", ".join(l.nodes)))
    tot = Resources()
    for l in dg.layers:
        tot = tot + l.layer.resources()
    rows.append(("TOTAL", "", "", "", str(max((l.layer.cycles() for l in dg.layers), default=0)), str(tot.lut),
                 str(tot.bram18), str(tot.dsp), "", "", "", "", "", ""))
    cells = [head] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) if i in (0, 1, 8, 9, 10, 11, 13) else c.rjust(wd)
                       for i, (c, wd) in enumerate(zip(r, widths))).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    if res is not None:
        c = res.max_cycles
        lines.append(f"bottleneck {res.bottleneck} ({c} cycles/frame): {res.fps:,.1f} FPS at "
                     f"{1e3 / res.clock_ns:.1f} MHz; latency <= {res.latency_cycles} cycles (critical path)")
        if res.target_fps is not None:
            lines.append(f"target {res.target_fps:,.1f} FPS = {res.target_cycles:,.1f} cycles/frame: "
                         f"{'met' if res.meets_target else 'NOT met'}; {res.candidates_tried} foldings considered"
                         + (f"; FINN's divisor walk would use {res.baseline_lut} LUT" if res.baseline_lut else ""))
        if res.device is not None:
            cap = res.device.capacity()
            lines.append(f"device {res.device.part} ({res.device.board}): LUT {100 * tot.lut / cap[0]:.1f}%, "
                         f"BRAM18 {100 * tot.bram18 / max(cap[1], 1):.1f}%, DSP {100 * tot.dsp / max(cap[3], 1):.1f}%")
        lines.extend(res.notes)
    if dg.fifos is not None:
        # no wall time here: exported projects are byte-identical run to run (the time is in ``fifos.elapsed_s``)
        lines.append(f"FIFO sizing: {dg.fifos.notes[0] if dg.fifos.notes else ''}".strip())
    lines.extend(dg.fifo_notes)
    lines.extend(dg.notes)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the whole design

def fold_design(dgs: list[DataflowGraph], *, target_fps: float | None = None, clock_ns: float = 10.0, device=None,
                utilisation: float = 0.8, strategy: str = "min_lut", folding: dict | None = None,
                estimate=None) -> list[str]:
    """Fold the layers of every partition together (one frame-rate target, or one device budget for the whole
    design), then apply a FINN folding file (``qpass.hw.folding_config``), keep depthwise window pairs, and replace
    every "auto" ram_style by the cost model's choice. Sets each graph's ``folding`` (with its own notes); returns the
    design-wide notes (how the folding file's names were resolved)."""
    from qpass.hw import folding_config

    layers = [L for dg in dgs for L in dg.cost_layers()]
    edges = [e for dg in dgs for e in dg.edges]
    if target_fps is not None:
        res = fold_for_target(layers, target_fps, clock_ns, edges=edges, strategy=strategy, estimate=estimate)
    elif device is not None:
        try:
            res = fold_for_budget(layers, device, clock_ns, utilisation, edges=edges, estimate=estimate)
        except QpassError:  # does not fit even fully folded: keep the slowest folding, the budget check says why
            res = evaluate([L.folded(1, 1) for L in layers], clock_ns, edges=edges, estimate=estimate)
    else:
        res = evaluate(layers, clock_ns, edges=edges, estimate=estimate)
    notes: list[str] = []
    by = {L.name: L for L in res.layers}
    if folding:
        chosen, more = folding_config.resolve(folding, layers)
        notes += more
        for name, attrs in chosen.items():
            by[name] = folding_config.apply(by[name], attrs)
    for dg in dgs:
        dg.apply([by[l.name] for l in dg.layers])
        pairs = _enforce_pairs(dg)
        for l in dg.layers:
            styles = l.layer.resolved_styles()
            if styles:
                l.layer = l.layer.restyled(**styles)
        r = evaluate(dg.cost_layers(), clock_ns, edges=dg.edges, device=get_device(device) if device else None)
        r.target_fps, r.target_cycles, r.strategy = res.target_fps, res.target_cycles, res.strategy
        r.candidates_tried, r.baseline_lut, r.utilisation = res.candidates_tried, res.baseline_lut, res.utilisation
        r.notes = list(res.notes) + pairs
        dg.folding = r
    return notes


def stream_costs(dg: DataflowGraph, depths: dict) -> tuple[Resources, Resources]:
    """(FIFOs, data-width converters) of one partition (``qpass.hw.memory_costs.fifo`` / ``width_converter``)."""
    from qpass.hw import memory_costs as mc

    fifo = dwc = Resources()
    for l in dg.layers:
        for port, s in enumerate(l.inputs):
            st = dg.streams[s]
            src = dg.layer(st.producer).out_fold if st.producer else l.in_fold[port]
            width = l.in_fold[port] * st.dtype.bits
            d = depths.get((st.producer or "<input>", l.name, port), 2)
            lut, bram = mc.fifo(d, width)
            fifo = fifo + Resources(lut=lut, bram18=bram)
            dwc = dwc + Resources(lut=mc.width_converter(src * st.dtype.bits, width))
    return fifo, dwc


def design_total(parts: list[tuple[DataflowGraph, dict]]) -> tuple[Resources, list[str]]:
    """Layers + FIFOs + width converters of every partition; the lines that say so."""
    total, lines = Resources(), []
    for dg, depths in parts:
        layers = Resources()
        for l in dg.layers:
            layers = layers + l.layer.resources()
        fifo, dwc = stream_costs(dg, depths)
        total = total + layers + fifo + dwc
        lines.append(f"  {dg.name}: layers LUT {layers.lut} BRAM18 {layers.bram18} DSP {layers.dsp}; FIFOs LUT "
                     f"{fifo.lut} BRAM18 {fifo.bram18}; width converters LUT {dwc.lut}")
    return total, lines


def check_budget(total: Resources, device, allow_over_budget: bool = False) -> str:
    """The design's use of ``device`` as one line; QpassError with the numbers when some resource exceeds it (unless
    ``allow_over_budget``)."""
    dev = get_device(device)
    cap = dev.capacity()
    names = ("LUT", "BRAM18", "URAM", "DSP")
    use = ", ".join(f"{n} {u}/{c} ({100.0 * u / c:.0f}%)" if c else f"{n} {u}/0"
                    for n, u, c in zip(names, total.as_tuple(), cap) if u or c)
    over = [n for n, u, c in zip(names, total.as_tuple(), cap) if u > c]
    if over and not allow_over_budget:
        raise QpassError(f"the design does not fit {dev.part} ({dev.board}): {use}; over in {', '.join(over)} "
                         "(fold it more with a lower --target-fps or --folding, or pass --allow-over-budget)")
    return f"whole design on {dev.part} ({dev.board}): {use}" + (" -- OVER BUDGET" if over else "")
