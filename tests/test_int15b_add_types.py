"""int8 Add / Mul after onnxruntime's int8 -> uint8 rewrite: the reference fuses an 8-bit binary op exactly when
onnxruntime does (operands and output of one type after QDQS8ToU8Transformer, DequantizeLinear -> QuantizeLinear
pairs with equal parameters dropped first) and computes in the same domain; every one of the 65,536 code pairs
equals onnxruntime's."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor

A, B = (np.ascontiguousarray(v) for v in np.meshgrid(np.arange(-128, 128, dtype=np.int8),
                                                      np.arange(-128, 128, dtype=np.int8), indexing="ij"))


def _model(op, p, tail_dq):
    """int8 graph inputs a, b -> DQ -> Q -> DQ -> op -> Q (-> DQ when ``tail_dq``); p: five (scale, zero point)."""
    names = ["a", "b", "c", "m", "n"]
    inits = []
    for k, (s, z) in zip(names, p):
        inits += [h.make_tensor("s" + k, T.FLOAT, [], [s]), h.make_tensor("z" + k, T.INT8, [], [z])]
    nodes = [h.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             h.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             h.make_node("QuantizeLinear", ["fa", "sm", "zm"], ["qa"]),
             h.make_node("DequantizeLinear", ["qa", "sm", "zm"], ["ga"]),
             h.make_node("QuantizeLinear", ["fb", "sn", "zn"], ["qb"]),
             h.make_node("DequantizeLinear", ["qb", "sn", "zn"], ["gb"]),
             h.make_node(op, ["ga", "gb"], ["s"]), h.make_node("QuantizeLinear", ["s", "sc", "zc"], ["q"])]
    outs = [h.make_tensor_value_info("q", T.INT8, None)]
    if tail_dq:
        nodes.append(h.make_node("DequantizeLinear", ["q", "sc", "zc"], ["y"]))
        outs = [h.make_tensor_value_info("y", T.FLOAT, None)]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info(k, T.INT8, [256, 256]) for k in "ab"], outs,
                     initializer=inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


def _params(seed, share):
    rng = np.random.default_rng(seed)
    p = [(float(np.float32(rng.uniform(0.005, 0.1))), int(rng.integers(-20, 20))) for _ in range(5)]
    if share >= 1:
        p[3] = p[0]  # a's DQ -> Q pair has equal parameters: onnxruntime drops it
    if share == 2:
        p[4] = p[1]
    return p


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("tail_dq", [False, True])
@pytest.mark.parametrize("seed, share", [(0, 2), (3, 0), (1, 2), (4, 1), (9, 0)])
def test_int8_binary_codes_equal_onnxruntime(op, tail_dq, seed, share):
    model = _model(op, _params(seed, share), tail_dq)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"a": A, "b": B})[0]
    got = GoldenExecutor(model).run({"a": A, "b": B})["y" if tail_dq else "q"]
    assert got.dtype == want.dtype
    assert np.count_nonzero(got != want) == 0, np.argwhere(got != want)[:5]
