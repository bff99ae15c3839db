"""Integer execution of QDQ layers, bit-exact with onnxruntime's CPU integer kernels (MLAS, x86-64).

A compute node is *fused* when its data inputs are DequantizeLinear outputs with constant parameters and its only
consumer is a QuantizeLinear with a constant per-tensor scale: the fused kernel reads the integer codes and writes
the QuantizeLinear's output. ``planning`` decides what fuses (``FusionContext``); the kernels' arithmetic, as read
from onnxruntime's source and checked against onnxruntime 1.32 (see tests/test_golden.py), is documented in
``linear`` (Conv / ConvTranspose / Gemm / MatMul), ``elementwise`` (Add, Mul), ``unary`` (elementwise float ops as
256-code tables) and ``pooling`` (AveragePool, GlobalAveragePool, MaxPool); ``arith`` holds the accumulator model and the requantisation they share.

int8 activations: onnxruntime on x86-64 (with AVX512-VNNI too: seen on this machine) rewrites int8 Q -> DQ pairs
to uint8 (QDQS8ToU8Transformer) before fusing, so Add, Mul and AveragePool add the zero point in the uint8 domain;
the golden kernels do the same (``+128`` on codes and zero points), which only matters for float rounding at exact
ties. A pair the rewrite skips (a Q with other consumers or a graph output) stays int8, and onnxruntime fuses an op
only when its operands and output share one type: ``planning.u8_shift`` follows that (tests/test_int15b_add_types.py).

Importing this package registers every fused kernel.
"""
from . import elementwise, linear, pooling, unary  # noqa: F401  (register the fused kernels)
from .planning import FusedOp, FusionContext

__all__ = ["FusedOp", "FusionContext"]
