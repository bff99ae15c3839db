"""8-bit digits CNN under Verilator: its matrix units' 255-step activations are binary searches that read only
their per-lane stage ROMs (stage 0 included: a one-word ROM with one row fold, no PE*NT*TB-bit threshold word), and
the design equals the reference interpreter on every eval sample at the modelled rate."""
import json
from pathlib import Path

import numpy as np
import pytest

import qpass
from qpass.api import qonnx_model
from qpass.backends import rtl
from qpass.backends.rtl.sim import verilator_env
from qpass.pipeline.config import QuantConfig

from conftest import MODELS

FOLDINGS = Path(__file__).resolve().parents[1] / "bench" / "results" / "rtl_foldings"


@pytest.fixture(scope="module")
def cnn8(tmp_path_factory):
    plan = QuantConfig(backend="rtl", bits="8").resolve()
    model = qonnx_model(qpass.optimize(MODELS / "digits_cnn.onnx", calib=MODELS / "digits_cnn.calib.npz",
                                       pipeline=plan.pipeline, disabled=plan.disabled))
    # folded as the bench's yosys numbers are (conv1, conv2 with one row fold, fc1 with 64)
    folding = json.loads((FOLDINGS / "digits_cnn_8.json").read_text())
    return rtl.export(model, tmp_path_factory.mktemp("rtl_cnn8") / "cnn", folding=folding,
                      samples=MODELS / "digits_cnn.eval.npz")


def test_binary_searches_have_every_stage_rom_and_no_wide_threshold_word(cnn8):
    p = cnn8.partitions[0]
    d = p.project_dir / "rtl"
    searched = []
    for l in p.graph.layers:
        inst = p.module.instances[l.name]
        prm = dict(inst.params)
        if not prm.get("BS"):
            continue
        searched.append((l.name, prm["MH"] // prm["PE"]))
        tfile = prm["TFILE"].strip('"')
        stages = int(np.ceil(np.log2(prm["NT"] + 1)))
        for i in range(stages):
            for q in range(prm["PE"]):
                rows = (d / f"{tfile}{i}_{q:03d}").read_text().split()
                assert len(rows) == (prm["MH"] // prm["PE"]) << i
    # both kinds the HDL tells apart: one row fold (stage 0 a one-word ROM) and several
    assert {nf == 1 for _, nf in searched} == {True, False}, searched
    lib = (d / "qpass_eltwise.sv").read_text()
    assert "g_one" not in lib and "input logic [(BS ? 1 : PE*NT*TB)-1:0] thr" in lib


def test_cnn8_verilator_bit_exact_at_the_modelled_rate(cnn8):
    try:
        verilator_env()
    except rtl.ToolMissing as exc:
        pytest.skip(str(exc))
    p = cnn8.partitions[0]
    s = rtl.simulate(p, harness="cpp")
    assert not s.deadlock, s.summary()
    assert s.frames == 360 and s.elements_checked == 3600
    assert s.mismatches == 0, s.summary() + str(s.examples)
    assert abs(s.ratio - 1) <= 0.05, s.summary()
