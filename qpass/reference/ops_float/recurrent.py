"""Recurrent kernels: RNN, GRU and LSTM with ONNX semantics: forward, reverse and bidirectional directions,
per-direction activations (with activation_alpha / activation_beta consumed in order by the functions that take
them, as onnxruntime does), cell ``clip``, ``sequence_lens`` (a shorter sequence stops updating its state and
emits zeros; reversed within its own length), initial states, LSTM peepholes and input_forget, GRU
linear_before_reset, and both layouts.

Everything runs in the input dtype (float32 like onnxruntime): the input projection of every time step as one
matrix product, then one step at a time. LSTM follows onnxruntime's kernel bit for bit: its matrix products as
MLAS computes them (``qpass.reference.mlas.sgemm``: the step's ``h @ R.T`` summed into the input projection, weights
that onnxruntime packs at load time summed in its packed order) and its sigmoid / tanh as MLAS approximates them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import mlas
from ..jit import compiled
from ..memo import kept
from ..registry import register

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTIVATIONS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh")}


def _kind(node) -> str:
    """RNN, GRU or LSTM (com.microsoft's DynamicQuantizeLSTM is an LSTM)."""
    return "LSTM" if node.op_type.endswith("LSTM") else node.op_type


def _sigmoid(x, a, b):
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)


#: name -> (default alpha, default beta, fn(x, alpha, beta)); None: the function takes no such parameter
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable]] = {
    "relu": (None, None, lambda x, a, b: np.maximum(x, 0)),
    "tanh": (None, None, lambda x, a, b: np.tanh(x)),
    "sigmoid": (None, None, _sigmoid),
    "affine": (1.0, 0.0, lambda x, a, b: a * x + b),
    "leakyrelu": (0.01, None, lambda x, a, b: np.where(x >= 0, x, a * x)),
    "thresholdedrelu": (1.0, None, lambda x, a, b: np.where(x > a, x, 0)),
    "scaledtanh": (1.0, 1.0, lambda x, a, b: a * np.tanh(b * x)),
    "hardsigmoid": (0.2, 0.5, lambda x, a, b: np.clip(a * x + b, 0, 1)),
    "elu": (1.0, None, lambda x, a, b: np.where(x >= 0, x, a * np.expm1(x))),
    "softsign": (None, None, lambda x, a, b: x / (1 + np.abs(x))),
    "softplus": (None, None, lambda x, a, b: np.logaddexp(0, x)),
}


def _directions(node) -> list[str]:
    d = node.attr("direction", "forward")
    return ["forward", "reverse"] if d == "bidirectional" else [d]


def _jit():
    """``qpass.reference.mlas_jit`` (the same numbers, compiled) when numba is installed, else None: the numpy
    emulation in ``qpass.reference.mlas`` (``qpass.reference.jit``)."""
    return compiled("mlas_jit")


def _mlas_activations() -> dict[str, Callable]:
    """onnxruntime's LSTM computes these two with MLAS's approximations."""
    k = _jit() or mlas
    return {"sigmoid": lambda x, a, b: k.logistic(x), "tanh": lambda x, a, b: k.tanh(x)}


def _activations(node, dtype) -> list[list[Callable]]:
    """Per direction, the gate activation functions with their alpha / beta bound."""
    names = node.attr("activations") or list(_DEFAULT_ACTIVATIONS[_kind(node)]) * len(_directions(node))
    exact = _kind(node) in ("LSTM", "GRU") and np.dtype(dtype) == np.float32
    mlas_fns = _mlas_activations() if exact else {}
    alphas = list(node.attr("activation_alpha") or [])
    betas = list(node.attr("activation_beta") or [])
    fns = []
    for name in names:
        da, db, fn = _ACTIVATIONS[name.lower()]
        fn = mlas_fns.get(name.lower(), fn)
        a = alphas.pop(0) if da is not None and alphas else da
        b = betas.pop(0) if db is not None and betas else db
        t = np.dtype(dtype).type
        f = lambda x, fn=fn, a=t(a or 0), b=t(b or 0): fn(x, a, b).astype(x.dtype)  # noqa: E731
        f.onnx_name = name.lower()
        f.key = (name.lower(), a, b)
        fns.append(f)
    per = len(_DEFAULT_ACTIVATIONS[_kind(node)])
    return [fns[i * per:(i + 1) * per] for i in range(len(_directions(node)))]


def check_recurrent(node):
    if node.attr("direction", "forward") not in ("forward", "reverse", "bidirectional"):
        return f"direction {node.attr('direction')!r} is not supported"
    names = node.attr("activations")
    if names is not None:
        unknown = [n for n in names if n.lower() not in _ACTIVATIONS]
        if unknown:
            return f"activation {unknown[0]!r} is not supported"
        if len(names) != len(_DEFAULT_ACTIVATIONS[_kind(node)]) * len(_directions(node)):
            return f"{len(names)} activations for {len(_directions(node))} direction(s)"
    return None


@dataclass
class _Direction:
    """One direction: ``xw(x)`` = x @ W.T (every time step at once), ``hr(h, lo, hi)`` = h @ R[lo:hi].T, the
    biases Wb and Rb (G*H,), peepholes (3*H,) or None, the activation functions, and ``hr_into(h, acc)`` = acc +
    h @ R.T as one kernel computes it (None: ``acc + hr(h, 0, G*H)``)."""

    xw: Callable
    hr: Callable
    wb: np.ndarray
    rb: np.ndarray
    p: np.ndarray | None
    acts: list[Callable]
    hr_into: Callable | None = None
    reverse: bool = False


def _reverse_within(x, lens):
    """Reverse each batch entry's first ``lens[b]`` time steps (x: (T, B, ...))."""
    y = x.copy()
    for b, n in enumerate(lens):
        y[:n, b] = x[:n, b][::-1]
    return y


def _run(x, lens, h0, c0, d: _Direction, step, reverse: bool):
    """Y (T, B, H), last h, last c of one direction; ``step(xp_t, h, c, d) -> (h, c)``."""
    T, B = x.shape[:2]
    if reverse:
        x = _reverse_within(x, lens)
    xp = d.xw(x.reshape(T * B, -1)).reshape(T, B, -1)
    h, c = h0, c0
    ys = np.zeros((T, B, h0.shape[-1]), x.dtype)
    for t in range(T):
        active = (t < lens)[:, None]
        fed = h if t == 0 else ys[t - 1]  # a finished sequence feeds zeros, as in onnxruntime (for quantised steps)
        h_new, c_new = step(xp[t], fed, c, d)
        ys[t] = np.where(active, h_new, 0)
        h = np.where(active, h_new, h)
        if c is not None:
            c = np.where(active, c_new, c)
    return (_reverse_within(ys, lens) if reverse else ys), h, c


def _clip(node, v):
    clip = node.attr("clip")
    return v if clip is None else np.clip(v, -clip, clip)


# The additions follow onnxruntime's order: the bias Wb + Rb comes last (for RNN, first), peepholes before it.

def _rnn_step(node):
    def step(xp, h, c, d):
        return d.acts[0](_clip(node, (xp + (d.wb + d.rb)) + d.hr(h, 0, h.shape[-1]))), None
    return step


def _gru_step(node):
    lbr = int(node.attr("linear_before_reset", 0))

    def step(xp, h, c, d):
        if d.hr_into is not None:
            return _gru_step_exact(lbr, node, xp, h, d), None
        H = h.shape[-1]
        zr = (xp[:, :2 * H] + d.hr(h, 0, 2 * H)) + (d.wb[:2 * H] + d.rb[:2 * H])
        z = d.acts[0](_clip(node, zr[:, :H]))
        r = d.acts[0](_clip(node, zr[:, H:]))
        if lbr:
            pre = (xp[:, 2 * H:] + r * (d.hr(h, 2 * H, 3 * H) + d.rb[2 * H:])) + d.wb[2 * H:]
        else:
            pre = (xp[:, 2 * H:] + d.hr(r * h, 2 * H, 3 * H)) + (d.wb[2 * H:] + d.rb[2 * H:])
        cand = d.acts[1](_clip(node, pre))
        return (1 - z) * cand + z * h, None
    return step


#: onnxruntime's GRU computes its reset gate and candidate with plain-float rational approximations
_GRU_GATES = {"sigmoid": mlas.gru_sigmoid, "tanh": mlas.gru_tanh}


def _gru_step_exact(lbr, node, xp, h, d):
    """One GRU step as onnxruntime's ``UniDirectionalGru`` computes it (float32)."""
    H = h.shape[-1]
    fr = _GRU_GATES.get(d.acts[0].onnx_name, d.acts[0])
    fh = _GRU_GATES.get(d.acts[1].onnx_name, d.acts[1])
    zr = d.hr_into(h, xp[:, :2 * H], 0, 2 * H)
    r = fr(_clip(node, zr[:, H:] + (d.wb[H:2 * H] + d.rb[H:2 * H])))
    if lbr:
        lin = d.hr_into(h, np.broadcast_to(d.rb[2 * H:], h.shape), 2 * H, 3 * H)
        pre = xp[:, 2 * H:] + r * lin
        bias_h = d.wb[2 * H:]
    else:
        pre = d.hr_into(r * h, xp[:, 2 * H:], 2 * H, 3 * H)
        bias_h = d.wb[2 * H:] + d.rb[2 * H:]
    z = d.acts[0](_clip(node, zr[:, :H] + (d.wb[:H] + d.rb[:H])))
    cand = fh(_clip(node, pre + bias_h))
    return (1 - z) * cand + z * h


def _lstm_gates(node, g, c, bias, p, acts):
    """One LSTM step's new (h, c) from the gate sums ``g`` = x W + h R (..., 4H: gates i, o, f, c), as
    onnxruntime adds them: peephole term first, the bias Wb + Rb last. Without peepholes the i, o and f gates
    go through their activation at once (each is elementwise)."""
    H = c.shape[-1]
    couple = int(node.attr("input_forget", 0))
    if p is None:
        n_sig = 2 if couple else 3
        sig = acts[0](_clip(node, g[..., :n_sig * H] + bias[..., :n_sig * H]))
        i, o = sig[..., :H], sig[..., H:2 * H]
        f = 1 - i if couple else sig[..., 2 * H:]
        cell = acts[1](_clip(node, g[..., 3 * H:] + bias[..., 3 * H:]))
        c = f * c + i * cell
    else:
        pi, po, pf = p[..., :H], p[..., H:2 * H], p[..., 2 * H:]
        i = acts[0](_clip(node, (g[..., :H] + pi * c) + bias[..., :H]))
        f = 1 - i if couple else acts[0](_clip(node, (g[..., 2 * H:3 * H] + pf * c) + bias[..., 2 * H:3 * H]))
        cell = acts[1](_clip(node, g[..., 3 * H:] + bias[..., 3 * H:]))
        c = f * c + i * cell
        o = acts[0](_clip(node, (g[..., H:2 * H] + po * c) + bias[..., H:2 * H]))
    return o * acts[2](c), c


def _cell_fn(node, p, acts, bias) -> Callable:
    """``gates(g, c) -> (h, c)`` of one LSTM step: the compiled cell when there is one and the step is its case
    (no peepholes; MLAS's sigmoid, tanh, tanh), else :func:`_lstm_gates`."""
    jit = _jit()
    mlas_acts = [f.key for f in acts] == [("sigmoid", None, None), ("tanh", None, None), ("tanh", None, None)]
    if jit is not None and p is None and mlas_acts and bias.dtype == np.float32:
        b2, clip, couple = np.ascontiguousarray(bias[:, 0]), node.attr("clip"), int(node.attr("input_forget", 0))

        def gates(g, c):
            return jit.lstm_cell(g, b2, c, clip, couple)

        gates.cell = (b2, clip, couple)  # for _compiled_sequence
        return gates
    return lambda g, c: _lstm_gates(node, g, c, bias, p, acts)


def _compiled_sequence(recur, gates, full: bool) -> Callable | None:
    """``run(xp, h0, c0) -> (Y, h, c)``: every step in one compiled call, when the sequences all run the full
    length and both the recurrence (R packed) and the cell have compiled forms; else None."""
    weights, cell = getattr(recur, "weights", None), getattr(gates, "cell", None)
    if not full or weights is None or cell is None:
        return None
    return lambda xp, h0, c0: _jit().lstm_sequence(xp, weights, *cell, h0, c0)


def _run_lstm(node, x, lens, h0, c0, dirs: list[_Direction], recur: Callable | None):
    """Y (T, D, B, H), last h and c (D, B, H) of every direction at once (their steps are independent):
    ``recur(h, xp_t) -> g`` gives the gate sums of all directions ((D, B, 4H); None: each direction's
    ``hr_into`` / ``hr``). Directions whose activations differ run one at a time."""
    if len(dirs) > 1 and len({tuple(f.key for f in d.acts) for d in dirs}) > 1:
        parts = [_run_lstm(node, x, lens, h0[k:k + 1], c0[k:k + 1], [d], None) for k, d in enumerate(dirs)]
        return tuple(np.concatenate(v, axis=1 if i == 0 else 0) for i, v in enumerate(zip(*parts)))
    T, B = x.shape[:2]
    full = bool(np.all(lens >= T))
    xp = np.stack([d.xw((_reverse_within(x, lens) if d.reverse else x).reshape(T * B, -1)).reshape(T, B, -1)
                   for d in dirs], axis=1)  # (T, D, B, 4H)
    if recur is None:
        def recur(h, xp_t):
            return np.stack([d.hr_into(h[k], xp_t[k]) if d.hr_into is not None
                             else xp_t[k] + d.hr(h[k], 0, xp_t.shape[-1]) for k, d in enumerate(dirs)])
    bias = np.stack([d.wb + d.rb for d in dirs])[:, None]  # (D, 1, 4H)
    p = None if dirs[0].p is None else np.stack([d.p for d in dirs])[:, None]
    gates = _cell_fn(node, p, dirs[0].acts, bias)
    whole = _compiled_sequence(recur, gates, full)
    if whole is not None:
        ys, h, c = whole(xp, h0, c0)
    else:
        h, c = h0, c0
        ys = np.zeros((T,) + h0.shape, x.dtype)
    for t in range(0 if whole is not None else T):
        fed = h if t == 0 or full else ys[t - 1]  # a finished sequence feeds zeros, as onnxruntime (quantised steps)
        h_new, c_new = gates(recur(fed, xp[t]), c)
        if full:
            ys[t] = h = h_new
            c = c_new
        else:
            active = (t < lens)[:, None]
            ys[t] = np.where(active, h_new, 0)
            h, c = np.where(active, h_new, h), np.where(active, c_new, c)
    for k, d in enumerate(dirs):
        if d.reverse:
            ys[:, k] = _reverse_within(ys[:, k], lens)
    return ys, h, c


_STEPS = {"RNN": _rnn_step, "GRU": _gru_step}


def float_weights(w, r):
    """(xw, hr) of float weights W (G*H, I) and R (G*H, H)."""
    return (lambda x: x @ w.T), (lambda h, lo, hi: h @ r[lo:hi].T)


def _sgemm(a, b, c=None, packed: bool = False):
    """``mlas.sgemm(a, b, c, trans_b=True, packed)``, through the compiled kernel when there is one (every case but
    M = 1 unpacked, whose AVX kernels sum in another order and cost a few numpy calls anyway)."""
    jit = _jit()
    if jit is None or (np.shape(a)[0] == 1 and not packed):
        return mlas.sgemm(a, b, c, trans_b=True, packed=packed)
    return jit.packed_gemm(a, np.ascontiguousarray(np.asarray(b, np.float32).T), c, 256 if packed else None)


def mlas_weights(w, r, packed_w: bool, packed_r: bool):
    """(xw, hr, hr_into) of float32 weights as onnxruntime's LSTM multiplies them (MLAS SGEMM; ``packed_*``: the
    weight is a constant onnxruntime packs when the session is created)."""
    return ((lambda x: _sgemm(x, w, packed=packed_w)),
            (lambda h, lo, hi: _sgemm(h, r[lo:hi], packed=packed_r)),
            (lambda h, acc, lo=0, hi=None: _sgemm(h, r[lo:hi], acc, packed=packed_r)))


def _direction(node, hidden, dtype, b, p, k, acts, products) -> _Direction:
    G = _GATES[_kind(node)]
    bias = np.zeros(2 * G * hidden, dtype) if b is None else b[k]
    xw, hr, *into = products(k)
    return _Direction(xw, hr, bias[:G * hidden], bias[G * hidden:], None if p is None else p[k], acts[k],
                      into[0] if into else None, _directions(node)[k] == "reverse")


@register("RNN", check=check_recurrent)
def recurrent(node, x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
    """Y, Y_h (and Y_c for LSTM) in the node's layout."""
    return run_recurrent(node, x, r.shape[-1], b, lens, h0, c0, p, lambda k: float_weights(w[k], r[k]))


def _prepacked(ex, name: str) -> bool:
    """Whether onnxruntime packs this LSTM weight when the session is created: a constant (an initializer or a
    Constant node's output; a DequantizeLinear output is computed at run time). Decided once per executor."""
    key = ("prepacked", name)
    if key not in ex.scratch:
        ex.scratch[key] = (name in ex.initializers and name not in ex.overridable) or \
            any(n.op_type == "Constant" and name in n.outputs for n in ex.nodes)
    return ex.scratch[key]


def _check_lstm(ex, node):
    return check_recurrent(node)


def _prepared(ex, node, tag: str, v: np.ndarray, make: Callable):
    """``make(v)``, kept on the executor for as long as the same array comes back (a constant weight is
    prepared once per executor, not once per call)."""
    return kept(ex.scratch, (tag, node.name), (v,), lambda: make(v))[0]


def _packed_recurrence(ex, node, r: np.ndarray):
    """``recur(h, xp_t)`` of every direction at once for a float32 LSTM whose R onnxruntime packs at load
    time: xp_t + h @ R.T by MLAS's FMA kernel, R (D, 4H, H) prepared once."""
    jit = _jit()
    if jit is not None:
        rk = _prepared(ex, node, "recurrence_f32", r, lambda v: np.ascontiguousarray(np.swapaxes(v, 1, 2), np.float32))

        def recur(h, xp_t):
            return jit.packed_gemm(h, rk, xp_t)

        recur.weights = rk  # for _compiled_sequence
        return recur
    ob = _prepared(ex, node, "recurrence", r, lambda v: mlas.Operand(np.swapaxes(v, 1, 2)))
    return lambda h, xp_t: mlas.packed_gemm(h, ob, xp_t)


@register("GRU", check=_check_lstm, with_executor=True)
@register("LSTM", check=_check_lstm, with_executor=True)
def lstm(ex, node, x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
    """Y, Y_h (and Y_c for LSTM) in the node's layout; float32 as onnxruntime's kernel computes it."""
    if x.dtype != np.float32:
        return recurrent(node, x, w, r, b, lens, h0, c0, p)
    pw, pr = _prepacked(ex, node.inputs[1]), _prepacked(ex, node.inputs[2])
    recur = _packed_recurrence(ex, node, r) if pr and _kind(node) == "LSTM" else None
    if not pw:
        return run_recurrent(node, x, r.shape[-1], b, lens, h0, c0, p,
                             lambda k: mlas_weights(w[k], r[k], pw, pr), recur)
    jit = _jit()
    if jit is not None:
        ws = _prepared(ex, node, "input_f32", w, lambda v: [np.ascontiguousarray(d.T, np.float32) for d in v])
        gemm = jit.packed_gemm
    else:
        ws = _prepared(ex, node, "input", w, lambda v: [mlas.Operand(d.T) for d in v])  # W packed: prepared once
        gemm = mlas.packed_gemm

    def products(k):
        _, hr, hr_into = mlas_weights(w[k], r[k], pw, pr)
        return (lambda a: gemm(a, ws[k])), hr, hr_into

    return run_recurrent(node, x, r.shape[-1], b, lens, h0, c0, p, products, recur)


def _states(v, D, B, H, dtype):
    return np.zeros((D, B, H), dtype) if v is None else np.asarray(v, dtype)


def run_recurrent(node, x, hidden, b, lens, h0, c0, p, products, recur=None):
    """The recurrence of ``node`` (an RNN, GRU or LSTM by ``node.op_type``) whose per-direction matrix products
    ``products(k) -> (xw, hr)`` the caller supplies (float or quantised weights); for an LSTM, ``recur(h,
    xp_t)``: the gate sums of every direction at once (see :func:`_run_lstm`)."""
    batch_first = int(node.attr("layout", 0)) == 1
    if batch_first:
        x = np.swapaxes(x, 0, 1)
        h0 = None if h0 is None else np.swapaxes(h0, 0, 1)
        c0 = None if c0 is None else np.swapaxes(c0, 0, 1)
    T, B, H = x.shape[0], x.shape[1], hidden
    lens = np.full(B, T, np.int64) if lens is None else np.asarray(lens).astype(np.int64).reshape(-1)
    acts = _activations(node, x.dtype)
    names = _directions(node)
    dirs = [_direction(node, H, x.dtype, b, p, k, acts, products) for k in range(len(names))]
    h_init = _states(h0, len(names), B, H, x.dtype)
    if _kind(node) == "LSTM":
        y, y_h, y_c = _run_lstm(node, x, lens, h_init, _states(c0, len(names), B, H, x.dtype), dirs, recur)
    else:
        step = _STEPS[_kind(node)](node)
        runs = [_run(x, lens, h_init[k], None, d, step, d.reverse) for k, d in enumerate(dirs)]
        y, y_h, y_c = np.stack([r[0] for r in runs], 1), np.stack([r[1] for r in runs]), None
    if batch_first:
        y, y_h = y.transpose(2, 0, 1, 3), np.swapaxes(y_h, 0, 1)
        y_c = None if y_c is None else np.swapaxes(y_c, 0, 1)
    return (y, y_h, y_c) if _kind(node) == "LSTM" else (y, y_h)
