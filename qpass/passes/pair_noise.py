"""pair_noise: a closed-form model of the rounding noise a Conv / Gemm -> [PRelu, MaxPool, layout] -> layer(s) pair
adds at the second layers' outputs, as a function of per-channel factors s (the first layer's output channel i
divided by s_i, the second layers' inputs from it multiplied), and the factors that minimise it.

Per-channel symmetric weight grids make the first layer's own rounding blind to s. What s moves:

- each activation tensor between the layers that gets one per-tensor grid (the first layer's output, a PRelu's
  output; MaxPool and layout ops keep their input's grid): its step is range(s) / steps with
  range(s) = max(0, max_i hi_i / s_i) - min(0, min_i lo_i / s_i); channel i's rounding noise, step^2 / 12 on the
  scaled tensor, is s_i^2 step^2 / 12 in the float network's units, times gain_i on the way (through a PRelu:
  the fraction of non-negative values plus slope^2 times the rest), times G_i = sum of the squared second-layer
  weights that read channel i (noise of separate elements adds up: a sum over the rows and the kernel taps);
- each second layer's weight grid, per output channel o: step d_o(s) = max_i m_oi s_i / qmax (m_oi the largest
  |w| of output o on the inputs of channel i), noise d_o^2 / 12 per weight, times E[x_r^2] / s_i^2 of the input it
  multiplies, summed over o and the inputs r.

Everything is measured once in float on the calibration samples (per-channel min / max, E[x^2], the fraction of
negative values); the search is greedy over s_i in powers of 2^(1/4) (the best single change, every channel's
candidates in one vectorised step, until none lowers the noise). No int8 model is built or run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.graph import topo_sort_nodes


@dataclass
class PairNoise:
    """The statistics the noise of one pair depends on; ``noise(s)`` and ``best()``."""
    #: per quantized activation tensor: (lo [C], hi [C], gain [C])
    grids: list = field(default_factory=list)
    #: [C]: sum of squared second-layer weights reading channel i
    g: np.ndarray | None = None
    #: per second layer: (m [O, C], e [C]): largest |w| per output and channel; sum of E[x^2] over its inputs
    seconds: list = field(default_factory=list)
    act_steps: float = 255.0
    w_qmax: float = 127.0
    #: the weight-grid terms count this much (the activation grids' noise is spatially white, the weights' is not:
    #: what reaches the model's outputs differs; candidates with several weightings are checked there)
    w_weight: float = 1.0

    def noise(self, s: np.ndarray) -> float:
        total = 0.0
        for lo, hi, gain in self.grids:
            rng = max(0.0, float((hi / s).max())) - min(0.0, float((lo / s).min()))
            total += (rng / self.act_steps) ** 2 / 12 * float((s * s * gain * self.g).sum())
        for m, e in self.seconds:
            d = (m * s[None, :]).max(axis=1) / self.w_qmax
            total += self.w_weight * float((d * d).sum()) / 12 * float((e / (s * s)).sum())
        return total

    def moves(self, s: np.ndarray, lev: np.ndarray) -> np.ndarray:
        """[C, L]: the noise with s_i set to lev_l, the other factors as in ``s`` (vectorised: the largest and
        second largest term of each max give the max without channel i)."""
        c = len(s)
        total = np.zeros((c, len(lev)))
        for lo, hi, gain in self.grids:
            h = _without_each(np.append(hi / s, 0.0))[:c]
            lw = -_without_each(np.append(-lo / s, 0.0))[:c]
            rng = np.maximum(h[:, None], hi[:, None] / lev) - np.minimum(lw[:, None], lo[:, None] / lev)
            base = float((s * s * gain * self.g).sum()) - s * s * gain * self.g
            w = base[:, None] + lev[None, :] ** 2 * (gain * self.g)[:, None]
            total += (rng / self.act_steps) ** 2 / 12 * w
        for m, e in self.seconds:
            ms = m * s[None, :]
            excl = _without_each_rows(ms)  # [O, C]
            ex = float((e / (s * s)).sum()) - e / (s * s)
            ev = ex[:, None] + e[:, None] / lev[None, :] ** 2  # [C, L]
            step = max(1, int(4e6 // max(1, m.shape[0] * len(lev))))
            for a in range(0, c, step):  # [O, chunk, L] at most 4e6 values
                d = np.maximum(excl[:, a:a + step, None], m[:, a:a + step, None] * lev[None, None, :])
                total[a:a + step] += self.w_weight * (d * d).sum(axis=0) / self.w_qmax ** 2 / 12 * ev[a:a + step]
        return total

    def best(self, span: float = 4.0, shrink_only: bool = False, moves: int = 0) -> np.ndarray:
        """Factors in [1/span, span] (powers of 2^(1/4); [1, span] with ``shrink_only``), greedily from s = 1: the
        one channel change that lowers the noise most, until none does (at most ``moves``, default 2 C)."""
        k = int(round(4 * np.log2(span)))
        lev = 2.0 ** (np.arange(0 if shrink_only else -k, k + 1) / 4.0)
        s = np.ones(len(self.g))
        current = self.noise(s)
        for _ in range(moves or 2 * len(s)):
            cand = self.moves(s, lev)
            i, j = np.unravel_index(int(np.argmin(cand)), cand.shape)
            if not cand[i, j] < current * (1 - 1e-9):
                break
            s[i], current = lev[j], float(cand[i, j])
        return s


def _without_each(v: np.ndarray) -> np.ndarray:
    """For each i, max_{j != i} v_j."""
    if len(v) < 2:
        return np.full(len(v), -np.inf)
    order = np.argpartition(-v, 1)[:2]
    first, second = v[order[0]], v[order[1]]
    if second > first:
        order, (first, second) = order[::-1], (second, first)
    out = np.full(len(v), first)
    out[order[0]] = second
    return out


def _without_each_rows(a: np.ndarray) -> np.ndarray:
    """[O, C]: for each row o and column i, max over the row's other columns (0 for a single column)."""
    if a.shape[1] < 2:
        return np.zeros_like(a)
    top = np.argmax(a, axis=1)
    first = a[np.arange(a.shape[0]), top]
    rest = a.copy()
    rest[np.arange(a.shape[0]), top] = -np.inf
    second = rest.max(axis=1)
    out = np.repeat(first[:, None], a.shape[1], axis=1)
    out[np.arange(a.shape[0]), top] = second
    return out


def noise_tensors(pair) -> list[str]:
    """The tensors ``pair_noise_stats`` reads: the first layer's output, each PRelu's output, the seconds' input."""
    ts = [pair.first.y] + [n.output[0] for n in pair.mids if n.op_type == "PRelu"] + [pair.seconds[0].x]
    return list(dict.fromkeys(ts))


def _matrix(b) -> np.ndarray | None:
    """A second layer's weight as [outputs, inputs, taps] (float64), or None for a layout this model does not
    cover (grouped Conv, MatMul on a weight of rank > 2)."""
    w = b.w.astype(np.float64)
    if b.op == "Conv":
        return None if b.groups > 1 else w.reshape(w.shape[0], w.shape[1], -1)
    if w.ndim != 2:
        return None
    return (w if b.op == "Gemm" and b.trans_b else w.T)[:, :, None]


def pair_noise_stats(pair, values: dict, slopes: dict, act_steps: float, w_qmax: float,
                     output_grid: bool = True) -> tuple[PairNoise | None, int]:
    """(the PairNoise of ``pair``, values per channel between the layers) from float ``values`` of
    ``noise_tensors(pair)`` (samples stacked on a new axis 0); ``slopes``: each PRelu's slope array by name.
    Without ``output_grid`` the first layer's output is not counted as a per-tensor grid (a later pass quantizes
    the PRelu's output straight from the layer). None where a second layer is not covered."""
    a = pair.first
    c = a.out_channels

    def reduce(v, fn, axis):  # per channel (channel axis ``axis``), in the values' own precision
        return fn(v, axis=tuple(i for i in range(v.ndim) if i != axis % v.ndim)).astype(np.float64)

    ax = 2 if a.op == "Conv" else -1
    y = values[a.y]
    rows = y.size // c
    prelus = [n for n in pair.mids if n.op_type == "PRelu"]
    st = PairNoise(g=np.zeros(c), act_steps=act_steps, w_qmax=w_qmax)
    if output_grid:
        gain = np.ones(c)
        if prelus:
            slope = np.broadcast_to(np.asarray(slopes[prelus[0].input[1]], np.float64).reshape(-1), (c,))
            neg = reduce(y < 0, np.mean, ax)
            gain = 1 - neg + slope ** 2 * neg
        st.grids.append((reduce(y, np.min, ax), reduce(y, np.max, ax), gain))
    for n in prelus:
        v = values[n.output[0]]
        st.grids.append((reduce(v, np.min, ax), reduce(v, np.max, ax), np.ones(c)))
    x = values[pair.seconds[0].x]
    for b, chan in zip(pair.seconds, pair.chan_of):
        w = _matrix(b)
        if w is None:
            return None, rows
        ex2 = reduce(np.square(x, dtype=np.float32), np.mean, 2 if b.op == "Conv" else -1)
        np.add.at(st.g, chan, (w * w).sum(axis=(0, 2)))
        m = np.zeros((c, w.shape[0]))
        np.maximum.at(m, chan, np.abs(w).max(axis=2).T)
        e = np.zeros(c)
        np.add.at(e, chan, ex2 * w.shape[2])
        st.seconds.append((m.T.copy(), e))
    return st, rows


def fake_quant_copy(model, tensors: list[str], dtype: int):
    """A copy of ``model`` in which whatever reads each of ``tensors`` reads it through QuantizeLinear ->
    DequantizeLinear (per tensor, element type ``dtype``) whose scale and zero point are graph inputs
    ``fq_inputs(t)``: one session measures any grid."""
    m = type(model)()
    m.CopyFrom(model)
    g = m.graph
    nodes = []
    for t in tensors:
        sc, zp = fq_inputs(t)
        q, dq = f"{t}__fq_q", f"{t}__fq_dq"
        g.input.extend([helper.make_tensor_value_info(sc, TensorProto.FLOAT, []),
                        helper.make_tensor_value_info(zp, dtype, [])])
        for n in g.node:
            for i, x in enumerate(n.input):
                if x == t:
                    n.input[i] = dq
        nodes += [helper.make_node("QuantizeLinear", [t, sc, zp], [q]),
                  helper.make_node("DequantizeLinear", [q, sc, zp], [dq])]
    g.node.extend(nodes)
    topo_sort_nodes(g)
    return m


def fq_inputs(t: str) -> tuple[str, str]:
    return f"{t}__fq_scale", f"{t}__fq_zp"


def fq_feed(t: str, lo: float, hi: float, qmin: int, qmax: int, np_dtype) -> dict:
    """The feeds of ``t``'s quantizer for the range [lo, hi] (widened to hold 0), as the min/max calibrator's grid."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    sc, z = fq_inputs(t)
    return {sc: np.array(scale, np.float32), z: np.array(zp, np_dtype)}
