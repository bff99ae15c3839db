"""Builders of the awkward and hostile inputs issue 20 found (shared by test_cli_*.py, test_reliability.py and the
seeded families of test_fuzz.py): a model the reference interpreter cannot run, a graph without outputs, subgraphs nested
past protobuf's depth limit, non-UTF-8 string initializers, "billion laughs" and deeply nested pipeline YAML."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: ops onnxruntime runs and the reference interpreter may lack (the LSTM of issue 20 has a kernel now): the first
#: one without a kernel makes a model whose golden check cannot run
FOREIGN_OPS = [("ai.onnx.ml", "Scaler"), ("ai.onnx.ml", "Normalizer")]


def op_without_reference_kernel() -> tuple[str, str] | None:
    """(domain, op type) of the first FOREIGN_OPS entry the reference interpreter has no kernel for."""
    from qpass.reference.registry import lookup

    return next((d_op for d_op in FOREIGN_OPS if lookup(*d_op) is None), None)


def model_with_op(domain: str, op: str, features: int = 8, seed: int = 0) -> onnx.ModelProto:
    """x (1, features) -> ``op`` -> MatMul -> 3 logits."""
    rng = np.random.default_rng(seed)
    attrs = {"Scaler": {"offset": [0.5] * features, "scale": [2.0] * features}, "Normalizer": {"norm": "L2"}}[op]
    nodes = [helper.make_node(op, ["x"], ["y"], name="foreign", domain=domain, **attrs),
             helper.make_node("MatMul", ["y", "W"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(rng.normal(size=(features, 3)).astype(np.float32), "W")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])


def model_samples(n: int = 16, features: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 1, features)).astype(np.float32),
            "labels": rng.integers(0, 3, n).astype(np.int64)}


def without_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    return m


def with_non_utf8_string(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model plus a STRING initializer holding b"\\xff\\xfe", passed through to an extra output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.initializer.append(helper.make_tensor("strings", TensorProto.STRING, [2], [b"\xff\xfe", b"ok"]))
    m.graph.node.append(helper.make_node("Identity", ["strings"], ["strings_out"], name="strings_id"))
    m.graph.output.append(helper.make_tensor_value_info("strings_out", TensorProto.STRING, [2]))
    return m


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_if_model(depth: int) -> bytes:
    """The bytes of a model whose If nodes nest ``depth`` deep, written on the wire (protobuf itself refuses to
    build a message nested past its depth limit)."""
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]).SerializeToString()
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]).SerializeToString()
    graph = leaf
    for _ in range(depth):  # AttributeProto: name 1, type 20 (GRAPH = 5), g 6; NodeProto: input 1, output 2, op 4
        then_attr = _field(1, b"then_branch") + _varint(20 << 3) + _varint(5) + _field(6, graph)
        else_attr = _field(1, b"else_branch") + _varint(20 << 3) + _varint(5) + _field(6, leaf)
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, then_attr) + _field(5, else_attr)
        graph = _field(1, node) + _field(2, b"g") + _field(12, out)  # GraphProto: node 1, name 2, output 12
    for vi in (helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
               helper.make_tensor_value_info("c", TensorProto.BOOL, [])):
        graph += _field(11, vi.SerializeToString())  # GraphProto.input
    top = helper.make_model(helper.make_graph([], "top", [], []), opset_imports=[helper.make_opsetid("", 17)])
    top.ClearField("graph")
    return top.SerializeToString() + _field(7, graph)  # ModelProto.graph


def billion_laughs_yaml(levels: int = 9, width: int = 9) -> str:
    """A pipeline whose aliases refer to aliases: ``width ** levels`` passes from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['normalize'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"passes: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def deep_repeat_yaml(depth: int = 2000) -> str:
    """A pipeline with ``repeat`` groups nested ``depth`` deep."""
    inner = "normalize"
    for _ in range(depth):
        inner = "{repeat: {passes: [" + inner + "]}}"
    return f"passes: [{inner}]\n"
