"""How a decision reads in every rendering: with class names (`--class-names`), class 3 is
`cat (3)`; a top-k decision is a list of them; a multilabel decision lists the classes it
sets. Other values (regression, a custom function's text or tuple) read as they are. Plain
text: each renderer escapes it for its own format (HTML, rich, Markdown, XML)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

MAX_LISTED = 10  # classes shown of a list decision (top-k, multilabel); the rest are counted
_CONTROL = {i: " " for i in range(32)} | {127: " "}


_UNPRINTABLE = {i: f"\\x{i:02x}" for i in (*range(32), *range(127, 160)) if i not in (9, 10)}


def plain(text: object) -> str:
    """`text` with its control characters shown, not obeyed: an ESC or OSC sequence in a model's
    tensor name (or a file name) would otherwise recolour, retitle or clear the user's terminal.
    Tabs and line breaks stay."""
    return str(text).translate(_UNPRINTABLE)


def class_label(index: Any, names: Sequence[str] | None) -> str:
    """`name (index)` for a class index that `names` names; the value as text otherwise."""
    if names and isinstance(index, numbers.Integral) and not isinstance(index, bool) \
            and 0 <= int(index) < len(names) and names[int(index)]:
        name = str(names[int(index)]).translate(_CONTROL)
        return f"{name} ({int(index)})"
    return str(index)


def _listed(items: list[str], limit: int | None) -> str:
    if limit is not None and len(items) > limit:
        items = [*items[:limit], f"... {len(items) - limit} more"]
    return ", ".join(items)


def decision_text(decision: Any, names: Sequence[str] | None = None, kind: str | None = None,
                  limit: int | None = MAX_LISTED) -> str:
    """One decision (a report.json value: a number, or a list for top-k and multilabel) as
    text, at most `limit` classes of a list. Without names, a decision reads as before."""
    if isinstance(decision, (list, tuple)):
        if kind == "multilabel" and names and len(decision) == len(names) \
                and all(v in (0, 1) and not isinstance(v, float) for v in decision):
            on = [class_label(i, names) for i, v in enumerate(decision) if v]
            return "{" + _listed(on, limit) + "}" if on else "{}"
        if kind not in ("topk", None):  # regression values, a custom function's tuple
            return "[" + _listed([str(v) for v in decision], limit) + "]"
        return "[" + _listed([class_label(v, names) for v in decision], limit) + "]"
    if kind == "regression":
        return str(decision)
    return class_label(decision, names)


def change_text(record: dict[str, Any], names: Sequence[str] | None, kind: str | None,
                arrow: str = "->", limit: int | None = MAX_LISTED) -> str:
    """A listed flip's `reference -> candidate` decisions."""
    return (f"{decision_text(record['reference_decision'], names, kind, limit)} {arrow} "
            f"{decision_text(record['candidate_decision'], names, kind, limit)}")


def result_change_text(result: Any, record: dict[str, Any], arrow: str = "->",
                       limit: int | None = MAX_LISTED) -> str:
    """`change_text` with the result's class names and task; without a result, the saved
    decisions as they are."""
    if result is None:
        return f"{record['reference_decision']} {arrow} {record['candidate_decision']}"
    return change_text(record, result.class_names, (result.task or {}).get("kind"), arrow,
                       limit)
