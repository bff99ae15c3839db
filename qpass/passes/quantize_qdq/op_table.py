"""Which op types the QDQ pass quantizes and how: one class per kind of op, one table from op type to it
(onnxruntime's ``quantization/registry.py`` and its operator classes are the model).

Every op onnxruntime runs on integers after fusing ``DequantizeLinear -> op -> QuantizeLinear`` is here:

- ``Linear``: Conv, ConvTranspose, Gemm, MatMul -> QLinearConv, QLinearConvTranspose, QGemm, QLinearMatMul: int8
  weights (``weights``), int32 bias, own output parameters;
- ``Arithmetic``: Add, Mul, Concat -> QLinearAdd, QLinearMul, QLinearConcat: every input and the output with
  their own parameters (constant operands become integer initializers);
- ``Lookup``: Sigmoid, LeakyRelu, AveragePool, GlobalAveragePool -> QLinearSigmoid, QLinearLeakyRelu,
  QLinearAveragePool, QLinearGlobalAveragePool (own parameters); ``Softmax`` -> QLinearSoftmax, whose output grid
  is fixed at 1/256 (the grid on which onnxruntime's kernel equals float Softmax then QuantizeLinear);
- ``SharedScale``: data movement and order-only ops (Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Slice,
  Split, Expand, Tile, Gather, Pad, MaxPool, nearest Resize): the output takes its input's parameters, so no
  requantization happens and onnxruntime drops the Q/DQ pair around them (Pad, which it does not drop, is written
  on integers directly); they follow a quantized input, except MaxPool, which quantizes a float input itself (the
  pre-pool range, as before), and Gather, whose constant table is quantized itself (a table whose rows only float
  ops read gets int8 codes with one scale per row instead: ``tables``);
- ``Activation``: Relu, Clip: removed after a layer whose output quantizer clips the same way (``plan``),
  otherwise quantized like the others;
- ``Recurrent``: GRU, RNN: int8 W and R through DequantizeLinear (the recurrence runs in float); ``LSTM``:
  com.microsoft DynamicQuantizeLSTM, onnxruntime's integer LSTM (``recurrent``);
- ``Rewritten``, before planning: HardSwish -> x * HardSigmoid(x) (the Mul becomes QLinearMul, as after
  onnxruntime's own pre-processing), Identity dropped.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .store import short
from .recurrent import dynamic_lstm_ok
from .tables import row_quantizable, row_quantize

FLOAT_DTYPES = tuple(np.dtype(d) for d in (np.float32, np.float16, np.float64))


def is_const(t) -> bool:
    return isinstance(t, gs.Constant)


def is_float(t) -> bool:
    dt = getattr(t, "dtype", None)
    if dt is None:
        return True  # unknown: assume float; calibration decides (no range -> not quantised)
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(dt) if isinstance(dt, int) else dt) in FLOAT_DTYPES
    except TypeError:
        return False


def present(t) -> bool:
    return t is not None and bool(t.name)


def clip_bounds(node: gs.Node):
    """(min, max) of a Clip node (None where unbounded), or ("dynamic", None) for run-time bounds."""
    bounds = []
    for idx, key in ((1, "min"), (2, "max")):
        t = node.inputs[idx] if len(node.inputs) > idx else None
        if present(t):
            if not is_const(t):
                return "dynamic", None
            bounds.append(float(np.asarray(t.values)))
        else:
            bounds.append(float(node.attrs[key]) if key in node.attrs else None)
    return tuple(bounds)


class OpQuantizer:
    """How one kind of op is quantized. ``check`` says why a node stays float; ``mark`` picks the tensors that get
    QuantizeLinear -> DequantizeLinear (``qc.want``) or share another tensor's parameters (``qc.share``);
    ``quantize_constants`` turns constant operands into integer initializers."""

    #: a Relu / Clip(0, m) right after it can be dropped: the output quantizer clips the same way
    fusable_producer = False
    #: its kernel reads float activations (quantizing them itself, or not at all): an input only it reads needs no
    #: QuantizeLinear -> DequantizeLinear
    reads_float = False

    def check(self, node: gs.Node) -> str | None:
        if not any(is_float(t) and not is_const(t) for t in node.inputs if present(t)):
            return "no float activation input"
        return None

    #: the op's float kernel is about as fast as its integer one (elementwise, lookup tables, data movement): when
    #: nothing quantized reads its outputs it runs in float on dequantized inputs (``rewrite._float_tail``), since
    #: quantizing them would only add rounding before float ops (a LayerNorm's variance before its Sqrt)
    float_output = True

    def float_output_for(self, node: gs.Node) -> bool:
        """``float_output`` for this node (its shapes may decide)."""
        return self.float_output

    def mark(self, node: gs.Node, qc) -> str | None:
        for t in node.inputs:
            qc.want(t)
        for t in node.outputs:
            if not (self.float_output_for(node) and qc.read_as_float(t)):
                qc.want(t)
        return None

    def quantize_constants(self, node: gs.Node, qc) -> None:
        return None

    def quantize_float(self, node: gs.Node, qc) -> None:
        """A planned node that ends up in float (``float_outputs``, a cancelling Add): store its constants in
        integers where that stays exact and cheap (nothing by default)."""
        return None


class Linear(OpQuantizer):
    fusable_producer = True
    float_output = False  # the integer kernel needs its output quantizer, except float_output_ops below
    #: ops whose integer kernel can also write float (QGemm without y_scale, MatMulIntegerToFloat): as a graph
    #: output their result stays float, so no 8-bit step is added where the model's answer is read
    float_output_ops = ("Gemm", "MatMul")
    #: readers onnxruntime fuses with a float-output MatMul into a float Gemm (MatMulAddFusion), losing the
    #: integer kernel: with one of them the output keeps its quantizer
    float_fusing_readers = ("Add",)

    def check(self, node):
        if len(node.inputs) < 2 or not all(is_float(t) for t in node.inputs[:2]):
            return "non-float inputs"
        if node.op == "Gemm" and int(node.attrs.get("transA", 0)):
            return "Gemm with transA=1"
        if node.op == "Gemm" and (float(node.attrs.get("alpha", 1.0)) != 1 or float(node.attrs.get("beta", 1.0)) != 1):
            return "Gemm with alpha/beta != 1 on non-constant operands"
        if node.op != "MatMul" and not is_const(node.inputs[1]):
            return f"{node.op} weight is not a constant"
        return super().check(node)

    def mark(self, node, qc):
        qc.want(node.inputs[0])
        if node.op == "MatMul" and not is_const(node.inputs[1]):
            qc.want(node.inputs[1])
        y = node.outputs[0]
        if not (node.op in self.float_output_ops and qc.read_as_float(y)
                and not any(r.op in self.float_fusing_readers for r in y.outputs)):
            qc.want(y)
        return None

    def quantize_constants(self, node, qc):
        qc.quantize_weights(node)


class Arithmetic(OpQuantizer):
    def __init__(self, fusable_producer: bool = False):
        self.fusable_producer = fusable_producer

    def quantize_constants(self, node, qc):
        for i, t in enumerate(node.inputs):
            if is_const(t) and is_float(t):
                qc.quantize_operand(node, i)


class Lookup(OpQuantizer):
    pass


#: onnxruntime's float Softmax costs per row: over a static axis shorter than this, on more than
#: ``SHORT_SOFTMAX_ROWS`` rows (or on rows whose count is unknown: spatial dims of a fully convolutional net),
#: DequantizeLinear -> Softmax is slower than QLinearSoftmax -> DequantizeLinear (1 thread, avx2 avx512f
#: avx512_vnni, onnxruntime 1.32: axis 2 x 729 rows 27.1 vs 19.7 us, 4 x 1024 37.2 vs 30.6, 6 x 700 29.5 vs 29.7,
#: 8 x 512 26.0 vs 31.8; 4 x 16 9.7 vs 9.7, 2 x 32 10.2 vs 9.9): mtcnn-pnet's face-cell Softmax
SHORT_SOFTMAX_AXIS, SHORT_SOFTMAX_ROWS = 8, 32


def short_softmax_rows(node: gs.Node) -> bool:
    """Softmax over a static axis of < SHORT_SOFTMAX_AXIS elements on more than SHORT_SOFTMAX_ROWS rows, or on
    an unknown number of rows (the first dimension is taken as the batch: one sample's rows count)."""
    shape = getattr(node.inputs[0], "shape", None) if node.inputs else None
    if not shape:
        return False
    axis = int(node.attrs.get("axis", -1))
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape) or not isinstance(shape[axis], int) or shape[axis] >= SHORT_SOFTMAX_AXIS:
        return False
    rows = [d for i, d in enumerate(shape) if i not in (0, axis)]
    return not all(isinstance(d, int) for d in rows) or int(np.prod(rows, dtype=np.int64)) > SHORT_SOFTMAX_ROWS


class Softmax(OpQuantizer):
    def float_output_for(self, node):
        return not short_softmax_rows(node)

    def mark(self, node, qc):
        super().mark(node, qc)
        qc.fix_unit_grid(node.outputs[0])
        return None


class Activation(OpQuantizer):
    def check(self, node):
        if node.op == "Clip" and clip_bounds(node)[0] == "dynamic":
            return "Clip with run-time bounds"
        return super().check(node)


class SharedScale(OpQuantizer):
    def __init__(self, quantize_input: bool = False):
        #: quantize a float input too (MaxPool: pooling the codes of the wider pre-pool range), not only follow
        self.quantize_input = quantize_input

    def check(self, node):
        if not node.inputs or not is_float(node.inputs[0]) or is_const(node.inputs[0]):
            return "no float activation input"
        return None

    def mark(self, node, qc):
        x = node.inputs[0]
        if self.quantize_input:
            qc.want(x)
        if not qc.is_target(x):
            return "input is not quantized"
        for y in node.outputs:
            if is_float(y):
                qc.share(y, x)
        return None


class Gather(SharedScale):
    def check(self, node):
        return None if is_float(node.inputs[0]) else "no float activation input"

    def mark(self, node, qc):
        if is_const(node.inputs[0]):
            qc.want_table(node.inputs[0])
        return super().mark(node, qc)

    def quantize_constants(self, node, qc):
        if is_const(node.inputs[0]):
            qc.quantize_operand(node, 0)

    def quantize_float(self, node, qc):
        if row_quantizable(node):
            row_quantize(qc.pool, node)


class Resize(SharedScale):
    def check(self, node):
        mode = node.attrs.get("mode", "nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "nearest":
            return f"{mode} Resize: onnxruntime interpolates uint8 with its own rounding (kept float to stay exact)"
        return super().check(node)


class Pad(SharedScale):
    def check(self, node):
        if len(node.inputs) > 2 and present(node.inputs[2]) and not is_const(node.inputs[2]):
            return "Pad with a run-time padding value"
        return super().check(node)


class Rewritten(OpQuantizer):
    """An op with no integer kernel that ``rewrite`` turns into ones that have one, before planning."""

    def rewrite(self, node: gs.Node, b, graph: gs.Graph) -> dict:
        """Rewrite ``node`` in place; the ranges of new tensors, known by construction."""
        raise NotImplementedError


class HardSwish(Rewritten):
    """x * HardSigmoid(x): the Mul runs as QLinearMul; HardSigmoid (float) writes [0, 1], quantized on that range."""

    def rewrite(self, node, b, graph):
        x = node.inputs[0]
        base = short(node.name)
        hs = b.var(base + "_hardsigmoid", dtype=x.dtype, shape=x.shape)
        b.node("HardSigmoid", [x], [hs], {"alpha": 1.0 / 6.0, "beta": 0.5}, name=base + "_HardSigmoid")
        node.op, node.attrs, node.inputs = "Mul", {}, [x, hs]
        return {hs.name: (0.0, 1.0)}


class Identity(Rewritten):
    """Dropped (its readers read its input), so that it puts no second Q/DQ pair between two layers."""

    def rewrite(self, node, b, graph):
        x, y = node.inputs[0], node.outputs[0]
        if y in graph.outputs:
            return {}
        for r in list(y.outputs):
            for i, t in enumerate(r.inputs):
                if t is y:
                    r.inputs[i] = x
        node.inputs.clear()
        node.outputs.clear()
        return {}


class Recurrent(OpQuantizer):
    reads_float = True

    def check(self, node):
        if len(node.inputs) < 3 or not (is_const(node.inputs[1]) and is_const(node.inputs[2])):
            return f"{node.op} weights are not constants"
        return None

    def mark(self, node, qc):
        return None  # weights only (quantize_constants)

    def quantize_constants(self, node, qc):
        qc.quantize_recurrent_weights(node)


class LSTM(Recurrent):
    """On onnxruntime's DynamicQuantizeLSTM (``recurrent``) where W and R are constants in the default layout."""

    def quantize_constants(self, node, qc):
        if qc.opts.dynamic_lstm and dynamic_lstm_ok(node):
            qc.quantize_lstm(node)
        else:
            super().quantize_constants(node, qc)


_LINEAR, _LOOKUP, _SHARED, _ACT, _REC = Linear(), Lookup(), SharedScale(), Activation(), Recurrent()

#: op type -> how it is quantized; the default ``op_types`` of the pass are its keys
QUANTIZERS: dict[str, OpQuantizer] = {
    "Conv": _LINEAR, "ConvTranspose": _LINEAR, "Gemm": _LINEAR, "MatMul": _LINEAR,
    "Add": Arithmetic(fusable_producer=True), "Mul": Arithmetic(), "Concat": Arithmetic(),
    "Sigmoid": _LOOKUP, "LeakyRelu": _LOOKUP, "AveragePool": _LOOKUP, "GlobalAveragePool": _LOOKUP,
    "Softmax": Softmax(),
    "Relu": _ACT, "Clip": _ACT,
    "MaxPool": SharedScale(quantize_input=True), "Reshape": _SHARED, "Flatten": _SHARED, "Transpose": _SHARED, "Squeeze": _SHARED,
    "Unsqueeze": _SHARED, "Slice": _SHARED, "Split": _SHARED, "Expand": _SHARED, "Tile": _SHARED,
    "Gather": Gather(), "Resize": Resize(), "Pad": Pad(),
    "LSTM": LSTM(), "GRU": _REC, "RNN": _REC,
    "HardSwish": HardSwish(), "Identity": Identity(),
}


#: ops whose output can be far weaker than their inputs (cancellation): quantize_qdq weighs its inputs' rounding
#: noise against the output's power (``rewrite._cancellations``)
CANCELLING = ("Add", "Sub")


def default_op_types() -> list[str]:
    return list(QUANTIZERS)
