"""``qpass inspect``, ``qpass run`` and ``qpass zoo``."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click
import numpy as np

from qpass.errors import QpassError
from .clickext import MAX_WORKERS, PositiveFloat, user_errors, worker_count
from .optimize import resolve_calib


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataflow", is_flag=True, help="Streamline the model (pipeline 'dataflow', needs calibration data) "
              "and explain which nodes stay on the host and why.")
@click.option("--calib", type=click.Path(dir_okay=False), help="Calibration samples for --dataflow.")
@user_errors
def inspect(model, dataflow, calib):
    """Print MODEL's inputs, outputs, opset, op histogram, its quantized dialect (QONNX, QCDQ, QDQ, QOperator,
    dynamic) with the number formats found, and what the default pipeline would quantize."""
    from qpass.api import load
    from qpass.ir.graph import main_opset, op_histogram

    m = load(model)
    click.echo(f"model: {model}")
    click.echo(f"producer: {m.producer_name} {m.producer_version}".rstrip())
    click.echo(f"ir_version: {m.ir_version}  opset: {main_opset(m)}  "
               f"other domains: {', '.join(sorted(o.domain for o in m.opset_import if o.domain not in ('', 'ai.onnx'))) or 'none'}")
    from qpass.ir.samples import model_inputs

    for spec in model_inputs(m):
        dims = "?" if spec.dims is None else "x".join(str(d) if d else "?" for d in spec.dims) or "scalar"
        click.echo(f"input:  {spec.name}  {spec.dtype}  [{dims}]")
    for o in m.graph.output:
        tt = o.type.tensor_type
        dims = "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        click.echo(f"output: {o.name}  [{dims}]")
    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    click.echo(f"nodes: {len(m.graph.node)}  parameters: {params}")
    click.echo("ops: " + ", ".join(f"{k} {v}" for k, v in op_histogram(m.graph).items()))
    from qpass.passes.dialects import detect_dialect

    info = detect_dialect(m)
    click.echo(f"dialect: {info.name}" + (f" (also {', '.join(info.dialects[1:])})" if len(info.dialects) > 1 else ""))
    if info.quantized:
        click.echo("formats:")
        for fmt, count in sorted(info.formats.items()):
            click.echo(f"  {count} x {fmt}")
        if info.annotations:
            click.echo("datatype annotations: " + ", ".join(f"{k} {v}" for k, v in sorted(info.annotations.items())))
        click.echo("qpass optimize keeps this quantization (import_quantized); --requantize quantizes it again")
    else:
        _default_plan(m)
    if dataflow:
        _explain_dataflow(model, m, calib, info.quantized)


def _default_plan(m) -> None:
    """What the default pipeline would quantize, and what it leaves in float."""
    from qpass.ir.graph import to_gs
    from qpass.pipeline.context import PassContext
    from qpass.passes.fold_batchnorm import FoldBatchNorm
    from qpass.passes.normalize import Normalize
    from qpass.passes.quantize_qdq import QuantizeQDQOptions, plan_quantization

    ctx = PassContext()
    norm = FoldBatchNorm().run(Normalize().run(m, ctx).model, ctx).model
    plan = plan_quantization(to_gs(norm), QuantizeQDQOptions())
    click.echo(f"default pipeline would quantize {len(plan.nodes)} nodes "
               f"({len(plan.fused_activations)} activations fused into their producer):")
    for name in plan.nodes:
        click.echo(f"  {name}")
    reasons = Counter(plan.float_reasons.values())
    if reasons:
        click.echo("left in float:")
        for reason, count in reasons.most_common():
            click.echo(f"  {count} x {reason}")


def _explain_dataflow(model, m, calib, quantized: bool) -> None:
    """Streamline (pipeline 'dataflow'; a quantized model keeps its quantization) and say what stays on the host."""
    from qpass.api import optimize as run_pipeline, qonnx_model
    from qpass.backends.hls import explain
    from qpass.pipeline.files import load_pipeline

    if quantized:
        from qpass.passes.dialects.pipelines import import_pipeline

        res = run_pipeline(m, pipeline=import_pipeline(load_pipeline("dataflow")), disabled={"lower_ort"})
    else:
        res = run_pipeline(m, calib=resolve_calib(model, calib, True), pipeline="dataflow", disabled={"lower_ort"})
    rows = explain(qonnx_model(res))
    click.echo(f"dataflow: {len(rows)} nodes stay on the host")
    for row in rows:
        node, op, reason = row[:3]
        click.echo(f"  {op} {node}: {reason}")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", required=True, type=click.Path(dir_okay=False),
              help="Input samples (.npz keyed by input name, samples stacked on a leading axis).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write outputs to this .npz (stacked per sample).")
@click.option("--backend", type=click.Choice(["ort", "golden"]), default="ort", show_default=True,
              help="onnxruntime, or the bit-exact numpy golden simulator.")
@click.option("--threads", default=1, show_default=True, type=worker_count(), help="onnxruntime threads.")
@user_errors
def run(model, inputs_path, output, backend, threads):
    """Run MODEL over the samples in an .npz and print or save the outputs."""
    from qpass.api import load
    from qpass.ir.atomic import atomic_path
    from qpass.ir.ort_session import run_samples
    from qpass.ir.samples import load_samples
    from qpass.analysis.metrics import accuracy

    m = load(model)
    samples = load_samples(inputs_path, m)
    if backend == "golden":
        from qpass.ops.partition import PartitionStore
        from qpass.reference import run_samples as golden_run

        outs = golden_run(m, samples, partitions=PartitionStore(base_dir=model.parent))
    else:
        outs = run_samples(m, samples, threads)
    for name, arr in outs.items():
        click.echo(f"{name}: shape {arr.shape} dtype {arr.dtype} mean {float(np.mean(arr)):.6g}")
    if samples.labels is not None:
        first = next(iter(outs.values()))
        click.echo(f"top-1 accuracy: {100 * accuracy(first, samples.labels):.2f}% on {len(samples)} samples")
    if output:
        with atomic_path(output, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **outs)
        click.echo(f"wrote {output}")


@click.command()
@click.argument("models_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the converted models, their reports, the records (zoo-records/) and the zoo report "
                   "(zoo.html, zoo.json, zoo.csv).")
@click.option("--pipeline", "pipeline_name", default="default", show_default=True,
              help="Built-in pipeline name or a pipeline YAML file.")
@click.option("--jobs", default=min(2, MAX_WORKERS), show_default=True, type=worker_count(),
              help="Models converted at once by --engine process.")
@click.option("--engine", type=click.Choice(["process", "ray"]), default="process", show_default=True,
              help="process: worker processes on this machine; ray: one Ray task per model (pip install "
                   "'qpass[cluster]').")
@click.option("--address", help="--engine ray: the Ray cluster to use (HOST:PORT, or auto); default: RAY_ADDRESS, "
                                "else a new local Ray instance.")
@click.option("--force", is_flag=True, help="Convert every model again, even those whose record is up to date.")
@click.option("--timeout", type=PositiveFloat(), help="Seconds one model may take; a model still running then is "
                                                      "killed and recorded as 'timeout'.")
@click.option("--max-memory", type=click.IntRange(64), metavar="MB",
              help="Address-space limit of one model's process; a model that exceeds it is recorded as 'oom'.")
@click.option("--no-latency", is_flag=True, help="Skip the quantised / float latency measurement.")
@click.option("-q", "--quiet", is_flag=True)
@user_errors
def zoo(models_dir, out_dir, pipeline_name, jobs, engine, address, force, timeout, max_memory, no_latency, quiet):
    """Convert every model in MODELS_DIR (each with its MODEL.calib.npz) and write the zoo report.

    Resumable: each model's result is recorded in OUT_DIR/zoo-records/; a re-run converts only what changed or
    failed (--force: everything). A crash, a hang (--timeout) or running out of memory is recorded for that model
    and never stops the run."""
    from qpass.pipeline.engines import make_engine
    from qpass.pipeline.files import load_pipeline
    from qpass.zoo import run_zoo

    load_pipeline(pipeline_name)  # a bad pipeline is one error, not one per model
    if out_dir.resolve() == models_dir.resolve():
        raise QpassError("the output folder must differ from the models folder")
    with make_engine(engine, jobs=jobs, address=address) as runner:
        rows = run_zoo(models_dir, out_dir, pipeline_name, jobs, progress=not quiet, engine=runner, force=force,
                       timeout=timeout, max_memory=max_memory, latency=not no_latency)
    for r in rows:
        extra = f"SQNR {r.sqnr_db} dB, {r.metric_name} {r.metric}" if r.status == "ok" else r.reason
        when = f"{r.seconds:>8.2f}s" if r.converted else "  (up to date)"
        click.echo(f"{r.status:<8}{r.model:<48}{when}  {extra}")
    ok = sum(r.status == "ok" for r in rows)
    fresh = sum(r.converted for r in rows)
    click.echo(f"{ok} of {len(rows)} converted ({fresh} in this run); report in {out_dir / 'zoo.html'} "
               f"(and zoo.json, zoo.csv)")
    if any(r.status not in ("ok", "skipped") for r in rows):
        sys.exit(1)  # the others were converted; the exit code tells scripts that something failed
