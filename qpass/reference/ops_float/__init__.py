"""Standard ONNX float ops with ONNX attribute semantics and defaults, one module per family.

Precision, as each module's docstring says: elementwise ops compute in the input dtype (float32 stays float32,
like onnxruntime). The first kernels (Conv, ConvTranspose, Gemm, MatMul, pooling sums, Softmax, ReduceMean / Sum /
Prod, Batch- and LayerNormalization, and transcendental elementwise functions) evaluate in float64 and round once:
deterministic, and kept so that qpass's outputs do not change. The kernels added since (casts, indexing,
normalization, recurrent, unary, attention, Einsum, the other Reduce* ops) compute in float32 as onnxruntime does, because
float64 between a DequantizeLinear and a QuantizeLinear moves codes by one step where onnxruntime rounds in
float32.

Importing this package registers every kernel (``qpass.reference.registry``).
"""
from . import (attention, casts, detection, dynamic_quant, elementwise, grid_sample,  # noqa: F401  (register kernels)
               indexing, linear, normalization, pooling, recurrent, reductions, resize, shape, unary)
