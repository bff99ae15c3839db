"""Streamlining a residual Add of two integer tensors on unrelated grids: ``Q(chain(s_a*a + s_b*b))``.

When the scales are not powers of two the float sum is not an integer op, but its inputs are: a and b range over
small integer sets, so the whole function f(a, b) = codes of the next quantiser can be evaluated on every pair, with
the golden simulator's own float32 arithmetic (a product and a sum of float32 values, each rounded once). If some
integers (p, q) make f a non-decreasing function of z = p*a + q*b alone (ties in z give equal codes), the Add becomes
the integer ``p*a + q*b`` and one MultiThreshold on z -- bit-exact on every input pair by construction, which this
pass checks exhaustively. (p, q) are tried from the best rational approximations of s_a/s_b (continued-fraction
convergents and semiconvergents), smallest first. Otherwise the Add stays float, with the reason.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx_graphsurgeon as gs

from qpass.analysis.intinfo import int_range, is_bipolar_codes, quant_params, signed_bits
from qpass.ops.common import QONNX_DOMAIN, int_bounds

MAX_PAIRS = 1 << 21  # 2M (a, b) pairs: uint8 + int9 codes
MAX_FACTOR = 1 << 12


def ratio_candidates(r: float, limit: int = MAX_FACTOR) -> list[tuple[int, int]]:
    """(p, q) with p/q the convergents and semiconvergents of r > 0, q and p <= limit, by increasing q."""
    out, x = [], Fraction(r)
    h0, h1, k0, k1 = 0, 1, 1, 0  # h/k convergents
    for _ in range(64):
        a = int(x)
        for t in range(max(1, (a + 1) // 2), a + 1):  # semiconvergents, then the convergent (t = a)
            h, k = t * h1 + h0, t * k1 + k0
            if h <= limit and k <= limit and h > 0:
                out.append((h, k))
        h0, h1, k0, k1 = h1, a * h1 + h0, k1, a * k1 + k0
        frac = x - a
        if frac == 0 or k1 > limit:
            break
        x = 1 / frac
    return sorted(set(out), key=lambda pq: (pq[1], pq[0]))


def monotone_in(z: np.ndarray, f: np.ndarray) -> bool:
    order = np.lexsort((f, z))
    zs, fs = z[order], f[order]
    dz, df = np.diff(zs), np.diff(fs)
    return bool(np.all(df >= 0) and np.all(df[dz == 0] == 0))


def threshold_add(graph: gs.Graph, b, node: gs.Node, da, db) -> tuple[bool, str]:
    """Rewrite ``node`` (an Add of ``da`` = (codes a, scale) and ``db``) as described in the module docstring."""
    from qpass.passes.thresholds import _Chain, find_chain

    (ca, sa), (cb, sb) = da, db
    ra, rb = int_range(ca), int_range(cb)
    if ra is None or rb is None or not (float(sa) > 0 and float(sb) > 0):
        return False, "branch scales are not both positive"
    av, bv = np.arange(ra[0], ra[1] + 1), np.arange(rb[0], rb[1] + 1)
    if av.size * bv.size > MAX_PAIRS:
        return False, f"{av.size} x {bv.size} input pairs are too many to check exhaustively"
    y = node.outputs[0]
    chain, why = find_chain(graph, y)
    if chain is None:
        return False, f"no quantiser after the Add ({why})"
    last = chain[-1]
    step = 1.0
    if is_bipolar_codes(last):  # sign: codes -1, +1 from one threshold
        code_min, code_max, step = -1.0, 1.0, 2.0
        levels = np.array([1.0])
    else:
        qp = quant_params(last)
        lo, hi = int_bounds(qp[2], qp[3], qp[4])
        z0 = float(np.asarray(qp[1]).reshape(-1)[0])
        code_min, code_max = lo - z0, hi - z0
        levels = np.arange(code_min + 1, code_max + 1)
    rank = len(y.shape) if y.shape is not None else 4
    A, B = np.meshgrid(av.astype(np.float32), bv.astype(np.float32), indexing="ij")
    s = (A * np.float32(sa)) + (B * np.float32(sb))  # float32 products and sum, each rounded once, as the graph
    f = _Chain(chain, y, rank, 1)(s.reshape(-1, 1).astype(np.float64)).reshape(-1)
    ai, bi = A.reshape(-1).astype(np.int64), B.reshape(-1).astype(np.int64)
    for p, q in ratio_candidates(float(sa) / float(sb)):
        z = p * ai + q * bi
        if monotone_in(z, f):
            break
    else:
        return False, f"no integer weights up to {MAX_FACTOR} order the sum like the float one"
    order = np.argsort(z, kind="stable")
    zs, fs = z[order], f[order]
    idx = np.searchsorted(fs, levels, side="left")
    thr = np.where(idx < len(zs), zs[np.minimum(idx, len(zs) - 1)], zs[-1] + 1)
    got = code_min + step * (z[:, None] >= thr[None, :]).sum(axis=1)
    if not np.array_equal(got, f):
        return False, "the thresholds on the integer sum do not reproduce the float sum"
    _rewrite(graph, b, node, chain, ca, cb, p, q, thr, code_min, code_max, step, rank)
    return True, f"integer {p}*a + {q}*b with {levels.size} thresholds (exact on all {z.size} input pairs)"


def _rewrite(graph, b, node, chain, ca, cb, p, q, thr, code_min, code_max, step, rank):
    from qpass.passes.thresholds import channel_layout

    ins = []
    for c, k in ((ca, p), (cb, q)):
        if k == 1:
            ins.append(c)
            continue
        t = b.var(f"{c.name}_x{k}", c)
        b.node("Mul", [c, b.const(float(k), name=f"{node.name}_w{k}")], [t])
        ins.append(t)
    y = node.outputs[0]
    acc = b.var(f"{y.name}_acc", y)
    node.inputs[0], node.inputs[1] = ins
    node.outputs[0] = acc
    out = chain[-1].outputs[0]
    bipolar = step == 2.0
    bits, signed = signed_bits(code_min, code_max)
    dtype = "BIPOLAR" if bipolar else f"{'INT' if signed else 'UINT'}{bits}"
    mt = gs.Node("MultiThreshold", b.names(f"{node.name}_MultiThreshold"), domain=QONNX_DOMAIN,
                 attrs={"out_dtype": dtype, "out_scale": step, "out_bias": float(code_min),
                        "data_layout": channel_layout(rank, 1)},
                 inputs=[acc, b.const(thr.reshape(1, -1).astype(np.float32), name=f"{node.name}_thresholds")],
                 outputs=[out])
    for n in chain:
        n.inputs.clear()
        n.outputs.clear()
    graph.nodes.append(mt)


def average_is_exact(graph: gs.Graph, node: gs.Node, codes: gs.Tensor, s: float, n: int) -> tuple[bool, str]:
    """Whether a GlobalAveragePool of ``s * codes`` over ``n`` values may become the integer sum S (then ``s*S/n``)
    although ``s`` is not a power of two: the golden simulator averages the float32 products fl(s*c_i) (each within
    2^-24 relative of s*c_i) in float64 and rounds once more, so its value lies within
    delta = 2^-23 * (s*max|c| + |v|) of v = s*S/n. If the quantiser chain after the pool gives the same code at
    v - 2*delta and v + 2*delta for every S the codes allow, the float path cannot change a code."""
    from qpass.passes.thresholds import _Chain, find_chain

    r = int_range(codes)
    y = node.outputs[0]
    if r is None or not float(s) > 0:
        return False, "input codes without an integer range, or a non-positive scale"
    chain, why = find_chain(graph, y)
    if chain is None:
        return False, f"no quantiser right after the average ({why})"
    S = np.arange(int(r[0]) * n, int(r[1]) * n + 1, dtype=np.float64)
    if S.size > MAX_PAIRS:
        return False, "too many sums to check"
    v = float(s) * S / n
    delta = 2.0 ** -23 * (float(s) * max(abs(r[0]), abs(r[1])) + np.abs(v))
    f = _Chain(chain, y, len(y.shape) if y.shape is not None else 4, 1)
    lo = f(np.float32(v - 2 * delta).astype(np.float64).reshape(-1, 1))
    hi = f(np.float32(v + 2 * delta).astype(np.float64).reshape(-1, 1))
    bad = int(np.count_nonzero(lo != hi))
    if bad:
        return False, f"{bad} of {S.size} sums lie within float32 rounding of a quantiser step"
    return True, "exact"
