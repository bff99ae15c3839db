"""FIFO depths of the RTL export are minimal to within a factor 2 of the occupancy Verilator observes (issue 17).

Behind a width up-converter the FIFO is sized in consumer words and the converter holds a word of its own
(``qpass.hw.fifo_sim._Sim.capacity``); the back-pressure shrink used to round the producer-word occupancy up to a
power of two and then convert it, so a FIFO that never held more than one consumer word was exported 3 deep."""
import pytest

from qpass.backends import rtl
from qpass.hw.fifo_sim import _Sim
from test_rtl import dataflow_model, sim_tools_or_skip
from conftest import MODELS


def test_depth_for_inverts_the_converter_capacity():
    class Fake(_Sim):
        def __init__(self, maps):
            self.rtl, self.maps = True, maps
    up, down, same = ("a", "b", 0), ("b", "c", 0), ("c", "d", 0)
    sim = Fake({up: (32, 64), down: (64, 32), same: (8, 8)})
    for key in (up, down, same):
        for occ in range(1, 40):
            d = sim.depth_for(key, occ)
            assert sim.capacity(key, d) >= occ and d >= 2 and d & (d - 1) == 0
            assert d == 2 or sim.capacity(key, d // 2) < occ  # the smallest such power of two
    assert sim.depth_for(up, 4) == 2  # 2 consumer words + the converter's: 6 producer words


@pytest.mark.parametrize("name, bits", [("digits_mlp", "1"), ("digits_cnn", "1")])
def test_exported_fifos_within_twice_the_verilator_occupancy(tmp_path, name, bits):
    sim_tools_or_skip()
    exp = rtl.export(dataflow_model(name, bits), tmp_path / name, samples=MODELS / f"{name}.eval.npz")
    p = exp.partitions[0]
    s = rtl.simulate(p, frames=24, harness="cpp")
    assert s.ok, s.summary()
    assert abs(s.ratio - 1) <= 0.05, s.summary()
    assert s.oversized_fifos() == [], s.summary()
    for name_, occ in s.fifo_max_occupancy.items():
        assert 0 < occ <= s.fifo_depths[name_] <= max(2, 2 * occ), s.summary()
