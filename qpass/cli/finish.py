"""The end of ``qpass optimize``: print what was done, run the checks, then write. Nothing is written before every
check that can fail has passed; a check that cannot run at all (no reference kernel for an op) is reported as
skipped, with its reason, and does not fail the command."""
from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from qpass.errors import QpassError
from qpass.ir.atomic import atomic_dir
from .outputs import OutputPlan, write_together


class CsimMismatch(QpassError):
    """The C simulation differs from the golden simulator."""

    exit_code = 1


def _summary(src, result, pipeline, given: set[str]) -> list[str]:
    from qpass.report.summary import format_line, summary_lines

    lines = summary_lines(src, result)
    fmt = format_line(pipeline, given)
    return lines[:1] + ([fmt] if fmt else []) + lines[1:]


def finish_onnx(src, model: Path, result, outputs: OutputPlan, pipeline, given: set[str], samples, eval_samples,
                threads: int, quiet: bool) -> None:
    """Summary, evaluation and report data first; then the model and the report files, together."""
    from qpass.api import save

    if not quiet:
        for line in _summary(src, result, pipeline, given):
            click.echo(line)
    metrics = _evaluate(src, result, eval_samples, threads) if eval_samples is not None else {}
    # printed (the worst five) or written (the report): with -q and no --report nobody reads them
    errors = _layer_errors(src, result, eval_samples or samples, quiet) if not quiet or outputs.report else []
    texts = {}
    if outputs.report is not None:
        from qpass.report.data import collect
        from qpass.report.html import report_texts

        data = collect(src, result, eval_samples or samples, metrics)
        data["model"] = str(model)
        if errors:
            data["layer_errors"] = errors
        texts = report_texts(data, outputs.report)
    write_together(lambda: save(result.model, outputs.model), outputs.model, texts)
    if not quiet:
        for p in [outputs.model, *texts]:
            click.echo(f"wrote {p}")


def _layer_errors(src, result, samples, quiet: bool) -> list[dict]:
    """Per quantized activation tensor of a QDQ result: isolated and accumulated SQNR; the worst five printed."""
    if samples is None or "quantization" not in result.report.results:
        return []
    from qpass.analysis.layer_errors import MAX_SAMPLES, layer_errors, worst_lines
    from qpass.api import float_model

    errors = layer_errors(float_model(result) or src, result.model, samples)
    if not quiet:
        for line in worst_lines(errors, min(len(samples), MAX_SAMPLES)):
            click.echo(line)
    return errors


def _evaluate(src, result, eval_samples, threads: int) -> dict:
    """Print float vs quantized accuracy and SQNR (and golden vs onnxruntime after fakequant); the metrics."""
    from qpass.api import evaluate

    metrics, lines = evaluate(src, result, eval_samples, threads)
    for line in lines:
        click.echo(line)
    return metrics


def export_hls(result, out_dir: Path, pipeline, given: set[str], samples, *, quiet: bool, csim: bool, device: str,
               clock_ns, target_fps, control: str = "ap_ctrl_hs", folding=None, allow_over_budget=False,
               weights_mode: str = "const") -> None:
    """Export into a temporary folder beside OUT_DIR (and run the C simulation there); the folder takes its name
    only when everything worked."""
    from qpass.backends import hls
    from qpass.report.summary import format_line

    if hls.find_ap_types() is None:  # Xilinx's Apache-2.0 ap_int.h, from the hls4ml wheel (3.3 MB), once
        if not quiet:
            click.echo("fetching ap_int.h (Apache-2.0) from the hls4ml wheel into the qpass cache ...")
        hls.fetch_ap_types()
    simulate = csim and samples is not None
    with tqdm(total=2 if simulate else 1, desc="HLS export", unit="step", disable=quiet or None, leave=False) as bar:
        with atomic_dir(out_dir) as tmp:
            res = hls.export(result.model, tmp, device=device, clock_ns=clock_ns, target_fps=target_fps,
                             samples=samples, control=control, folding=folding,
                             allow_over_budget=allow_over_budget, weights_mode=weights_mode)
            bar.update(1)
            cmp = None
            if simulate:
                bar.set_description("C simulation")
                cmp = hls.compare_with_golden(res, samples)
                bar.update(1)
                if cmp.mismatches:
                    raise CsimMismatch(f"C simulation differs from the golden simulator: {cmp.mismatches} mismatches "
                                       f"({cmp.summary()}); nothing written (export without --csim to keep the "
                                       "project and run 'make csim' in it)")
    if not quiet:
        fmt = format_line(pipeline, given)
        if fmt:
            click.echo(fmt)
        click.echo(res.report.replace(str(tmp), str(out_dir)))
        click.echo(f"wrote {out_dir}")
    if cmp is not None:
        click.echo(f"C simulation vs golden: {cmp.mismatches} mismatches")
