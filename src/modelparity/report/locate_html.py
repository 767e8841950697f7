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
from modelparity.report.markup import CSS, _e, _legend, _svg, _text

TINY = 2.0**-40  # Model Explorer: an exact node (error 0) is given log10 of this
ZERO, NONFINITE = "zero", "nonfinite"  # drawn on the chart's bottom and top edges


def _log2(value: float) -> float | str | None:
    """log2 of an error; ZERO and NONFINITE for what a log axis cannot place; None: not run."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return NONFINITE
    return math.log2(value) if value > 0 else ZERO


def growth_svg(result: LocateResult) -> str:
    """The error along the graph: one point per compared node, in graph order. The axis spans
    the errors that are measured (an exact FP32 floor of 0 sits on the bottom edge, a
    non-finite error on the top edge), so the rounding line and the first node stay legible."""
    nodes = list(result.nodes)
    width, height, left, right, top, bottom = 900, 300, 56, 12, 26, 40
    series = {"error": [_log2(n.error) for n in nodes],
              "floor": [_log2(n.floor) for n in nodes],
              "explained": [_log2(n.explained) for n in nodes]}
    rounding = math.log2(ROUNDING[result.precision])
    values = [v for points in series.values() for v in points if isinstance(v, float)]
    values.append(rounding)
    low, high = math.floor(min(values)) - 1, math.ceil(max(values)) + 1

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(len(nodes) - 1, 1))

    def y(v: float | str) -> float:
        v = low if v == ZERO else high if v == NONFINITE else v
        return top + (height - top - bottom) * (high - v) / (high - low)

    parts = []
    step = max(1, math.ceil((high - low) / 6))
    for value in range(low, high + 1, step):
        parts.append(f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - right}" '
                     f'y2="{y(value):.1f}" stroke="#eee"/>')
        parts.append(_text(left - 5, y(value) + 4, f"2^{value}", 11, "end", "#444"))
    parts.append(f'<line x1="{left}" y1="{y(rounding):.1f}" x2="{width - right}" '
                 f'y2="{y(rounding):.1f}" stroke="#2ca02c" stroke-dasharray="2 3"/>')
    parts.append(_text(left + 4, y(rounding) - 4, f"{result.precision} rounding", 11,
                       "start", "#2ca02c"))
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
                     f'<title>{_e(node.label)} ({_e(node.op_type)}): error '
                     f'{node.error:.2e}, gain x{node.gain:.3g}</title></circle>')
        if first:  # the label reads away from the nearer edge
            near_right = x(i) > (left + width) / 2
            parts.append(_text(x(i) + (-8 if near_right else 8), y(value) - 8,
                               f"first divergent: {node.label}", 12,
                               "end" if near_right else "start", "#d62728", "bold"))
    parts.append(_text(left, height - 12, "nodes in graph order →", 11, "start", "#444"))
    entries = [("error", "#1f77b4", "line"), ("FP32 floor", "#7f7f7f", "dash"),
               (f"{result.precision} emulation", "#2ca02c", "line")]
    for k, entry in enumerate(entries):
        parts.append(_legend(left + 190 + 130 * k, height - 12, [entry]))
    if any(v == ZERO for points in series.values() for v in points):
        parts.append(_text(width - right, height - 12, "0 (exact) on the bottom edge", 11,
                           "end", "#444"))
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


def locate_section(result: LocateResult, heading: str = "h2") -> str:
    """The verdict, the chart and the node table: the locate page's body, and the section of
    the audit's own HTML report when report.json holds a locate run."""
    sub = "h3" if heading == "h2" else "h2"
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
    return (f"{verdict}<{sub}>Error along the graph</{sub}>{growth_svg(result)}{changed}"
            f"<{sub}>Every compared node</{sub}>{table}"
            + (f"<{sub}>Not compared</{sub}><ul>{unmatched}</ul>" if unmatched else ""))


def locate_meta(result: LocateResult) -> str:
    return (f'<p class="meta">model <code>{_e(result.model)}</code>, reference '
            f"<code>{_e(result.reference)}</code>, {result.samples} samples; errors judged "
            f"against {_e(result.precision)} ({_e(result.precision_from)})</p>")


def render_locate_html(result: LocateResult) -> str:
    head = f"<h1>Where the error comes from: {_e(result.candidate)}</h1>{locate_meta(result)}"
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>modelparity locate</title><style>{CSS}</style></head><body>"
            f"{head}{locate_section(result, 'h1')}</body></html>")


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
