"""Transformer kernels: Attention (opsets 23-25: 3-D or 4-D inputs, grouped-query heads, boolean or additive
masks, causal and sliding-window masking aligned to the past / non-padded keys, KV cache, softcap, the
qk_matmul_output modes) and RotaryEmbedding. They compute in the input dtype (float32 like onnxruntime), with
the scale split as sqrt(scale) on Q and on K as the op's function body does; a query row with no key to attend
to gives zeros."""
from __future__ import annotations

import numpy as np
import onnx

from ..registry import register
from .common import is_float


def _to_heads(x, n):
    """(B, S, n * D) -> (B, n, S, D); 4-D inputs pass unchanged."""
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, n, hidden // n).transpose(0, 2, 1, 3)


def _allowed(q, kv, offset, left, right, causal):
    """Boolean (q, kv), or (batch, 1, q, kv) for a per-batch offset: which keys each query may attend to."""
    i = np.arange(q).reshape(q, 1)
    j = np.arange(kv).reshape(1, kv)
    pos = i + (np.reshape(offset, (-1, 1, 1)) if np.ndim(offset) else int(offset))
    ok = np.ones(np.broadcast_shapes(pos.shape, j.shape), bool)
    if causal:
        ok &= j <= pos
    if left >= 0:
        ok &= pos - j <= left
    if right >= 0:
        ok &= j - pos <= right
    return ok.reshape(ok.shape[0], 1, q, kv) if np.ndim(offset) else ok


def _bias(node, dtype, q, kv, mask, past_len, nonpad):
    """The additive bias (0 or -inf, plus a float mask) broadcastable to (B, H, q, kv)."""
    neg, zero = dtype.type(-np.inf), dtype.type(0)
    bias = np.zeros((q, kv), dtype)
    if mask is not None:
        if mask.shape[-1] < kv:  # a short mask is padded: the extra keys are masked out
            pad = [(0, 0)] * (mask.ndim - 1) + [(0, kv - mask.shape[-1])]
            mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
        bias = bias + (np.where(mask, zero, neg) if mask.dtype == np.bool_ else mask.astype(dtype))
    left, right = int(node.attr("left_window_size", -1)), int(node.attr("right_window_size", -1))
    causal = bool(int(node.attr("is_causal", 0)))
    if causal or left >= 0 or right >= 0:
        offset = np.asarray(nonpad).reshape(-1) - q if nonpad is not None and past_len is None else past_len or 0
        bias = bias + np.where(_allowed(q, kv, offset, left, right, causal), zero, neg)
    if nonpad is not None:
        keep = np.arange(kv) < np.asarray(nonpad).reshape(-1, 1)
        bias = bias + np.where(keep, zero, neg).reshape(-1, 1, 1, kv)
    return bias


def _softmax_rows(x, masked_rows):
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isneginf(m), x.dtype.type(0), m))
    s = np.sum(e, axis=-1, keepdims=True)
    p = e / np.where(s == 0, x.dtype.type(1), s)
    return np.where(masked_rows, x.dtype.type(0), p)


def _check_attention(node):
    mode = int(node.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        return f"qk_matmul_output_mode {mode} is not supported"
    prec = node.attr("softmax_precision")
    if prec is not None and not is_float(onnx.helper.tensor_dtype_to_np_dtype(int(prec))):
        return f"softmax_precision {prec} is not a float type"
    return None


@register("Attention", check=_check_attention)
def attention(node, q, k, v, mask=None, past_k=None, past_v=None, nonpad=None):
    """Y, present_key, present_value, qk_matmul_output."""
    rank3 = q.ndim == 3
    q = _to_heads(q, int(node.attr("q_num_heads", 0) or 1))
    kv_heads = int(node.attr("kv_num_heads", 0) or 1)
    k, v = _to_heads(k, kv_heads), _to_heads(v, kv_heads)
    if past_k is not None:
        k, v = np.concatenate([past_k, k], axis=2), np.concatenate([past_v, v], axis=2)
    present_k, present_v = k, v
    if q.shape[1] != k.shape[1]:  # grouped-query attention: each KV head serves consecutive query heads
        k, v = np.repeat(k, q.shape[1] // k.shape[1], axis=1), np.repeat(v, q.shape[1] // v.shape[1], axis=1)
    scale = node.attr("scale")
    root = q.dtype.type(np.sqrt(1 / np.sqrt(q.shape[3]) if scale is None else scale))
    qk = np.matmul(q * root, np.swapaxes(k, 2, 3) * root).astype(q.dtype)  # bfloat16 products come back float32
    softcap = float(node.attr("softcap", 0.0))
    if softcap > 0:
        qk = (np.tanh(qk / q.dtype.type(softcap)) * q.dtype.type(softcap)).astype(q.dtype)
    bias = _bias(node, q.dtype, q.shape[2], k.shape[2], mask, None if past_k is None else past_k.shape[2], nonpad)
    logits = qk + bias
    prec = node.attr("softmax_precision")
    work = logits if prec is None else logits.astype(onnx.helper.tensor_dtype_to_np_dtype(int(prec)))
    probs = _softmax_rows(work, np.isneginf(np.max(bias, axis=-1, keepdims=True))).astype(q.dtype)
    mode = int(node.attr("qk_matmul_output_mode", 0))
    qk_out = {0: qk, 1: qk, 2: logits, 3: probs}[mode].astype(q.dtype)
    y = np.matmul(probs, v).astype(q.dtype)
    if rank3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    return y, present_k, present_v, qk_out


@register("RotaryEmbedding")
def rotary_embedding(node, x, cos, sin, position_ids=None):
    """Rotate the first rotary_embedding_dim features of each head (halves, or even/odd pairs when interleaved)
    by the cached angles (indexed by position_ids when given)."""
    rank3 = x.ndim == 3
    if rank3:
        b, s, hidden = x.shape
        n = int(node.attr("num_heads"))
        v = x.reshape(b, s, n, hidden // n)
    else:
        v = x.transpose(0, 2, 1, 3)  # (B, S, heads, D)
    dim = int(node.attr("rotary_embedding_dim", 0)) or v.shape[3]
    if position_ids is not None:
        cos, sin = cos[position_ids], sin[position_ids]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rot = v[..., :dim]
    interleaved = int(node.attr("interleaved", 0))
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else np.split(rot, 2, axis=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rot = np.stack([real, imag], axis=-1).reshape(rot.shape) if interleaved else np.concatenate([real, imag], -1)
    y = np.concatenate([rot, v[..., dim:]], axis=-1).astype(x.dtype)
    return y.reshape(x.shape) if rank3 else y.transpose(0, 2, 1, 3)
