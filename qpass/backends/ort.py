"""The ``--backend ort`` artifact: what is written for onnxruntime.

The pipeline verifies the model after every pass with ONNX shape inference and keeps the inferred ``value_info``
of every intermediate tensor. onnxruntime infers the same types and shapes itself when it loads the file, so in
the written artifact they are only bytes (basic-pitch: 49 KB of a 263 KB int8 file). ``artifact`` drops them, in
the main graph and in every If / Loop / Scan body, when every node is in a domain onnxruntime knows; graph inputs
and outputs keep their types. A model holding other domains (a QONNX export) keeps its value_info: its consumers
may not know how to infer through those ops.
"""
from __future__ import annotations

import onnx

from qpass.ir.graph import iter_graphs

#: operator domains whose every op onnxruntime infers shapes for
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


def artifact(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the value_info of intermediate tensors (a copy; the argument is not changed), or
    ``model`` itself when it holds an op outside ``ORT_DOMAINS`` or has no intermediate value_info."""
    graphs = list(iter_graphs(model.graph))
    if not any(len(g.value_info) for g in graphs):
        return model
    if any(n.domain not in ORT_DOMAINS for g in graphs for n in g.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for g in iter_graphs(out.graph):
        del g.value_info[:]
    return out
