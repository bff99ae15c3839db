"""The report's plots as inline SVG: no plotting package, the same bytes on every run.

``histogram(entry)`` draws a quantiser's value histogram (log-scaled counts) with its representable range as two
red lines; ``pareto(points, ...)`` the bitwidth search's measured assignments (cost vs output SQNR), the Pareto
front and the chosen one. Both return an ``<svg class="plot">`` element as text, or None without data.
"""
from __future__ import annotations

import html
import math

BAR, LINE, GREY, INK = "#4c72b0", "#c44e52", "#bbbbbb", "#333333"


def _num(v: float) -> str:
    """A coordinate: two decimals, no '-0.00'."""
    s = f"{v:.2f}"
    return "0.00" if s == "-0.00" else s


def _label(v: float) -> str:
    return f"{v:.3g}"


class _Frame:
    """Maps data to pixels inside a box with margins for the axes."""

    def __init__(self, width: int, height: int, x: tuple[float, float], y: tuple[float, float],
                 margin=(46, 10, 20, 28)):
        self.w, self.h = width, height
        self.left, self.right, self.top, self.bottom = margin
        self.x0, self.x1 = x
        self.y0, self.y1 = y

    def px(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (v - self.x0) / span * (self.w - self.left - self.right)

    def py(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.h - self.bottom - (v - self.y0) / span * (self.h - self.top - self.bottom)

    def axes(self, title: str, xlabel: str = "", ylabel: str = "") -> list[str]:
        b, l, r = self.h - self.bottom, self.left, self.w - self.right
        out = [f'<rect x="0" y="0" width="{self.w}" height="{self.h}" fill="#ffffff"/>',
               f'<path d="M{l} {self.top}V{b}H{r}" fill="none" stroke="{INK}" stroke-width="1"/>',
               f'<text x="{self.w / 2:.1f}" y="13" text-anchor="middle" font-size="11">{html.escape(title)}</text>']
        for v, anchor, x in ((self.x0, "start", l), (self.x1, "end", r)):
            out.append(f'<text x="{x}" y="{b + 12}" text-anchor="{anchor}" font-size="9">{_label(v)}</text>')
        for v in (self.y0, self.y1):
            out.append(f'<text x="{l - 3}" y="{_num(self.py(v) + 3)}" text-anchor="end" font-size="9">'
                       f'{_label(v)}</text>')
        if xlabel:
            out.append(f'<text x="{(l + r) / 2:.1f}" y="{self.h - 3}" text-anchor="middle" font-size="9">'
                       f'{html.escape(xlabel)}</text>')
        if ylabel:
            y = (self.top + b) / 2
            out.append(f'<text x="10" y="{y:.1f}" text-anchor="middle" font-size="9" '
                       f'transform="rotate(-90 10 {y:.1f})">{html.escape(ylabel)}</text>')
        return out

    def svg(self, parts: list[str], label: str) -> str:
        return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" role="img" aria-label="{html.escape(label)}">'
                + "".join(parts) + "</svg>")


def histogram(entry: dict, width: int = 340, height: int = 180) -> str | None:
    """A quantiser's histogram (``entry["histogram"]``: counts, edges, lo, hi) as SVG."""
    h = entry.get("histogram")
    if not h or not h.get("counts"):
        return None
    counts, edges = h["counts"], h["edges"]
    top = math.log10(max(counts) + 1) or 1.0
    f = _Frame(width, height, (edges[0], edges[-1]), (0.0, top))
    parts = f.axes(entry["quantiser"][:48], "value (red: representable range)", "log10(count + 1)")
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        if c:
            y = f.py(math.log10(c + 1))
            parts.append(f'<rect x="{_num(f.px(a))}" y="{_num(y)}" width="{_num(max(f.px(b) - f.px(a), 0.5))}" '
                         f'height="{_num(f.py(0) - y)}" fill="{BAR}"/>')
    for v in (h["lo"], h["hi"]):
        x = _num(f.px(min(max(v, edges[0]), edges[-1])))
        parts.append(f'<line x1="{x}" y1="{f.top}" x2="{x}" y2="{f.py(0):.2f}" stroke="{LINE}" stroke-width="1.5"/>')
    return f.svg(parts, f"histogram of {entry['quantiser']}")


def _star(x: float, y: float, r: float) -> str:
    pts = []
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        ang = math.pi / 2 + k * math.pi / 5
        pts.append(f"{_num(x + rad * math.cos(ang))},{_num(y - rad * math.sin(ang))}")
    return f'<polygon points="{" ".join(pts)}" fill="{LINE}"/>'


def pareto(points: list[dict], cost_kind: str, cost_unit: str, width: int = 460, height: int = 260) -> str | None:
    """The bitwidth search's measured assignments (``cost``, ``sqnr_db``, ``pareto``, ``chosen``) as SVG."""
    pts = [p for p in points if p.get("sqnr_db") is not None and p.get("cost") is not None]
    if not pts:
        return None
    xs, ys = [float(p["cost"]) for p in pts], [float(p["sqnr_db"]) for p in pts]
    pad_x, pad_y = (max(xs) - min(xs)) * 0.05 or 1.0, (max(ys) - min(ys)) * 0.05 or 1.0
    f = _Frame(width, height, (min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y))
    parts = f.axes("bitwidth search: measured assignments, Pareto front, chosen",
                   f"cost ({cost_kind}, {cost_unit})", "output SQNR (dB)")
    order = sorted(pts, key=lambda p: (bool(p.get("chosen")), bool(p.get("pareto"))))  # chosen drawn last
    for p in order:
        x, y = f.px(float(p["cost"])), f.py(float(p["sqnr_db"]))
        if p.get("chosen"):
            parts.append(_star(x, y, 8))
        else:
            colour, r = (BAR, 3.5) if p.get("pareto") else (GREY, 2.5)
            parts.append(f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{r}" fill="{colour}"/>')
    return f.svg(parts, "bitwidth search Pareto front")
