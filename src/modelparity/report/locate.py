"""The terminal view of a `LocateResult`: the first divergent node, the amplifiers, a summary
by op type, and what could not be compared. Node and tensor names come from the model file:
shown with `plain` in rich `Text`, never as markup."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelparity.locate.analyse import GAIN, ROUNDING, NodeError
from modelparity.locate.keep import KeepResult
from modelparity.locate.result import LocateResult
from modelparity.report.names import plain

UNMATCHED_LISTED = 5


def _text(value: object, style: str = "") -> Text:
    return Text(plain(value), style=style)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.2e}"


def _gain(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"x{value:.3g}"


def nodes_table(result: LocateResult, nodes: list[NodeError]) -> Table:
    explained = f"{result.precision} emulation" if "explained" in result.yardsticks else None
    alone = any(not math.isnan(n.isolated) for n in nodes)
    table = Table(show_edge=False, pad_edge=False)
    for column in ("node", "op", "depth", "error", "FP32 floor", *([explained] if explained
                                                                   else []),
                   "inherited", "gain", *(["alone"] if alone else [])):
        table.add_column(column, justify="left" if column in ("node", "op") else "right")
    for node in nodes:
        style = "bold red" if node.node == result.first else ""
        table.add_row(_text(node.label, style), _text(node.op_type), str(node.depth),
                      _number(node.error) if not node.nonfinite else f"inf ({node.nonfinite})",
                      _number(node.floor), *([_number(node.explained)] if explained else []),
                      _number(node.inherited), _gain(node.gain),
                      *([_number(node.isolated)] if alone else []))
    return table


def by_op_table(result: LocateResult) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in ("op", "nodes", "largest gain", "median error"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for summary in result.by_op:
        table.add_row(_text(summary.op_type), str(summary.nodes), _gain(summary.max_gain),
                      _number(summary.median_error))
    return table


def render_locate(result: LocateResult, console: Console, *, every_node: bool = False) -> None:
    console.print(_text(f"model: {result.model}   candidate: {result.candidate}   reference: "
                        f"{result.reference}   {result.samples} samples", "dim"))
    console.print(_text(f"errors judged against {result.precision} "
                        f"(unit roundoff {ROUNDING[result.precision]:.1e}; "
                        f"{result.precision_from})", "dim"))
    if result.flips is not None:
        console.print(_text(f"{result.flips} of {result.samples} decisions flipped on these "
                            f"samples"))
    if result.first is not None:
        node = result.node(result.first)
        console.print(_text(
            f"first divergent {'region' if node.cluster else 'node'}: {node.label} "
            f"({node.op_type}, depth {node.depth}): error "
            f"{_number(node.error)} at '{node.tensor}', {_gain(node.gain)} the largest of "
            f"what it inherits ({_number(node.inherited)}), {result.precision} rounding "
            f"({_number(ROUNDING[result.precision])}) and the FP32 floor "
            f"({_number(node.floor)}); the error reaches the outputs"
            + (f"; run alone on the reference's inputs, its own error is "
               f"{_number(node.isolated)}" if not math.isnan(node.isolated) else ""),
            "bold red"))
    else:
        console.print(_text(f"no node amplifies the error it inherits by x{GAIN:g} or more "
                            f"with the error reaching the outputs: what differs is "
                            f"{result.precision} rounding spread through the graph", "green"))
    shown = list(result.nodes) if every_node else [result.node(n) for n in result.amplifiers]
    if shown:
        console.print(Text("every compared node, in graph order" if every_node else
                           "the nodes that amplify error most"))
        console.print(nodes_table(result, shown))
    if result.by_op:
        console.print(Text("by op type"))
        console.print(by_op_table(result))
    for final in result.final:
        if final.changed:
            console.print(_text(
                f"exposing the intermediate tensors changed the candidate's output "
                f"'{final.name}': error {_number(final.plain)} as shipped, "
                f"{_number(final.exposed)} with them exposed; the runtime computes it "
                f"otherwise (other fusions), so read the node errors with care", "yellow"))
    for name, why in result.not_isolated:
        console.print(_text(f"not run alone: {name}: {why}", "dim"))
    if result.unmatched:
        listed = "; ".join(f"'{name}': {why}" for name, why in
                           result.unmatched[:UNMATCHED_LISTED])
        more = len(result.unmatched) - UNMATCHED_LISTED
        console.print(_text(f"not compared ({len(result.unmatched)} tensors): {listed}"
                            + (f"; ... {more} more" if more > 0 else ""), "dim"))


def render_keep(result: KeepResult, console: Console) -> None:
    console.print(_text(f"model: {result.model}   {result.precision} with nodes kept in FP32 "
                        f"until {result.policy} holds", "dim"))
    names = ", ".join(f"{name} ({op})" for _, name, op in result.kept) or "none"
    style = "green" if result.met else "bold red"
    console.print(_text(f"{'policy met' if result.met else 'policy NOT met'}: keep "
                        f"{len(result.kept)} of {result.nodes_total} nodes in FP32: {names}",
                        style))
    console.print(_text(result.search, "dim"))
    table = Table(show_edge=False, pad_edge=False)
    for column in ("variant", "flips", "max |diff|"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for label, side in ((f"all {result.precision} (emulated)", result.before),
                        (f"{result.precision}, kept nodes in FP32 (emulated)", result.after)):
        table.add_row(label, "-" if side.flips is None else str(side.flips),
                      "-" if side.max_abs is None else _number(side.max_abs))
    console.print(table)
    if result.verified:
        speed = Table(show_edge=False, pad_edge=False)
        for column in ("written model", "flips on ONNX Runtime CPU", "median ms per call"):
            speed.add_column(column, justify="left" if column == "written model" else "right")
        for label, side in result.verified.items():
            speed.add_row(label, "-" if side.flips is None else str(side.flips),
                          "-" if side.latency_ms is None else f"{side.latency_ms:.3f}")
        console.print(speed)
    for line in result.checks:
        console.print(_text(line, "dim"))
    if result.written:
        console.print(_text(f"mixed-precision model: {result.written}"))
    elif result.precision == "bf16":
        console.print(_text("bf16: no ONNX file is written (ONNX Runtime does not deploy BF16 "
                            "models); the per-runtime settings are in keep.json (--out)", "dim"))
