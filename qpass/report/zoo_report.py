"""The zoo report: ``zoo.html`` (a row per model, links to each model's own report, plots), ``zoo.json`` and
``zoo.csv`` in the output folder of ``qpass zoo``.

Rows are dicts (``qpass.zoo.ZooRow`` fields). Wall-time values (the seconds, the latency ratio) are marked
``data-timing`` in the HTML like the model report's timeline; everything else is the same bytes on every run over
the same inputs. A small script sets ``document.title`` to ``qpass zoo report: rendered N of M plots``.
"""
from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter
from pathlib import Path

from qpass.ir.atomic import write_text
from . import zoo_plots
from .html import SCRIPT

#: columns of zoo.csv and zoo.json rows (``converted``, which says whether this run did the work, is left out:
#: a resumed run and an uninterrupted one write the same report)
FIELDS = ["model", "status", "seconds", "size_before", "size_after", "sqnr_db", "metric", "metric_name",
          "float_metric", "integer_share", "latency_ratio", "reason", "report", "command"]
FILES = ("zoo.html", "zoo.json", "zoo.csv")

STYLE = """body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
td.num { text-align: right; } .ok { color: #2a7a2a; } .bad { color: #c44e52; font-weight: bold; }
figure { display: inline-block; margin: 4px; vertical-align: top; }"""


def _cell(v, digits: int = 4) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _row_html(r: dict) -> str:
    esc = html.escape
    name = esc(r["model"])
    if r.get("report"):
        name = f'<a href="{esc(r["report"])}">{name}</a>'
    cls = "ok" if r["status"] in ("ok", "skipped") else "bad"
    ratio = (r["size_after"] / r["size_before"]) if r.get("size_after") and r.get("size_before") else None
    metric = f'{_cell(r.get("metric"))} {esc(r.get("metric_name") or "")}'.strip()
    cells = [name, f'<span class="{cls}">{esc(r["status"])}</span>',
             f'<td class="num" data-timing>{r.get("seconds", 0):.1f} s</td>', _cell(r.get("size_before")),
             _cell(r.get("size_after")), _cell(ratio, 3), _cell(r.get("sqnr_db")), metric,
             _cell(r.get("integer_share"), 3), f'<td class="num" data-timing>{_cell(r.get("latency_ratio"), 3)}</td>',
             esc(r.get("reason") or "")]
    return "<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells) + "</tr>"


def render(rows: list[dict], meta: dict) -> str:
    esc = html.escape
    counts = Counter(r["status"] for r in rows)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    plots = [p for p in (zoo_plots.sqnr_bars(rows), zoo_plots.size_fidelity(rows)) if p]
    figures = "".join(f"<figure>{p}</figure>" for p in plots) or "<p>(no plots: no model was converted)</p>"
    head = "".join(f"<th>{h}</th>" for h in ("model", "status", "time", "float bytes", "quantised bytes",
                                              "size ratio", "SQNR dB", "metric", "integer share", "latency ratio",
                                              "reason"))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qpass zoo report</title>
<style>
{STYLE}
</style></head><body>
<h1>qpass zoo report: {esc(meta.get('models_dir', ''))}</h1>
<p>pipeline <b>{esc(str(meta.get('pipeline', '')))}</b>, qpass {esc(str(meta.get('qpass_version', '')))};
{len(rows)} models: {esc(summary)}</p>
<div id="plots">{figures}</div>
<table id="models"><tr>{head}</tr>{"".join(_row_html(r) for r in rows)}</table>
<script>
{SCRIPT.replace("qpass report", "qpass zoo report")}
</script>
</body></html>
"""


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(FIELDS)
    for r in rows:
        w.writerow(["" if r.get(k) is None else (f"{r[k]:g}" if isinstance(r[k], float) else r[k]) for k in FIELDS])
    return buf.getvalue()


def zoo_texts(rows: list[dict], meta: dict) -> dict[str, str]:
    """``{file name: text}`` of the three report files (``meta``: models_dir, pipeline, engine, qpass_version; the
    engine is left out of the files so that every engine writes the same report)."""
    rows = [{k: r.get(k) for k in FIELDS} for r in rows]
    shown = {k: v for k, v in meta.items() if k != "engine"}
    data = {**shown, "counts": dict(sorted(Counter(r["status"] for r in rows).items())), "models": rows}
    return {"zoo.html": render(rows, shown), "zoo.json": json.dumps(data, indent=1) + "\n", "zoo.csv": _csv(rows)}


def write_zoo_report(rows: list[dict], out_dir: str | Path, meta: dict) -> list[Path]:
    out = []
    for name, text in zoo_texts(rows, meta).items():
        write_text(Path(out_dir) / name, text)
        out.append(Path(out_dir) / name)
    return out
