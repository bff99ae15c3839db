"""``export``: partition a streamlined model, fold and size every dataflow partition (``qpass.hw.design``, the
same layers, folding and FIFO depths as the HLS export) and write one RTL project per partition:

    OUT/model.onnx                   host nodes + partition nodes (and the partition models)
    OUT/report.txt                   host nodes with reasons, per-layer tables
    OUT/folding_config.json          the folding used (FINN's format; ``--folding`` takes it back)
    OUT/<top>/rtl/<top>.sv           the partition's AXI-Stream top module
    OUT/<top>/rtl/qpass_*.sv         the layer library
    OUT/<top>/rtl/*.mem              weights and thresholds ($readmemh; *_t.mem<i>_<lane>: a binary search's stage ROMs)
    OUT/<top>/tb/                    cocotb testbench and its Verilator runner (python tb/run_sim.py)
    OUT/<top>/data/                  sample frames in stream order and the reference interpreter's outputs
    OUT/<top>/meta.json              ports, FIFOs, the folding model's cycles per frame
"""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from qpass.backends.hls import partition_io
from qpass.errors import QpassError
from qpass.hw import folding_config
from qpass.hw.builder import build as build_layers
from qpass.hw.calibration import layer_resources
from qpass.hw.dataflow_graph import DataflowGraph
from qpass.hw.design import fifo_depths, fold, report_table
from qpass.hw.devices import Device, get_device
from qpass.hw.folding import FoldingResult
from qpass.hw.partition import PartitionedModel, partition
from qpass.hw.weight_memory import with_mem_mode
from qpass.ops.partition import is_partition
from . import top as topgen

HDL = Path(__file__).resolve().parent / "hdl"
LIBRARY = ("qpass_stream.sv", "qpass_layers.sv", "qpass_eltwise.sv")


@dataclass
class RtlPartition:
    name: str
    project_dir: Path
    top: str
    graph: DataflowGraph
    folding: FoldingResult
    depths: dict
    table: str
    module: topgen.TopModule
    frames: int | None = None

    @property
    def bottleneck_cycles(self) -> int:
        return int(self.folding.max_cycles)


@dataclass
class RtlExport:
    out_dir: Path
    model_path: Path
    partitioned: PartitionedModel
    partitions: list[RtlPartition]
    device: Device
    clock_ns: float
    report: str
    seconds: float
    timings: dict = field(default_factory=dict)


def _model_of(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if hasattr(model, "records") and hasattr(model, "model"):  # an OptimizeResult
        from qpass.pipeline.run import qonnx_model

        return qonnx_model(model)
    from qpass.ir.model_io import parse_model

    return parse_model(model)


def export(model, out_dir, device: str | Device = "xc7z020", clock_ns: float | None = None,
           target_fps: float | None = None, samples=None, *, utilisation: float = 0.8, strategy: str = "min_lut",
           folding: dict | None = None, model_name: str = "model", weights_mode: str = "const") -> RtlExport:
    """Write one RTL project per dataflow partition of a streamlined model (arguments as
    ``qpass.backends.hls.export``); ``samples`` are written to each project's ``data/`` with the reference
    interpreter's outputs, for the testbench. ``weights_mode`` "runtime": weights and thresholds in RAMs with a
    write port (``top``), loaded by the testbench from their .mem files before it streams."""
    t0 = time.perf_counter()
    m = _model_of(model)
    dev = get_device(device)
    clk = float(clock_ns if clock_ns is not None else dev.clock_ns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pm = partition(m)
    if not pm.partitions:
        raise QpassError("no dataflow partition: no node has a streaming hardware implementation")
    parent_path = pm.save(out / f"{model_name}.onnx")
    io = None
    if samples is not None:
        from qpass.ir.samples import as_samples

        io = partition_io(pm.parent, as_samples(samples, m), partitions=pm.store)
    parts = []
    folding = with_mem_mode(folding, weights_mode)
    for node in pm.partition_nodes:
        rel = next(a.s.decode() for a in node.attribute if a.name == "model")
        dg = build_layers(pm.partitions[rel], node.name)
        # the folding search prices the RTL modules with the yosys-calibrated model (qpass.hw.calibration)
        res = fold(dg, target_fps=target_fps, clock_ns=clk, device=dev, utilisation=utilisation, strategy=strategy,
                   overrides=folding, estimate=layer_resources)
        depths = fifo_depths(dg, rtl_converters=True)
        table = report_table(dg, depths)
        top = re.sub(r"[^0-9A-Za-z_]", "_", node.name)
        mod = topgen.generate(dg, depths, top)
        pdir = out / top
        part = RtlPartition(node.name, pdir, top, dg, res, depths, table, mod)
        part.frames = write_project(part, io)
        parts.append(part)
    (out / "folding_config.json").write_text(folding_config.dumps(
        folding_config.effective_config([l.layer for part in parts for l in part.graph.layers])))
    report = _report(pm, parts, dev, clk)
    (out / "report.txt").write_text(report + "\n")
    return RtlExport(out, parent_path, pm, parts, dev, clk, report, time.perf_counter() - t0)


def write_project(part: RtlPartition, io: dict | None) -> int:
    """The project folder of one partition; returns the number of sample frames written."""
    pdir, mod = part.project_dir, part.module
    rtl, tb = pdir / "rtl", pdir / "tb"
    rtl.mkdir(parents=True, exist_ok=True)
    tb.mkdir(parents=True, exist_ok=True)
    for f in LIBRARY:
        shutil.copyfile(HDL / f, rtl / f)
    (rtl / f"{mod.name}.sv").write_text(mod.text)
    for name, text in mod.mems.items():
        (rtl / name).write_text(text)
    shutil.copyfile(HDL / "cocotb_partition.py", tb / "cocotb_partition.py")
    (tb / "run_sim.py").write_text((HDL / "run_sim.py").read_text().replace("@TOP@", mod.name)
                                  .replace('"@LIBRARY@"', ", ".join(f'"{f}"' for f in LIBRARY)))
    frames = 0
    if io is not None:
        data = pdir / "data"
        data.mkdir(exist_ok=True)
        for p, suffix in [(p, "") for p in mod.inputs] + [(p, ".expected") for p in mod.outputs]:
            a = np.asarray(io[p.tensor]).reshape(-1, p.elems)
            frames = a.shape[0]
            np.savetxt(data / f"{p.name}{suffix}.txt", a[:, p.order].astype(np.int64).reshape(-1), fmt="%d")
    cycles = part.bottleneck_cycles
    meta = {"top": mod.name, "partition": part.name, "frames": int(frames), "bottleneck_cycles": cycles,
            "bottleneck": part.folding.bottleneck, "latency_model": int(part.folding.latency_cycles),
            "deadlock_cycles": 4 * cycles + 1000,
            "inputs": [p.meta() for p in mod.inputs], "outputs": [p.meta() for p in mod.outputs],
            "fifos": [{"name": f.name, "width": f.width, "depth": f.depth, "edge": list(f.edge)} for f in mod.fifos],
            "memories": mod.memories,
            "layers": {l.name: {"instance": f"u_{mod.idents[l.name]}", "kind": l.kind, "cycles": l.layer.cycles(),
                                "pe": l.layer.fold[0], "simd": l.layer.fold[1]} for l in part.graph.layers}}
    (pdir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return int(frames)


def _report(pm: PartitionedModel, parts: list[RtlPartition], dev: Device, clk: float) -> str:
    lines = [f"qpass RTL export: {len(parts)} dataflow partition(s), device {dev.part} ({dev.board}), clock {clk:g} ns"]
    lines += pm.host_report()
    for p in parts:
        lines.append(f"\npartition {p.name} -> {p.project_dir.name}/ (top module {p.top}, rtl/{p.top}.sv)")
        lines.append(p.table)
    return "\n".join(lines)


def append_report(res: RtlExport, text: str) -> None:
    """Add a section (simulation, synthesis) to the export's report.txt."""
    res.report = res.report + "\n" + text
    (res.out_dir / "report.txt").write_text(res.report + "\n")
