"""Issue 13, quantize time: ``log_ranges`` evaluates its trials in one onnxruntime session per kind of run (the
candidates' scales / zero points fed as graph inputs) and keeps the float reads it re-measures (``ReadMemo``), and
``choose_range`` checks its batched consumer runs on two samples. Pinned on built models: every trial scores the
same as the rewritten model built and run on its own (to 1e-6), the output file is the same, the sessions per
search are bounded whatever the number of trials, and the range choice is the one per-sample checking made."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis import range_choice
from qpass.analysis.range_choice import ConsumerRunner, choose_range, histogram_candidates
from qpass.ir.fed_inputs import FedSession, cut_model, fed_copy
from qpass.ir.graph import elem_types
from qpass.analysis.layer_errors import tensor_values
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import log_ranges, log_reads

N, BINS, MELS, HOP, FRAMES = 64, 17, 8, 32, 7


def _front_end():
    """audio (int16 scale, [1, samples]) -> [1, 1, samples] -> STFT as two strided Convs (cosine and sine kernels) -> power ->
    filter bank -> Clip -> Log, as oww-melspectrogram: the ranges the Log reads."""
    rng = np.random.default_rng(13)
    t, k = np.arange(N)[None, :], np.arange(BINS)[:, None]
    cos, sin = np.cos(2 * np.pi * t * k / N) / N, np.sin(2 * np.pi * t * k / N) / N
    bank = np.abs(rng.standard_normal((BINS, MELS))) / BINS
    inits = [numpy_helper.from_array(cos[:, None, :].astype(np.float32), "cos"),
             numpy_helper.from_array(sin[:, None, :].astype(np.float32), "sin"),
             numpy_helper.from_array(bank.astype(np.float32), "bank"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-10, np.float32), "eps"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Unsqueeze", ["audio", "axis1"], ["x"]),
             helper.make_node("Conv", ["x", "cos"], ["re"], strides=[HOP]),
             helper.make_node("Conv", ["x", "sin"], ["im"], strides=[HOP]),
             helper.make_node("Transpose", ["re"], ["re_t"], perm=[0, 2, 1]),
             helper.make_node("Transpose", ["im"], ["im_t"], perm=[0, 2, 1]),
             helper.make_node("Pow", ["re_t", "two"], ["re2"]),
             helper.make_node("Pow", ["im_t", "two"], ["im2"]),
             helper.make_node("Add", ["re2", "im2"], ["power"]),
             helper.make_node("MatMul", ["power", "bank"], ["mel"]),
             helper.make_node("Clip", ["mel", "eps"], ["clipped"]),
             helper.make_node("Log", ["clipped"], ["y"])]
    samples = N + HOP * (FRAMES - 1)
    g = helper.make_graph(nodes, "logmel", [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, samples])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, FRAMES, MELS])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _audio(n, seed):
    """Tones a few decades apart in level over quiet noise, at int16 scale."""
    rng, t = np.random.default_rng(seed), np.arange(N + HOP * (FRAMES - 1))
    out = [sum(20000 * 10 ** (-rng.uniform(0, 3)) * np.sin(2 * np.pi * rng.uniform(1, BINS - 1) * t / N
                                                          + rng.uniform(0, 6)) for _ in range(4))
           + 3 * rng.standard_normal(len(t)) for _ in range(n)]
    return np.stack(out)[:, None].astype(np.float32)


def _searched(monkeypatch, variant: str):
    """(output file bytes, every trial's score in order, the search's stats) of the default pipeline on the front
    end, with the trials evaluated as ``variant`` says: 'fed' (the default), 'whole' (reads re-measured on the
    whole model, no parts), 'copies' (each trial a rewritten model in a session of its own, as before)."""
    m = _front_end()
    calib = bind_samples({"audio": _audio(12, 1)}, m)
    scores, stats = [], {}
    real_sqnr, real_choose = log_ranges.sqnr_db, log_ranges.choose

    def sqnr(ref, got):
        scores.append(real_sqnr(ref, got))
        return scores[-1]

    def choose(*a, **k):
        return real_choose(*a, **{**k, "stats": stats})

    monkeypatch.setattr(log_ranges, "sqnr_db", sqnr)
    monkeypatch.setattr(log_ranges, "choose", choose)
    if variant == "whole":
        monkeypatch.setattr(log_reads.ReadMemo, "_part", lambda self, *a: None)
    if variant == "copies":
        monkeypatch.setattr(log_ranges._Trials, "_fed", lambda self, *a: None)
    res = qpass.optimize(m, calib=calib, disabled={"bias_correction"})  # no bias: a bias's scale follows x's
    monkeypatch.undo()
    return res.model.SerializeToString(deterministic=True), scores, stats


def test_fed_trials_score_as_the_rewritten_models_and_give_the_same_file(monkeypatch):
    fed, whole, copies = (_searched(monkeypatch, v) for v in ("fed", "whole", "copies"))
    # the fast paths ran: reads from kept ones, outputs from kept matrix-kernel outputs
    assert fed[2]["fed"] and fed[2]["read_runs"]["part"] > 0 and fed[2]["output_runs"]["part"] > 0, fed[2]
    assert not copies[2]["fed"]
    assert fed[2]["trials"] == whole[2]["trials"] == copies[2]["trials"] >= 20
    for other in (whole, copies):
        # a repeated table is not run again: the copies' scores hold the same values, a few of them twice
        assert sorted(set(fed[1])) == pytest.approx(sorted(set(other[1])), abs=1e-6)
        assert fed[0] == other[0]


def test_sessions_per_search_are_bounded_whatever_the_trials(monkeypatch):
    built = []

    class Counting(ort.InferenceSession):
        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    real = log_ranges.choose
    counts = {}

    def choose(*a, **k):
        monkeypatch.setattr(ort, "InferenceSession", Counting)
        try:
            return real(*a, **{**k, "stats": counts})
        finally:
            monkeypatch.setattr(ort, "InferenceSession", Counting.__mro__[1])

    monkeypatch.setattr(log_ranges, "choose", choose)
    m = _front_end()
    qpass.optimize(m, calib=bind_samples({"audio": _audio(12, 1)}, m), disabled={"bias_correction"})
    # the float reference, two full quantizations' check, two fed sessions, their two checks, one part per cut:
    # not one per trial (the copies built 2 per trial and re-measure)
    assert counts["trials"] >= 20 and len(built) <= 10, (counts, len(built))


def test_a_cut_model_computes_the_read_from_the_values_it_is_fed():
    m = _front_end()
    part = cut_model(m, ["power"], ["re"], elem_types(m))  # im's Conv stays: only re is fed
    assert [n.op_type for n in part.graph.node] == ["Unsqueeze", "Conv", "Transpose", "Transpose", "Pow", "Pow",
                                                    "Add"]
    assert [i.name for i in part.graph.input] == ["audio", "re"]
    assert {i.name for i in part.graph.initializer} == {"axis1", "sin", "two"}
    x = bind_samples({"audio": _audio(3, 5)}, m)
    whole = tensor_values(m, ["re", "power"], x)
    fed = {"audio": x.arrays["audio"], "re": whole["re"]}
    got = FedSession(part, ["two"], optimize=False, outputs=["power"]).run(
        bind_samples(fed, part), {"two": np.float32(2.0)}, ["power"], batch_size=1)
    assert np.array_equal(got["power"], whole["power"])


def test_fed_copy_moves_the_named_initializers_to_inputs_and_refuses_others():
    m = _front_end()
    f = fed_copy(m, ["two"])
    assert "two" in [i.name for i in f.graph.input] and "two" not in [i.name for i in f.graph.initializer]
    with pytest.raises(KeyError):
        fed_copy(m, ["power"])


def _conv_model():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8, 8])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _mixing_model():
    """A consumer whose output for a batch is not the samples' outputs stacked: the mean over every axis."""
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], keepdims=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("build", [_conv_model, _mixing_model])
def test_range_choice_checked_on_two_samples_is_the_one_checked_on_all(monkeypatch, build):
    m = _conv_model() if build is _conv_model else _mixing_model()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 1, 4, 8, 8)).astype(np.float32)
    x[::4, 0, 0, 0, 0] = 40.0  # outliers: clipping is worth something
    cands = histogram_candidates(float(x.min()), float(x.max()), None, 8, ("shrink",))
    samples = [{"x": v} for v in x]
    got = choose_range(ConsumerRunner(m, elem_types(m)), "x", cands, samples, "uint8")
    monkeypatch.setattr(range_choice, "STACK_CHECK_SAMPLES", len(samples))
    want = choose_range(ConsumerRunner(m, elem_types(m)), "x", cands, samples, "uint8")
    assert (got.method, got.error, got.minmax_error) == (want.method, want.error, want.minmax_error)
