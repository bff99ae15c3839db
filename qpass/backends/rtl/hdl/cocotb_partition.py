"""cocotb testbench of one qpass RTL partition (generated with the design; reads ../meta.json and ../data/).

Streams the sample frames back to back into every AXI-Stream input (TVALID held high while words remain), keeps
every output's TREADY high, checks every output word against the reference interpreter's codes, and writes
../sim_results.json: mismatches, steady-state cycles per frame (between the last output words of successive
frames), latency (first input word of frame 0 to its last output word), the highest occupancy of every FIFO, and
whether the design deadlocked (no handshake for DEADLOCK_CYCLES cycles) or stopped early. A design with
runtime-writable memories is first loaded through its write port, one word per cycle from the memories' files.
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


async def _reset(dut, sig: dict, ins: list, outs: list) -> None:
    cocotb.start_soon(Clock(dut.ap_clk, 10, unit="ns").start())
    dut.ap_rst_n.value = 0
    for p in ins:
        for s in ("tvalid", "tlast", "tdata"):
            sig[p["name"]][s].value = 0
    for p in outs:
        sig[p["name"]]["tready"].value = 1
    for _ in range(4):
        await RisingEdge(dut.ap_clk)
    dut.ap_rst_n.value = 1
    await RisingEdge(dut.ap_clk)
    await RisingEdge(dut.ap_clk)


async def _load(dut, meta: dict) -> int:
    """Write every runtime-writable memory (meta.json "memories") word by word; returns the words written."""
    n = 0
    for m in meta.get("memories", []):
        words = (PROJECT / "rtl" / m["file"]).read_text().split()
        dut.mem_sel.value = m["id"]
        dut.mem_we.value = 1
        for i, w in enumerate(words):
            dut.mem_addr.value = i
            dut.mem_wdata.value = int(w, 16)
            await RisingEdge(dut.ap_clk)
            n += 1
    if meta.get("memories"):
        dut.mem_we.value = 0
        for _ in range(3):
            await RisingEdge(dut.ap_clk)
    return n


class Run:
    """The handshakes of one streaming run: words sent and received, with their cycles."""

    def __init__(self, ins, outs, feed, frames):
        self.ins, self.outs, self.feed = ins, outs, feed
        self.pos = {p["name"]: 0 for p in ins}
        self.got = {p["name"]: [] for p in outs}
        self.first_in, self.last_out, self.bad_tlast = {}, {}, 0
        self.total_out = sum(p["words"] for p in outs) * frames
        self.n_out = self.cycle = 0
        self.deadlock = False

    def drive(self, sig) -> None:
        for p in self.ins:  # the next word of every input
            n, k = p["name"], self.pos[p["name"]]
            s = sig[n]
            if k < len(self.feed[n]):
                s["tdata"].value = self.feed[n][k]
                s["tvalid"].value = 1
                s["tlast"].value = int((k + 1) % p["words"] == 0)
            else:
                s["tvalid"].value = 0

    def sample(self, sig) -> bool:
        """Record this cycle's handshakes (read-only phase); True when any happened."""
        fired = False
        for p in self.ins:
            s = sig[p["name"]]
            if int(s["tvalid"].value) and int(s["tready"].value):
                k = self.pos[p["name"]]
                if k % p["words"] == 0:
                    self.first_in.setdefault(k // p["words"], self.cycle)
                self.pos[p["name"]] = k + 1
                fired = True
        for p in self.outs:
            s = sig[p["name"]]
            if int(s["tvalid"].value):
                lst = self.got[p["name"]]
                lst.append(int(s["tdata"].value))
                if int(s["tlast"].value) != int(len(lst) % p["words"] == 0):
                    self.bad_tlast += 1
                if len(lst) % p["words"] == 0:
                    f = len(lst) // p["words"] - 1
                    self.last_out[f] = max(self.last_out.get(f, 0), self.cycle)
                self.n_out += 1
                fired = True
        return fired


def _results(run: Run, want: dict, frames: int, fifos: dict) -> dict:
    mismatches, checked, examples = 0, 0, []
    for p in run.outs:
        have = np.array([e for w in run.got[p["name"]] for e in _elems(w, p)], dtype=np.int64)
        exp = want[p["name"]][:len(have)]
        bad = np.flatnonzero(have != exp)
        mismatches += int(bad.size) + int(len(want[p["name"]]) - len(have))
        checked += int(len(have))
        examples += [f"{p['name']}[{i}]: got {have[i]}, expected {exp[i]}" for i in bad[:5]]
    ends = [run.last_out[f] for f in sorted(run.last_out)]
    k0 = 1 if len(ends) >= 3 else 0
    cpf = (ends[-1] - ends[k0]) / (len(ends) - 1 - k0) if len(ends) - 1 - k0 > 0 else None
    lat = run.last_out[0] - run.first_in[0] + 1 if 0 in run.last_out and 0 in run.first_in else None
    return {"frames": frames, "frames_done": len(ends), "elements_checked": checked, "mismatches": mismatches,
            "examples": examples, "cycles_per_frame": cpf, "latency": lat, "cycles": run.cycle,
            "deadlock": run.deadlock, "tlast_errors": run.bad_tlast, "fifo_max_occupancy": fifos}


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
    if meta.get("memories"):
        dut.mem_we.value = 0
    await _reset(dut, sig, ins, outs)
    loaded = await _load(dut, meta)
    run = Run(ins, outs, feed, frames)
    idle, limit = 0, int(meta["deadlock_cycles"])
    while run.n_out < run.total_out:
        run.drive(sig)
        await ReadOnly()
        idle = 0 if run.sample(sig) else idle + 1
        if idle > limit:
            run.deadlock = True
            break
        await RisingEdge(dut.ap_clk)
        run.cycle += 1
    fifos = {}
    for f in meta["fifos"]:
        try:
            fifos[f["name"]] = int(getattr(dut, f["name"]).maxocc.value)
        except (AttributeError, ValueError):
            fifos[f["name"]] = None
    res = _results(run, want, frames, fifos)
    res["memory_words_loaded"] = loaded
    (PROJECT / "sim_results.json").write_text(json.dumps(res, indent=1) + "\n")
    assert not run.deadlock, f"deadlock: no handshake for {limit} cycles after {run.n_out}/{run.total_out} words"
    assert run.bad_tlast == 0, f"{run.bad_tlast} output words with a wrong TLAST"
    assert res["mismatches"] == 0, f"{res['mismatches']} output elements differ from the reference: {res['examples']}"
