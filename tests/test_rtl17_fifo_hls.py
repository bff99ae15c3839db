"""FIFO depths per backend: the RTL export shrinks FIFOs to their occupancy under back-pressure (Verilator confirms
those depths cycle by cycle: tests/test_rtl.py, bench/results/rtl_sim_digits.txt); the HLS export keeps the stream
schedule's depths unshrunk, since nothing here can run HLS kernels against bounded streams (C simulation streams are
unbounded) and an HLS pipeline stalls as a whole with a fill latency the stream model does not know."""
import json
from pathlib import Path

from qpass.backends import rtl
from qpass.hw.design import fifo_depths

from test_rtl import dataflow_model


#: the 4-bit digits CNN's folding whose shrunk depths Verilator confirmed (bench/results/rtl_sim_digits.txt)
PINNED = Path(__file__).resolve().parents[1] / "bench" / "results" / "rtl_foldings" / "digits_cnn_4.json"


def test_hls_depths_are_not_shrunk_and_never_below_the_rtl_ones(tmp_path):
    ex = rtl.export(dataflow_model("digits_cnn", "4"), tmp_path / "cnn", folding=json.loads(PINNED.read_text()))
    (p,) = ex.partitions
    hls_depths = fifo_depths(p.graph)
    assert not any("shrunk" in n for n in p.graph.fifos.notes)
    rtl_depths = fifo_depths(p.graph, rtl_converters=True)
    assert any("shrunk" in n for n in p.graph.fifos.notes)
    assert set(hls_depths) == set(rtl_depths)
    assert all(hls_depths[k] >= rtl_depths[k] for k in hls_depths)
    # the conv2 -> pool FIFO: the schedule needs 32 words, back-pressure keeps it at 2 (what Verilator measures)
    k = ("conv2_Conv", "pool_MaxPool", 0)
    assert (hls_depths[k], rtl_depths[k]) == (32, 2)
