"""RTL backend: synthesizable SystemVerilog for the dataflow partitions of a streamlined model, from the same
hardware layers, folding and FIFO sizing as the HLS backend (``qpass.hw``), with a cocotb + Verilator testbench per
partition and yosys synthesis.

    from qpass.backends import rtl
    out = rtl.export(qonnx_model(res), "out/cnn_rtl", samples="models/digits_cnn.eval.npz")
    sim = rtl.simulate(out.partitions[0])          # Verilator: mismatches, cycles/frame, latency, FIFO occupancy

Modules: ``exporter`` (export), ``top`` (the partition's top module and its wiring), ``instances`` (the library
module and parameters of each hardware layer kind), ``memfiles`` ($readmemh files), ``sim`` (Verilator + cocotb),
``synth`` (yosys synth_xilinx), ``pnr`` (synth_ecp5 + nextpnr-ecp5 for Fmax), ``hdl/`` (the layer library, the cocotb testbench and its runner).
"""
from __future__ import annotations

from qpass.backends.rtl.exporter import RtlExport, RtlPartition, append_report, export
from qpass.backends.rtl.sim import SimFailed, SimResult, ToolMissing, check_tools, simulate
from qpass.backends.rtl.pnr import PnrResult, place_and_route
from qpass.backends.rtl.synth import synthesize_export

__all__ = ["export", "RtlExport", "RtlPartition", "append_report", "simulate", "SimResult", "SimFailed",
           "ToolMissing", "check_tools", "synthesize_export", "place_and_route", "PnrResult"]
