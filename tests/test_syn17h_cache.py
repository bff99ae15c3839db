"""Session 13 (syn17h): the Yosys cache key carries the revision of the library HDL a module instance is built from,
so numbers synthesized from older HDL are re-synthesized or reported as stale, never used silently, and the
calibration fit says how many entries it used."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from qpass.backends.rtl import synth
from qpass.backends.rtl.exporter import HDL, LIBRARY
from qpass.backends.rtl.hdl_revision import hdl_hash, library_modules, module_hash
from qpass.backends.rtl.instances import Instance
from qpass.errors import QpassError
from qpass.hw import calibration as cal

ROOT = Path(__file__).resolve().parents[1]


def _library(tmp_path: Path) -> Path:
    for f in LIBRARY:
        shutil.copyfile(HDL / f, tmp_path / f)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_module_hash_follows_the_module_and_what_it_instantiates(tmp_path):
    lib = _library(tmp_path)
    before = {m: hdl_hash(m, lib) for m in ("qp_mvtu", "qp_threshold", "qp_swg", "qp_fifo")}
    assert before == {m: hdl_hash(m) for m in before}  # the copy is the shipped library
    # a comment or re-indentation changes no netlist: same revision
    _edit(lib / "qpass_layers.sv", "module qp_mvtu #(", "// a comment\nmodule   qp_mvtu #(")
    assert hdl_hash("qp_mvtu", lib) == before["qp_mvtu"]
    # qp_activate (instantiated by qp_mvtu and qp_threshold) changes: both change, the window generator does not
    _edit(lib / "qpass_eltwise.sv", "module qp_activate #(", "module qp_activate #(parameter int EXTRA = 0,")
    after = {m: hdl_hash(m, lib) for m in before}
    assert after["qp_mvtu"] != before["qp_mvtu"] and after["qp_threshold"] != before["qp_threshold"]
    assert after["qp_swg"] == before["qp_swg"] and after["qp_fifo"] == before["qp_fifo"]
    # a FIFO edit leaves the compute modules' entries valid
    _edit(lib / "qpass_stream.sv", "module qp_fifo #(", "module qp_fifo #(parameter int EXTRA = 0,")
    assert hdl_hash("qp_fifo", lib) != before["qp_fifo"] and hdl_hash("qp_swg", lib) == before["qp_swg"]


def test_module_hash_of_parsed_texts():
    mods = library_modules({"a.sv": "module qp_a;\n  qp_b u ();\nendmodule\nmodule qp_b;\nendmodule\n"})
    assert set(mods) == {"qp_a", "qp_b"}
    other = library_modules({"a.sv": "module qp_a;\n  qp_b u ();\nendmodule\nmodule qp_b;\n  wire w;\nendmodule\n"})
    assert module_hash("qp_a", mods) != module_hash("qp_a", other)
    assert module_hash("qp_missing", mods) == "none"


def _inst():
    return Instance("qp_swg", [("C", 4), ("SIMD", 1), ("IH", 4), ("IW", 4), ("KH", 3), ("KW", 3), ("SH", 1),
                               ("SW", 1), ("PAD", 1), ("DEPTHWISE", 0), ("EB", 2), ("PADV", 0)])


def test_stale_entry_is_reported_offline_and_replaced_online(tmp_path, monkeypatch):
    lib = _library(tmp_path)
    inst = _inst()
    key = synth.instance_key(inst, inst.mems, "xc7", True, lib)
    assert key.endswith(f":hdl-{hdl_hash('qp_swg')}") and synth.key_is_current(key)
    old_key = synth.key_base(key) + ":hdl-0123456789ab"
    entry = dict(lut=1, ff=2, bram18=0, dsp=0, seconds=1.0, params={"module": "qp_swg"})
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({old_key: entry}))
    offline = synth.SynthCache(path, offline=True)
    assert offline.get(key) is None and offline.stale(key) == [old_key]
    with pytest.raises(QpassError, match="stale"):
        synth.synth_instance(lib, "s", inst, [2], 2, "xc7", True, offline)
    # online: re-synthesized (Yosys stubbed) and the stale entry replaced by today's
    calls = []
    monkeypatch.setattr(synth, "run_yosys", lambda *a, **k: calls.append(a) or synth.SynthNumbers(84, 36, 0, 0))
    online = synth.SynthCache(path)
    n = synth.synth_instance(lib, "s", inst, [2], 2, "xc7", True, online)
    assert (n.lut, n.ff, len(calls)) == (84, 36, 1)
    assert set(json.loads(path.read_text())) == {key}
    # a current entry is a hit: no Yosys run
    assert synth.synth_instance(lib, "s", inst, [2], 2, "xc7", True, synth.SynthCache(path, offline=True)).lut == 84
    assert len(calls) == 1
    # the library in the synthesized folder changes: the entry no longer matches
    _edit(lib / "qpass_layers.sv", "module qp_swg #(", "module qp_swg #(parameter int EXTRA = 0,")
    assert synth.instance_key(inst, inst.mems, "xc7", True, lib) != key
    assert synth.SynthCache(path).stale(synth.instance_key(inst, inst.mems, "xc7", True, lib)) == [key]


def _calibrate():
    spec = importlib.util.spec_from_file_location("calibrate_yosys", ROOT / "bench" / "calibrate_yosys.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_uses_current_entries_only_and_says_how_many():
    cy = _calibrate()
    inst = _inst()
    key = synth.instance_key(inst, inst.mems, "xc7", True)
    data = {key: {}, synth.key_base(key) + ":hdl-0123456789ab": {}, synth.key_base(key): {}}
    keep, stale = cy.current(data)
    assert list(keep) == [key] and stale == 2
    # the shipped calibration was fitted on today's entries alone, and records how many it used and skipped
    shipped = cal.load()
    assert shipped["fitted"] and all(synth.key_is_current(k) for k in shipped["fitted"])
    n = shipped["entries"]
    assert n["grid"] > 50 and n["with"] > 100 and n["stale_skipped"] >= 0
    layers = json.loads((ROOT / "bench" / "results" / "yosys_layers.json").read_text())
    assert n["with"] == sum(synth.key_is_current(k) for k in layers)
