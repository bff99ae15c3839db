"""Model-zoo conversion: quantise every model in a folder in parallel processes, with a summary table.

For each ``NAME.onnx`` found (recursively) with ``NAME.calib.npz`` beside it: run the pipeline, write
``OUT_DIR/<relative path>``, and measure output SQNR against the float model and a metric (top-1 accuracy when
``NAME.eval.npz`` has labels, else top-1 agreement with the float model) on the eval samples (the calibration
samples when there is no eval file), and the quantised/float latency ratio in onnxruntime with one thread.
One model's failure never stops the others; it is listed with its one-line reason.
"""
from __future__ import annotations

import csv
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from qpass.errors import QpassError
from qpass.ir.atomic import write_text
from qpass.pipeline.config import MAX_WORKERS

COLUMNS = ["model", "status", "seconds", "size_before", "size_after", "sqnr_db", "metric", "metric_name",
           "latency_ratio", "reason"]


@dataclass
class ZooRow:
    model: str
    status: str
    seconds: float = 0.0
    size_before: int = 0
    size_after: int = 0
    sqnr_db: float | None = None
    metric: float | None = None
    metric_name: str = ""
    latency_ratio: float | None = None
    reason: str = ""


def find_models(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*.onnx") if p.is_file())


def latency_ratio(quant, ref, feed, repeats: int = 50) -> float:
    """Median quantised / float latency in onnxruntime (1 thread), runs interleaved so noise hits both alike."""
    import numpy as np

    from qpass.ir.ort_session import make_session

    sessions = [make_session(quant, threads=1), make_session(ref, threads=1)]
    for s in sessions:
        for _ in range(10):
            s.run(None, feed)
    times = [[], []]
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run(None, feed)
            times[i].append(time.perf_counter() - t0)
    return float(np.median(times[0]) / np.median(times[1]))


def convert_one(path: str, root: str, out_dir: str, pipeline: str) -> ZooRow:
    """Convert one model (runs in a worker process); every failure becomes a row, never an exception."""
    from .api import load, optimize, save
    from qpass.ir.samples import default_calib_path, load_samples
    from .errors import QpassError
    from qpass.analysis.evaluate import compare

    src = Path(path)
    rel = src.relative_to(root)
    row = ZooRow(str(rel), "failed", size_before=src.stat().st_size)
    t0 = time.perf_counter()
    try:
        calib = default_calib_path(src)
        if not calib.is_file():
            row.status, row.reason = "skipped", f"no {calib.name} beside the model"
            return row
        model = load(src)
        samples = load_samples(calib, model)
        res = optimize(model, calib=samples, pipeline=pipeline)
        out = Path(out_dir) / rel
        save(res.model, out)
        row.size_after = out.stat().st_size
        row.seconds = time.perf_counter() - t0
        ev_path = src.with_name(calib.name.replace(".calib.npz", ".eval.npz"))
        ev = load_samples(ev_path, model) if ev_path.is_file() else samples
        cmp = compare(model, res.model, ev)
        row.sqnr_db = round(cmp.sqnr_db, 2)
        if cmp.quant_accuracy is not None:
            row.metric, row.metric_name = round(cmp.quant_accuracy, 4), "accuracy"
        else:
            row.metric, row.metric_name = round(cmp.agreement, 4), "top1_agreement"
        feed = ev.feed(0)
        row.latency_ratio = round(latency_ratio(res.model, model, feed), 3)
        row.status = "ok"
    except QpassError as exc:
        row.reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - a zoo run reports every failure and goes on
        text = (str(exc).strip().splitlines() or [""])[0]
        row.reason = f"{type(exc).__name__}: {text}"
    row.seconds = round(row.seconds or time.perf_counter() - t0, 3)
    return row


def run_zoo(models_dir: str | os.PathLike, out_dir: str | os.PathLike, pipeline: str = "default", jobs: int = 2,
            progress: bool = True) -> list[ZooRow]:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_WORKERS:
        raise QpassError(f"jobs takes a whole number from 1 to {MAX_WORKERS} (four per CPU), not {jobs!r}")
    root = Path(models_dir).resolve()
    paths = find_models(root)
    rows: list[ZooRow] = []
    # a bar on a terminal only (disable=None), never with progress=False
    with tqdm(total=len(paths), desc="zoo", unit="model", disable=not progress or None) as bar:
        if jobs <= 1:
            for p in paths:
                rows.append(convert_one(str(p), str(root), str(out_dir), pipeline))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=jobs) as pool:
                futs = [pool.submit(convert_one, str(p), str(root), str(out_dir), pipeline) for p in paths]
                for f in as_completed(futs):
                    rows.append(f.result())
                    bar.update(1)
    rows.sort(key=lambda r: r.model)
    write_summary(rows, Path(out_dir))
    return rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def write_summary(rows: list[ZooRow], out_dir: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        d = asdict(r)
        w.writerow([_fmt(d[c]) for c in COLUMNS])
    write_text(out_dir / "summary.csv", buf.getvalue())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        d = asdict(r)
        lines.append("| " + " | ".join(_fmt(d[c]).replace("|", "/") for c in COLUMNS) + " |")
    ok = sum(r.status == "ok" for r in rows)
    lines.append("")
    lines.append(f"{ok} of {len(rows)} models converted.")
    write_text(out_dir / "summary.md", "\n".join(lines) + "\n")
