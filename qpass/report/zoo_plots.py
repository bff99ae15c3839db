"""The zoo report's plots as inline SVG (``qpass.report.svg``'s frame; no plotting package, same bytes every run).

``sqnr_bars(rows)``: output SQNR per model (a bar per converted model; a red mark for a model that was not);
``size_fidelity(rows)``: quantised / float file size against output SQNR, a point per converted model.
"""
from __future__ import annotations

import html

from .svg import BAR, INK, LINE, _Frame, _num

FAILED = ("failed", "timeout", "crashed", "oom")


def _short(name: str, n: int = 26) -> str:
    return name if len(name) <= n else "..." + name[-(n - 3):]


def sqnr_bars(rows: list[dict], width: int = 560) -> str | None:
    """Horizontal bars of ``sqnr_db`` per model; models that failed get a red mark at zero."""
    shown = [r for r in rows if r.get("sqnr_db") is not None or r["status"] in FAILED]
    if not shown:
        return None
    vals = [float(r["sqnr_db"]) for r in shown if r.get("sqnr_db") is not None] or [0.0]
    lo, hi = min(0.0, min(vals)), max(1.0, max(vals))
    step = 16
    height = 40 + step * len(shown)
    f = _Frame(width, height, (lo, hi), (0.0, float(len(shown))), margin=(170, 14, 20, 22))
    parts = [p for p in f.axes("output SQNR vs float per model (red: not converted)", "SQNR (dB)")
             if not p.startswith(f'<text x="{f.left - 3}"')]  # the y axis counts rows: no numbers on it
    for k, r in enumerate(shown):
        y = f.py(len(shown) - k - 0.5)
        parts.append(f'<text x="{f.left - 4}" y="{_num(y + 3)}" text-anchor="end" font-size="9" fill="{INK}">'
                     f'{html.escape(_short(r["model"]))}</text>')
        if r.get("sqnr_db") is None:
            parts.append(f'<rect x="{_num(f.px(0) - 3)}" y="{_num(y - 5)}" width="6" height="10" fill="{LINE}"/>')
            continue
        x0, x1 = sorted((f.px(0.0), f.px(float(r["sqnr_db"]))))
        parts.append(f'<rect x="{_num(x0)}" y="{_num(y - 5)}" width="{_num(max(x1 - x0, 1.0))}" height="10" '
                     f'fill="{BAR}"/>')
    return f.svg(parts, "output SQNR per model")


def size_fidelity(rows: list[dict], width: int = 460, height: int = 300) -> str | None:
    """A point per converted model: quantised / float size (x) against output SQNR (y)."""
    pts = [(float(r["size_after"]) / float(r["size_before"]), float(r["sqnr_db"]), r["model"]) for r in rows
           if r.get("sqnr_db") is not None and r.get("size_before") and r.get("size_after")]
    if not pts:
        return None
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.08 or 0.05, (max(ys) - min(ys)) * 0.08 or 1.0
    f = _Frame(width, height, (max(0.0, min(xs) - pad_x), max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y))
    parts = f.axes("size vs fidelity", "quantised / float file size", "output SQNR (dB)")
    for x, y, name in pts:
        parts.append(f'<circle cx="{_num(f.px(x))}" cy="{_num(f.py(y))}" r="4.5" fill="{BAR}">'
                     f'<title>{html.escape(name)}</title></circle>')
    return f.svg(parts, "size vs fidelity")
