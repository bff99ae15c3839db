"""Session 10 (syn17c): the binary search's per-lane stage ROMs and the block-RAM input buffer's bypass, checked
against the committed yosys numbers and the stage files' contents."""
import json
from pathlib import Path

import numpy as np

from qpass.backends.rtl.instances import threshold_mems
from qpass.backends.rtl.synth import key_is_current
from qpass.hw import calibration as cal

LAYERS = Path(__file__).resolve().parents[1] / "bench" / "results" / "yosys_layers.json"


def _cached(module, **want):
    for key, v in json.loads(LAYERS.read_text()).items():  # numbers of today's library HDL only
        p = v["params"]
        if key_is_current(key) and p["module"] == module and all(p.get(k) == x for k, x in want.items()):
            return {k: x for k, x in p.items() if k != "module"}, v
    raise AssertionError(f"no cached yosys numbers for {module} {want}")


def test_block_ram_input_buffer_pays_its_bypass():
    # CNV conv5 (XNOR, SIMD 32, 72 column folds): the input buffer is block RAM; yosys forwards the sign bits
    # around it (30 FF, ~90 LUT over the formula without them: LUT 0.77, FF 0.69 before)
    p, y = _cached("qp_mvtu", MW=2304, MH=256, PE=1, SIMD=32, XNOR=1)
    assert cal.ibuf_in_bram(p) and cal.ibuf_bypass(p) == 32
    e = cal.module_estimate("qp_mvtu", p)
    assert abs(e.ff - y["ff"]) <= 0.15 * y["ff"], (e.ff, y["ff"])
    assert abs(e.lut - y["lut"]) <= 0.15 * y["lut"], (e.lut, y["lut"])
    # a LUT-RAM buffer pays no bypass register
    small = dict(p, MW=512, SIMD=32)
    assert not cal.ibuf_in_bram(small) and "ibuf" not in cal.features("qp_mvtu", "ff", small)


def test_binary_search_stage_roms_per_lane_also_without_row_folds():
    # one row fold (NF == 1) of 3 lanes, 7 steps: stages 1 and 2 (stage 0 is the constant middle threshold) in one
    # file per lane, word j = the threshold compared after result bits j
    thr = np.array([[1, 2, 3, 4, 5, 6, 7], [10, 20, 30, 40, 50, 60, 70], [-3, -2, -1, 0, 1, 2, 3]])
    mems = threshold_mems(thr, 3, 8, "x", True)
    assert set(mems) == {"x_t.mem"} | {f"x_t.mem{i}_{q:03d}" for i in range(3) for q in range(3)}
    words = [int(w, 16) for w in mems["x_t.mem2_001"].split()]
    assert words == [10, 30, 50, 70]
    assert [int(w, 16) for w in mems["x_t.mem1_002"].split()] == [0xfe, 2]  # -2 and 2 in 8 bits
    assert not threshold_mems(thr, 3, 8, "x", False).keys() - {"x_t.mem"}
