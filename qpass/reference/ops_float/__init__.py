"""Standard ONNX float ops with ONNX attribute semantics and defaults, one module per family.

Elementwise ops compute in the input dtype (float32 stays float32, like onnxruntime). Reductions over many terms
(Conv, ConvTranspose, Gemm, MatMul, pooling sums, Softmax, ReduceMean, BatchNormalization) and transcendental
functions are evaluated in float64 and rounded once to float32: deterministic (independent of BLAS blocking and
threads) and at least as accurate as onnxruntime's float32 kernels.

Importing this package registers every kernel (``qpass.reference.registry``).
"""
from . import casts, elementwise, linear, pooling, reductions, resize, shape  # noqa: F401  (register kernels)
