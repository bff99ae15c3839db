"""cocotb testbench of one qpass RTL partition (generated with the design; reads ../meta.json and ../data/).

Streams the sample frames back to back into every AXI-Stream input (TVALID held high while words remain), keeps
every output's TREADY high, checks every output word against the reference interpreter's codes, and writes
../sim_results.json: mismatches, steady-state cycles per frame (between the last output words of successive
frames), latency (first input word of frame 0 to its last output word), the highest occupancy of every FIFO, and
whether the design deadlocked (no handshake for DEADLOCK_CYCLES cycles) or stopped early.
"""
import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

PROJECT = Path(os.environ.get("QPASS_PROJECT", Path(__file__).resolve().parent.parent))


def _words(values: np.ndarray, port: dict) -> list[int]:
    """Stream-ordered element codes of all frames -> packed words (element i at bits [i*bits, (i+1)*bits))."""
    bits, fold = port["bits"], port["fold"]
    v = (values.astype(np.int64) & ((1 << bits) - 1)).reshape(-1, fold)
    out = []
    for row in v:
        w = 0
        for i, e in enumerate(row):
            w |= int(e) << (i * bits)
        out.append(w)
    return out


def _elems(word: int, port: dict) -> list[int]:
    bits, fold, signed = port["bits"], port["fold"], port["signed"]
    out = []
    for i in range(fold):
        e = (word >> (i * bits)) & ((1 << bits) - 1)
        if signed and e >> (bits - 1):
            e -= 1 << bits
        out.append(e)
    return out


@cocotb.test()
async def stream_frames(dut):
    meta = json.loads((PROJECT / "meta.json").read_text())
    frames = min(int(os.environ.get("QPASS_FRAMES", meta["frames"])), meta["frames"])
    ins, outs = meta["inputs"], meta["outputs"]
    feed = {p["name"]: _words(np.loadtxt(PROJECT / "data" / f"{p['name']}.txt", dtype=np.int64,
                                         ndmin=1)[:frames * p["elems"]], p) for p in ins}
    want = {p["name"]: np.loadtxt(PROJECT / "data" / f"{p['name']}.expected.txt", dtype=np.int64,
                                  ndmin=1)[:frames * p["elems"]] for p in outs}
    sig = {n: {s: getattr(dut, f"{n}_{s}") for s in ("tdata", "tvalid", "tready", "tlast")}
           for n in [p["name"] for p in ins + outs]}
    cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())
    dut.ap_rst_n.value = 0
    for p in ins:
        sig[p["name"]]["tvalid"].value = 0
        sig[p["name"]]["tlast"].value = 0
        sig[p["name"]]["tdata"].value = 0
    for p in outs:
        sig[p["name"]]["tready"].value = 1
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    dut.ap_rst_n.value = 1
    await RisingEdge(dut.ap_clk)
    await RisingEdge(dut.ap_clk)
    pos = {p["name"]: 0 for p in ins}
    got = {p["name"]: [] for p in outs}
    first_in, last_out, bad_tlast = {}, {}, 0
    total_out = sum(p["words"] for p in outs) * frames
    n_out, cycle, idle = 0, 0, 0
    limit = int(meta["deadlock_cycles"])
    deadlock = False
    while n_out < total_out:
        for p in ins:  # drive the next word of every input
            n, k = p["name"], pos[p["name"]]
            s = sig[n]
            if k < len(feed[n]):
                s["tdata"].value = feed[n][k]
                s["tvalid"].value = 1
                s["tlast"].value = int((k + 1) % p["words"] == 0)
            else:
                s["tvalid"].value = 0
        await ReadOnly()
        fired = False
        for p in ins:
            s = sig[p["name"]]
            if int(s["tvalid"].value) and int(s["tready"].value):
                k = pos[p["name"]]
                if k % p["words"] == 0:
                    first_in.setdefault(k // p["words"], cycle)
                pos[p["name"]] = k + 1
                fired = True
        for p in outs:
            s = sig[p["name"]]
            if int(s["tvalid"].value):
                lst = got[p["name"]]
                lst.append(int(s["tdata"].value))
                if int(s["tlast"].value) != int(len(lst) % p["words"] == 0):
                    bad_tlast += 1
                if len(lst) % p["words"] == 0:
                    f = len(lst) // p["words"] - 1
                    last_out[f] = max(last_out.get(f, 0), cycle)
                n_out += 1
                fired = True
        idle = 0 if fired else idle + 1
        if idle > limit:
            deadlock = True
            break
        await RisingEdge(dut.ap_clk)
        cycle += 1
    mismatches, checked, examples = 0, 0, []
    for p in outs:
        have = np.array([e for w in got[p["name"]] for e in _elems(w, p)], dtype=np.int64)
        exp = want[p["name"]][:len(have)]
        bad = np.flatnonzero(have != exp)
        mismatches += int(bad.size) + int(len(want[p["name"]]) - len(have))
        checked += int(len(have))
        examples += [f"{p['name']}[{i}]: got {have[i]}, expected {exp[i]}" for i in bad[:5]]
    done = sorted(last_out)
    ends = [last_out[f] for f in done]
    k0 = 1 if len(ends) >= 3 else 0
    cpf = (ends[-1] - ends[k0]) / (len(ends) - 1 - k0) if len(ends) - 1 - k0 > 0 else None
    fifos = {}
    for f in meta["fifos"]:
        try:
            fifos[f["name"]] = int(getattr(dut, f["name"]).maxocc.value)
        except (AttributeError, ValueError):
            fifos[f["name"]] = None
    res = {"frames": frames, "frames_done": len(done), "elements_checked": checked, "mismatches": mismatches,
           "examples": examples, "cycles_per_frame": cpf, "latency": (last_out[0] - first_in[0] + 1)
           if 0 in last_out and 0 in first_in else None, "cycles": cycle, "deadlock": deadlock,
           "tlast_errors": bad_tlast, "fifo_max_occupancy": fifos}
    (PROJECT / "sim_results.json").write_text(json.dumps(res, indent=1) + "\n")
    assert not deadlock, f"deadlock: no handshake for {limit} cycles after {n_out}/{total_out} output words"
    assert bad_tlast == 0, f"{bad_tlast} output words with a wrong TLAST"
    assert mismatches == 0, f"{mismatches} output elements differ from the reference: {examples}"
