"""Where ``qpass optimize`` writes, decided and checked before any work starts.

Default names say what the file is: ``MODEL.<what>.onnx`` beside the model, where ``<what>`` is

- ``int8`` for the default pipeline, ``bits-auto`` for ``--bits auto`` (``bits-avgB`` with ``--avg-bits B``),
  ``bits-N`` for ``--bits N``;
- the pipeline's name otherwise (``fakequant`` for format flags, ``streamline``, ``requant``, ...; a pipeline
  file's stem), with ``.qonnx`` added when ``--qonnx`` (``--format qonnx``) keeps the QONNX ops, ``.qcdq`` /
  ``.qdq`` with ``--format qcdq`` / ``qdq``;

and ``MODEL.hls/`` for ``--backend hls`` (``MODEL.rtl/`` for ``rtl``). ``-o`` naming an existing folder, or ending in ``/``, puts that name
inside it. No output may be an input or another output (``--report R.html`` also writes ``R.json``), and every
output path is checked for writability up front, so a bad path costs no pipeline run.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from qpass.errors import QpassError
from qpass.ir.atomic import OutputError, atomic_path, check_output_file
from qpass.pipeline.config import QuantConfig, ResolvedConfig
from qpass.report.html import report_files


def output_kind(cfg: QuantConfig, plan: ResolvedConfig, fmt: str | None = None) -> str:
    """The ``<what>`` of ``MODEL.<what>.onnx``."""
    bits = None if cfg.bits is None else str(cfg.bits)
    if bits == "auto" and plan.pipeline_name == "bitwidth":
        what = "bits-auto" if cfg.avg_bits is None else f"bits-avg{cfg.avg_bits:g}"
    elif bits is not None and plan.pipeline_name == "fakequant":
        what = f"bits-{bits}"
    elif plan.pipeline_name == "default":
        what = "int8"
    else:
        name = str(plan.pipeline_name)
        what = Path(name).stem if name.endswith((".yaml", ".yml")) or os.sep in name else name
        what = re.sub(r"[^A-Za-z0-9_.-]+", "_", what).strip("._") or "pipeline"
    if fmt in ("qcdq", "qdq"):
        return f"{what}.{fmt}"
    return what + (".qonnx" if cfg.qonnx and cfg.backend not in ("hls", "rtl") else "")


def _stem(model: Path) -> str:
    return model.name[:-5] if model.name.endswith(".onnx") else model.name


def model_output(model: Path, output: str | None, what: str, backend: str) -> Path:
    """The model (or, for hls, the project folder) path for ``-o`` as typed (a trailing ``/`` matters)."""
    name = f"{_stem(model)}.{backend}" if backend in ("hls", "rtl") else f"{_stem(model)}.{what}.onnx"
    if not output:
        return model.with_name(name)
    path = Path(output)
    if backend in ("hls", "rtl"):
        return path
    if output.endswith(("/", os.sep)) or os.path.isdir(path):
        return path / name
    return path


def _same(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    with contextlib.suppress(OSError):
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    return False


def _nearest_existing(path: Path) -> Path:
    p = path.absolute().parent
    while not os.path.exists(p) and p != p.parent:
        p = p.parent
    return p


def check_writable(target: Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written: an existing special file or folder, a path
    through a file, a name longer than the file system allows, a folder that takes no new files."""
    base = _nearest_existing(target)
    if not os.path.isdir(base):
        raise OutputError(f"cannot write {target}: {base} is a file, not a folder")
    try:
        limit = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    if any(len(os.fsencode(c)) > limit for c in target.parts):
        raise OutputError(f"cannot write {target}: a name in the path is longer than {limit} bytes")
    if not folder:
        check_output_file(target)
    elif os.path.lexists(target) and not os.path.isdir(target):
        raise OutputError(f"cannot write {target}: it exists and is not a folder")
    try:  # the only sure test of a folder (read-only mounts, /proc, permissions): make and remove a file there
        fd, probe = tempfile.mkstemp(prefix=".qpass-probe.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {exc.strerror or type(exc).__name__} ({base})") from None


@dataclass
class OutputPlan:
    """The files one ``qpass optimize`` run will write."""

    model: Path
    report: Path | None = None
    report_paths: list[Path] = field(default_factory=list)


def plan_outputs(model: Path, output: str | None, report: str | None, what: str, backend: str,
                 inputs: list[Path], pareto: bool) -> OutputPlan:
    """Decide and check every output path (see the module docstring)."""
    plan = OutputPlan(model_output(model, output, what, backend))
    if report:
        plan.report = Path(report)
        plan.report_paths = report_files(plan.report, pareto)
    named = [("-o", plan.model)] + [("--report", p) for p in plan.report_paths]
    for i, (flag, path) in enumerate(named):
        for src in inputs:
            if _same(path, src):
                raise QpassError(f"{flag} {path} would overwrite the input {src}")
        for other_flag, other in named[:i]:
            if _same(path, other):
                raise QpassError(f"{flag} {path} and {other_flag} {other} are the same file: give them different "
                                 "names")
    hls = backend in ("hls", "rtl")
    if hls and os.path.isdir(plan.model) and any(plan.model.iterdir()):
        raise OutputError(f"output folder {plan.model} exists and is not empty")
    check_writable(plan.model, folder=hls)
    for p in plan.report_paths:
        check_writable(p)
    return plan


def write_together(save_model, model_path: Path, texts: dict[Path, str]) -> None:
    """Write ``texts`` and the model (``save_model()``) so that either all appear or none: the texts go to
    temporary files first, the model is saved, then the texts are renamed into place (the model is removed again
    if that fails)."""
    with contextlib.ExitStack() as stack:
        tmps = {p: stack.enter_context(atomic_path(p)) for p in texts}
        for p, tmp in tmps.items():
            tmp.write_text(texts[p], encoding="utf-8")
        save_model()
        try:
            stack.close()
        except BaseException:
            with contextlib.suppress(OSError):
                model_path.unlink()
            raise
