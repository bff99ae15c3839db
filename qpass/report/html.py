"""``qpass optimize --report report.html`` (and ``report.json``): a self-contained HTML page.

Plots are inline SVG (``qpass.report.svg``), so the base install draws them and two runs give the same bytes.
Everything that depends on wall time (the pass timeline's durations and bar widths) sits in elements marked
``data-timing``, and in the JSON only in the timeline's ``seconds`` fields. A small script sets
``document.title`` to ``qpass report: rendered N of M plots``, which the tests read from headless Chromium.
"""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from qpass.ir.atomic import write_text
from . import svg

MAX_PLOTS = 40

STYLE = """body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
.timeline { display: flex; width: 100%; height: 22px; margin-bottom: 1em; }
.bar { background: #4c72b0; color: #fff; font-size: 11px; overflow: hidden; border-right: 1px solid #fff; }
figure { display: inline-block; margin: 4px; } figcaption { font-size: 11px; color: #666; }"""

SCRIPT = """(function () {
  var plots = Array.prototype.slice.call(document.querySelectorAll("svg.plot"));
  var ok = plots.filter(function (p) { var r = p.getBoundingClientRect(); return r.width > 0 && r.height > 0; });
  document.title = "qpass report: rendered " + ok.length + " of " + plots.length + " plots";
})();"""


def _fmt(v, digits=3) -> str:
    if v is None:
        return "exact"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def _quantiser_rows(data: dict) -> str:
    esc = html.escape
    rows = []
    for q in data["quantisers"]:
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            esc(q["layer"] or "-"), esc(q["quantiser"]), q["role"], esc(q["kind"]), q["bits"],
            _fmt(q["scale"][0]) + ("" if q["scale_count"] == 1 else f" (x{q['scale_count']})"),
            f"[{_fmt(q['range'][0])}, {_fmt(q['range'][1])}]", q.get("saturated", ""),
            _fmt(q.get("own_sqnr_db")), _fmt(q.get("sqnr_vs_float_db", "")))) + "</tr>")
    return "".join(rows)


def _layer_errors(rows: list | None) -> str:
    """Per quantized activation: its own (isolated) error and the error accumulated up to it."""
    if not rows:
        return ""
    esc = html.escape
    body = "".join(f"<tr><td>{esc(r['tensor'])}</td><td>{esc(r['layer'])}</td><td>{esc(r['op'])}</td>"
                   f"<td>{_fmt(r['isolated_sqnr_db'])}</td><td>{_fmt(r['accumulated_sqnr_db'])}</td></tr>" for r in rows)
    return ("<h2>Per-layer error</h2><p>isolated: that quantizer alone, everything before it float; accumulated: "
            "everything up to it quantized (SQNR against the float model, dB)</p><table id=\"layer_errors\"><tr>"
            f"<th>tensor</th><th>layer</th><th>op</th><th>isolated SQNR dB</th><th>accumulated SQNR dB</th></tr>"
            f"{body}</table>")


def _histograms(data: dict) -> str:
    figures = []
    for q in data["quantisers"]:
        if len(figures) >= MAX_PLOTS:
            break
        plot = svg.histogram(q)
        if plot:
            figures.append(f"<figure>{plot}<figcaption>{html.escape(q['role'])}: values and clipping range"
                           "</figcaption></figure>")
    return "".join(figures) if figures else "<p>(no histograms: no quantiser values were measured)</p>"


def _timeline(data: dict) -> tuple[str, str]:
    """(the bar, the table) of the pass timeline; wall-time parts marked ``data-timing``."""
    esc = html.escape
    steps = data["timeline"]
    total = sum(t["seconds"] for t in steps) or 1.0
    bars = "".join(f'<div class="bar" data-timing style="width:{max(0.5, 100 * t["seconds"] / total):.1f}%" '
                   f'title="{esc(t["pass"])}">{esc(t["pass"]) if t["seconds"] / total > 0.12 else ""}</div>'
                   for t in steps)
    rows = "".join(
        f"<tr><td>{esc(t['pass'])}{' #' + str(t['iteration']) if t['iteration'] else ''}</td>"
        f"<td data-timing>{1000 * t['seconds']:.1f} ms</td><td>{t['nodes_before']} &rarr; {t['nodes_after']}</td>"
        f"<td>{esc('; '.join(t['notes']))}</td></tr>" for t in steps)
    return f'<div class="timeline">{bars}</div>', rows


def _integer_layers(ir: dict | None) -> str:
    if not ir:
        return ""
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(L['layer'])}</td><td>{L['op']}</td><td>{L['weight_type']}</td>"
                   f"<td>{L['input_type']}</td><td>{L['accumulator_bits']}</td><td>{L['thresholds']}</td></tr>"
                   for L in ir["layers"])
    floats = "".join(f"<li>float {esc(f['op'])} {esc(f['node'])}: {esc(f['reason'])}</li>" for f in ir["float_ops"])
    return ("<h2>Integer layers</h2><table><tr><th>layer</th><th>op</th><th>weights</th><th>input</th>"
            f"<th>acc bits</th><th>thresholds</th></tr>{rows}</table><ul>{floats}</ul>")


def _bitwidth(bw: dict | None) -> str:
    if not bw:
        return ""
    c = bw.get("compression") or {}
    text = (f"<p>{c.get('avg_weight_bits', 0):.2f} average weight bits: {c.get('float32', 0):.2f}x smaller than "
            f"float32, {c.get('int8', 0):.2f}x than int8</p>") if c else ""
    f, m = bw.get("artifact") or {}, bw.get("metric") or {}
    if f.get("avg_stored_weight_bits"):
        text += (f"<p>as stored in the file: weights in {f['avg_stored_weight_bits']:.2f} bits on average, "
                 f"{f['file_bytes']} bytes</p>")
    if m.get("samples"):
        what = "held-out" if (bw.get("samples") or {}).get("held_out") else "search"
        text += (f"<p>on {m['samples']} {what} samples: " + ", ".join(
            f"{k} {m[k]:.4g}" for k in ("relative_accuracy", "accuracy", "agreement", "sqnr") if m.get(k) is not None)
            + "</p>")
    plot = svg.pareto(bw.get("points", []), str(bw.get("cost_kind")), str(bw.get("cost_unit")))
    return "<h2>Bitwidth search</h2>" + text + (f'<figure id="pareto">{plot}</figure>' if plot else "")


def render(data: dict) -> str:
    esc = html.escape
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{_fmt(v, 4)}</td></tr>" for k, v in data.get("metrics", {}).items())
    bar, timeline = _timeline(data)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qpass report</title>
<style>
{STYLE}
</style></head><body>
<h1>qpass report: {esc(data.get('model', ''))}</h1>
<p>pipeline <b>{esc(data.get('pipeline', ''))}</b></p>
<h2>Model</h2><table id="summary">{summary}</table>
<h2>Pass timeline</h2>{bar}
<table id="timeline"><tr><th>pass</th><th>time</th><th>nodes</th><th>notes</th></tr>{timeline}</table>
<h2>Quantisers</h2>
<table id="quantisers"><tr><th>layer</th><th>quantiser</th><th>role</th><th>format</th><th>bits</th><th>scale</th>
<th>range</th><th>saturated</th><th>own SQNR dB</th><th>SQNR vs float dB</th></tr>{_quantiser_rows(data)}</table>
{_layer_errors(data.get("layer_errors"))}
{_integer_layers(data.get("integer_report"))}
{_bitwidth(data.get("bitwidth"))}
<h2>Histograms</h2><div id="plots">{_histograms(data)}</div>
<script>
{SCRIPT}
</script>
</body></html>
"""


def report_files(path: str | Path, pareto: bool = False) -> list[Path]:
    """The files ``write_report(data, path)`` writes: the .json twin (``path`` itself when it ends in .json), the
    Pareto table ``<stem>_pareto.csv`` when ``pareto`` (a bitwidth search ran), and the HTML page."""
    path = Path(path)
    json_path = path if path.suffix == ".json" else path.with_suffix(".json")
    out = [json_path]
    if pareto:
        out.append(json_path.with_name(json_path.stem + "_pareto.csv"))
    if path.suffix != ".json":
        out.append(path)
    return out


def _pareto_csv(rows: list[dict]) -> str:
    sites = sorted({k for p in rows for k in p["widths"]})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    held = ["held_out_sqnr_db", "held_out_relative_accuracy", "held_out_agreement"]  # the front's, held out
    w.writerow(["cost", "avg_weight_bits", "sqnr_db", "relative_accuracy", "pareto", "chosen"] + held + sites)
    for p in sorted(rows, key=lambda p: p["cost"]):
        w.writerow([p["cost"], p["avg_weight_bits"], p["sqnr_db"], p.get("relative_accuracy"), int(p["pareto"]),
                    int(p["chosen"])] + [p.get(k, "") for k in held] + [p["widths"].get(s, "") for s in sites])
    return buf.getvalue()


def report_texts(data: dict, path: str | Path) -> dict[Path, str]:
    """Every file of the report at ``path`` with its text (see ``report_files``)."""
    points = (data.get("bitwidth") or {}).get("points")
    paths = report_files(path, bool(points))
    texts = {paths[0]: json.dumps(data, indent=1, default=float)}
    if points:
        texts[paths[1]] = _pareto_csv(points)
    if Path(path).suffix != ".json":
        texts[Path(path)] = render(data)
    return texts


def write_report(data: dict, path: str | Path) -> list[Path]:
    """Write ``path`` (.html writes a .json twin beside it; .json writes only the data); the paths written."""
    texts = report_texts(data, path)
    for p, text in texts.items():
        write_text(p, text)
    return list(texts)
