"""``run_zoo``: plan (what is up to date), convert the rest on an engine, record each result as it arrives, report.

The driver is the only writer of OUT_DIR: workers return their files as bytes, and the driver writes each model's
files atomically and then its record. A run killed at any moment (SIGINT, SIGKILL, a reboot) therefore leaves
every finished model recorded and nothing half-written; the next run redoes only the rest. An exclusive lock on
``OUT_DIR/.zoo.lock`` keeps two runs from writing one folder.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tqdm import tqdm

from qpass.errors import QpassError
from qpass.ir.atomic import write_bytes
from qpass.ir.samples import default_calib_path
from qpass.pipeline.config import MAX_WORKERS
from qpass.pipeline.engines import Engine, ProcessEngine
from . import records
from .convert import Job, convert_model, report_name

#: a failure of the isolated process, by Outcome status, as the row's status
FAILURES = {"error": "failed", "timeout": "timeout", "crashed": "crashed", "oom": "oom"}


class ZooInterrupted(QpassError):
    """Ctrl-C: the finished models are recorded; the same command resumes."""

    exit_code = 130


@dataclass
class ZooRow:
    model: str
    status: str  # ok | skipped | failed | timeout | crashed | oom | pending (not reached before an interrupt)
    seconds: float = 0.0
    size_before: int = 0
    size_after: int = 0
    sqnr_db: float | None = None
    metric: float | None = None
    metric_name: str = ""
    float_metric: float | None = None
    integer_share: float | None = None
    latency_ratio: float | None = None
    reason: str = ""
    report: str = ""  # the per-model report, relative to OUT_DIR
    command: str = ""
    converted: bool = False  # converted in this run (False: up to date from an earlier one)


COLUMNS = [f.name for f in fields(ZooRow) if f.name != "converted"]


def find_models(root: Path, exclude: Path | None = None) -> list[Path]:
    """Every ``*.onnx`` file under ``root`` (not inside ``exclude``, the output folder), sorted."""
    out = []
    for p in sorted(Path(root).rglob("*.onnx")):
        if p.is_file() and not (exclude is not None and exclude in p.resolve().parents):
            out.append(p)
    return out


def eval_path(model: Path) -> Path:
    return default_calib_path(model).with_name(default_calib_path(model).name.replace(".calib.npz", ".eval.npz"))


def _check(jobs, timeout, max_memory) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_WORKERS:
        raise QpassError(f"jobs takes a whole number from 1 to {MAX_WORKERS} (four per CPU), not {jobs!r}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise QpassError(f"timeout takes a number of seconds greater than 0, not {timeout!r}")
    if max_memory is not None and not (isinstance(max_memory, int) and max_memory >= 64):
        raise QpassError(f"max_memory takes a number of megabytes (64 or more), not {max_memory!r}")


@contextlib.contextmanager
def _locked(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".zoo.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise QpassError(f"another qpass zoo is writing {out} (its lock {out / '.zoo.lock'} is held)") from None
        yield


@dataclass
class _Planned:
    rel: str
    source: Path
    calib: Path | None
    eval: Path | None
    inputs: dict
    old: dict | None


def _plan(root: Path, out: Path, pipeline_file: Path | None, settings: dict, version: str, force: bool):
    """(rows of up-to-date models, models to convert)."""
    fresh, todo = {}, []
    for p in find_models(root, out):
        rel = p.relative_to(root).as_posix()
        old = records.load_record(out, rel)
        known = (old or {}).get("inputs", {})
        calib, ev = default_calib_path(p), eval_path(p)
        calib, ev = (calib if calib.is_file() else None), (ev if ev.is_file() else None)
        inputs = {"model": records.fingerprint(p, known.get("model")),
                  "calib": records.fingerprint(calib, known.get("calib")),
                  "eval": records.fingerprint(ev, known.get("eval")),
                  "pipeline": records.fingerprint(pipeline_file, known.get("pipeline"))}
        if not force and records.up_to_date(old, inputs, settings, version, out):
            fresh[rel] = row_from_record(old)
        else:
            todo.append(_Planned(rel, p, calib, ev, inputs, old))
    return fresh, todo


def row_from_record(rec: dict, converted: bool = False) -> ZooRow:
    m = rec.get("metrics", {})
    known = {f.name for f in fields(ZooRow)}
    row = ZooRow(rec["model"], rec["status"], seconds=rec.get("seconds", 0.0), reason=rec.get("reason", ""),
                 command=rec.get("command", ""), converted=converted,
                 report=report_name(rec["model"]) if rec["status"] == "ok" else "")
    for k, v in m.items():
        if k in known:
            setattr(row, k, v)
    return row


def _record(p: _Planned, out: Path, outcome, settings: dict, version: str, pipeline: str, engine: str) -> dict:
    """Write a finished model's files (atomically) and return its record."""
    value = outcome.value if outcome.ok else None
    status = value["status"] if value else FAILURES.get(outcome.status, "failed")
    reason = value["reason"] if value else outcome.reason
    written = {}
    if value and status == "ok":
        for name, data in sorted(value["files"].items()):
            write_bytes(out / name, data)
            written[name] = records.fingerprint(out / name)
    stale = {k: v for k, v in ((p.old or {}).get("outputs") or {}).items() if k not in written}
    records.remove_outputs(out, {"outputs": stale})
    return {"model": p.rel, "status": status, "reason": reason, "seconds": round(outcome.seconds, 3),
            "metrics": (value or {}).get("metrics", {"size_before": p.inputs["model"]["size"]}),
            "outputs": written, "inputs": p.inputs, "settings": settings, "qpass_version": version,
            "engine": engine, "command": records.command(p.source, out, p.rel, p.calib, p.eval, pipeline,
                                                         report_name(p.rel))}


def _job(p: _Planned, pipeline: str, pipeline_file: Path | None, latency: bool) -> Job:
    return Job(p.rel, str(p.source), p.source, p.calib, p.eval, pipeline if pipeline_file is None else
               str(pipeline_file), pipeline_file, latency)


def run_zoo(models_dir: str | os.PathLike, out_dir: str | os.PathLike, pipeline: str = "default", jobs: int = 2,
            progress: bool = True, *, engine: Engine | None = None, force: bool = False,
            timeout: float | None = None, max_memory: int | None = None, latency: bool = True) -> list[ZooRow]:
    """Convert every model under ``models_dir`` that is not up to date in ``out_dir`` (all with ``force``) and
    write the zoo report; the rows, one per model, sorted. ``engine``: where to run (default: ``jobs`` local
    processes); ``timeout`` seconds and ``max_memory`` MB per model."""
    import qpass
    from qpass.report.zoo_report import write_zoo_report

    _check(jobs, timeout, max_memory)
    root, out = Path(models_dir).resolve(), Path(out_dir).resolve()
    pipeline_file = Path(pipeline).resolve() if Path(pipeline).is_file() else None
    settings = {"pipeline": pipeline if pipeline_file is None else pipeline_file.name, "latency": bool(latency)}
    version = qpass.__version__
    own = engine is None
    engine = engine or ProcessEngine(jobs)
    with _locked(out):
        rows, todo = _plan(root, out, pipeline_file, settings, version, force)
        names = [n for p in todo for n in ([p.rel, report_name(p.rel)] + list((p.old or {}).get("outputs", {})))]
        records.remove_stale_temporaries(out, names + [records.RECORDS + "/" + p.rel + ".json" for p in todo])
        meta = {"models_dir": str(root), "pipeline": settings["pipeline"], "engine": engine.describe(),
                "qpass_version": version}
        try:
            _convert_all(todo, rows, out, engine, (settings, version, pipeline, pipeline_file, latency),
                         (timeout, max_memory), progress)
        except KeyboardInterrupt:
            engine.stop()
            for p in todo:
                rows.setdefault(p.rel, ZooRow(p.rel, "pending", reason="not converted before the interrupt"))
            write_zoo_report([asdict(r) for r in sorted(rows.values(), key=lambda r: r.model)], out, meta)
            done = sum(r.status != "pending" for r in rows.values())
            raise ZooInterrupted(f"interrupted: {done} of {len(rows)} models are recorded in {out}; run the same "
                                 "command again to convert the rest") from None
        finally:
            if own:
                engine.close()
        ordered = sorted(rows.values(), key=lambda r: r.model)
        write_zoo_report([asdict(r) for r in ordered], out, meta)
    return ordered


def _convert_all(todo, rows, out, engine, how, limits, progress) -> None:
    settings, version, pipeline, pipeline_file, latency = how
    total = len(rows) + len(todo)
    # a bar on a terminal only (disable=None), never with progress=False
    with tqdm(total=total, initial=len(rows), desc="zoo", unit="model", disable=not progress or None) as bar:
        items = [_job(p, pipeline, pipeline_file, latency) for p in todo]
        for i, outcome in engine.run_each(convert_model, items, *limits):
            rec = _record(todo[i], out, outcome, settings, version, pipeline, engine.name)
            records.save_record(out, rec)
            rows[rec["model"]] = row_from_record(rec, converted=True)
            bar.update(1)
