"""Integer LSTMs back to float, for ``mixed_precision`` (``--target``): onnxruntime's DynamicQuantizeLSTM rounds its
input per call to 8 bits, its weights to int8 per gate row and its hidden state on every step; on a model whose
output is a sigmoid of the last states (openWakeWord's hey-mycroft: two bidirectional LSTMs, then one Dense) those
roundings set the output SQNR (34 dB on integer LSTMs; the LSTMs in float and the rest int8: about 50 dB), and no
activation quantizer move can reach a target above them.

``quantize_qdq`` puts every LSTM on DynamicQuantizeLSTM (issue 12), so the default pipeline keeps them integer; a
move here gives one LSTM back its float form: the LSTM node of the model ``quantize_qdq`` started from, with the same
outputs, reading its float input, its float weights and its initial states by the names it had there (a move is
offered only where each of those is still in the quantized graph: an initializer of either model, a graph input or a
node output), and whatever only the integer LSTM read (its input's smoothing, its int8 weights) removed. Its cost is
read from the graph (``qdq_moves.graph_cost``: the LSTM's multiply-adds at the float rate instead of the integer
one), so the same inputs give the same file on any machine.
"""
from __future__ import annotations

import onnx

from qpass.ir.graph import drop_unread

#: ``mixed_precision``'s move key of an integer LSTM: this prefix and the LSTM's first output
PREFIX = "lstm:"


def is_lstm_key(key: str) -> bool:
    return key.startswith(PREFIX)


def label(key: str) -> str:
    """How a report names a move: an LSTM's key as "LSTM <its first output>", a tensor as itself."""
    return f"LSTM {key[len(PREFIX):]}" if is_lstm_key(key) else key


def lstm_keys(model: onnx.ModelProto, float_model: onnx.ModelProto | None) -> list[str]:
    """Move keys of the main graph's DynamicQuantizeLSTMs that ``float_model`` has a float LSTM for (see the module
    doc), in graph order."""
    if float_model is None:
        return []
    floats = _float_lstms(float_model)
    known = _tensors(model) | {i.name for i in float_model.graph.initializer}
    return [PREFIX + n.output[0] for n in model.graph.node if n.op_type == "DynamicQuantizeLSTM"
            and n.output[0] in floats and _same_outputs(n, floats[n.output[0]])
            and all(x in known for x in floats[n.output[0]].input if x)]


def to_float(model: onnx.ModelProto, float_model: onnx.ModelProto, keys) -> onnx.ModelProto:
    """A copy of ``model`` with the integer LSTMs of ``keys`` (``lstm_keys``) replaced by ``float_model``'s LSTMs."""
    firsts = {k[len(PREFIX):] for k in keys}
    floats = _float_lstms(float_model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {i.name for i in out.graph.initializer}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    for n in out.graph.node:
        if n.op_type != "DynamicQuantizeLSTM" or n.output[0] not in firsts:
            continue
        f = floats[n.output[0]]
        n.CopyFrom(f)
        for x in f.input:
            if x in float_inits and x not in have:
                out.graph.initializer.append(float_inits[x])
                have.add(x)
    drop_unread(out, tuple({n.op_type for n in model.graph.node}))  # the integer LSTM's own inputs' producers
    return out


def _float_lstms(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.output[0]: n for n in model.graph.node if n.op_type == "LSTM" and n.output and n.output[0]}


def _same_outputs(q: onnx.NodeProto, f: onnx.NodeProto) -> bool:
    return list(q.output) == list(f.output) + [""] * (len(q.output) - len(f.output))


def _tensors(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    return ({i.name for i in g.initializer} | {i.name for i in g.input} | {o for n in g.node for o in n.output if o})
