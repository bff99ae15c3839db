"""``qpass optimize --report report.html`` (and ``report.json``): a self-contained HTML page.

Histograms are drawn with matplotlib (when installed) and embedded as base64 PNGs; without matplotlib the page
says so and keeps the tables. A small script sets ``document.title`` to ``qpass report: rendered N images`` once
every image has decoded, which the tests read from headless Chromium.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from qpass.ir.atomic import write_text

MAX_PLOTS = 40


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _encoded(fig, plt) -> str:
    """The figure as a base64 PNG (the figure is closed)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _png(entry: dict) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    h = entry.get("histogram")
    if not h or not h["counts"]:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 2.2), dpi=80)
    edges = h["edges"]
    ax.bar(edges[:-1], h["counts"], width=[b - a for a, b in zip(edges[:-1], edges[1:])], align="edge",
           color="#4c72b0", log=True)
    for x in (h["lo"], h["hi"]):
        ax.axvline(x, color="#c44e52", lw=1.2)
    ax.set_title(entry["quantiser"][:48], fontsize=8)
    ax.tick_params(labelsize=7)
    return _encoded(fig, plt)


def _pareto_png(bw: dict) -> str | None:
    plt = _pyplot()
    if plt is None:
        return None
    pts = [p for p in bw.get("points", []) if p.get("sqnr_db") is not None]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=80)
    for sel, style in ((lambda p: not p["pareto"], dict(c="#bbb", s=8)), (lambda p: p["pareto"], dict(c="#4c72b0", s=14)),
                       (lambda p: p["chosen"], dict(c="#c44e52", s=60, marker="*"))):
        sub = [p for p in pts if sel(p)]
        if sub:
            ax.scatter([p["cost"] for p in sub], [p["sqnr_db"] for p in sub], **style)
    ax.set_xlabel(f"cost ({bw.get('cost_kind')}, {bw.get('cost_unit')})", fontsize=8)
    ax.set_ylabel("output SQNR (dB)", fontsize=8)
    ax.set_title("bitwidth search: measured assignments, Pareto front, chosen", fontsize=8)
    ax.tick_params(labelsize=7)
    return _encoded(fig, plt)


def _fmt(v, digits=3) -> str:
    if v is None:
        return "exact"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return html.escape(str(v))


def render(data: dict) -> str:
    esc = html.escape
    m = data.get("metrics", {})
    rows = []
    plots = []
    for q in data["quantisers"]:
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            esc(q["layer"] or "-"), esc(q["quantiser"]), q["role"], esc(q["kind"]), q["bits"],
            _fmt(q["scale"][0]) + ("" if q["scale_count"] == 1 else f" (x{q['scale_count']})"),
            f"[{_fmt(q['range'][0])}, {_fmt(q['range'][1])}]", q.get("saturated", ""),
            _fmt(q.get("own_sqnr_db")), _fmt(q.get("sqnr_vs_float_db", "")))) + "</tr>")
        if len(plots) < MAX_PLOTS:
            png = _png(q)
            if png:
                plots.append(f'<figure><img alt="{esc(q["quantiser"])}" src="data:image/png;base64,{png}">'
                             f'<figcaption>{esc(q["role"])}: values and clipping range</figcaption></figure>')
    timeline = "".join(
        f"<tr><td>{esc(t['pass'])}{' #' + str(t['iteration']) if t['iteration'] else ''}</td>"
        f"<td>{1000 * t['seconds']:.1f} ms</td><td>{t['nodes_before']} &rarr; {t['nodes_after']}</td>"
        f"<td>{esc('; '.join(t['notes']))}</td></tr>" for t in data["timeline"])
    total = sum(t["seconds"] for t in data["timeline"]) or 1.0
    bars = "".join(f'<div class="bar" style="width:{max(0.5, 100 * t["seconds"] / total):.1f}%" '
                   f'title="{esc(t["pass"])}">{esc(t["pass"]) if t["seconds"] / total > 0.12 else ""}</div>'
                   for t in data["timeline"])
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{_fmt(v, 4)}</td></tr>" for k, v in m.items())
    ir = data.get("integer_report")
    ir_html = ""
    if ir:
        ir_html = "<h2>Integer layers</h2><table><tr><th>layer</th><th>op</th><th>weights</th><th>input</th>" \
                  "<th>acc bits</th><th>thresholds</th></tr>" + "".join(
                      f"<tr><td>{esc(L['layer'])}</td><td>{L['op']}</td><td>{L['weight_type']}</td>"
                      f"<td>{L['input_type']}</td><td>{L['accumulator_bits']}</td><td>{L['thresholds']}</td></tr>"
                      for L in ir["layers"]) + "</table>" + "<ul>" + "".join(
                      f"<li>float {esc(f['op'])} {esc(f['node'])}: {esc(f['reason'])}</li>" for f in ir["float_ops"]) \
            + "</ul>"
    no_plots = "" if plots else "<p>(no histograms: matplotlib is not installed)</p>"
    bw_html = ""
    if data.get("bitwidth"):
        png = _pareto_png(data["bitwidth"])
        c = data["bitwidth"].get("compression") or {}
        bw_html = ("<h2>Bitwidth search</h2>" + (f"<p>{c.get('avg_weight_bits', 0):.2f} average weight bits: "
                   f"{c.get('float32', 0):.2f}x smaller than float32, {c.get('int8', 0):.2f}x than int8</p>" if c else "")
                   + (f'<img alt="pareto" src="data:image/png;base64,{png}">' if png else ""))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>qpass report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: .5em 0 1.5em; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left; }}
.timeline {{ display: flex; width: 100%; height: 22px; margin-bottom: 1em; }}
.bar {{ background: #4c72b0; color: #fff; font-size: 11px; overflow: hidden; border-right: 1px solid #fff; }}
figure {{ display: inline-block; margin: 4px; }} figcaption {{ font-size: 11px; color: #666; }}
</style></head><body>
<h1>qpass report: {esc(data.get('model', ''))}</h1>
<p>pipeline <b>{esc(data.get('pipeline', ''))}</b></p>
<h2>Model</h2><table id="summary">{summary}</table>
<h2>Pass timeline</h2><div class="timeline">{bars}</div>
<table id="timeline"><tr><th>pass</th><th>time</th><th>nodes</th><th>notes</th></tr>{timeline}</table>
<h2>Quantisers</h2>
<table id="quantisers"><tr><th>layer</th><th>quantiser</th><th>role</th><th>format</th><th>bits</th><th>scale</th>
<th>range</th><th>saturated</th><th>own SQNR dB</th><th>SQNR vs float dB</th></tr>{''.join(rows)}</table>
{ir_html}
{bw_html}
<h2>Histograms</h2>{no_plots}<div id="plots">{''.join(plots)}</div>
<script>
(function () {{
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
  document.title = "qpass report: rendered " + ok + " of " + imgs.length + " images";
}})();
</script>
</body></html>
"""


def write_report(data: dict, path: str | Path) -> list[Path]:
    """Write ``path`` (.html writes a .json twin beside it; .json writes only the data)."""
    path = Path(path)
    written = []
    json_path = path if path.suffix == ".json" else path.with_suffix(".json")
    write_text(json_path, json.dumps(data, indent=1, default=float))
    written.append(json_path)
    if data.get("bitwidth", {}).get("points"):
        import csv

        rows = data["bitwidth"]["points"]
        sites = sorted({k for p in rows for k in p["widths"]})
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["cost", "avg_weight_bits", "sqnr_db", "relative_accuracy", "pareto", "chosen"] + sites)
        for p in sorted(rows, key=lambda p: p["cost"]):
            w.writerow([p["cost"], p["avg_weight_bits"], p["sqnr_db"], p.get("relative_accuracy"), int(p["pareto"]),
                        int(p["chosen"])] + [p["widths"].get(s, "") for s in sites])
        pareto_path = json_path.with_name(json_path.stem + "_pareto.csv")
        write_text(pareto_path, buf.getvalue())
        written.append(pareto_path)
    if path.suffix != ".json":
        write_text(path, render(data))
        written.append(path)
    return written
