"""Findings of the knowledge base, and the fixes run side by side, for the terminal."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modelparity.fixes import FixOutcome
from modelparity.knowledge import Finding
from modelparity.knowledge.matcher import AGREES, CONTRADICTS, DIFFERS
from modelparity.knowledge.rules import KIND_WORDS, PRECISION_WORDS

VERDICT_STYLE = {AGREES: "bold red", CONTRADICTS: "bold yellow", DIFFERS: "bold yellow"}


def render_finding(finding: Finding, console: Console, *, verbose: bool = False) -> None:
    rule = finding.rule
    status = "" if rule.status == "verified" else " [unverified: a lead, not a checked fact]"
    console.print(Text.assemble((f"{finding.backend}  ", "bold"), (rule.id, "bold magenta"),
                                f"  {rule.title}", (status, "yellow")))
    indent = "    "
    lines: list[Text | str] = [
        f"{PRECISION_WORDS[rule.precision]}, {KIND_WORDS[rule.kind]}: {rule.default}"]
    if verbose:
        lines += [f"why: {rule.effect}", f"where it bites: {rule.bites}",
                  f"versions: {rule.versions}"]
    for unchecked in finding.unchecked:
        lines.append(Text(f"conditional: {unchecked}", style="yellow"))
    verdict = finding.verdict()
    if verdict:
        lines.append(Text(verdict, style=VERDICT_STYLE.get(finding.agreement, "dim")))
    if finding.fixed_spec:
        lines.append(Text.assemble("fix: ", (finding.fixed_spec, "bold green")))
    lines.append(Text.assemble("     ", (rule.fix.code, "green")))
    if rule.fix.note and verbose:
        lines.append(f"note: {rule.fix.note}")
    lines.append(Text(f"source: {rule.source}", style="dim"))
    for line in lines:
        console.print(Text(indent) + (line if isinstance(line, Text) else Text(line)),
                      highlight=False)


def render_findings(findings: Sequence[Finding], console: Console, *,
                    verbose: bool = False) -> None:
    for finding in findings:
        render_finding(finding, console, verbose=verbose)


def _pair(before: object, after: object, fmt: str = "") -> str:
    def text(value: object) -> str:
        if value is None:
            return "-"
        return format(value, fmt) if fmt and isinstance(value, float) else str(value)

    return f"{text(before)} -> {text(after)}"


def fixes_table(outcomes: Sequence[FixOutcome]) -> Table | None:
    """Flips, errors, measured precision and latency before and after each fix."""
    if not outcomes:
        return None
    table = Table(title="each fix, run beside the original on the same inputs",
                  title_justify="left")
    for column in ("backend", "fixed variant", "rules", "status", "flips", "max abs error",
                   "precision measured", "p50 ms/batch", "latency"):
        table.add_column(column, overflow="fold",
                         justify="left" if column in ("backend", "fixed variant", "rules")
                         else "right")
    for outcome in outcomes:
        before, after = outcome.before, outcome.after
        ratio = outcome.latency_ratio
        flips = _pair(before["flips"], after["flips"])
        precision = _pair(before["measured"], after["measured"])
        if before["predicted"] or after["predicted"]:
            precision += " (predicted)"
        table.add_row(
            outcome.backend,
            outcome.fixed,
            ", ".join(outcome.rules),
            _pair(before["status"], after["status"]),
            Text(flips, style="bold green" if after["flips"] == 0 and before["flips"] else ""),
            _pair(before["max_abs"], after["max_abs"], ".2e"),
            precision,
            _pair(before["p50_ms"], after["p50_ms"], ".3f"),
            "-" if ratio is None else f"x{ratio:.2f}",
        )
    return table
