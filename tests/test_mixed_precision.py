"""Issue 13: --target on the default int8 pipeline (mixed_precision: activations to float until it holds)."""
import subprocess
import sys

import numpy as np
import onnx

import qpass
from qpass.analysis.layer_errors import activation_pairs
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import load_samples
from qpass.passes.qdq_moves import bypass

from conftest import MODELS


def _run(target, name="digits_mlp", disabled=()):
    cfg = qpass.QuantConfig(target=target)
    return qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz", config=cfg,
                          disabled=set(disabled))


def test_target_met_on_held_out_samples_with_few_layers_moved():
    # min/max ranges (choose_ranges' percentile ranges would leave int8 at 45.0 dB and need all three moves)
    res = _run("sqnr>=46", disabled=["choose_ranges"])
    mp = res.report.results["mixed_precision"]
    assert mp["met"] and mp["final"]["sqnr"] >= 46 and mp["int8"]["sqnr"] < 46
    moved = [m["tensor"] for m in mp["moved"]]
    assert 1 <= len(moved) <= 2
    # the moved quantizers are gone from the model, the others stay; eval-set SQNR improves on int8
    q_in = {n.input[0] for n in res.model.graph.node if n.op_type == "QuantizeLinear"}
    assert not any(m + "_float" in q_in or m in q_in for m in moved)
    ev = load_samples(MODELS / "digits_mlp.eval.npz", res.model)
    int8 = _run(None, disabled=["choose_ranges"]).model
    ref = run_samples(qpass.load(MODELS / "digits_mlp.onnx"), ev)["logits"]
    assert sqnr_db(ref, run_samples(res.model, ev)["logits"]) > sqnr_db(ref, run_samples(int8, ev)["logits"]) + 1


def test_target_already_met_changes_nothing():
    res = _run("sqnr>=30")
    assert res.report.results["mixed_precision"]["moved"] == []
    assert res.report.results["mixed_precision"]["met"]


def test_unreachable_target_says_what_it_reached_in_one_line():
    p = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_rescnn.onnx"), "-o",
                        str(MODELS.parent / "tmp_never.onnx"), "--target",
                        "sqnr>=60"], capture_output=True, text=True)
    try:
        assert p.returncode == 0, p.stderr
        line = next(x for x in p.stdout.splitlines() if "target sqnr>=60 not reached" in x)
        assert "dB on 100 held-out samples" in line and "could not fix: the int8 weights of" in line
    finally:
        (MODELS.parent / "tmp_never.onnx").unlink(missing_ok=True)


def test_bypass_restores_a_fused_relu():
    res = _run(None)
    fm = qpass.api.float_model(res)
    ev = load_samples(MODELS / "digits_mlp.eval.npz", res.model)
    ref = run_samples(fm, ev)["logits"]
    every = {n.output[0] for n in res.model.graph.node if n.op_type == "DequantizeLinear"}  # weights: no Q, kept
    allf = bypass(res.model, every, fm)
    # every activation float (weights still int8): far closer to float than int8, relus intact
    assert sqnr_db(ref, run_samples(allf, ev)["logits"]) > sqnr_db(ref, run_samples(res.model, ev)["logits"]) + 2
    assert np.isfinite(sqnr_db(ref, run_samples(allf, ev)["logits"]))


def _with_mixed_precision(**opts):
    from qpass.pipeline.files import load_pipeline
    from qpass.pipeline.registry import get_pass_class

    pipe = load_pipeline("default")
    at = next(i for i, s in enumerate(pipe.steps) if getattr(s, "name", None) == "quantize_qdq")
    pipe.steps.insert(at + 1, get_pass_class("mixed_precision")(**opts))
    return pipe


def test_16bit_activations_run_in_onnxruntime_and_the_golden_interpreter():
    from qpass.passes.qdq_moves import widen
    from qpass.reference import run_samples as golden

    # equalize without its activation-aware factors: they already take part of the activation rounding noise away
    # (37.12 -> 37.29 dB at 8 bits), and this test is about what the 16-bit grid removes
    res = qpass.optimize(MODELS / "digits_rescnn.onnx", calib=MODELS / "digits_rescnn.calib.npz",
                         overrides={"equalize": {"alphas": []}})
    fm = qpass.api.float_model(res)
    ev = load_samples(MODELS / "digits_rescnn.eval.npz", res.model)
    pairs = {n.output[0] for n in res.model.graph.node if n.op_type == "DequantizeLinear"}
    wide = widen(res.model, pairs)
    assert [o.version for o in wide.opset_import if o.domain in ("", "ai.onnx")] == [21]
    zps = {i.name: i.data_type for i in wide.graph.initializer if i.name.endswith("zero_point_16bit")}
    assert zps and set(zps.values()) == {onnx.TensorProto.UINT16}
    ref = run_samples(fm, ev)["logits"]
    y8, y16 = run_samples(res.model, ev)["logits"], run_samples(wide, ev)["logits"]
    assert sqnr_db(ref, y16) > sqnr_db(ref, y8) + 1  # the 16-bit grid: activation rounding noise gone
    g16 = golden(wide, ev)["logits"]
    assert np.abs(g16 - y16).max() <= 1e-4 * np.abs(y16).max() + 1e-3 and sqnr_db(y16, g16) > 70


def _cand(t, prec, gain, ms):
    return {"tensor": t, "precision": prec, "gain": gain, "cost": ms}


def test_int16_is_taken_where_as_good_and_no_slower_float_where_int16_does_not_gain():
    from qpass.search.mixed_int8 import choose_moves
    from qpass.search.targets import parse_target

    target = parse_target("sqnr>=40")
    gains = {}

    def evaluate(chosen):
        return {"sqnr": 38 + sum(gains[(t, p)] for t, p in chosen.items())}

    # a: int16 gains as much as float at the same measured cost -> int16; b: int16 is clipped (gains little) -> float
    cands = [_cand("a", "int16", 1.0, 0.01), _cand("a", "float", 1.0, 0.01),
             _cand("b", "int16", 0.1, 0.01), _cand("b", "float", 1.5, 0.01)]
    gains.update({(c["tensor"], c["precision"]): c["gain"] for c in cands})
    log = []
    chosen, m = choose_moves(cands, target, evaluate, {"sqnr": 38}, log)
    assert chosen == {"b": "float", "a": "int16"} and m["sqnr"] >= 40
    assert "at int16: +0.1" in log[0]["reason"] and log[1]["precision"] == "int16"
    # int16 measured slower than float for the same gain (onnxruntime's CPU kernels): float is taken
    cands[0]["cost"] = 0.05
    chosen, _ = choose_moves(cands, target, evaluate, {"sqnr": 38}, [])
    assert chosen == {"b": "float", "a": "float"}


def test_target_met_with_16bit_activations_only():
    pipe = _with_mixed_precision(target="sqnr>=46", precisions=["int16"])
    res = qpass.optimize(MODELS / "digits_mlp.onnx", calib=MODELS / "digits_mlp.calib.npz", pipeline=pipe)
    mp = res.report.results["mixed_precision"]
    assert mp["met"] and mp["int8"]["sqnr"] < 46 and {m["precision"] for m in mp["moved"]} == {"int16"}
    assert all(m["cost"] > 0 and "estimated cost" in m["reason"] for m in mp["moved"])
    wide = {i.name for i in res.model.graph.initializer if i.data_type == onnx.TensorProto.UINT16}
    assert len(wide) >= 1
    ev = load_samples(MODELS / "digits_mlp.eval.npz", res.model)
    ref = run_samples(qpass.load(MODELS / "digits_mlp.onnx"), ev)["logits"]
    assert sqnr_db(ref, run_samples(res.model, ev)["logits"]) > sqnr_db(ref, run_samples(_run(None).model, ev)["logits"])


def test_bypass_of_a_quantizer_read_by_two_dequantizers_restores_its_fused_relu():
    res = qpass.optimize(MODELS / "digits_rescnn.onnx", calib=MODELS / "digits_rescnn.calib.npz")
    fm = qpass.api.float_model(res)
    inits = {i.name for i in res.model.graph.initializer}
    acts = {n.output[0] for n in res.model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits}
    # residual blocks: some quantizers feed two DequantizeLinear, one named like no float tensor
    assert len(acts) > len({p["tensor"] for p in activation_pairs(res.model)})
    ev = load_samples(MODELS / "digits_rescnn.eval.npz", res.model)
    ref = run_samples(fm, ev)["logits"]
    assert sqnr_db(ref, run_samples(bypass(res.model, acts, fm), ev)["logits"]) > \
        sqnr_db(ref, run_samples(res.model, ev)["logits"]) + 2


def test_moves_go_on_until_the_held_out_samples_meet_the_target_too():
    from qpass.search.mixed_int8 import choose_moves
    from qpass.search.targets import parse_target

    target = parse_target("sqnr>=40")
    cands = [_cand("a", "float", 2.0, 0.01), _cand("b", "float", 1.0, 0.01), _cand("c", "float", 1.0, 0.02)]
    gains = {c["tensor"]: c["gain"] for c in cands}

    def evaluate(chosen):
        return {"sqnr": 38 + sum(gains[t] for t in chosen)}

    # "a" alone meets it on the search samples; the held-out ones sit 0.9 dB lower: "b" is needed as well
    chosen, m = choose_moves(cands, target, evaluate, {"sqnr": 38}, [],
                             done=lambda ch, m: m["sqnr"] - 0.9 >= 40)
    assert list(chosen) == ["a", "b"] and m["sqnr"] == 41
    assert list(choose_moves(cands, target, evaluate, {"sqnr": 38}, [])[0]) == ["a"]


def test_move_cost_is_read_from_the_graph():
    """The cost that ranks moves comes from the graph (no clock): a pair between two integer convs costs more in
    float (both convs lose their integer kernel), and more again at 16 bits (float convs plus 16-bit Q/DQ)."""
    from qpass.passes.qdq_moves import graph_cost, integer_layers, tensor_dims, widen

    res = qpass.optimize(MODELS / "digits_cnn.onnx", calib=MODELS / "digits_cnn.calib.npz")
    fm = qpass.api.float_model(res)
    dims = tensor_dims(res.model, fm)
    convs = [n for n in res.model.graph.node if n.op_type == "Conv"]
    ints = integer_layers(res.model)
    assert convs and all(tuple(n.output) in ints for n in convs)
    base = graph_cost(res.model, dims)
    pair = next(p["tensor"] for p in activation_pairs(res.model)
                if any(n.op_type == "Conv" and p["tensor"] in n.input for n in convs[1:]))
    to_float, to16 = graph_cost(bypass(res.model, {pair}, fm), dims), graph_cost(widen(res.model, {pair}), dims)
    assert base < to_float < to16
    assert graph_cost(bypass(res.model, {pair}, fm), dims) == to_float
