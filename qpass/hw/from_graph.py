"""From a dataflow partition (an ONNX model of streamable integer nodes) to hardware layer descriptions.

``build(partition_model)`` returns a ``DataflowGraph``: one ``HwLayer`` per hardware unit, each carrying its
``qpass.hw.layers`` description (what the folding and FIFO models read) and everything code generation
needs (weights in stream order, thresholds, element types from exact integer ranges, geometry), the streams
between them (element width, signedness, stream order), and the partition's input and output streams.

Mapping (FINN's, with qpass' stream-order bookkeeping):

- Conv (group 1) -> SlidingWindow (unless 1x1, stride 1, no padding) + MVTU; Gemm / MatMul -> MVTU. A
  MultiThreshold reading only the accumulator is fused into the MVTU (``thresholds`` > 0); otherwise the MVTU
  streams its exact accumulator (e.g. into the float head on the host).
- depthwise Conv -> SlidingWindow (depthwise window order) + VVAU; MaxPool with stride == kernel -> Pool("max");
  other MaxPools -> SlidingWindow + window maximum (a VVAU without weights); ReduceSum over H, W ->
  Pool("global_avg") (the sum; the division is in the next thresholds).
- MultiThreshold -> Thresholding; Mul / Add / Sub by integer constants -> ChannelwiseOp; Add / Sub of two streams
  -> AddStreams (a Mul by an integer scalar feeding only the Add is fused as that input's factor); Concat ->
  Concat; layout ops -> nothing (the stream order changes, consumers absorb it).

Folding (``fold``) uses ``fold_for_target`` (a frame-rate target, fewest LUTs) or ``fold_for_budget`` (fastest
design fitting a device), then ``fifo_depths`` sizes the FIFOs with ``size_fifos``; ``report_table`` prints the
per-layer table (folding, cycles, resources, types, FIFO depths).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import QpassError
from qpass.analysis.intinfo import const, int_range, signed_bits
from . import cost_models as cm
from .fifo_sim import FifoResult, size_fifos
from .folding import FoldingResult, evaluate, fold_for_budget, fold_for_target
from .layers import (MVTU, AddStreams, ChannelwiseOp, Concat, Layer, Pool, Resources, SlidingWindow,
                     Thresholding)
from .partition import (_attr, _data_inputs, _mt_axis, _sample_shape, analyse, channel_slots, natural_order,
                        nhwc_order, output_order, vector_perm)


# ------------------------------------------------------------------------------------ extra layer kind

@dataclass(frozen=True)
class VVAU(MVTU):
    """Vector-vector unit: a depthwise convolution (``reduce="dot"``, per-channel weights) or a window maximum
    (``reduce="max"``) over ``kernel_elems`` window positions of ``channels`` channels at ``pixels`` output pixels,
    PE channels per word, fed by a depthwise-ordered SlidingWindow. For the shared cycle and FIFO models it is
    the MVTU whose loop nest it runs (NF = 1 row fold, SF = kernel_elems window steps per channel fold): MW =
    kernel_elems * PE, MH = SIMD = PE, num_vectors = pixels * channels / PE; its resources are those of an MVTU
    with SIMD 1 and PE lanes (dot) or of PE comparators (max)."""

    channels: int = 1
    kernel_elems: int = 1
    pixels: int = 1
    reduce: str = "dot"
    kind: ClassVar[str] = "VVAU"

    def __post_init__(self):
        if self.channels % self.pe:
            raise QpassError(f"{self.name}: PE={self.pe} must divide channels={self.channels}")
        set_ = object.__setattr__
        set_(self, "mw", self.kernel_elems * self.pe)
        set_(self, "mh", self.pe)
        set_(self, "simd", self.pe)
        set_(self, "num_vectors", self.pixels * self.channels // self.pe)
        super().__post_init__()

    @property
    def fold(self) -> tuple[int, int]:
        return (self.pe, 1)

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.channels)

    def legal_simd(self) -> list[int]:
        return [1]

    def resources(self) -> Resources:
        if self.reduce == "max":
            return Resources(lut=cm.pool_lut("max", self.channels, 1, 1, self.pe, self.a_bits))
        a = (self.kernel_elems, self.channels, self.pe, 1, self.w_bits)
        return Resources(
            lut=cm.mvtu_lut(*a, self.a_bits, a_signed=self.a_signed, thresholds=self.thresholds,
                            acc_bits=self.acc_bits, ram_style=self.ram_style,
                            ram_style_thresholds=self.ram_style_thresholds, res_type=self.res_type),
            bram18=cm.mvtu_bram18(*a, self.ram_style), uram=cm.mvtu_uram(*a, self.ram_style),
            dsp=cm.mvtu_dsp(self.pe, 1, self.w_bits, self.a_bits, self.res_type))


# ------------------------------------------------------------------------------------------ data types

@dataclass(frozen=True)
class IntType:
    bits: int
    signed: bool

    @classmethod
    def of_range(cls, lo, hi) -> "IntType":
        b, s = signed_bits(lo, hi)
        return cls(int(b), bool(s))

    @property
    def cpp(self) -> str:
        return f"ap_int<{self.bits}>" if self.signed else f"ap_uint<{self.bits}>"

    @property
    def name(self) -> str:
        return f"{'INT' if self.signed else 'UINT'}{self.bits}"

    def lo(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    def hi(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


# ------------------------------------------------------------------------------------------- structures

@dataclass
class Stream:
    """A stream of one tensor: ``elems`` per frame of ``dtype``; stream position j holds per-sample element
    ``order[j]`` of ``tensor`` (shape ``shape`` without the batch axis)."""

    name: str
    tensor: str
    dtype: IntType
    shape: tuple
    order: np.ndarray
    producer: str | None = None  # layer name, None for a partition input
    consumers: list[tuple[str, int]] = field(default_factory=list)  # (layer, port)

    @property
    def elems(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class HwLayer:
    name: str
    kind: str  # swg, mvtu, vvau, window_max, maxpool, global_sum, threshold, channelwise, add, concat
    layer: Layer
    inputs: list[str]  # stream names, by port
    output: str  # stream name
    nodes: list[str]  # ONNX nodes implemented
    params: dict = field(default_factory=dict)

    @property
    def in_fold(self) -> list[int]:
        """Elements per input word, per port."""
        L = self.layer
        return [e // w for e, w in zip(L.in_elems(), L.in_words())]

    @property
    def out_fold(self) -> int:
        return self.layer.out_elems() // self.layer.out_words()


@dataclass
class DataflowGraph:
    name: str
    layers: list[HwLayer]
    streams: dict[str, Stream]
    inputs: list[str]  # partition input stream names (= tensor names)
    outputs: list[tuple[str, str]]  # (tensor name, stream name)
    notes: list[str] = field(default_factory=list)
    output_orders: dict[str, np.ndarray] = field(default_factory=dict)
    folding: FoldingResult | None = None
    fifos: FifoResult | None = None
    fifo_notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> HwLayer:
        for l in self.layers:
            if l.name == name:
                return l
        raise KeyError(name)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(producer layer, consumer layer) per layer input port, in port order (graph inputs omitted)."""
        out = []
        for l in self.layers:
            for s in l.inputs:
                p = self.streams[s].producer
                if p is not None:
                    out.append((p, l.name))
        return out

    def cost_layers(self) -> list[Layer]:
        return [l.layer for l in self.layers]

    def apply(self, layers: list[Layer]) -> None:
        by = {L.name: L for L in layers}
        for l in self.layers:
            l.layer = by[l.name]


def c_ident(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^0-9A-Za-z_]", "_", name).strip("_") or "layer"
    base = re.sub(r"_+", "_", base)
    if base[0].isdigit():
        base = "L" + base
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


# ---------------------------------------------------------------------------------------------- build

class _Builder:
    def __init__(self, model: onnx.ModelProto, name: str):
        self.an = analyse(model)
        self.graph = self.an.graph
        self.name = name
        self.taken: set[str] = set()
        self.layers: list[HwLayer] = []
        self.streams: dict[str, Stream] = {}
        self.stream_of: dict[str, str] = {}  # tensor -> stream name (aliases through layout ops)
        self.orders: dict[str, np.ndarray] = {}
        self.fused: set[str] = set()
        self.fused_muls: set[str] = set()
        self.out_orders: dict[str, np.ndarray] = {}
        self.notes: list[str] = []
        self.memo: dict = dict(self.an.memo)

    # -- helpers ------------------------------------------------------------------------------------
    def rng(self, t: gs.Tensor):
        r = int_range(t, self.memo)
        if r is None:
            raise QpassError(f"{t.name}: not an integer tensor")
        return r

    def dtype(self, t: gs.Tensor) -> IntType:
        return IntType.of_range(*self.rng(t))

    def in_stream(self, t: gs.Tensor) -> Stream:
        return self.streams[self.stream_of[t.name]]

    def new_stream(self, tensor: str, dtype: IntType, shape, order, producer, name=None) -> Stream:
        sname = name or tensor
        s = Stream(sname, tensor, dtype, tuple(shape), np.asarray(order, np.int64), producer)
        self.streams[sname] = s
        return s

    def add_layer(self, kind, base, layer_fn, inputs: list[str], out_tensor, out_dtype, out_shape, out_order,
                  nodes, params, out_name=None) -> HwLayer:
        name = c_ident(base, self.taken)
        layer = layer_fn(name)
        out = self.new_stream(out_tensor, out_dtype, out_shape, out_order, name, out_name)
        hl = HwLayer(name, kind, layer, list(inputs), out.name, list(nodes), params)
        for p, s in enumerate(inputs):
            self.streams[s].consumers.append((name, p))
        self.layers.append(hl)
        return hl

    def readers(self, t: gs.Tensor) -> list[gs.Node]:
        return list(t.outputs)

    def sole_reader(self, t: gs.Tensor) -> gs.Node | None:
        r = self.readers(t)
        if len(r) == 1 and t.name not in self.graph_outputs:
            return r[0]
        return None

    # -- main ---------------------------------------------------------------------------------------
    def run(self) -> DataflowGraph:
        g = self.graph
        self.graph_outputs = {t.name for t in g.outputs}
        for d in self.an.decisions.values():
            if d.kind is None:
                raise QpassError(f"partition {self.name}: node {d.node!r} ({d.op}) cannot be streamed: {d.reason}")
        inputs = []
        for t in g.inputs:
            shape = _sample_shape(t)
            if shape is None:
                raise QpassError(f"partition input {t.name!r} has no static per-sample shape")
            s = self.new_stream(t.name, self.dtype(t), shape, natural_order(shape), None)
            self.stream_of[t.name] = s.name
            inputs.append(s.name)
        for node in g.nodes:  # a Mul by an integer scalar read only by an Add becomes that Add's input factor
            if self.an.decisions[node.name].kind == "channelwise" and node.op == "Mul":
                r = self.sole_reader(node.outputs[0])
                cst = next((i for i in node.inputs if isinstance(i, gs.Constant)), None)
                if r is not None and self.an.decisions[r.name].kind == "add" and cst is not None \
                        and np.asarray(cst.values).size == 1:
                    self.fused_muls.add(node.name)
        for node in g.nodes:
            if node.name in self.fused or node.name in self.fused_muls:
                continue
            kind = self.an.decisions[node.name].kind
            getattr(self, "_" + kind)(node)
        outputs = []
        for t in g.outputs:
            if self.stream_of[t.name] in inputs:
                raise QpassError(f"partition output {t.name!r} is a partition input (nothing computed)")
            outputs.append((t.name, self.stream_of[t.name]))
            self.out_orders[t.name] = self._tensor_order(t)
        for sname in inputs:
            if not self.streams[sname].consumers and sname not in {s for _, s in outputs}:
                self.notes.append(f"partition input {sname!r} is not read")
        return DataflowGraph(self.name, self.layers, self.streams, inputs, outputs, self.notes,
                             output_orders=self.out_orders)

    # -- layout ops -----------------------------------------------------------------------------------
    def _reorder(self, node):
        x = _data_inputs(node)[0]
        order, why = output_order(node, "reorder", [self._tensor_order(x)])
        if order is None:
            raise QpassError(f"{node.name}: {why}")
        out = node.outputs[0]
        self.stream_of[out.name] = self.stream_of[x.name]
        self.orders[out.name] = order

    def _tensor_order(self, t: gs.Tensor) -> np.ndarray:
        """Order of tensor ``t`` along its stream (differs from the stream's own after layout ops)."""
        if t.name in self.orders:
            return self.orders[t.name]
        return self.in_stream(t).order

    # -- linear layers --------------------------------------------------------------------------------
    def _fused_threshold(self, node: gs.Node, acc: gs.Tensor, channel_axis: int):
        mt = self.sole_reader(acc)
        if mt is None or mt.op != "MultiThreshold" or self.an.decisions[mt.name].kind != "threshold":
            return None
        if _mt_axis(mt, len(acc.shape)) != channel_axis:
            return None
        return mt

    def _threshold_params(self, mt: gs.Node, channels: int):
        thr = np.asarray(const(mt.inputs[1]), np.float64)
        if thr.shape[0] == 1 and channels > 1:
            thr = np.repeat(thr, channels, axis=0)
        return dict(thresholds=thr.astype(np.int64) if np.all(thr == np.round(thr)) else thr,
                    out_scale=int(round(float(_attr(mt, "out_scale", 1.0)))),
                    out_bias=int(round(float(_attr(mt, "out_bias", 0.0)))))

    @staticmethod
    def _int_thresholds(thr: np.ndarray) -> np.ndarray:
        """acc >= t  <=>  acc >= ceil(t) for integer acc."""
        return np.ceil(np.asarray(thr, np.float64)).astype(np.int64)

    def _acc_type(self, w: np.ndarray, a_lo: float, a_hi: float) -> tuple[IntType, tuple[int, int]]:
        """Accumulator type holding every partial sum (terms of either sign counted separately) and the exact
        range of the final sums; w: (MH, MW)."""
        p, q = w * a_lo, w * a_hi
        tlo, thi = np.minimum(p, q), np.maximum(p, q)
        lo_full, hi_full = tlo.sum(axis=1), thi.sum(axis=1)
        lo_part = np.minimum(tlo, 0).sum(axis=1)
        hi_part = np.maximum(thi, 0).sum(axis=1)
        return IntType.of_range(min(0.0, lo_part.min()), max(0.0, hi_part.max())), \
            (int(lo_full.min()), int(hi_full.max()))

    def _mvtu(self, node: gs.Node):
        x = _data_inputs(node)[0]
        xs = _sample_shape(x)
        src = self.in_stream(x)
        xo = self._tensor_order(x)
        w = np.asarray(const(node.inputs[1]), np.float64)
        acc = node.outputs[0]
        ys = _sample_shape(acc)
        nodes = [node.name]
        a_lo, a_hi = self.rng(x)
        in_t = src.dtype
        if node.op == "Conv":
            m, c, kh, kw = w.shape
            wm = w.transpose(0, 2, 3, 1).reshape(m, kh * kw * c)  # columns in (ky, kx, c) window order
            k = (kh, kw)
            s = tuple(int(v) for v in (_attr(node, "strides") or [1, 1]))
            pad = int((_attr(node, "pads") or [0])[0])
            ch_axis, nvec = 0, ys[1] * ys[2]
            stream_in = src.name
            if k != (1, 1) or s != (1, 1) or pad:
                swg = self._swg(node, src, xs, k, s, pad, False, 0)
                stream_in = swg.output
            out_order = nhwc_order(ys)
        else:
            if node.op == "Gemm":
                wt = w.T if int(_attr(node, "transB", 0)) else w
            else:
                wt = w
            wm = wt.T  # (MH, MW)
            nvec = int(np.prod(xs[:-1], dtype=np.int64)) if len(xs) > 1 else 1
            perm = vector_perm(xo, nvec)
            if perm is None:
                raise QpassError(f"{node.name}: input stream does not hold whole vectors")
            wm = wm[:, perm]
            ch_axis = len(ys) - 1
            stream_in = src.name
            out_order = np.arange(int(np.prod(ys)), dtype=np.int64)
        mh, mw = wm.shape
        w_t = IntType.of_range(wm.min(), wm.max())
        acc_t, (f_lo, f_hi) = self._acc_type(wm, a_lo, a_hi)
        mt = self._fused_threshold(node, acc, ch_axis)
        params = dict(weights=wm.astype(np.int64), w_type=w_t, acc_type=acc_t, in_type=in_t, num_vectors=nvec)
        out_t, out_tensor, nthr = self._output_stage(mt, mh, acc, f_lo, f_hi, params, nodes)
        acc_bits = signed_bits(f_lo, f_hi)[0]
        layer = lambda nm: MVTU(nm, mw=mw, mh=mh, num_vectors=nvec, w_bits=w_t.bits, a_bits=in_t.bits,  # noqa: E731
                                w_signed=w_t.signed, a_signed=in_t.signed, thresholds=nthr, acc_bits=acc_bits)
        self.add_layer("mvtu", node.name, layer, [stream_in], out_tensor.name, out_t, ys, out_order, nodes, params)
        self.stream_of[out_tensor.name] = out_tensor.name

    def _swg(self, node, src: Stream, xs, k, s, pad, depthwise: bool, pad_value: int) -> HwLayer:
        c, ih, iw = xs
        oh = (ih + 2 * pad - k[0]) // s[0] + 1
        ow = (iw + 2 * pad - k[1]) // s[1] + 1
        out_shape = (oh * ow, k[0] * k[1] * c)
        params = dict(channels=c, ifm=(ih, iw), kernel=k, stride=s, pad=pad, depthwise=depthwise,
                      pad_value=int(pad_value), ofm=(oh, ow))
        layer = lambda nm: SlidingWindow(nm, ifm_ch=c, ifm_dim=(ih, iw), kernel=k, stride=s, pad=pad,  # noqa: E731
                                         a_bits=src.dtype.bits)
        sname = f"{src.name}__swg_{node.name}"
        return self.add_layer("swg", f"swg_{node.name}", layer, [src.name], sname, src.dtype, out_shape,
                              np.arange(int(np.prod(out_shape)), dtype=np.int64), [node.name], params, sname)

    def _vvau(self, node: gs.Node):
        x = _data_inputs(node)[0]
        xs = _sample_shape(x)
        src = self.in_stream(x)
        w = np.asarray(const(node.inputs[1]), np.float64)  # (C, 1, KH, KW)
        c, _, kh, kw = w.shape
        k = (kh, kw)
        s = tuple(int(v) for v in (_attr(node, "strides") or [1, 1]))
        pad = int((_attr(node, "pads") or [0])[0])
        acc = node.outputs[0]
        ys = _sample_shape(acc)
        swg = self._swg(node, src, xs, k, s, pad, True, 0)
        wm = w.reshape(c, kh * kw)
        a_lo, a_hi = self.rng(x)
        w_t = IntType.of_range(wm.min(), wm.max())
        acc_t, (f_lo, f_hi) = self._acc_type(wm, a_lo, a_hi)
        nodes = [node.name]
        params = dict(weights=wm.astype(np.int64), w_type=w_t, acc_type=acc_t, in_type=src.dtype)
        mt = self._fused_threshold(node, acc, 0)
        out_t, out_tensor, nthr = self._output_stage(mt, c, acc, f_lo, f_hi, params, nodes)
        acc_bits = signed_bits(f_lo, f_hi)[0]
        layer = lambda nm: VVAU(nm, channels=c, kernel_elems=kh * kw, pixels=ys[1] * ys[2], w_bits=w_t.bits,  # noqa
                                a_bits=src.dtype.bits, w_signed=w_t.signed, a_signed=src.dtype.signed,
                                thresholds=nthr, acc_bits=acc_bits)
        self.add_layer("vvau", node.name, layer, [swg.output], out_tensor.name, out_t, ys, nhwc_order(ys), nodes,
                       params)
        self.stream_of[out_tensor.name] = out_tensor.name

    def _output_stage(self, mt, channels, acc, f_lo, f_hi, params: dict, nodes: list):
        """A matrix layer's output: the fused MultiThreshold ``mt`` when there is one, else the raw accumulator.
        Fills ``params`` (thresholds, out_scale/out_bias, out_type) and ``nodes``; returns (type, tensor, count)."""
        if mt is None:
            out_t, out_tensor, nthr = IntType.of_range(f_lo, f_hi), acc, 0
        else:
            tp = self._threshold_params(mt, channels)
            thr = self._int_thresholds(tp["thresholds"])
            params.update(thresholds=thr, out_scale=tp["out_scale"], out_bias=tp["out_bias"])
            self.fused.add(mt.name)
            nodes.append(mt.name)
            out_t, out_tensor, nthr = self.dtype(mt.outputs[0]), mt.outputs[0], thr.shape[1]
        params["out_type"] = out_t
        return out_t, out_tensor, nthr

    # -- pools ------------------------------------------------------------------------------------------
    def _pool_io(self, node: gs.Node):
        """(input sample shape, input stream, output tensor, output sample shape) of a single-input pool."""
        x = _data_inputs(node)[0]
        y = node.outputs[0]
        return _sample_shape(x), self.in_stream(x), y, _sample_shape(y)

    def _maxpool(self, node: gs.Node):
        xs, src, y, ys = self._pool_io(node)
        k = tuple(int(v) for v in _attr(node, "kernel_shape"))
        params = dict(channels=xs[0], ifm=xs[1:], kernel=k, type=src.dtype)
        layer = lambda nm: Pool(nm, channels=xs[0], ifm_dim=xs[1:], kernel=k, pool="max",  # noqa: E731
                                a_bits=src.dtype.bits)
        self.add_layer("maxpool", node.name, layer, [src.name], y.name, src.dtype, ys, nhwc_order(ys), [node.name],
                       params)
        self.stream_of[y.name] = y.name

    def _window_max(self, node: gs.Node):
        xs, src, y, ys = self._pool_io(node)
        k = tuple(int(v) for v in _attr(node, "kernel_shape"))
        s = tuple(int(v) for v in (_attr(node, "strides") or [1, 1]))
        pad = int((_attr(node, "pads") or [0])[0])
        swg = self._swg(node, src, xs, k, s, pad, True, src.dtype.lo())
        c = xs[0]
        params = dict(in_type=src.dtype, out_type=src.dtype)
        layer = lambda nm: VVAU(nm, channels=c, kernel_elems=k[0] * k[1], pixels=ys[1] * ys[2], w_bits=1,  # noqa
                                a_bits=src.dtype.bits, a_signed=src.dtype.signed, reduce="max")
        self.add_layer("window_max", node.name, layer, [swg.output], y.name, src.dtype, ys, nhwc_order(ys),
                       [node.name], params)
        self.stream_of[y.name] = y.name

    def _global_sum(self, node: gs.Node):
        xs, src, y, ys = self._pool_io(node)
        out_t = self.dtype(y)
        params = dict(channels=xs[0], pixels=xs[1] * xs[2], in_type=src.dtype, out_type=out_t)
        layer = lambda nm: Pool(nm, channels=xs[0], ifm_dim=xs[1:], pool="global_avg",  # noqa: E731
                                a_bits=src.dtype.bits)
        self.add_layer("global_sum", node.name, layer, [src.name], y.name, out_t, ys,
                       np.arange(int(np.prod(ys)), dtype=np.int64), [node.name], params)
        self.stream_of[y.name] = y.name

    # -- element-wise -----------------------------------------------------------------------------------
    def _slots(self, t: gs.Tensor, axis: int | None = None) -> tuple[np.ndarray, int, int]:
        """(channel index per slot, slots, pixels) of the elementwise view of tensor t's stream."""
        xs = _sample_shape(t)
        if axis is None:
            axis = 0 if len(xs) in (1, 3) else len(xs) - 1
        order = self._tensor_order(t)
        slots = channel_slots(order, xs, axis)
        return slots, len(slots), len(order) // len(slots)

    def _threshold(self, node: gs.Node):
        x = _data_inputs(node)[0]
        xs = _sample_shape(x)
        src = self.in_stream(x)
        axis = _mt_axis(node, len(xs) + 1)
        slots, nslot, npix = self._slots(x, axis)
        tp = self._threshold_params(node, xs[axis])
        thr = self._int_thresholds(tp["thresholds"])[slots]
        y = node.outputs[0]
        out_t = self.dtype(y)
        params = dict(thresholds=thr, out_scale=tp["out_scale"], out_bias=tp["out_bias"], in_type=src.dtype,
                      out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: Thresholding(nm, channels=nslot, pixels=npix, a_bits=src.dtype.bits,  # noqa: E731
                                        steps=thr.shape[1])
        self.add_layer("threshold", node.name, layer, [src.name], y.name, out_t, xs, self._tensor_order(x),
                       [node.name], params)
        self.stream_of[y.name] = y.name

    def _channelwise(self, node: gs.Node):
        x = _data_inputs(node)[0]
        xs = _sample_shape(x)
        src = self.in_stream(x)
        c = next(t for t in node.inputs if isinstance(t, gs.Constant))
        v = np.asarray(c.values, np.float64)
        full = np.broadcast_to(v, (1,) + tuple(xs))[0].ravel()
        order = self._tensor_order(x)
        seq = full[order]
        slots, nslot, npix = self._slots(x)
        per = seq.reshape(npix, nslot)
        if not np.all(per == per[0]):
            nslot, npix = len(seq), 1
            per = seq.reshape(1, -1)
        vals = per[0].astype(np.int64)
        op = "mul" if node.op == "Mul" else "add"
        if node.op == "Sub":
            vals = -vals
        y = node.outputs[0]
        out_t = self.dtype(y)
        params = dict(op=op, values=vals, p_type=IntType.of_range(min(0, vals.min()), max(0, vals.max())),
                      in_type=src.dtype, out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: ChannelwiseOp(nm, channels=nslot, pixels=npix, a_bits=src.dtype.bits, op=op)  # noqa
        self.add_layer("channelwise", node.name, layer, [src.name], y.name, out_t, xs, order, [node.name], params)
        self.stream_of[y.name] = y.name

    def _fusable_scale(self, t: gs.Tensor, add: gs.Node):
        """(source tensor, factor) when t = Mul(s, k) with an integer scalar k read only by ``add``."""
        if not t.inputs or t.inputs[0].name not in self.fused_muls:
            return t, 1, None
        m = t.inputs[0]
        v = np.asarray(next(i for i in m.inputs if isinstance(i, gs.Constant)).values)
        return _data_inputs(m)[0], int(round(float(v.reshape(-1)[0]))), m

    def _add(self, node: gs.Node):
        a, b = _data_inputs(node)
        ka_src, ka, ma = self._fusable_scale(a, node)
        kb_src, kb, mb = self._fusable_scale(b, node)
        if node.op == "Sub":
            kb = -kb
        nodes = [node.name]
        for m in (ma, mb):
            if m is not None:
                nodes.insert(0, m.name)
        sa, sb = self.in_stream(ka_src), self.in_stream(kb_src)
        oa, ob = self._tensor_order(ka_src), self._tensor_order(kb_src)
        if not np.array_equal(oa, ob):
            raise QpassError(f"{node.name}: the two input streams are in different orders")
        xs = _sample_shape(a)
        slots, nslot, npix = self._slots(ka_src)
        y = node.outputs[0]
        out_t = self.dtype(y)
        params = dict(ka=ka, kb=kb, a_type=sa.dtype, b_type=sb.dtype, out_type=out_t, pixels=npix, slots=nslot)
        layer = lambda nm: AddStreams(nm, channels=nslot, pixels=npix,  # noqa: E731
                                      a_bits=max(sa.dtype.bits, sb.dtype.bits))
        self.add_layer("add", node.name, layer, [sa.name, sb.name], y.name, out_t, xs, oa, nodes, params)
        self.stream_of[y.name] = y.name

    def _concat(self, node: gs.Node):
        ins = _data_inputs(node)
        srcs = [self.in_stream(t) for t in ins]
        shapes = [_sample_shape(t) for t in ins]
        y = node.outputs[0]
        ys = _sample_shape(y)
        out_t = self.dtype(y)
        if len(ys) == 3:
            chans, pix = [s[0] for s in shapes], ys[1] * ys[2]
        else:
            chans, pix = [int(np.prod(s)) for s in shapes], 1
        order, why = output_order(node, "concat", [self._tensor_order(t) for t in ins])
        if order is None:
            raise QpassError(f"{node.name}: {why}")
        params = dict(in_types=[s.dtype for s in srcs], out_type=out_t, channels=chans, pixels=pix)
        layer = lambda nm: Concat(nm, channels=tuple(chans), pixels=pix, a_bits=out_t.bits)  # noqa: E731
        self.add_layer("concat", node.name, layer, [s.name for s in srcs], y.name, out_t, ys, order, [node.name],
                       params)
        self.stream_of[y.name] = y.name


def build(model: onnx.ModelProto, name: str = "partition") -> DataflowGraph:
    """Hardware layers of one dataflow partition model (every node must be streamable)."""
    return _Builder(model, name).run()


# -------------------------------------------------------------------------------------------- folding

def _enforce_pairs(dg: DataflowGraph) -> list[str]:
    """A depthwise sliding window and its VVAU share one word width (the window order is per channel fold)."""
    notes = []
    for l in dg.layers:
        if l.kind in ("vvau", "window_max"):
            swg = dg.layer(dg.streams[l.inputs[0]].producer)
            p = max(swg.layer.simd, l.layer.pe)
            if swg.layer.simd != p or l.layer.pe != p:
                notes.append(f"{swg.name}/{l.name}: SIMD = PE = {p} (a depthwise window is read one channel fold "
                             "at a time)")
                swg.layer = swg.layer.folded(1, p)
                l.layer = l.layer.folded(p, 1)
    return notes


def fold(dg: DataflowGraph, *, target_fps: float | None = None, clock_ns: float = 10.0, device=None,
         utilisation: float = 0.8, strategy: str = "min_lut", overrides: dict | None = None) -> FoldingResult:
    """Fold every layer: for ``target_fps`` with the fewest estimated LUTs (``fold_for_target``), else the fastest
    folding fitting ``utilisation`` of ``device`` (``fold_for_budget``), else (neither) leave PE = SIMD = 1.
    ``overrides`` ({layer: {"PE": p, "SIMD": s}}) then refolds the named layers. The result is applied to ``dg``."""
    layers, edges = dg.cost_layers(), dg.edges
    if target_fps is not None:
        res = fold_for_target(layers, target_fps, clock_ns, edges=edges, strategy=strategy)
        if device is not None:
            from .devices import get_device

            res.device = get_device(device)
    elif device is not None:
        res = fold_for_budget(layers, device, clock_ns, utilisation, edges=edges)
    else:
        res = evaluate(layers, clock_ns, edges=edges)
    dg.apply(res.layers)
    notes = []
    for name, f in (overrides or {}).items():
        l = dg.layer(name)
        pe, simd = int(f.get("PE", l.layer.fold[0])), int(f.get("SIMD", l.layer.fold[1]))
        if (pe, simd) not in l.layer.fold_options():
            raise QpassError(f"{name}: PE={pe}, SIMD={simd} is not a legal folding ({l.layer.kind}: PE in "
                             f"{l.layer.legal_pe()}, SIMD in {l.layer.legal_simd()})")
        l.layer = l.layer.folded(pe, simd)
        notes.append(f"{name}: folding set to PE={pe}, SIMD={simd}")
    notes += _enforce_pairs(dg)
    if notes:
        new = evaluate(dg.cost_layers(), clock_ns, edges=edges, device=res.device)
        new.target_fps, new.target_cycles, new.strategy = res.target_fps, res.target_cycles, res.strategy
        new.candidates_tried, new.baseline_lut, new.utilisation = res.candidates_tried, res.baseline_lut, \
            res.utilisation
        new.notes = res.notes + notes
        res = new
    dg.folding = res
    return res


def fifo_depths(dg: DataflowGraph, frames: int = 3) -> dict[tuple[str, str, int], int]:
    """Depth (in words of the producer) of every stream edge (producer or '<input>', consumer, port)."""
    layers, edges = dg.cost_layers(), dg.edges
    try:
        res = size_fifos(layers, edges, frames=frames)
        dg.fifos = res
        depths = dict(res.depths)
    except QpassError as exc:  # e.g. a multi-input layer reading a partition input: no simulation
        dg.fifos = None
        dg.fifo_notes.append(f"FIFO simulation not applicable ({exc}); FIFOs hold one frame")
        depths = {}
    out = {}
    for l in dg.layers:
        for port, s in enumerate(l.inputs):
            src = dg.streams[s].producer or "<input>"
            d = depths.get((src, l.name, port))
            if d is None:  # no simulation: a FIFO that holds a whole frame can never block
                d = max(2, 1 << max(0, int(l.layer.in_words()[port]) - 1).bit_length())
            out[(src, l.name, port)] = int(d)
    return out


def report_table(dg: DataflowGraph, depths: dict | None = None) -> str:
    """Per-layer table: kind, folding, cycles, resources, element types, implemented ONNX nodes."""
    res = dg.folding
    head = ("layer", "kind", "PE", "SIMD", "cycles", "LUT", "BRAM18", "DSP", "in", "weights", "acc", "out",
            "FIFO in", "ONNX nodes")
    rows = []
    for l in dg.layers:
        L = l.layer
        r = L.resources()
        p = l.params
        ins = "+".join(dg.streams[s].dtype.name for s in l.inputs)
        w = p["w_type"].name if "w_type" in p else "-"
        acc = p["acc_type"].name if "acc_type" in p else "-"
        thr = f" thr{p['thresholds'].shape[1]}" if "thresholds" in p else ""
        out = dg.streams[l.output].dtype.name + thr
        fifo = ",".join(str(depths.get((dg.streams[s].producer or "<input>", l.name, i), "")) for i, s in
                        enumerate(l.inputs)) if depths else ""
        rows.append((l.name, L.kind, str(L.fold[0]), str(L.fold[1]), str(L.cycles()), str(r.lut), str(r.bram18),
                     str(r.dsp), ins, w, acc, out, fifo, ", ".join(l.nodes)))
    tot = Resources()
    for l in dg.layers:
        tot = tot + l.layer.resources()
    rows.append(("TOTAL", "", "", "", str(max((l.layer.cycles() for l in dg.layers), default=0)), str(tot.lut),
                 str(tot.bram18), str(tot.dsp), "", "", "", "", "", ""))
    cells = [head] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) if i in (0, 1, 8, 9, 10, 11, 13) else c.rjust(wd)
                       for i, (c, wd) in enumerate(zip(r, widths))).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    if res is not None:
        c = res.max_cycles
        lines.append(f"bottleneck {res.bottleneck} ({c} cycles/frame): {res.fps:,.1f} FPS at "
                     f"{1e3 / res.clock_ns:.1f} MHz; latency <= {res.latency_cycles} cycles (critical path)")
        if res.target_fps is not None:
            lines.append(f"target {res.target_fps:,.1f} FPS = {res.target_cycles:,.1f} cycles/frame: "
                         f"{'met' if res.meets_target else 'NOT met'}; {res.candidates_tried} foldings considered"
                         + (f"; FINN's divisor walk would use {res.baseline_lut} LUT" if res.baseline_lut else ""))
        if res.device is not None:
            cap = res.device.capacity()
            lines.append(f"device {res.device.part} ({res.device.board}): LUT {100 * tot.lut / cap[0]:.1f}%, "
                         f"BRAM18 {100 * tot.bram18 / max(cap[1], 1):.1f}%, DSP {100 * tot.dsp / max(cap[3], 1):.1f}%")
        lines.extend(res.notes)
    if dg.fifos is not None:
        lines.append(f"FIFO sizing: {dg.fifos.notes[0] if dg.fifos.notes else ''} "
                     f"({dg.fifos.elapsed_s * 1e3:.0f} ms)".strip())
    lines.extend(dg.fifo_notes)
    lines.extend(dg.notes)
    return "\n".join(lines)
