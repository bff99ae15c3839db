"""Model-zoo conversion: quantise every model in a folder, resumably, on local processes or a Ray cluster.

For each ``NAME.onnx`` found (recursively) with ``NAME.calib.npz`` beside it: run the pipeline, write
``OUT_DIR/<relative path>`` and its report ``OUT_DIR/<relative stem>.report.html`` (+ ``.json``), and measure
output SQNR against the float model and a metric (top-1 accuracy when ``NAME.eval.npz`` has labels, else top-1
agreement with the float model) on the eval samples (the calibration samples when there is no eval file), the
integer share the quantising pass reports, and the quantised/float latency ratio in onnxruntime with one thread.

- ``convert``: one model's conversion (``Job``, ``convert_model``), run in an isolated process;
- ``records``: per-model records (``OUT_DIR/zoo-records/``) and the up-to-date test that makes runs incremental;
- ``runner``: ``run_zoo``, which plans, converts on an engine (``qpass.pipeline.engines``) and writes the zoo
  report (``qpass.report.zoo_report``: ``zoo.html``, ``zoo.json``, ``zoo.csv``).

One model's failure (a bad input, a crash, a hang past the timeout, running out of memory) never stops the
others; it is recorded with its one-line reason and redone by the next run.
"""
from .convert import Job, convert_model, latency_ratio
from .runner import COLUMNS, ZooInterrupted, ZooRow, find_models, run_zoo

__all__ = ["run_zoo", "ZooRow", "ZooInterrupted", "COLUMNS", "find_models", "Job", "convert_model", "latency_ratio"]
