"""Issue 13, session 6: what makes adaround safe in the default int8 pipeline.

- An initializer with the same bytes as another is shared for the weight-side passes (the quantizer stores such
  copies once: rounding one copy alone would store the array twice).
- Where quantize_qdq will coarsen a layer's grid for x86 CPUs without VNNI (int16 pair sums that could saturate),
  adaround keeps round-to-nearest on it: a rounding chosen on the int8 grid would be lost there.
- ``partial: false``: over ``max_work`` no layer is rounded (not the first few in graph order)."""
import numpy as np
from onnx import helper

from ptq_cases import build, init, quantize
from qpass.passes.ptq_layers import find_layers
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.run import as_pipeline, run_passes
from qpass.ir.samples import bind_samples

RNG = np.random.default_rng(13)


def three_matmuls():
    w, other = RNG.normal(0, 1, (16, 16)), RNG.normal(0, 1, (16, 16))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["b"]),
             helper.make_node("MatMul", ["b", "w3"], ["y"])]
    return build(nodes, ["N", 16], "y", ["N", 16], [init("w1", w), init("w2", w), init("w3", other)])


def test_identical_copies_count_as_shared():
    layers = find_layers(three_matmuls())
    assert [lay.node.input[1] for lay in layers] == ["w3"]


def test_copies_are_compared_whole_not_by_their_ends():
    w = np.random.default_rng(5).normal(0, 1, (16, 16))  # not RNG: the later tests' draws stay as they were
    near = w.copy()
    near[8, 8] += 1.0  # the same first and last bytes, one value in the middle differs
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["a", "w2"], ["y"])]
    m = build(nodes, ["N", 16], "y", ["N", 16], [init("w1", w), init("w2", near)])
    assert [lay.node.input[1] for lay in find_layers(m)] == ["w1", "w2"]


def correlated(n, k, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 1.5, (n, 1, 1)) + 0.05 * rng.normal(0, 1, (n, 1, k))).astype(np.float32)


def test_shared_copies_stay_one_array_after_adaround():
    m = three_matmuls()
    res = quantize(m, correlated(64, 16), {"adaround": {"max_work": 1e9}}, weights="int8")
    two_d = [i for i in res.model.graph.initializer if len(i.dims) == 2]
    assert len(two_d) == 2  # w1 = w2 stored once, w3 once
    assert len(res.facts["adaround"]) == 1  # only the layer reading w3 was a candidate


def saturating_conv():
    c, k = 8, 3
    w = RNG.uniform(-0.2, 0.2, (4, c, k, k))
    w[:, 0:2] = RNG.uniform(0.8, 1.0, (4, 2, k, k))  # channels 0 and 1 pair up: int16 sums saturate on AVX2
    return build([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")],
                 ["N", c, 6, 6], "y", ["N", 4, 6, 6], [init("w", w), init("b", np.zeros(4))])


def _adaround_report(model, target):
    x = RNG.uniform(0, 1, (32, 1, 8, 6, 6)).astype(np.float32)
    passes = ["normalize", {"adaround": {"iters": 0, "max_work": 1e10}}, "calibrate",
              {"quantize_qdq": {"target_cpu": target}}]
    ctx = PassContext(inputs=PassInputs(calibration_data=bind_samples({"x": x}, model)), progress=False)
    res = run_passes(model, as_pipeline(passes), ctx)
    return res.facts.get("adaround"), res


def test_a_layer_the_quantizer_coarsens_for_avx2_keeps_round_to_nearest():
    rep, res = _adaround_report(saturating_conv(), "avx2")
    (layer,) = rep.values()
    assert not layer["kept"] and "saturate" in layer["why"]
    assert res.report.results["quantization"]["weight_encodings"]["conv"] == "pair_scale"
    rep, _ = _adaround_report(saturating_conv(), "vnni")
    (layer,) = rep.values()
    assert "why" not in layer  # solved on the int8 grid the quantizer keeps


def test_all_layers_or_none_under_the_work_bound():
    m = three_matmuls()
    # unique weights, so that every layer is a candidate
    for i, name in enumerate(("w1", "w2", "w3")):
        m.graph.initializer[i].CopyFrom(init(name, RNG.normal(0, 1, (16, 16))))
    x = correlated(64, 16)
    full = quantize(m, x, {"adaround": {"iters": 0, "max_work": 1e12}}, weights="int8").facts["adaround"]
    assert len(full) == 3
    # a bound that covers the model's runs and one layer's solver, not three: partial rounds some, false none
    runs_and_one = 2.5e7  # runs: 2.33e7 multiply-adds (graph cost x 64 samples x 6 runs); a layer: 1.1e6
    some = quantize(m, x, {"adaround": {"iters": 0, "max_work": runs_and_one}}, weights="int8").facts["adaround"]
    none = quantize(m, x, {"adaround": {"iters": 0, "max_work": runs_and_one, "partial": False}},
                    weights="int8")
    assert 1 <= len(some) < 3
    assert none.facts["adaround"] == {}
    assert any("rounding every layer" in n for r in none.records if r.name.startswith("adaround") for n in r.notes)
