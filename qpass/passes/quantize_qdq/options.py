"""Options of the quantize_qdq pass; the field names are the names pipeline files use."""
from __future__ import annotations

from dataclasses import dataclass, field

from .op_table import default_op_types

#: CPUs the result must compute exactly on: x86 without VNNI (int16 pair sums), with VNNI, ARM, or all of them
TARGET_CPUS = ("auto", "any", "avx2", "vnni", "arm")
#: what a layer gets when some input could saturate its int16 pair sums on the target (see ``weights``)
AVX2_REMEDIES = ("pair_scale", "seven_bit", "uint8_offset")


@dataclass
class QuantizeQDQOptions:
    activation_dtype: str = "uint8"
    weight_dtype: str = "int8"
    per_channel: bool = True
    #: int8: plain int8 weights (onnxruntime's u8s8 kernels); uint8_offset: every layer's int8 grid stored as
    #: uint8 with zero point 128 (the exact but slower u8u8 kernels)
    weight_encoding: str = "int8"
    #: auto (the machine quantizing: ``target``), avx2, vnni, arm or any: with avx2 and any, layers whose pair sums
    #: could saturate get ``avx2_remedy``
    target_cpu: str = "auto"
    avx2_remedy: str = "pair_scale"
    #: the most output SQNR (dB, calibration samples, simulated on the grid) pair_scale / seven_bit may cost against
    #: full int8; beyond it the pass uses uint8_offset instead (None: no check; see ``guard``)
    avx2_max_loss_db: float | None = 3.0
    reduce_range: bool = False  # weights on [-64, 64] everywhere (onnxruntime's reduce_range)
    symmetric_activations: bool = False
    op_types: list = field(default_factory=default_op_types)
    exclude: list = field(default_factory=list)  # node-name glob patterns left in float
    fuse_relu: bool = True
    # activations whose calibrated range reaches this stay float: attention masks (-1e4, -3.4e38) and sentinels
    # would otherwise take every int8 step away from the real values
    max_range: float = 1e4
    #: a graph output written by Gemm / MatMul stays float (onnxruntime's QGemm / MatMulIntegerToFloat write float
    #: directly): the model's answer gets no 8-bit output step, at no cost in speed
    float_outputs: bool = True
    #: an Add / Sub whose output would keep less than this SQNR (dB) under its inputs' 8-bit rounding noise (a
    #: decomposed LayerNorm's variance) runs in float with its inputs' cheap producers (None: never)
    min_cancel_sqnr_db: float | None = 30.0
    #: LSTMs with constant weights on onnxruntime's integer DynamicQuantizeLSTM (False: int8 weights behind
    #: DequantizeLinear, the recurrence in float: slower, without the per-step dynamic 8-bit rounding)
    dynamic_lstm: bool = True
    #: before that, an LSTM's input channels are divided by their calibrated ranges (a Mul; W's columns absorb it)
    #: where that lowers the simulated error of the kernel's per-call 8-bit input (``smooth_lstm``)
    smooth_lstm: bool = True
    #: > 0: instead, each LSTM input gets K sub-step-shifted copies and W a K-times finer split (``lstm_dither``),
    #: K from shapes within this budget of extra input-projection work (oww-hey-mycroft 33.97 -> 37.33 dB with 1.5,
    #: but 1.12x its float latency: opt-in)
    lstm_copies_budget: float = 0.0
    #: a one-channel Conv with a long window gets an all-zero second output channel and a Slice, so that
    #: onnxruntime runs it on its GEMM-based QLinearConv instead of its slow depthwise kernel (``speed``)
    widen_single_channel: bool = True
    #: isolated Convs with a short reduction stay float (``speed``; off by default: it costs integer share and
    #: can break onnxruntime's NHWC layout around them)
    float_thin_convs: bool = False
    #: tensors a Log reads, directly or through other ops (a spectrogram's STFT outputs and power), are quantized
    #: whatever their range (``max_range`` is for sentinels; here the decades are the signal), and their ranges
    #: are chosen on the model's output, in graph order, each with the later ranges re-measured under it
    #: (``log_ranges``; oww-melspectrogram: 5.5 -> 17 dB where min/max ranges lose every quiet bin)
    log_ranges: bool = True
    #: at most this many halvings of a calibrated range are tried (``log_ranges``)
    log_range_shifts: int = 12
    #: the halving counts are searched on a grid of this step, then refined by ``log_range_step`` around its best
    #: point (``log_ranges.choose``; coarse == step: the full fine grid, (shifts / step + 1)^2 trials per range)
    log_range_coarse: int = 6
    log_range_step: int = 2

    def __post_init__(self):
        if self.activation_dtype not in ("int8", "uint8", "int16", "uint16"):
            raise ValueError(f"activation_dtype must be int8, uint8, int16 or uint16, not {self.activation_dtype!r}")
        if self.weight_dtype not in ("int8",):
            raise ValueError("weight_dtype must be int8 (other widths: see the fake-quant passes)")
        if self.weight_encoding not in ("int8", "uint8_offset"):
            raise ValueError("weight_encoding must be int8 or uint8_offset")
        if self.target_cpu not in TARGET_CPUS:
            raise ValueError(f"target_cpu must be one of {', '.join(TARGET_CPUS)}, not {self.target_cpu!r}")
        if self.avx2_remedy not in AVX2_REMEDIES:
            raise ValueError(f"avx2_remedy must be one of {', '.join(AVX2_REMEDIES)}, not {self.avx2_remedy!r}")
