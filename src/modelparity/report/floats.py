"""Terminal rendering of FormatViews: how one number (a threshold) sits in each float format.

Numbers are printed with `repr`, the shortest text that reads back as the same float64, so a
neighbour such as 0.50048828125 is shown exactly rather than as 0.5005. Gaps that are powers of
two (all of them, within one binade) are shown as 2^k, which is how people reason about them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from modelparity.numerics.floats import FormatView


def number(value: float) -> str:
    """Exact-enough text for a float: repr, with a plain inf."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(float(value))


def width(value: float | None) -> str:
    """A gap or band width: 2^k when it is a power of two, else 4 significant digits."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    mantissa, exponent = math.frexp(value)
    if mantissa == 0.5:
        return f"2^{exponent - 1}"
    return f"{value:.4g}"


def interval(ends: tuple[float, float], closed: tuple[bool, bool]) -> str:
    """[a, b] / (a, b] notation, one end per line so wide tables still fit."""
    low, high = ends
    return (f"{'[' if closed[0] else '('}{number(low)},\n"
            f" {number(high)}{']' if closed[1] else ')'}")


def format_table(views: Sequence[FormatView]) -> Table:
    """One row per format; pairs (below/above, interval ends) are stacked on two lines."""
    value = number(views[0].value) if views else ""
    table = Table(title=f"{value} in each float format", title_justify="left")
    table.add_column("format", no_wrap=True)
    table.add_column("nearest", no_wrap=True)
    table.add_column("exact", no_wrap=True)
    table.add_column("below /\nabove", no_wrap=True)
    table.add_column("gap below /\nabove", justify="right", no_wrap=True)
    table.add_column("rounds onto\nnearest", no_wrap=True)
    table.add_column(f"flip band\n(s > {value})", no_wrap=True)
    table.add_column("band\nwidth", justify="right", no_wrap=True)
    for view in views:
        band = "-"
        if view.flip_band is not None and view.flip_band_closed is not None:
            band = interval(view.flip_band, view.flip_band_closed)
        closed = view.rounds_onto_closed
        table.add_row(
            view.format,
            number(view.nearest),
            "yes" if view.exact else "no",
            f"{number(view.below)}\n{number(view.above)}",
            f"{width(view.gap_below)}\n{width(view.gap_above)}",
            interval(view.rounds_onto, (closed, closed)),
            band,
            width(view.flip_band_width),
        )
    return table


def explanation(value: float) -> str:
    """The one line under the table that says what a flip band is."""
    t = number(value)
    return (f"flip band: scores s for which 'round(s) > {t}' differs from 's > {t}', i.e. "
            "decisions that flip when a runtime returns the score in that format "
            "(round to nearest, ties to even; [ ] closed, ( ) open ends; - no such score).")


def render_float_views(views: Sequence[FormatView], console: Console) -> None:
    """Print the table and its explanation."""
    console.print(format_table(views))
    if views:
        console.print(explanation(views[0].value), highlight=False, soft_wrap=True)
