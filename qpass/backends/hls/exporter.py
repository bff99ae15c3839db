"""``export``: partition a streamlined model, fold and size every dataflow partition, and write one HLS project per
partition; ``compare_with_golden``: the C simulation against the golden simulator, partition by partition and end
to end (host nodes in the golden simulator, partitions in the C simulation)."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from qpass.backends.hls import codegen, project_files
from qpass.backends.hls.aptypes import find_ap_types
from qpass.backends.hls.csim_runner import CsimCache, build, csim
from qpass.errors import QpassError
from qpass.hw.builder import build as build_layers
from qpass.hw.dataflow_graph import DataflowGraph
from qpass.hw import folding_config
from qpass.hw.design import check_budget, design_total, fifo_depths, fold_design, report_table
from qpass.hw.memory_costs import ASSUMPTIONS
from qpass.hw.weight_memory import ASSUMPTIONS as MEMORY_ASSUMPTIONS, with_mem_mode
from qpass.hw.devices import Device, get_device
from qpass.hw.fifo_sim import FifoResult
from qpass.hw.folding import FoldingResult
from qpass.hw.partition import PartitionedModel, partition
from qpass.ops.partition import is_partition


@dataclass
class PartitionExport:
    name: str  # partition node name in the parent model
    model_file: str  # the partition's .onnx, relative to the export folder
    project_dir: Path
    top: str
    graph: DataflowGraph
    folding: FoldingResult
    fifos: FifoResult | None
    depths: dict
    table: str
    project: codegen.Project
    frames: int | None = None  # sample frames written to data/


@dataclass
class ExportResult:
    out_dir: Path
    model_path: Path  # the parent model: host nodes + StreamingDataflowPartition nodes
    partitioned: PartitionedModel
    partitions: list[PartitionExport]
    host_nodes: list[tuple[str, str, str]]
    device: Device
    clock_ns: float
    target_fps: float | None
    report: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    #: the C simulation runs of this export's projects (``compare_with_golden`` reuses a run fed the same inputs)
    csim_cache: CsimCache = field(default_factory=CsimCache)

    def partition(self, name: str) -> PartitionExport:
        for p in self.partitions:
            if p.name == name or p.top == name:
                return p
        raise KeyError(name)


def _model_of(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if hasattr(model, "records") and hasattr(model, "model"):  # an OptimizeResult
        from qpass.pipeline.run import qonnx_model

        return qonnx_model(model)
    if isinstance(model, (str, os.PathLike)):
        from qpass.ir.model_io import parse_model

        return parse_model(model)
    raise QpassError(f"export needs an ONNX model or an optimize() result, got {type(model).__name__}")


def _samples(samples, model: onnx.ModelProto):
    if samples is None:
        return None
    from qpass.ir.samples import as_samples

    return as_samples(samples, model)


def partition_io(parent: onnx.ModelProto, samples, batch_size: int = 64, partitions=None) -> dict[str, np.ndarray]:
    """Golden values of every partition input and output tensor and of the model outputs, per sample
    (``partitions``: the PartitionStore holding the partition models)."""
    from qpass.reference import GoldenExecutor, run_samples

    names = []
    for n in parent.graph.node:
        if is_partition(n):
            names += [t for t in list(n.input) + list(n.output) if t and t not in names]
    names += [o.name for o in parent.graph.output if o.name not in names]
    ex = GoldenExecutor(parent, partitions=partitions)
    return run_samples(parent, samples, outputs=names, batch_size=batch_size, executor=ex)


def export(model, out_dir: str | os.PathLike, device: str | Device = "xc7z020", clock_ns: float | None = None,
           target_fps: float | None = None, samples=None, *, utilisation: float = 0.8, strategy: str = "min_lut",
           folding: dict | None = None, model_name: str = "model",
           ap_types: str | os.PathLike | None = None, control: str = "ap_ctrl_hs",
           allow_over_budget: bool = False, weights_mode: str = "const") -> ExportResult:
    """Write, per dataflow partition of a streamlined model, a self-contained HLS C++ project.

    ``model``: the streamlined QONNX graph (``qpass.api.qonnx_model(result)`` of the ``streamline`` or ``dataflow``
    pipeline, or that result itself). ``device``: the FPGA part (``qpass.hw.devices``); ``clock_ns``: the
    clock period (default: the device's). ``target_fps``: fold every layer to meet this frame rate with the fewest
    estimated LUTs; without it, the fastest folding that fits ``utilisation`` of the device. ``samples`` (npz path,
    dict or SampleSet of the model's inputs): written to each project's ``data/`` with the golden simulator's
    outputs, so ``make csim`` checks itself.

    Writes ``out_dir/<model_name>.onnx`` (host nodes + partition nodes) and its partition models, one folder per
    partition (``codegen`` and ``project_files`` module docstrings), and ``out_dir/report.txt`` (host nodes with
    reasons, per-layer tables). ``folding`` ({layer: {"PE": p, "SIMD": s}}, FINN's folding_config) overrides the chosen folding of
    the named layers (layer names as in the report, or FINN's ``<OpType>_<i>``; ``qpass.hw.folding_config``); the
    effective folding is written to ``out_dir/folding_config.json``. The layers, FIFOs and width converters of all
    partitions together must fit the device, else QpassError with the numbers (unless ``allow_over_budget``).
    ``control``: the top functions' block-level control, ``codegen.CONTROLS`` (ap_ctrl_hs: one frame per call;
    ap_ctrl_none: free-running; frame-loop: a frame count per call). ``weights_mode``: "const" (weights and
    thresholds are constant ROMs) or "runtime" (RAMs the host loads through the top function, BNN-PYNQ's design;
    ``qpass.hw.weight_memory``), the default of every matrix layer whose ``mem_mode`` the folding file does not set."""
    t0 = time.perf_counter()
    timings = {}
    if control not in codegen.CONTROLS:
        raise QpassError(f"HLS control {control!r} is not one of {', '.join(codegen.CONTROLS)}")
    m = _model_of(model)
    dev = get_device(device)
    clk = float(clock_ns if clock_ns is not None else dev.clock_ns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pm = _partitioned(m)
    parent_path = pm.save(out / f"{model_name}.onnx")
    timings["partition"] = time.perf_counter() - t0
    sample_set = _samples(samples, m)
    io = partition_io(pm.parent, sample_set, partitions=pm.store) if sample_set is not None else None
    timings["golden"] = time.perf_counter() - t0 - timings["partition"]
    ap = str(ap_types) if ap_types is not None else (str(find_ap_types()) if find_ap_types() else None)
    part = project_files.part_of(dev if not isinstance(device, str) else device)
    exports = []
    saved = onnx.load(str(parent_path))
    files = {n.name: next(a.s.decode() for a in n.attribute if a.name == "model") for n in saved.graph.node
             if is_partition(n)}
    t1 = time.perf_counter()
    dgs = [build_layers(pm.partitions[next(a.s.decode() for a in node.attribute if a.name == "model")], node.name)
           for node in pm.partition_nodes]
    notes = fold_design(dgs, target_fps=target_fps, clock_ns=clk, device=dev, utilisation=utilisation,
                        strategy=strategy, folding=with_mem_mode(folding, weights_mode))
    all_depths = [fifo_depths(dg) for dg in dgs]
    total, lines = design_total(list(zip(dgs, all_depths)))
    budget = check_budget(total, dev, allow_over_budget)
    (out / "folding_config.json").write_text(folding_config.dumps(
        folding_config.effective_config([l.layer for dg in dgs for l in dg.layers])))
    timings["fold"] = time.perf_counter() - t1
    for node, dg, depths in zip(pm.partition_nodes, dgs, all_depths):
        rel = next(a.s.decode() for a in node.attribute if a.name == "model")
        t1 = time.perf_counter()
        fold_res = dg.folding
        table = report_table(dg, depths)
        top = re.sub(r"[^0-9A-Za-z_]", "_", node.name)
        proj = codegen.generate(dg, depths, top, control)
        pdir = out / top
        frames = None
        if io is not None:
            frames = _write_data(pdir, proj, io)
        fifo_table = f"\n\nFIFO depths (stream simulation, in producer words):\n{dg.fifos.table()}" if dg.fifos else ""
        full = table + fifo_table
        project_files.write_project(pdir, proj, dg, full, ap_types=ap, part=part, clock_ns=clk, frames=frames)
        exports.append(PartitionExport(node.name, files.get(node.name, rel), pdir, top, dg, fold_res, dg.fifos, depths,
                                       table, proj, frames))
        timings[f"codegen {node.name}"] = time.perf_counter() - t1
    report = _report(pm, exports, dev, clk, target_fps) + "\n\n" + "\n".join(
        [budget + f" (LUT {total.lut}, BRAM18 {total.bram18}, URAM {total.uram}, DSP {total.dsp}):"] + lines + notes
        + [ASSUMPTIONS] + ([MEMORY_ASSUMPTIONS] if any(e.project.memories for e in exports) else []))
    (out / "report.txt").write_text(report + "\n")
    return ExportResult(out, parent_path, pm, exports, pm.host_nodes(), dev, clk, target_fps, report,
                        time.perf_counter() - t0, timings)


def _partitioned(m):
    """The model cut into dataflow partitions; QpassError when nothing streams."""
    pm = partition(m)
    if not pm.partitions:
        lowered = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
        raise QpassError("no dataflow partition: no node has a streaming hardware implementation" +
                         (" (this looks like a model lowered for onnxruntime; export the QONNX graph, "
                          "qpass.api.qonnx_model(result), of the streamline/dataflow pipeline)" if lowered else ""))
    return pm


def _write_data(pdir: Path, proj: codegen.Project, io: dict) -> int:
    data = pdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    frames = None
    for p, kind in [(p, "in") for p in proj.inputs] + [(p, "out") for p in proj.outputs]:
        a = np.asarray(io[p.tensor])
        a = a.reshape(-1, p.elems)
        frames = a.shape[0] if frames is None else frames
        s = a[:, p.order].astype(np.int64).reshape(-1)
        name = f"{p.name}.txt" if kind == "in" else f"{p.name}.expected.txt"
        np.savetxt(data / name, s, fmt="%d")
    return int(frames or 0)


def _report(pm: PartitionedModel, exports: list[PartitionExport], dev: Device, clk: float, fps) -> str:
    lines = [f"qpass HLS export: {len(exports)} dataflow partition(s), device {dev.part} ({dev.board}), clock "
             f"{clk:g} ns" + (f", target {fps:,.1f} FPS" if fps else ", fastest folding that fits the device")]
    lines += pm.host_report()
    for e in exports:
        lines.append(f"\npartition {e.name} -> {e.project_dir.name}/ (top function {e.top}, model {e.model_file})")
        lines.append(e.table)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ comparison

@dataclass
class OutputCheck:
    partition: str
    tensor: str
    elements: int
    mismatches: int
    max_abs_diff: float


@dataclass
class Comparison:
    frames: int
    outputs: list[OutputCheck]
    end_to_end: dict[str, int]  # model output -> mismatching elements (golden host + csim partitions vs golden)
    seconds: dict[str, float]

    @property
    def mismatches(self) -> int:
        return sum(o.mismatches for o in self.outputs) + sum(self.end_to_end.values())

    def summary(self) -> str:
        parts = [f"{o.partition}:{o.tensor}: {o.mismatches}/{o.elements}" for o in self.outputs]
        e2e = [f"{k}: {v}" for k, v in self.end_to_end.items()]
        return (f"{self.frames} frames; partition outputs (mismatches/elements) " + ", ".join(parts) +
                "; end to end " + ", ".join(e2e))


def compare_with_golden(result: ExportResult, samples, end_to_end: bool = True) -> Comparison:
    """Run the golden simulator on the partitioned model over ``samples``, feed every partition's golden inputs to
    its C simulation and count differing output codes; then (``end_to_end``) run the whole model again with the
    partitions in the C simulation and the host nodes in the golden simulator and count differing outputs."""
    t0 = time.perf_counter()
    parent = result.partitioned.parent
    s = _samples(samples, parent)
    store = result.partitioned.store
    io = partition_io(parent, s, batch_size=max(1, len(s)), partitions=store)
    secs = {"golden": time.perf_counter() - t0}
    t1 = time.perf_counter()
    cache = result.csim_cache
    for e in result.partitions:
        build(e.project_dir, cache=cache)
    secs["build"] = time.perf_counter() - t1
    checks = []
    frames = 0
    t1 = time.perf_counter()
    for e, node in zip(result.partitions, result.partitioned.partition_nodes):
        feeds = {p.tensor: io[p.tensor] for p in e.project.inputs}
        got = csim(e.project_dir, feeds, cache=cache)
        for p in e.project.outputs:
            want = np.asarray(io[p.tensor]).reshape(-1, p.elems)
            # the partition model declares its outputs float32: a wide accumulator's exact integer is compared as the
            # float32 it is in the model (the reference rounds the exact sum once; past 2^24 that is not the integer)
            have = got[p.tensor].reshape(-1, p.elems).astype(np.float32)
            frames = want.shape[0]
            diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
            checks.append(OutputCheck(e.name, p.tensor, int(want.size), int(np.count_nonzero(diff)),
                                      float(diff.max()) if diff.size else 0.0))
    secs["csim"] = time.perf_counter() - t1
    e2e = {}
    if end_to_end:
        from qpass.reference import GoldenExecutor, run_samples

        t1 = time.perf_counter()
        shas = {n.name: next((a.s.decode() for a in n.attribute if a.name == "model_sha256"), n.name)
                for n in result.partitioned.partition_nodes}
        csims = {shas[e.name]: (lambda feeds, d=e.project_dir: csim(d, feeds, cache=cache))
                 for e in result.partitions}
        # one batch: a partition fed exactly what it was fed above reuses that C simulation run
        ys = run_samples(parent, s, executor=GoldenExecutor(parent, partitions=store.with_runners(csims)),
                         batch_size=max(1, len(s)))
        for o in parent.graph.output:
            a, b = np.asarray(ys[o.name]), np.asarray(io[o.name])
            e2e[o.name] = int(np.count_nonzero(a != b))
        secs["end_to_end"] = time.perf_counter() - t1
    return Comparison(frames, checks, e2e, secs)
