"""qpass: a graph-rewriting quantization compiler for ONNX."""
from .api import OptimizeResult, load, optimize, save
from .errors import QpassError
from qpass.pipeline.manager import PassContext, PassManager, Pipeline, Repeat
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.pipeline.files import load_pipeline

__version__ = "0.1.0"
__all__ = ["load", "save", "optimize", "OptimizeResult", "QpassError", "Pass", "PassResult", "PassManager",
           "PassContext", "Pipeline", "Repeat", "load_pipeline"]
