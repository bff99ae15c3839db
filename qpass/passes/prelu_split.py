"""prelu_split: ``layer -> PRelu [-> Transpose / Flatten] -> layers`` becomes ``layer' -> Relu -> layers'``.

A PRelu with a per-channel slope a is linear on each sign: PRelu(y) = Relu(y) - a Relu(-y). With c = |a| (> 0) the
first layer gets its output channels twice, [W; -c W] (bias [b; -c b]), so that after one Relu the tensor holds
[Relu(y), c Relu(-y)], and every second layer reads the copy with its weight [W2, -sign(a) W2]: the float model is
unchanged (up to float rounding), the weight grids keep their per-channel codes (the new rows are the old ones times
c or -1), and the int8 model loses one requantization per PRelu: today the first layer's output is quantized on its
signed range, run through the float PRelu and quantized again; after the split the Relu output is one uint8 grid with
zero point 0 that onnxruntime fuses into the layer (the positive half gets all 256 codes, the negative half the same
step in the PRelu output's units).

Not through MaxPool: max over a window does not commute with the split (the negative half would need a min).
The cost is twice the first layer's output channels and the second layers' input channels (onnxruntime's integer
kernels; measured in bench/results/sqnr13m_*), so the pass only rewrites pairs whose second layers read a tensor of
at most ``max_elements`` elements per sample (the fully connected ends and the small late Convs).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qpass.pipeline.pass_base import Pass, PassResult
from .equalize import find_pairs, out_channel_view, run_mids
from .ptq_layers import Probe, set_initializer, store_layer

LAYOUT = ("Transpose", "Flatten")


@dataclass
class PreluSplitOptions:
    #: pairs whose PRelu output has more elements than this per sample are left alone (None: no bound)
    max_elements: int | None = None
    #: only pairs whose first layer is one of these op types
    firsts: tuple = ("Conv", "Gemm")
    threads: int = 1


def split_pairs(model: onnx.ModelProto, shape_of) -> list:
    """equalize's extended pairs whose mids are one PRelu right after the first layer, then layout ops only, with
    no grouped Conv among the second layers."""
    out = []
    for p in find_pairs(model, shape_of, True):
        if not p.mids or p.mids[0].op_type != "PRelu" or any(n.op_type not in LAYOUT for n in p.mids[1:]):
            continue
        if any(s.op == "Conv" and s.groups > 1 for s in p.seconds) or p.first.groups > 1:
            continue
        if any(s.op == "Conv" for s in p.seconds) and len(p.mids) > 1:
            continue
        out.append(p)
    return out


def _slope(model: onnx.ModelProto, prelu: onnx.NodeProto, channels: int) -> np.ndarray:
    init = next(i for i in model.graph.initializer if i.name == prelu.input[1])
    a = numpy_helper.to_array(init).astype(np.float64).reshape(-1)
    return np.broadcast_to(a, (channels,)).copy() if a.size == 1 else a


def _positions(pair, one_out: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(channel, spatial index) that each input position of a Gemm / MatMul second layer reads, for the first
    layer's output shaped like ``one_out`` but with ``channels`` channels (the layout mids run on index tensors)."""
    shape = (1, channels) + one_out.shape[2:]
    ch = np.broadcast_to(np.arange(channels, dtype=np.float32).reshape((1, channels) + (1,) * (len(shape) - 2)),
                         shape)
    sp = np.broadcast_to(np.arange(int(np.prod(shape[2:], dtype=np.int64)), dtype=np.float32).reshape(
        (1, 1) + shape[2:]), shape)
    mids = pair.mids[1:]  # layout ops: no initializer inputs
    ch = run_mids(mids, np.ascontiguousarray(ch), {}, pair.opset)
    sp = run_mids(mids, np.ascontiguousarray(sp), {}, pair.opset)
    return ch.reshape(-1).astype(np.int64), sp.reshape(-1).astype(np.int64)


def split_pair(model: onnx.ModelProto, pair, one_out: np.ndarray) -> None:
    """Rewrite one pair of ``model`` in place (``one_out``: the first layer's output on one sample)."""
    first, prelu = pair.first, pair.mids[0]
    c = first.out_channels
    a = _slope(model, prelu, c)
    mag = np.where(np.abs(a) > 0, np.abs(a), 1.0)
    sign = -np.sign(a)  # the weight of the negative half's channel in the second layers
    ax = first.out_channel_axis()
    w1 = np.concatenate([first.w, (-first.w * out_channel_view(first, mag))], axis=ax).astype(np.float32)
    b0 = np.zeros(c, np.float32) if first.b is None else first.b.astype(np.float64)
    b1 = np.concatenate([b0, -b0 * mag]).astype(np.float32)
    for b in pair.seconds:
        axis = b.in_channel_axis()
        if b.op == "Conv":
            view = [1] * b.w.ndim
            view[1] = -1
            w2 = np.concatenate([b.w, b.w * sign.reshape(view)], axis=1)
        else:
            ch0, sp0 = _positions(pair, one_out, c)
            ch1, sp1 = _positions(pair, one_out, 2 * c)
            old = {(int(k), int(s)): i for i, (k, s) in enumerate(zip(ch0, sp0))}
            src = np.array([old[(int(k) % c, int(s))] for k, s in zip(ch1, sp1)])
            fac = np.where(ch1 >= c, sign[ch1 % c], 1.0)
            w2 = np.moveaxis(np.moveaxis(b.w, axis, 0)[src] * fac.reshape((-1,) + (1,) * (b.w.ndim - 1)), 0, axis)
        set_initializer(model, b.node.input[1], w2.astype(np.float32))
    store_layer(model, first, w1, b1)
    stale = {first.y} | {t for n in pair.mids for t in n.output}  # twice the channels now
    keep = [v for v in model.graph.value_info if v.name not in stale]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    relu = helper.make_node("Relu", [prelu.input[0]], [prelu.output[0]], name=prelu.name)
    prelu.CopyFrom(relu)


def split_prelus(model: onnx.ModelProto, samples, max_elements=None, firsts=("Conv", "Gemm"), threads=1) -> list:
    """Split every eligible pair of ``model`` in place, pair after pair (each found again in the rewritten graph);
    the names of the first layers rewritten. Shapes are read from one sample of ``samples``."""
    done: list[str] = []
    while True:
        cache: dict[str, np.ndarray] = {}

        def value(t):  # one sample's value of a tensor ([1, C, ...]) in the model as rewritten so far
            if t not in cache:
                cache[t] = Probe(model, samples.subset(slice(0, 1)), [], [t], threads).float_value(t)[0]
            return cache[t]

        todo = [p for p in split_pairs(model, lambda t: value(t).shape)
                if p.first.name not in done and p.first.op in firsts]
        todo = [p for p in todo if max_elements is None or value(p.first.y).size <= max_elements]
        if not todo:
            return done
        split_pair(model, todo[0], value(todo[0].first.y))
        done.append(todo[0].first.name)


class PreluSplit(Pass):
    name = "prelu_split"
    inputs = ("calibration_data",)
    Options = PreluSplitOptions

    def run(self, model, ctx):
        o = self.opts
        out = onnx.ModelProto()
        out.CopyFrom(model)
        done = split_prelus(out, ctx.inputs.calibration_data, o.max_elements, tuple(o.firsts), o.threads)
        if not done:
            return PassResult(model, False, ["no layer -> PRelu [-> Transpose / Flatten] -> layer pair to split"])
        return PassResult(out, True, [f"split {len(done)} PRelu(s) into Relu halves: {', '.join(done)}"])
