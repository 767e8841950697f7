"""The HTML reports' shared markup: the stylesheet, escaping, and the inline-SVG pieces the
charts are drawn with (`report/html.py` for the audit, `report/locate_html.py` for locate).
Every text that reaches the page goes through `_e`: names come from model files."""

from __future__ import annotations

import html
from collections.abc import Sequence

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
color:#222;margin:24px auto;max-width:1180px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.meta{color:#555;margin:2px 0}.meta code{font-size:12.5px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d5d5d5;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.failed{color:#c62828;font-weight:600}.skipped{color:#b26a00}
.ref{color:#555}.bad{color:#c62828;font-weight:600}.good{color:#1a7f37;font-weight:600}
.note{color:#555;font-size:13px;margin:4px 0}
.evidence{background:#fafafa;border-left:3px solid #bbb;padding:6px 10px;margin:6px 0;
font-size:13px}
svg.chart{display:block;margin:6px 0 14px;max-width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
.verdict{font-weight:600}.banner{padding:8px 12px;border-radius:4px;margin:12px 0;font-weight:600}
.banner.bad{background:#fdecea}.banner.good{background:#e9f6ec}
.warn{color:#b26a00;font-weight:600}.predicted{color:#b26a00}
.finding{background:#fafafa;border-left:3px solid #8e44ad;padding:6px 10px;margin:8px 0;
font-size:13px}.finding code{font-size:12.5px;background:#f0f0f0;padding:0 3px}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}svg.chart{break-inside:avoid}}
"""


# ---------------------------------------------------------------------------- small helpers


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _c(value: float) -> str:
    """A coordinate with one decimal, no trailing zeros."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _svg(width: int, height: int, body: str, kind: str, label: str) -> str:
    return (f'<svg class="chart" data-chart="{_e(kind)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_e(label)}">{body}</svg>')


def _text(x: float, y: float, text: str, size: int = 12, anchor: str = "start",
          fill: str = "#222", weight: str = "normal") -> str:
    return (f'<text x="{_c(x)}" y="{_c(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{fill}" font-weight="{weight}">{_e(text)}</text>')


def _legend(x: float, y: float, entries: Sequence[tuple[str, str, str]]) -> str:
    """entries: (label, colour, style) with style 'bar', 'line', 'dash', 'dot' or 'band'."""
    parts = []
    for i, (label, colour, style) in enumerate(entries):
        ly = y + i * 17
        if style == "bar":
            parts.append(f'<rect x="{_c(x)}" y="{_c(ly - 9)}" width="16" height="10" '
                         f'fill="{colour}" fill-opacity="0.55"/>')
        elif style == "band":
            parts.append(f'<rect x="{_c(x)}" y="{_c(ly - 9)}" width="16" height="10" '
                         f'fill="{colour}" fill-opacity="0.25"/>')
        elif style == "dot":
            parts.append(f'<circle cx="{_c(x + 8)}" cy="{_c(ly - 4)}" r="3.5" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="4 3"' if style == "dash" else ""
            parts.append(f'<line x1="{_c(x)}" y1="{_c(ly - 4)}" x2="{_c(x + 16)}" '
                         f'y2="{_c(ly - 4)}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(_text(x + 22, ly, label, size=11))
    return "".join(parts)
