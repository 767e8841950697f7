"""Findings of the knowledge base, for the terminal (`lint`, and every `run`)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from modelparity.knowledge import Finding
from modelparity.knowledge.matcher import AGREES, CONTRADICTS, DIFFERS

VERDICT_STYLE = {AGREES: "bold red", CONTRADICTS: "bold yellow", DIFFERS: "bold yellow"}


def render_finding(finding: Finding, console: Console, *, verbose: bool = False) -> None:
    rule = finding.rule
    status = "" if rule.status == "verified" else " [unverified: a lead, not a checked fact]"
    console.print(Text.assemble((f"{finding.backend}  ", "bold"), (rule.id, "bold magenta"),
                                f"  {rule.title}", (status, "yellow")))
    indent = 4
    lines: list[Text | str] = [finding.precision_line()]
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
    width = max(40, console.width - indent)
    for line in lines:
        text = line if isinstance(line, Text) else Text(line)
        for part in text.wrap(console, width):  # wrapped lines keep the indent, no padding
            console.print(Text(" " * indent) + part, highlight=False, soft_wrap=True)
    for link in rule.links if verbose else rule.links[:1]:  # whole, so a terminal can open it
        console.print(Text(" " * (indent + 2) + link, style="dim"), highlight=False,
                      soft_wrap=True)


def render_findings(findings: Sequence[Finding], console: Console, *,
                    verbose: bool = False) -> None:
    for finding in findings:
        render_finding(finding, console, verbose=verbose)
