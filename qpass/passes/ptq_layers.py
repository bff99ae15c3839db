"""What the weight-side post-training passes share (``equalize``, ``smoothquant``, ``adaround``,
``bias_correction``; their base class is in ``ptq_pass``): the linear layers of a graph as per-group weight matrices, their inputs as patch matrices,
the weight grid the quantizing pass will use, a probe that runs the model over calibration samples with chosen
weights fed at run time (one onnxruntime session for every weight update), and simulated quantization.

A layer's weight is seen as ``[G, M, K]``: G groups (Conv ``group``; 1 for Gemm / MatMul), M output channels per
group, K reduction elements per group (Conv: C/G x kernel, in ONNX weight order). Its input is seen as patches
``[G, P, K]`` (P rows: output positions x samples), so the layer's output is ``patches @ W^T`` per group.

The weight grid (``WeightGrid``) is the one the quantizing pass uses later: ``auto`` is quantize_qdq's int8
symmetric narrow-range grid, per output channel; any other spec is a ``qpass.formats`` format with a weight
granularity (``--weights sym:4``). The passes that need it take ``weights`` / ``granularity`` options, which
``QuantConfig`` fills from ``--weights`` / ``--per-tensor`` so they match the quantizer.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.errors import PipelineError
from qpass.formats import parse_format
from qpass.ir.samples import SampleSet
from qpass.passes.fakequant import weight_axes
from qpass.reference.im2col import geometry, im2col, windows
from .ptq_probe import CACHE_BYTES, Probe  # noqa: F401  (the passes import the probe from here)

AUTO_WEIGHTS = "int8_sym_narrow"
AUTO_ACTIVATIONS = "uint8"


# ------------------------------------------------------------------------------------------------ layers
@dataclass
class Layer:
    """A Conv / Gemm / MatMul with a constant float weight that only it reads."""

    node: onnx.NodeProto
    w: np.ndarray
    b: np.ndarray | None

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def attrs(self) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in self.node.attribute}

    @property
    def x(self) -> str:
        return self.node.input[0]

    @property
    def y(self) -> str:
        return self.node.output[0]

    @property
    def groups(self) -> int:
        return int(self.attrs.get("group", 1)) if self.op == "Conv" else 1

    @property
    def depthwise(self) -> bool:
        return self.op == "Conv" and self.groups > 1 and self.w.shape[1] == 1

    @property
    def out_channels(self) -> int:
        return self.w.shape[0] if self.op == "Conv" or (self.op == "Gemm" and self.trans_b) else self.w.shape[-1]

    @property
    def trans_b(self) -> bool:
        return bool(self.attrs.get("transB", 0))

    def matrices(self, w: np.ndarray | None = None) -> np.ndarray:
        """The weight as [G, M, K]."""
        w = self.w if w is None else w
        if self.op == "Conv":
            g = self.groups
            return w.reshape(g, w.shape[0] // g, -1)
        return (w if self.op == "Gemm" and self.trans_b else w.T)[None]

    def weight(self, mats: np.ndarray) -> np.ndarray:
        """The inverse of ``matrices``."""
        if self.op == "Conv":
            return mats.reshape(self.w.shape)
        m = mats[0]
        return m if self.op == "Gemm" and self.trans_b else m.T

    def in_channel_axis(self) -> int:
        """The axis of the weight that holds input channels."""
        return 1 if self.op == "Conv" else (1 if self.trans_b else 0) if self.op == "Gemm" else self.w.ndim - 2

    def out_channel_axis(self) -> int:
        return weight_axes(self.op, self.attrs, self.w.ndim)[0]

    def patches(self, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The input ``x`` (samples stacked on axis 0) as [G, P, K]; ``rows`` picks rows of the full patch matrix."""
        if self.op != "Conv":
            p = x.reshape(-1, x.shape[-1])
            return (p if rows is None else p[rows])[None]
        n_sp = self.w.ndim - 2
        x = x.reshape((-1,) + x.shape[-(n_sp + 1):])
        a = self.attrs
        kernel = list(self.w.shape[2:])
        begin, end, out = geometry(x.shape[2:], kernel, a.get("strides"), a.get("dilations"), a.get("pads"),
                                   _text(a.get("auto_pad", "NOTSET")))
        if rows is None:
            p = im2col(x.astype(np.float32), kernel, a.get("strides"), a.get("dilations"), begin, end, out)
            p = p.reshape(-1, p.shape[-1])
        else:  # gather the chosen windows from a view: no full patch matrix
            p = _window_rows(x, kernel, a.get("strides"), a.get("dilations"), begin, end, out, rows)
        g = self.groups
        return p.reshape(p.shape[0], g, -1).transpose(1, 0, 2)

    def rows(self, x: np.ndarray) -> int:
        """How many patch rows ``x`` (samples stacked on axis 0) has (output positions x samples)."""
        if self.op != "Conv":
            return int(np.prod(x.shape[:-1]))
        n_sp = self.w.ndim - 2
        a = self.attrs
        _, _, out = geometry(x.shape[-n_sp:], list(self.w.shape[2:]), a.get("strides"), a.get("dilations"),
                             a.get("pads"), _text(a.get("auto_pad", "NOTSET")))
        return int(np.prod(x.shape[:-(n_sp + 1)])) * int(np.prod(out))

    def forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
        """The layer's output on ``x`` (samples stacked) with weight ``w`` and bias ``b``, channels last for
        Gemm / MatMul and channels on axis 1 for Conv (shape [N, M, *out])."""
        p = self.patches(x)
        y = np.matmul(p, self.matrices(w).transpose(0, 2, 1))  # [G, P, M/G]
        y = y.transpose(1, 0, 2).reshape(y.shape[1], -1)
        if b is not None:
            y = y + b
        if self.op != "Conv":
            return y.reshape(x.shape[:-1] + (y.shape[-1],))
        n_sp = self.w.ndim - 2
        xs = x.reshape((-1,) + x.shape[-(n_sp + 1):])
        a = self.attrs
        _, _, out = geometry(xs.shape[2:], list(self.w.shape[2:]), a.get("strides"), a.get("dilations"),
                             a.get("pads"), _text(a.get("auto_pad", "NOTSET")))
        return np.moveaxis(y.reshape((xs.shape[0],) + tuple(out) + (y.shape[-1],)), -1, 1)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def find_layers(model: onnx.ModelProto, op_types=("Conv", "Gemm", "MatMul")) -> list[Layer]:
    """Every Conv / Gemm / MatMul of the main graph, in graph order, whose weight (and bias) is a float initializer
    read by no other node; Gemm only with transA = 0 and alpha = beta = 1, MatMul only with a 2-D weight. An
    initializer with the same contents as another counts as read by the other's readers too: the quantizer stores
    such copies once, so a rewrite of one copy alone would store the array twice."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    readers: dict[str, int] = {}
    for n in g.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    _count_copies(g, readers)
    outputs = {o.name for o in g.output}
    layers = []
    for n in g.node:
        if n.op_type not in op_types or len(n.input) < 2 or n.input[1] not in inits or readers[n.input[1]] != 1:
            continue
        if n.input[0] in inits or n.input[1] in outputs:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if w.dtype != np.float32:
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in n.attribute}
        if n.op_type == "Gemm" and (a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0):
            continue
        if n.op_type == "MatMul" and w.ndim != 2 or n.op_type == "Conv" and w.ndim not in (3, 4):
            continue
        b = None
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in inits or readers[n.input[2]] != 1:
                continue
            b = numpy_helper.to_array(inits[n.input[2]])
            if b.ndim != 1:
                continue
        layers.append(Layer(n, w, b))
    return layers


def _count_copies(g: onnx.GraphProto, readers: dict[str, int]) -> None:
    """Add to each read initializer's reader count those of the initializers with the same dims, type and bytes."""
    shaped: dict[tuple, list] = {}
    for i in g.initializer:
        if i.name in readers and i.HasField("raw_data"):
            shaped.setdefault((tuple(i.dims), i.data_type), []).append(i)
    for same_shape in shaped.values():  # only same-shaped tensors' bytes are read, and compared whole only where
        by_ends: dict[tuple, list] = {}  # both ends agree (hashing every byte: 0.15 s a call on a 69 MB BERT)
        for i in same_shape if len(same_shape) > 1 else ():
            raw = i.raw_data
            by_ends.setdefault((raw[:64], raw[-64:]), []).append((i.name, raw))
        for group in by_ends.values():
            while len(group) > 1:
                same = [n for n, r in group if r == group[0][1]]
                group = [(n, r) for n, r in group if n not in same]
                if len(same) > 1:
                    total = sum(readers[n] for n in same)
                    for n in same:
                        readers[n] = total


def set_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))
            return
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))


def store_layer(model: onnx.ModelProto, layer: Layer, w: np.ndarray, b: np.ndarray | None) -> None:
    """Write a layer's new weight (and bias; a layer without one gets one) into ``model``."""
    set_initializer(model, layer.node.input[1], w)
    layer.w = np.asarray(w, np.float32)
    if b is None:
        return
    if len(layer.node.input) < 3 or not layer.node.input[2]:
        name = _fresh(model, layer.node.input[1] + "_bias")
        while len(layer.node.input) < 3:
            layer.node.input.append("")
        layer.node.input[2] = name
    set_initializer(model, layer.node.input[2], b)
    layer.b = np.asarray(b, np.float32)


def _fresh(model: onnx.ModelProto, base: str) -> str:
    taken = {i.name for i in model.graph.initializer} | {t for n in model.graph.node for t in n.output}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


# ------------------------------------------------------------------------------------------------ statistics
@dataclass
class Stats:
    """Second moments of one layer's patches: A = E[x~ x~^T], B = E[x~ x^T], D = E[x x^T] ([G, K, K])."""

    A: np.ndarray
    B: np.ndarray
    D: np.ndarray
    #: patch rows the moments were taken over
    rows: int = 0

    @classmethod
    def of(cls, pq: np.ndarray, pf: np.ndarray, shrink: bool = False) -> "Stats":
        """From patches [G, P, K] of the quantized-model and float inputs; ``shrink`` pulls A and B towards their
        diagonals by K / (K + P) (fewer rows than reduction elements would otherwise be fitted exactly)."""
        n = max(pq.shape[1], 1)
        if pq is pf:  # the float model's inputs on both sides: one product
            a = gram(pq, pq, n)
            b, d = a.copy(), a.copy()
        else:
            a, b, d = gram(pq, pq, n), gram(pq, pf, n), gram(pf, pf, n)
        if shrink:
            k = pq.shape[2]
            alpha = k / (k + n)
            eye = np.eye(k)[None]
            a, b = (1 - alpha) * a + alpha * a * eye, (1 - alpha) * b + alpha * b * eye
        return cls(a, b, d, n)

    def channel_loss(self, wq: np.ndarray, w: np.ndarray) -> np.ndarray:
        """E (wq x~ - w x)^2 per output channel ([G, M]; wq, w: [G, M, K])."""
        a = np.sum(np.matmul(wq, self.A) * wq, axis=2)
        b = np.sum(np.matmul(wq, self.B) * w, axis=2)
        d = np.sum(np.matmul(w, self.D) * w, axis=2)
        return np.maximum(a - 2 * b + d, 0.0)

    def loss(self, wq: np.ndarray, w: np.ndarray) -> float:
        """E || wq x~ - w x ||^2 summed over output channels (wq, w: [G, M, K])."""
        return float(self.channel_loss(wq, w).sum())


def gram(p: np.ndarray, q: np.ndarray, n: int) -> np.ndarray:
    """p^T q / n per group ([G, P, K] x [G, P, K] -> [G, K, K], float64), in float32 BLAS."""
    p32, q32 = np.asarray(p, np.float32), np.asarray(q, np.float32)
    if p.shape[0] <= 8:
        return np.stack([np.ascontiguousarray(p32[i].T) @ np.ascontiguousarray(q32[i]) for i in range(p.shape[0])]
                        ).astype(np.float64) / n
    return np.einsum("gpk,gpl->gkl", p32, q32, optimize=True).astype(np.float64) / n


# ------------------------------------------------------------------------------------------------ grids
@dataclass
class Rounded:
    """A weight on its grid: real = scale * (code - zero_point), codes in [qmin, qmax] (all in weight shape)."""

    values: np.ndarray
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        return ((codes - self.zero_point) * self.scale.astype(np.float64)).astype(np.float32)


class WeightGrid:
    """The weight grid of the quantizing pass: a format spec (``auto``: quantize_qdq's int8) and a granularity."""

    def __init__(self, spec: str = "auto", granularity: str = "channel"):
        self.spec = AUTO_WEIGHTS if spec in (None, "auto") else spec
        self.granularity = granularity
        try:
            self.fmt = parse_format(self.spec)
        except Exception as exc:
            raise PipelineError(f"weights {spec!r}: {exc}") from None

    def fmt_for(self, layer: Layer, w: np.ndarray):
        return self.fmt.for_weight(self.granularity, *weight_axes(layer.op, layer.attrs, w.ndim))

    def fake(self, layer: Layer, w: np.ndarray) -> np.ndarray:
        """``w`` quantized and dequantized (round to nearest)."""
        return np.asarray(self.fmt_for(layer, w).quantize(np.asarray(w, np.float64)).values, np.float32)

    def rounded(self, layer: Layer, w: np.ndarray) -> Rounded | None:
        """``w`` on its integer grid, or None for formats without one (powers of two, small floats, binary)."""
        fmt = self.fmt_for(layer, w)
        res = fmt.quantize(np.asarray(w, np.float64))
        grid = fmt.weight_grid(res, w.shape) if fmt.word_width is not None else None
        if grid is None or grid.bipolar or res.codes is None:
            return None
        zp = np.broadcast_to(0 if res.zero_point is None else res.zero_point, w.shape).astype(np.float64)
        return Rounded(np.asarray(res.values, np.float32), res.codes.astype(np.float64),
                       np.broadcast_to(res.scale, w.shape).astype(np.float32), zp, grid.qmin, grid.qmax)

    def keeps(self, layer: Layer, w: np.ndarray, codes: np.ndarray) -> bool:
        """Does quantizing ``w`` (a weight written as ``dequantize(codes)``) give back exactly ``codes``?"""
        r = self.rounded(layer, w)
        return r is not None and np.array_equal(r.codes, codes)


def fake_activation(x: np.ndarray, spec: str, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """``x`` quantized per tensor on format ``spec`` (``auto``: uint8) over [lo, hi] (default: its own range)."""
    fmt = parse_format(AUTO_ACTIVATIONS if spec in (None, "auto") else spec)
    lo = float(np.min(x)) if lo is None else lo
    hi = float(np.max(x)) if hi is None else hi
    grid = fmt.quant_params(lo, hi)
    if grid is None:
        return np.asarray(fmt(np.asarray(x, np.float64)), np.float32)
    s, z = float(np.asarray(grid.scale)), float(np.asarray(grid.zero_point))
    q = np.clip(np.round(x / s) + z, grid.qmin, grid.qmax)
    return ((q - z) * s).astype(np.float32)


# ------------------------------------------------------------------------------------------------ probing
def _window_rows(x: np.ndarray, kernel, strides, dilations, begin, end, out, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the patch matrix of ``x`` [N, C, *spatial] (float32, zero padding, each row ordered
    (c, k1, k2, ...) like ``im2col``'s), gathered from a channels-last copy: each window row then copies C
    contiguous values at a time, not C strided ones (mtcnn-onet's 3x3 x 32-channel patches: 3.5 -> 1.9 ms for 4096
    rows)."""
    n = len(kernel)
    strides, dilations = list(strides or [1] * n), list(dilations or [1] * n)
    if min(list(begin) + list(end)) < 0:  # not a convolution's geometry: the plain strided gather
        v = windows(x.astype(np.float32), kernel, strides, dilations, begin, end, out)
        at = np.unravel_index(rows, (x.shape[0],) + tuple(out))
        return v[(at[0], slice(None)) + tuple(at[1:])].reshape(len(rows), -1)
    sp = x.shape[2:]
    size = [max(sp[i] + begin[i] + end[i], (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1)
            for i in range(n)]
    xl = np.zeros((x.shape[0], *size, x.shape[1]), np.float32)
    xl[(slice(None),) + tuple(slice(begin[i], begin[i] + sp[i]) for i in range(n))] = np.moveaxis(x, 1, -1)
    st = xl.strides
    v = np.lib.stride_tricks.as_strided(
        xl, (x.shape[0], *out, *kernel, x.shape[1]),
        (st[0],) + tuple(st[1 + i] * strides[i] for i in range(n)) + tuple(st[1 + i] * dilations[i] for i in range(n))
        + (st[-1],), writeable=False)
    g = v[np.unravel_index(rows, (x.shape[0],) + tuple(out))]  # [rows, *kernel, C]
    return np.moveaxis(g, -1, 1).reshape(len(rows), -1)


def blas_threads(n: int):
    """A context limiting numpy's BLAS to ``n`` threads: OpenBLAS spinning on more threads than the machine has
    free cores is 50x slower on the small matrix products these passes do (8192 x 144 Gram matrix: 0.39 s shared vs
    7 ms on one thread, measured on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency of qpass
        return contextlib.nullcontext()
    return threadpool_limits(limits=max(int(n), 1), user_api="blas")


def sample_rows(total: int, count: int, seed: int = 0) -> np.ndarray | None:
    """Up to ``count`` of ``total`` patch rows (sorted, seeded), or None for all of them."""
    if total <= count:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def split_samples(samples: SampleSet, count: int, holdout: float) -> tuple[SampleSet, SampleSet | None]:
    """(fit, check): the first ``count`` samples, the last ``holdout`` fraction of them kept apart."""
    n = min(len(samples), count)
    k = int(round(n * holdout)) if n >= 4 else 0
    fit = samples.subset(slice(0, n - k))
    return fit, (samples.subset(slice(n - k, n)) if k else None)
