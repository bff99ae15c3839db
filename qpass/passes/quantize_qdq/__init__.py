"""int8 QDQ for ONNX Runtime: QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels.

- ``op_table``: which op types are quantized and how (one class per kind, one table, onnxruntime's quantization
  registry is the model): linear layers, Add/Mul/Concat, lookup-table ops, Softmax, data movement on shared
  parameters, removable Relu/Clip, recurrent weights;
- ``plan``: which nodes are quantized, which Relu / Clip fold into their producer, why the rest stays float;
- ``weights`` and ``u8s8``: int8 weights (symmetric max-abs, narrow range, per output channel) on onnxruntime's
  u8s8 kernels, with a per-layer remedy where x86 CPUs without VNNI could saturate int16 pair sums
  (``target_cpu``); int32 biases at s_in * s_w (Jacob et al. 2018);
- activations: uint8 (default) or int8 affine from the calibrated range, one parameter set per tensor (Softmax:
  the fixed grid 1/256);
- ``store``: every integer array stored once however many nodes read it, one DequantizeLinear per reader;
- ``rewrite``: the driver; ``qdq_pass``: the pass.
"""
from .op_table import QUANTIZERS
from .options import AVX2_REMEDIES, TARGET_CPUS, QuantizeQDQOptions
from .plan import QuantPlan, plan_quantization
from .qdq_pass import QuantizeQDQ
from .rewrite import quantize_graph

__all__ = ["QUANTIZERS", "AVX2_REMEDIES", "TARGET_CPUS", "QuantizeQDQOptions", "QuantPlan", "plan_quantization",
           "QuantizeQDQ", "quantize_graph"]
