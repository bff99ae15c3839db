"""auto_precision's If-branch rule (qpass/search/branch_precision.py): a conditional branch that calibration takes on
part of the samples, whose int8 rounding costs the output much more than the rest of the model does, goes back to
float when that costs little of the model's expected run time; a branch that is expensive stays int8."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.layer_errors import joined_outputs
from qpass.analysis.metrics import sqnr_db
from qpass.ir.samples import bind_samples

RNG = np.random.default_rng(7)


def f32(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)


def verifier_model(width: int) -> onnx.ModelProto:
    """A three-layer MLP scores x; if mean(x) > 0: a verifier MLP on x (width hidden units, output x20: it carries
    the output's energy) else the score."""
    k = 32
    vi = helper.make_tensor_value_info
    then = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W1"], ["t1"]), helper.make_node("Relu", ["t1"], ["t2"]),
         helper.make_node("Gemm", ["t2", "W2"], ["ty"])],
        "then", [], [vi("ty", TensorProto.FLOAT, [1, 1])],
        [f32("W1", RNG.standard_normal((k, width)) / np.sqrt(k)),
         f32("W2", RNG.standard_normal((width, 1)) * 20 / np.sqrt(width))])
    other = helper.make_graph([helper.make_node("Identity", ["s"], ["ey"])], "else", [],
                              [vi("ey", TensorProto.FLOAT, [1, 1])])
    nodes, inits, h = [], [], "x"
    for i, (a, b) in enumerate(((k, 64), (64, 64), (64, 16))):
        nodes += [helper.make_node("Gemm", [h, f"Wm{i}"], [f"g{i}"]), helper.make_node("Relu", [f"g{i}"], [f"h{i}"])]
        inits.append(f32(f"Wm{i}", RNG.standard_normal((a, b)) / np.sqrt(a)))
        h = f"h{i}"
    nodes += [helper.make_node("ReduceMean", [h], ["s"], keepdims=1),
              helper.make_node("ReduceMean", ["x"], ["mx"], keepdims=0),
              helper.make_node("Greater", ["mx", "zero"], ["c"]),
              helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    g = helper.make_graph(nodes, "g", [vi("x", TensorProto.FLOAT, [1, k])], [vi("y", TensorProto.FLOAT, [1, 1])],
                          inits + [f32("zero", 0.0)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def run(model, x, **auto):
    pipe = qpass.load_pipeline("default", {"auto_precision": auto} if auto else None)
    return qpass.optimize(model, calib=bind_samples({"x": x}, model), pipeline=pipe)


def branch_qdq(model) -> int:
    (node,) = [n for n in model.graph.node if n.op_type == "If"]
    then = next(a.g for a in node.attribute if a.name == "then_branch")
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in then.node)


def test_a_cheap_sensitive_branch_goes_back_to_float_and_the_output_gains():
    m = verifier_model(width=16)
    x, held = (RNG.standard_normal((n, 1, 32)).astype(np.float32) for n in (64, 48))
    on, off = run(m, x), run(m, x, branch_min_gain_db=None)
    assert branch_qdq(off.model) > 0 and branch_qdq(on.model) == 0
    (rec,) = on.report.results["auto_precision"]["branches"]
    assert rec["float"] and 0.1 < rec["taken"] < 0.9 and rec["gain"] >= 3.0 and rec["cost"] <= 0.05
    s = bind_samples({"x": held}, m)
    ref = joined_outputs(m, s)
    assert sqnr_db(ref, joined_outputs(on.model, s)) >= sqnr_db(ref, joined_outputs(off.model, s)) + 10
    assert any(n.op_type == "QuantizeLinear" for n in on.model.graph.node)  # the main graph stays int8


def test_an_expensive_branch_stays_int8():
    m = verifier_model(width=4096)
    x = RNG.standard_normal((64, 1, 32)).astype(np.float32)
    res = run(m, x)
    (rec,) = res.report.results["auto_precision"]["branches"]
    assert not rec["float"] and rec["gain"] >= 3.0 and rec["cost"] > 0.05
    assert branch_qdq(res.model) > 0


def test_a_budget_below_the_branch_cost_keeps_it_int8():
    m = verifier_model(width=16)
    x = RNG.standard_normal((64, 1, 32)).astype(np.float32)
    res = run(m, x, branch_cost_budget=-0.5)
    (rec,) = res.report.results["auto_precision"]["branches"]
    assert not rec["float"] and rec["gain"] >= 3.0 and branch_qdq(res.model) > 0


def test_a_body_quantizer_in_the_main_graph_reads_the_float_value():
    """The If branch reads x, which the main graph quantizes too: the branch's QuantizeLinear (hoisted into the main
    graph) reads x itself, not the main graph's DequantizeLinear of it (onnxruntime 1.32 aborts building a session
    for Q -> DQ -> Q read only by an If), and onnxruntime builds and runs the model."""
    import onnxruntime as ort

    m = verifier_model(width=16)
    x = RNG.standard_normal((64, 1, 32)).astype(np.float32)
    q = run(m, x, branch_min_gain_db=None).model
    made = {o: n.op_type for n in q.graph.node for o in n.output}
    quants = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert sum(n.input[0] == "x" for n in quants) == 2
    assert not any(made.get(n.input[0]) == "DequantizeLinear" for n in quants)
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": x[0]})[0].shape == (1, 1)
