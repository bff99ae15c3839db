"""The ``qpass`` command line: optimize, inspect, run."""
from __future__ import annotations

import functools
import os
import sys
from collections import Counter
from pathlib import Path

import click
import numpy as np

from . import __version__
from .errors import QpassError


def _fail(message: str, code: int = 2):
    click.echo(f"qpass: error: {message}", err=True)
    sys.exit(code)


def user_errors(fn):
    """Turn every failure into one line on stderr and a non-zero exit code (2 for bad input)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QpassError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:  # e.g. piped into `head`: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except MemoryError:
            _fail("out of memory", 1)
        except Exception as exc:  # a bug: still one line; QPASS_DEBUG=1 re-raises for the traceback
            if os.environ.get("QPASS_DEBUG"):
                raise
            text = (str(exc).strip().splitlines() or [""])[0]
            _fail(f"internal error: {type(exc).__name__}: {text} (set QPASS_DEBUG=1 for a traceback)", 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qpass")
def main():
    """qpass: quantize ONNX models with a pipeline of graph-rewriting passes."""


def _default_out(model: Path, suffix: str = ".int8.onnx") -> Path:
    stem = model.name[:-5] if model.name.endswith(".onnx") else model.name
    return model.with_name(stem + suffix)


def _resolve_calib(model_path: Path, calib: str | None, needed: bool):
    from qpass.ir.samples import default_calib_path

    if calib:
        return Path(calib)
    beside = default_calib_path(model_path)
    if beside.is_file():
        return beside
    if needed:
        raise QpassError(f"no calibration data: pass --calib NPZ or put {beside.name} beside the model")
    return None


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (default: MODEL.int8.onnx).")
@click.option("--calib", type=click.Path(dir_okay=False), help="Calibration samples (.npz keyed by input name; "
              "default: MODEL.calib.npz beside the model).")
@click.option("--pipeline", "pipeline_name", default="default", show_default=True,
              help="Built-in pipeline name or a pipeline YAML file.")
@click.option("--dump-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the model after every pass into this folder.")
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False),
              help="Evaluation samples (.npz, optional 'labels'): print float vs quantized accuracy and SQNR.")
@click.option("--threads", default=1, show_default=True, help="onnxruntime threads for calibration and eval.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an HTML report (and a .json twin): per-quantiser format, range, saturation, SQNR, "
                   "histograms, pass timeline.")
@click.option("--activation-dtype", type=click.Choice(["int8", "uint8"]), help="Activation integer type.")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel weight scales.")
@click.option("--exclude", multiple=True, help="Node-name glob pattern to leave in float (repeatable).")
@click.option("--target-cpu", type=click.Choice(["auto", "avx2", "vnni", "arm", "any"]),
              help="CPUs the int8 model must compute exactly on (default auto: this machine's kind): avx2 and any "
                   "keep int16 pair sums of x86 CPUs without VNNI from saturating; vnni and arm use plain int8 "
                   "weights everywhere.")
@click.option("--weights", help="Weight format, e.g. sym:8, fixed:8,6, dfp:8, ternary, binary, bfp:4,16, pow2:-8,0.")
@click.option("--activations", help="Activation format, e.g. uint8, int8, fixed:8,4, dfp:8, uint4.")
@click.option("--bias", help="Bias format: auto (int32 at s_in*s_w), float, or a format spec.")
@click.option("--accumulator", help="Accumulator format for --placement intrinsic, e.g. int16, fixed:24,0.")
@click.option("--placement", type=click.Choice(["extrinsic", "intrinsic"]), help="Where activations are quantised.")
@click.option("--rounding", help="Weight rounding: ROUND, HALF_UP, HALF_DOWN, FLOOR, CEIL, UP, DOWN, STOCHASTIC.")
@click.option("--granularity", help="Weight scale granularity: tensor, channel (row), group:G.")
@click.option("--calibrator", help="Activation range calibrator: minmax, percentile, entropy, mse, dfp.")
@click.option("--seed", type=int, help="Seed for stochastic rounding.")
@click.option("--bits", help="auto: search a width per layer (pipeline 'bitwidth'); N: uniform sym:N weights and "
              "uintN activations.")
@click.option("--target", help="Accuracy target of --bits auto, e.g. relative_accuracy>=0.99 or sqnr>=30.")
@click.option("--cost", type=click.Choice(["memory", "bops", "resources"]), help="What --bits auto minimises.")
@click.option("--avg-bits", type=float, help="--bits auto under a budget: average weight bits <= this.")
@click.option("--backend", type=click.Choice(["ort", "hls"]), default="ort", show_default=True,
              help="ort: an ONNX file onnxruntime runs; hls: a folder of HLS C++ dataflow projects (-o OUT_DIR).")
@click.option("--device", default="xc7z020", show_default=True, help="FPGA part for --backend hls.")
@click.option("--clock-ns", type=float, help="Clock period for --backend hls (default: the device's).")
@click.option("--target-fps", type=float, help="Frame rate to fold for (--backend hls); default: fastest that fits.")
@click.option("--csim", is_flag=True, help="With --backend hls: compile and run the C simulation (g++) and "
              "compare it with the golden simulator on the --eval (or calibration) samples.")
@click.option("--qonnx", is_flag=True, help="Keep QONNX quantisation ops (skip lowering to standard ONNX).")
@click.option("--no-verify", is_flag=True, help="Skip the checker and shape inference between passes.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@user_errors
def optimize(model, output, calib, pipeline_name, dump_dir, eval_path, report_path, backend, device, clock_ns,
             target_fps, csim, no_verify, quiet, **settings):
    """Quantize MODEL with a pipeline of passes and write the result atomically.

    With any of --weights/--activations/--bias/--accumulator/--placement/--rounding/--granularity/--calibrator the
    default pipeline becomes 'fakequant' (any number format, lowered to standard ONNX unless --qonnx)."""
    from .api import load, optimize as run_pipeline
    from qpass.pipeline.config import QuantConfig

    src = load(model)
    cfg = QuantConfig(pipeline=pipeline_name, backend=backend, verify=not no_verify, **settings)
    plan = cfg.resolve()
    samples, eval_samples = _load_samples(model, src, calib, eval_path, plan.needs_calibration)
    out_path = _output_path(model, output, backend)
    result = run_pipeline(src, calib=samples, pipeline=plan.pipeline, dump_dir=dump_dir, progress=not quiet,
                          verify=plan.verify, disabled=plan.disabled, eval=eval_samples)
    if backend == "hls":
        _export_hls(result.model, out_path, device, clock_ns, target_fps, eval_samples or samples, csim, quiet)
        return
    _save_onnx(src, result, out_path, quiet)
    metrics = _evaluate(src, result, eval_samples, cfg.threads) if eval_samples is not None else {}
    if report_path:
        _write_report(src, model, result, eval_samples or samples, metrics, report_path, quiet)


def _load_samples(model: Path, src, calib: str | None, eval_path: str | None, needs_calib: bool):
    """(calibration samples or None, evaluation samples or None)."""
    from qpass.ir.samples import load_samples

    calib_path = _resolve_calib(model, calib, needs_calib)
    samples = load_samples(calib_path, src) if calib_path else None
    return samples, (load_samples(eval_path, src) if eval_path else None)


def _output_path(model: Path, output: Path | None, backend: str) -> Path:
    """-o, or MODEL.int8.onnx / MODEL.hls; refuses to overwrite the model or a non-empty folder."""
    out_path = output or _default_out(model, ".hls" if backend == "hls" else ".int8.onnx")
    if out_path.resolve() == model.resolve():
        raise QpassError(f"output {out_path} would overwrite the input model")
    if backend == "hls" and out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise QpassError(f"output folder {out_path} exists and is not empty")
    return out_path


def _save_onnx(src, result, out_path: Path, quiet: bool) -> None:
    from .api import save
    from qpass.report.summary import summary_lines

    save(result.model, out_path)
    if not quiet:
        for line in summary_lines(src, result):
            click.echo(line)
        click.echo(f"wrote {out_path}")


def _evaluate(src, result, eval_samples, threads: int) -> dict:
    """Print float vs quantized accuracy and SQNR (and golden vs onnxruntime after fakequant); the metrics."""
    from .api import qonnx_model
    from qpass.analysis.evaluate import check_backends, compare

    cmp = compare(src, result.model, eval_samples, threads)
    metrics = {"samples": cmp.samples, "output SQNR vs float (dB)": cmp.sqnr_db,
               "top-1 agreement with float": cmp.agreement}
    if cmp.float_accuracy is not None:
        metrics.update({"float accuracy": cmp.float_accuracy, "quantized accuracy": cmp.quant_accuracy})
    for line in cmp.lines():
        click.echo(line)
    if "fakequant" in result.report.results:
        chk = check_backends(qonnx_model(result), result.model, eval_samples, threads)
        metrics["golden/onnxruntime identical predictions"] = f"{chk.identical_predictions}/{chk.samples}"
        for line in chk.lines():
            click.echo(line)
    return metrics


def _write_report(src, model: Path, result, samples, metrics: dict, report_path: Path, quiet: bool) -> None:
    from qpass.report.data import collect
    from qpass.report.html import write_report

    data = collect(src, result, samples, metrics)
    data["model"] = str(model)
    for p in write_report(data, report_path):
        if not quiet:
            click.echo(f"wrote {p}")


def _export_hls(model, out_dir: Path, device, clock_ns, target_fps, samples, csim: bool, quiet: bool) -> None:
    """Export into a temporary folder beside OUT_DIR and rename it into place only when everything worked."""
    import shutil
    import tempfile

    from .backends import hls

    if hls.find_ap_types() is None:  # Xilinx's Apache-2.0 ap_int.h, from the hls4ml wheel (3.3 MB), once
        if not quiet:
            click.echo("fetching ap_int.h (Apache-2.0) from the hls4ml wheel into the qpass cache ...")
        hls.fetch_ap_types()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        res = hls.export(model, tmp, device=device, clock_ns=clock_ns, target_fps=target_fps, samples=samples)
        cmp = hls.compare_with_golden(res, samples) if csim and samples is not None else None
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked before the run)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        click.echo(res.report.replace(str(tmp), str(out_dir)))
        click.echo(f"wrote {out_dir}")
    if cmp is not None:
        click.echo(f"C simulation vs golden: {cmp.mismatches} mismatches" + (f" ({cmp})" if cmp.mismatches else ""))
        if cmp.mismatches:
            sys.exit(1)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataflow", is_flag=True, help="Streamline the model (pipeline 'dataflow', needs calibration data) "
              "and explain which nodes stay on the host and why.")
@click.option("--calib", type=click.Path(dir_okay=False), help="Calibration samples for --dataflow.")
@user_errors
def inspect(model, dataflow, calib):
    """Print MODEL's inputs, outputs, opset, op histogram and what the default pipeline would quantize."""
    from .api import load
    from qpass.ir.graph import main_opset, op_histogram, to_gs
    from qpass.pipeline.context import PassContext
    from .passes.fold_batchnorm import FoldBatchNorm
    from .passes.normalize import Normalize
    from .passes.quantize_qdq import QuantizeQDQOptions, plan_quantization

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
    if dataflow:
        from .api import optimize as run_pipeline, qonnx_model
        from .backends.hls import explain

        calib_path = _resolve_calib(model, calib, True)
        res = run_pipeline(m, calib=calib_path, pipeline="dataflow", disabled={"lower_ort"})
        rows = explain(qonnx_model(res))
        click.echo(f"dataflow: {len(rows)} nodes stay on the host")
        for row in rows:
            node, op, reason = row[:3]
            click.echo(f"  {op} {node}: {reason}")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--inputs", "inputs_path", required=True, type=click.Path(dir_okay=False),
              help="Input samples (.npz keyed by input name, samples stacked on a leading axis).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write outputs to this .npz (stacked per sample).")
@click.option("--backend", type=click.Choice(["ort", "golden"]), default="ort", show_default=True,
              help="onnxruntime, or the bit-exact numpy golden simulator.")
@click.option("--threads", default=1, show_default=True)
@user_errors
def run(model, inputs_path, output, backend, threads):
    """Run MODEL over the samples in an .npz and print or save the outputs."""
    from .api import load
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


@main.command()
@click.argument("models_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the converted models and summary.md / summary.csv.")
@click.option("--pipeline", "pipeline_name", default="default", show_default=True,
              help="Built-in pipeline name or a pipeline YAML file.")
@click.option("--jobs", default=2, show_default=True, help="Parallel worker processes.")
@click.option("-q", "--quiet", is_flag=True)
@user_errors
def zoo(models_dir, out_dir, pipeline_name, jobs, quiet):
    """Convert every model in MODELS_DIR (each with its MODEL.calib.npz) and write a summary table."""
    from qpass.pipeline.files import load_pipeline
    from .zoo import run_zoo

    load_pipeline(pipeline_name)  # a bad pipeline is one error, not one per model
    if out_dir.resolve() == models_dir.resolve():
        raise QpassError("the output folder must differ from the models folder")
    rows = run_zoo(models_dir, out_dir, pipeline_name, max(1, jobs), progress=not quiet)
    for r in rows:
        extra = f"SQNR {r.sqnr_db} dB, {r.metric_name} {r.metric}" if r.status == "ok" else r.reason
        click.echo(f"{r.status:<8}{r.model:<48}{r.seconds:>8.2f}s  {extra}")
    ok = sum(r.status == "ok" for r in rows)
    click.echo(f"{ok} of {len(rows)} converted; summary in {out_dir / 'summary.md'} and {out_dir / 'summary.csv'}")
    if any(r.status == "failed" for r in rows):
        sys.exit(1)  # the others were converted; the exit code tells scripts that something failed


if __name__ == "__main__":
    main()
