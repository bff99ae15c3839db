"""qpass: a graph-rewriting quantization compiler for ONNX."""
from .api import OptimizeResult, load, optimize, save
from .errors import QpassError
from qpass.pipeline.config import QuantConfig
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.manager import PassManager, Pipeline, Repeat
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.pipeline.files import load_pipeline

__version__ = "0.1.0"
__all__ = ["load", "save", "optimize", "OptimizeResult", "QuantConfig", "QpassError", "Pass", "PassResult",
           "PassManager", "PassContext", "PassInputs", "Pipeline", "Repeat", "load_pipeline"]
