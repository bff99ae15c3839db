"""Integer execution of QDQ layers, bit-exact with onnxruntime's CPU integer kernels (MLAS, x86-64).

A compute node is *fused* when its data inputs are DequantizeLinear outputs with constant parameters and its only
consumer is a QuantizeLinear with a constant per-tensor scale: the fused kernel reads the integer codes and writes
the QuantizeLinear's output. ``planning`` decides what fuses (``FusionContext``); the kernels' arithmetic, as read
from onnxruntime's source and checked against onnxruntime 1.32 (see tests/test_golden.py), is documented in
``linear`` (Conv / ConvTranspose / Gemm / MatMul), ``elementwise`` (Add, Mul), ``unary`` (elementwise float ops as
256-code tables) and ``pooling`` (AveragePool, GlobalAveragePool, MaxPool); ``arith`` holds the accumulator model and the requantisation they share.

int8 activations: onnxruntime on x86 without AVX512-VNNI rewrites int8 QDQ pairs to uint8 (QDQS8ToU8Transformer)
before fusing, so Add, Mul and AveragePool add the zero point in the uint8 domain; the golden kernels do the same
(``+128`` on codes and zero points), which only matters for float rounding at exact ties.

Importing this package registers every fused kernel.
"""
from . import elementwise, linear, pooling, unary  # noqa: F401  (register the fused kernels)
from .planning import FusedOp, FusionContext

__all__ = ["FusedOp", "FusionContext"]
