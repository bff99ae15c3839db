"""cocotb testbench of one qpass RTL partition (generated with the design; reads ../meta.json and ../data/).

The per-cycle work runs in the simulator, in the testbench wrapper ``qpass_tb`` that tb/run_sim.py writes around
the partition's top: it loads any runtime-writable memories through the write port, streams the sample frames back
to back into every AXI-Stream input (TVALID held high while words remain), keeps every output's TREADY high, and
records every output word, the cycle each frame's last word left, every FIFO's highest occupancy and whether the
design deadlocked (no handshake for ``deadlock_cycles`` cycles). This test drives the clock (cocotb's GPI clock, no
Python per cycle) and wakes once, when the wrapper says it is done; then every output word is checked against the
reference interpreter's codes and ../sim_results.json written: mismatches, steady-state cycles per frame (between
the last output words of successive frames), latency (first input word of frame 0 to its last output word), FIFO
occupancy. Fails on a mismatch, a wrong TLAST, a deadlock or a FIFO above its depth.
"""
import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer

import run_sim


@cocotb.test()
async def stream_frames(dut):
    meta = json.loads((run_sim.PROJECT / "meta.json").read_text())
    frames = min(int(os.environ.get("QPASS_FRAMES", meta["frames"])), meta["frames"])
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    # the wrapper stops itself on a deadlock; this bounds the memory load and the pipeline fill as well
    mem_words = sum(m["words"] for m in meta.get("memories", []))
    bound = 10 * (mem_words + 100 + (frames + 4) * (int(meta["deadlock_cycles"]) + meta["bottleneck_cycles"]))
    await First(RisingEdge(dut.done), Timer(bound, unit="ns"))
    assert int(dut.done.value), f"the testbench wrapper did not finish in {bound // 10} cycles"
    res = run_sim.write_results(meta, frames)
    assert not res["deadlock"], (f"deadlock: no handshake for {meta['deadlock_cycles']} cycles after "
                                 f"{res['frames_done']}/{frames} frames")
    assert res["tlast_errors"] == 0, f"{res['tlast_errors']} output words with a wrong TLAST"
    assert not res["fifo_overflow"], f"FIFOs above their depth: {res['fifo_overflow']}"
    assert res["mismatches"] == 0, f"{res['mismatches']} output elements differ from the reference: {res['examples']}"
