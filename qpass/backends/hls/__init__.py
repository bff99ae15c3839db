"""HLS C++ backend: streaming dataflow projects for the dataflow partitions of a streamlined model.

    import qpass
    from qpass.api import qonnx_model
    from qpass.backends import hls

    res = qpass.optimize("models/digits_cnn.onnx", calib="models/digits_cnn.calib.npz", pipeline="dataflow")
    out = hls.export(qonnx_model(res), "out/cnn_hls", device="xc7z020", target_fps=100_000,
                     samples="models/digits_cnn.eval.npz")
    print(out.report)                                   # host nodes with reasons, per-layer tables
    cmp = hls.compare_with_golden(out, "models/digits_cnn.eval.npz")
    assert cmp.mismatches == 0                          # g++ C simulation == golden simulator
    y = hls.csim(out.partitions[0].project_dir, {"input_quant_codes": codes})   # integer codes in, codes out

Modules: ``exporter`` (export, compare_with_golden), ``codegen`` (the top function and its tables), ``emit`` (the
HLS call of each hardware layer kind), ``wiring`` (streams, width converters, duplicators), ``testbench`` and
``project_files`` (testbench, Makefile, Tcl, metadata), ``csim_runner`` (g++ build and run, ``CsimCache``),
``aptypes`` (where ap_int.h comes from: hls4ml's Apache-2.0 headers), ``binary`` (which streams and weights are
stored one bit per -1/+1 element; XNOR-popcount thresholds), ``templates/`` (the layer library and qpass' own
hls_stream.h for the C simulation).
"""
from __future__ import annotations

from qpass.backends.hls.aptypes import fetch_ap_types, find_ap_types
from qpass.backends.hls.csim_runner import CsimCache, build, csim
from qpass.backends.hls.exporter import (Comparison, ExportResult, PartitionExport, compare_with_golden, export,
                                         partition_io)
from qpass.hw.grouping import explain
from qpass.hw.partition import PartitionedModel, inline_partitions, load_partitioned, lower_partitions, partition

__all__ = ["export", "compare_with_golden", "csim", "build", "CsimCache", "ExportResult", "PartitionExport",
           "Comparison", "partition_io", "find_ap_types", "fetch_ap_types", "partition", "PartitionedModel",
           "explain", "lower_partitions", "inline_partitions", "load_partitioned"]
