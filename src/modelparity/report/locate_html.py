"""The locate report as HTML (`locate --html`) and as node data for Google AI Edge Model
Explorer (`locate --model-explorer`), so the errors are seen along the graph and painted on it.

The chart is inline SVG like the audit report's (`report/html.py`, whose helpers it uses): the
error of every compared node in graph order, on a log2 scale, beside the FP32 floor and what
the precision's emulation explains, with the first divergent node marked. Node names are the
model file's text: escaped everywhere.

Model Explorer's node data (its `GraphNodeData` JSON: `results` keyed by a node's output
tensor name, each `{"value": ...}`, and a colour `gradient`) holds log10 of each node's error,
or of its gain with `what="gain"`.
"""

from __future__ import annotations

import json
import math

from modelparity.folders import write_atomic
from modelparity.locate.analyse import ROUNDING, NodeError
from modelparity.locate.result import LocateResult
from modelparity.report.html import CSS, _e, _svg, _text

TINY = 2.0**-40  # an exact node (error 0) is drawn at the chart's floor


def _log2(value: float) -> float | None:
    if math.isnan(value):
        return None
    return math.log2(max(value, TINY)) if not math.isinf(value) else None


def growth_svg(result: LocateResult) -> str:
    """The error along the graph: one point per compared node, in graph order."""
    nodes = list(result.nodes)
    width, height, left, right, top, bottom = 900, 300, 56, 12, 18, 40
    series = {"error": [_log2(n.error) for n in nodes],
              "floor": [_log2(n.floor) for n in nodes],
              "explained": [_log2(n.explained) for n in nodes]}
    values = [v for points in series.values() for v in points if v is not None]
    rounding = math.log2(ROUNDING[result.precision])
    values.append(rounding)
    low, high = math.floor(min(values)), math.ceil(max(values))
    high = max(high, low + 1)

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(len(nodes) - 1, 1))

    def y(v: float) -> float:
        return top + (height - top - bottom) * (high - v) / (high - low)

    parts = []
    step = max(1, (high - low) // 6)
    for value in range(low, high + 1, step):
        parts.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - right}" '
                     f'y2="{y(value):.1f}" stroke="#eee"/>')
        parts.append(_text(left - 5, y(value) + 4, f"2^{value}", 11, "end", "#444"))
    parts.append(f'<line x1="{left}" y1="{y(rounding):.1f}" x2="{width - right}" '
                 f'y2="{y(rounding):.1f}" stroke="#2ca02c" stroke-dasharray="2 3"/>')
    parts.append(_text(width - right, y(rounding) - 4, f"{result.precision} rounding", 11,
                       "end", "#2ca02c"))
    styles = {"floor": ("#7f7f7f", "4 3"), "explained": ("#2ca02c", ""),
              "error": ("#1f77b4", "")}
    for name, (colour, dash) in styles.items():
        points = [(x(i), y(v)) for i, v in enumerate(series[name]) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{'M' if k == 0 else 'L'}{px:.1f},{py:.1f}"
                            for k, (px, py) in enumerate(points))
            parts.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.6"'
                         + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
    for i, node in enumerate(nodes):
        value = series["error"][i]
        if value is None:
            continue
        first = node.node == result.first
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="{5 if first else 2.5}" '
                     f'fill="{"#d62728" if first else "#1f77b4"}" data-node="{_e(node.node)}">'
                     f'<title>{_e(node.node)} ({_e(node.op_type)}): error '
                     f'{node.error:.2e}, gain x{node.gain:.3g}</title></circle>')
        if first:
            parts.append(_text(x(i) + 7, y(value) - 6, f"first divergent: {node.node}", 12,
                               "start", "#d62728", "bold"))
    parts.append(_text(left, height - 12, "nodes in graph order →", 11, "start", "#444"))
    parts.append(_text(left + 170, height - 12, "— error   - - FP32 floor   — "
                       f"{result.precision} emulation", 11, "start", "#444"))
    return _svg(width, height, "".join(parts), "error-growth",
                "error of each node along the graph")


def _row(node: NodeError, first: str | None) -> str:
    cells = [_e(node.label), _e(node.op_type), str(node.depth), f"{node.error:.2e}",
             f"{node.floor:.2e}", f"{node.explained:.2e}", f"{node.inherited:.2e}",
             f"x{node.gain:.3g}", "" if math.isnan(node.isolated) else f"{node.isolated:.2e}"]
    style = ' class="bad"' if node.node == first else ""
    return f"<tr{style}>" + "".join(
        f'<td{" class=num" if k > 1 else ""}>{cell}</td>' for k, cell in enumerate(cells)) \
        + "</tr>"


def render_locate_html(result: LocateResult) -> str:
    head = (f"<h1>Where the error comes from: {_e(result.candidate)}</h1>"
            f'<p class="meta">model <code>{_e(result.model)}</code>, reference '
            f"<code>{_e(result.reference)}</code>, {result.samples} samples; errors judged "
            f"against {_e(result.precision)} ({_e(result.precision_from)})</p>")
    if result.first:
        node = result.node(result.first)
        verdict = (f'<div class="banner bad">first divergent node: {_e(node.label)} '
                   f"({_e(node.op_type)}), error {node.error:.2e}, x{node.gain:.3g} what it "
                   f"inherits</div>")
    else:
        verdict = (f'<div class="banner good">no node amplifies the error beyond '
                   f"{_e(result.precision)} rounding with the error reaching the outputs</div>")
    rows = "".join(_row(n, result.first) for n in result.nodes)
    table = ("<table><tr><th>node</th><th>op</th><th>depth</th><th>error</th>"
             "<th>FP32 floor</th><th>emulation</th><th>inherited</th><th>gain</th>"
             f"<th>alone</th></tr>{rows}</table>")
    changed = "".join(f'<p class="warn">exposing the intermediates changed output '
                      f"{_e(f.name)}: {f.plain:.2e} as shipped, {f.exposed:.2e} exposed</p>"
                      for f in result.final if f.changed)
    unmatched = "".join(f"<li><code>{_e(name)}</code>: {_e(why)}</li>"
                        for name, why in result.unmatched)
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>modelparity locate</title><style>{CSS}</style></head><body>"
            f"{head}{verdict}<h2>Error along the graph</h2>{growth_svg(result)}{changed}"
            f"<h2>Every compared node</h2>{table}"
            + (f"<h2>Not compared</h2><ul>{unmatched}</ul>" if unmatched else "")
            + "</body></html>")


def write_locate_html(result: LocateResult, path: str) -> str:
    return write_atomic(path, render_locate_html(result))


def model_explorer_data(result: LocateResult, what: str = "error") -> dict:
    """Model Explorer's node data: log10 of each node's error (or gain), keyed by the output
    tensor the number was read from, with a white-to-red gradient."""
    results = {}
    for node in result.nodes:
        value = node.error if what == "error" else node.gain
        if math.isnan(value) or math.isinf(value):
            continue
        results[node.tensor] = {"value": round(math.log10(max(value, TINY)), 4)}
    return {"results": results,
            "gradient": [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 0.5, "bgColor": "#fdd49e"},
                         {"stop": 1, "bgColor": "#d7301f"}]}


def write_model_explorer(result: LocateResult, path: str, what: str = "error") -> str:
    return write_atomic(path, json.dumps(model_explorer_data(result, what), indent=1))
