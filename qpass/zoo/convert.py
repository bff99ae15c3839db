"""One model's conversion, the unit of work of ``qpass zoo`` (runs in an isolated process, possibly on another node).

A ``Job`` names the model's files (model, calibration and evaluation samples, a pipeline file); sent to another
machine it carries their contents (``Job.for_remote``), so workers need no shared file system. ``convert_model(job)`` does what ``qpass optimize MODEL -o OUT --calib CALIB
--eval EVAL --pipeline P --report REPORT -q`` does (the evaluation samples default to the calibration samples), in a
private temporary folder, and returns the files to write (by name relative to the output folder) and the metrics.
Only a bad input (``QpassError``) is a result here (``failed`` with its one-line reason); anything else escapes to
the isolation layer, which records it as a crash, an out-of-memory or an internal error.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from qpass.errors import QpassError
from qpass.pipeline.isolate import classify


@dataclass
class Job:
    """One model to convert: its files by path (read where the job runs) or, after ``for_remote()``, as bytes."""

    rel: str  # the model's path relative to MODELS_DIR (also its output's, relative to OUT_DIR)
    source: str  # its absolute path, as the per-model report names it
    model_path: Path | None
    calib_path: Path | None
    eval_path: Path | None
    pipeline: str  # a built-in pipeline name, or a pipeline file's path
    pipeline_path: Path | None = None
    latency: bool = True
    model: bytes | None = None
    calib: bytes | None = None
    eval: bytes | None = None
    pipeline_text: str | None = None

    def for_remote(self) -> "Job":
        """The same job carrying its files' contents (for a worker on another machine)."""
        def read(p):
            return None if p is None else Path(p).read_bytes()

        text = None if self.pipeline_path is None else Path(self.pipeline_path).read_text()
        return replace(self, model_path=None, calib_path=None, eval_path=None, pipeline_path=None,
                       model=read(self.model_path) if self.model is None else self.model,
                       calib=read(self.calib_path) if self.calib is None else self.calib,
                       eval=read(self.eval_path) if self.eval is None else self.eval,
                       pipeline_text=text if self.pipeline_text is None else self.pipeline_text)


def report_name(rel: str) -> str:
    """``sub/m.onnx`` -> ``sub/m.report.html`` (the per-model report, beside the converted model)."""
    stem = rel[:-5] if rel.endswith(".onnx") else rel
    return stem + ".report.html"


def latency_ratio(quant, ref, feed, repeats: int = 50) -> float:
    """Median quantised / float latency in onnxruntime (1 thread), runs interleaved so noise hits both alike."""
    import numpy as np

    from qpass.ir.ort_session import interleaved_times, make_session

    times = interleaved_times({0: make_session(quant, threads=1), 1: make_session(ref, threads=1)}, feed,
                              warmup=10, rounds=repeats)
    return float(np.median(times[0]) / np.median(times[1]))


def integer_share(results: dict) -> float | None:
    """Share of the layers the quantising pass considered that it turned integer (None when no pass says)."""
    q = results.get("quantization")
    if q:
        done, left = len(q["quantized_nodes"]), len(q["float_nodes"])
    elif results.get("integer_report"):
        ir = results["integer_report"]
        done, left = len(ir["layers"]), sum(not f["allowed"] for f in ir["float_ops"])
    else:
        return None
    return round(done / (done + left), 4) if done + left else None


def _summary(metrics: dict | None, size_before: int, size_after: int, results: dict) -> dict:
    out = {"size_before": size_before, "size_after": size_after, "integer_share": integer_share(results)}
    if metrics is None:
        return out
    out["sqnr_db"] = round(float(metrics["output SQNR vs float (dB)"]), 2)
    if "quantized accuracy" in metrics:
        out.update(metric=round(float(metrics["quantized accuracy"]), 4), metric_name="accuracy",
                   float_metric=round(float(metrics["float accuracy"]), 4))
    else:
        out.update(metric=round(float(metrics["top-1 agreement with float"]), 4), metric_name="top1_agreement",
                   float_metric=1.0)
    return out


def convert_model(job: Job) -> dict:
    """``{"status": "ok" | "failed" | "skipped", "reason", "metrics", "files": {relative name: bytes}}``."""
    job = job.for_remote()
    if job.calib is None and not _already_quantized(job.model):
        return {"status": "skipped", "reason": f"no {Path(job.rel).name[:-5]}.calib.npz beside the model",
                "metrics": {"size_before": len(job.model)}, "files": {}}
    with tempfile.TemporaryDirectory(prefix="qpass-zoo-") as tmp:
        try:
            return _convert(job, Path(tmp))
        except QpassError as exc:  # a pass that ran out of memory is wrapped in one: still an oom
            status = "oom" if classify(exc) == "oom" else "failed"
            return {"status": status, "reason": str(exc), "metrics": {"size_before": len(job.model)}, "files": {}}


def _already_quantized(model: bytes) -> bool:
    """An already-quantized model needs no calibration samples: the zoo imports it (keeps its quantization)."""
    import onnx

    from qpass.passes.dialects import detect_dialect

    try:
        return detect_dialect(onnx.load_from_string(model)).quantized
    except Exception:  # a broken file: left to the conversion, which reports it in one line
        return False


def _samples(tmp: Path, name: str, data: bytes | None, src):
    from qpass.ir.samples import load_samples

    if data is None:
        return None
    (tmp / name).write_bytes(data)
    return load_samples(tmp / name, src)


def _convert(job: Job, tmp: Path) -> dict:
    from qpass.api import evaluate, load, optimize, save
    from qpass.pipeline.config import QuantConfig
    from qpass.report.data import collect
    from qpass.report.html import report_texts

    name = Path(job.rel).name
    src_path = tmp / "in" / name
    src_path.parent.mkdir()
    src_path.write_bytes(job.model)
    pipeline = job.pipeline
    if job.pipeline_text is not None:
        pipeline = str(tmp / Path(job.pipeline).name)
        Path(pipeline).write_text(job.pipeline_text)
    src = load(src_path)
    samples = _samples(tmp, "calib.npz", job.calib, src)
    ev = _samples(tmp, "eval.npz", job.eval, src) or samples
    res = optimize(src, calib=samples, config=QuantConfig(pipeline=pipeline), eval=ev)
    # an already-quantized model without samples is imported (keeps its quantization); nothing to measure it on
    metrics = evaluate(src, res, ev)[0] if ev is not None else None
    data = collect(src, res, ev, metrics)
    data["model"] = job.source
    out_model = tmp / "out" / name
    texts = report_texts(data, tmp / "out" / Path(report_name(job.rel)).name)
    save(res.model, out_model)
    parent = str(Path(job.rel).parent)
    prefix = "" if parent == "." else parent + "/"
    files = {prefix + p.name: p.read_bytes() for p in [out_model]}
    files.update({prefix + p.name: t.encode() for p, t in texts.items()})
    summary = _summary(metrics, len(job.model), out_model.stat().st_size, res.report.results)
    if job.latency and ev is not None:
        summary["latency_ratio"] = round(latency_ratio(res.model, src, ev.feed(0)), 3)
    return {"status": "ok", "reason": "", "metrics": summary, "files": files}
