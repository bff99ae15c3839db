"""The ``--backend ort`` artifact: what is written for onnxruntime.

The pipeline verifies the model after every pass with ONNX shape inference (with data propagation) and keeps the
inferred ``value_info`` of every intermediate tensor. Most of it onnxruntime infers again when it loads the file,
so it is only bytes (basic-pitch: 49 KB of a 263 KB int8 file); but a shape that only data propagation finds (a
Reshape whose target a Shape -> Gather -> Concat chain computes, in a transformer) onnxruntime does not find
alone, and without it its optimizer leaves those chains and fusions such as SkipLayerNormalization undone
(paraphrase-minilm-l3: 24 more DequantizeLinear, 3 unfused LayerNorms). ``artifact`` drops from the main graph
the value_info that plain ONNX shape inference of the stripped model gives back identically, and keeps the fewest
of the rest that make it give back all (graph inputs and outputs, and If / Loop / Scan bodies, unchanged). A model holding an op outside the domains
onnxruntime knows (a QONNX export) keeps all of it.
"""
from __future__ import annotations

import onnx

from qpass.ir.graph import iter_graphs

#: operator domains whose every op onnxruntime infers shapes for
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


def artifact(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the value_info onnxruntime infers by itself (a copy; the argument is not changed), or
    ``model`` itself when it holds an op outside ``ORT_DOMAINS``, has no intermediate value_info, or shape
    inference fails on it."""
    if not len(model.graph.value_info):
        return model
    if any(n.domain not in ORT_DOMAINS for g in iter_graphs(model.graph) for n in g.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    kept = _needed_value_info(out, model.graph.value_info)
    if kept is None:
        return model
    out.graph.value_info.extend(kept)
    return out


#: rounds of re-inference that each keep the first tensors plain inference misses (a deeper chain keeps the rest)
KEEP_ROUNDS = 8


def _needed_value_info(stripped: onnx.ModelProto, given) -> list | None:
    """The value_info entries of ``given`` that plain ONNX shape inference of ``stripped`` does not give back, fewest
    first: each round keeps only the missed tensors no other missed tensor produces (a Reshape whose target only
    data propagation finds) and re-infers, since the tensors after them then come back from their shapes
    (mtcnn-pnet's three PRelu lookups: 3 entries, not 22). None: inference fails."""
    kept: dict[str, onnx.ValueInfoProto] = {}
    producer = {o: n for n in stripped.graph.node for o in n.output}
    for rounds in range(KEEP_ROUNDS + 1):
        trial = onnx.ModelProto()
        trial.CopyFrom(stripped)
        trial.graph.value_info.extend(kept.values())
        try:
            again = {v.name: v for v in onnx.shape_inference.infer_shapes(trial).graph.value_info}
        except (onnx.shape_inference.InferenceError, ValueError, RuntimeError):
            return None
        same = _consistent_symbols(given, again)
        missed = [v for v in given if v.name not in kept and (v.name not in again or not _same(v, again[v.name], same))]
        if not missed:
            break
        if rounds == KEEP_ROUNDS:  # a deeper chain: keep the rest as they are
            kept.update((v.name, v) for v in missed)
            break
        names = {v.name for v in missed}
        first = [v for v in missed if v.name not in producer or not any(i in names for i in producer[v.name].input)]
        kept.update((v.name, v) for v in first or missed)
    return [v for v in given if v.name in kept]


def _dims(v: onnx.ValueInfoProto):
    tt = v.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else ("?" + d.dim_param if d.dim_param else None)
            for d in tt.shape.dim] if tt.HasField("shape") else None


def _consistent_symbols(kept, again: dict) -> set[tuple[str, str]]:
    """Pairs (symbol of the model, symbol re-inferred) that map one to one where they meet: the re-inferred
    shapes then say which dimensions are equal exactly as the model's did (symbol names are made up, ``unk__7``;
    the equalities are what onnxruntime's fusions read, e.g. SkipLayerNormalization's two same-shaped inputs)."""
    fwd: dict[str, set] = {}
    back: dict[str, set] = {}
    for v in kept:
        a = again.get(v.name)
        d0, d1 = _dims(v), (_dims(a) if a is not None else None)
        if d0 is None or d1 is None or len(d0) != len(d1):
            continue
        for x, y in zip(d0, d1):
            if isinstance(x, str) and isinstance(y, str):
                fwd.setdefault(x, set()).add(y)
                back.setdefault(y, set()).add(x)
    out = set()
    for x, ys in fwd.items():
        # a symbol re-inferred under two names (a Reshape to a computed shape gets a fresh ``unk__``): its own name,
        # where inference carried it, is the pair kept; the tensors with the other name count as missed
        y = x if x in ys else (next(iter(ys)) if len(ys) == 1 else None)
        if y is not None and back[y] == {x}:
            out.add((x, y))
    return out


def _same(v: onnx.ValueInfoProto, a: onnx.ValueInfoProto, symbols: set) -> bool:
    """``a`` (re-inferred) says what ``v`` says: element type, rank, sizes, and symbols that map one to one."""
    if not v.type.HasField("tensor_type") or not a.type.HasField("tensor_type"):
        return v.type == a.type
    if v.type.tensor_type.elem_type != a.type.tensor_type.elem_type:
        return False
    d0, d1 = _dims(v), _dims(a)
    if d0 is None or d1 is None:
        return d0 is None and d1 is None
    return len(d0) == len(d1) and all(x == y if not (isinstance(x, str) and isinstance(y, str)) else (x, y) in symbols
                                      for x, y in zip(d0, d1))
