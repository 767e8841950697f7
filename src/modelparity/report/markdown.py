"""A Markdown summary that fits a CI job summary (GitHub's $GITHUB_STEP_SUMMARY): the backend
table, the policy outcomes, then up to five flipped samples per backend."""

from __future__ import annotations

import html
import math
import os

from modelparity.analyse.testimony import disagrees, runtime_says, told_line
from modelparity.policy import PolicyReport, format_actual
from modelparity.report import (
    DRIFT_COLUMNS,
    ELEMENT_COLUMNS,
    FIX_COLUMNS,
    drift_rows,
    element_cells,
    fix_rows,
    flipped_text,
    flips_count,
    predicted_note,
)
from modelparity.report.names import result_change_text
from modelparity.report.terminal import SHORT, SHORT_PRECISION
from modelparity.result import AuditResult, BackendResult

FLIPS_PER_BACKEND = 5
VERDICT_MARK = {"failed": "❌ failed", "held": "✅ held", "not checked": "➖ not checked"}


def _cell(value: object) -> str:
    """Text safe inside a GitHub table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _text(value: object) -> str:
    """Free text (class names) in a table cell: also no HTML, which GitHub would render."""
    return _cell(html.escape(str(value), quote=False))


def _code(value: object) -> str:
    text = str(value).replace("`", "'")
    return f"`{_cell(text)}`"


def _number(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _precision(backend: BackendResult) -> str:
    reported = SHORT_PRECISION.get(backend.precision or "", backend.precision or "-")
    if backend.fingerprint is None:
        return f"{reported} / -"
    fingerprint = backend.fingerprint
    measured = f"{fingerprint.verdict} {fingerprint.confidence:.2f}"
    if fingerprint.verdict != "fp32":
        measured = f"**{measured}**"
    return f"{reported} / {measured}"


def _metric_changes(backend: BackendResult) -> str:
    if not backend.metric_deltas:
        return "-"
    changed = [f"{SHORT.get(name, name)} {delta * 100:+.2g}pp"
               for name, delta in backend.metric_deltas.items()
               if delta is not None and not math.isnan(delta) and abs(delta) > 0]
    return ", ".join(changed) if changed else "none"


def _status(backend: BackendResult, reference: bool) -> str:
    if reference and backend.ok:
        return "ref"
    return backend.status if backend.ok else f"**{backend.status}**"


def _testimonies(result: AuditResult) -> list[str]:
    """Each measured candidate's runtime testimony beside its fingerprint, agreeing or not."""
    lines = []
    for backend in result.candidates:
        told = runtime_says(backend.description)
        if told is None or backend.fingerprint is None:
            continue
        line = _text(told_line(told, backend.fingerprint))
        if disagrees(told, backend.fingerprint):
            line = f"**{line}**"
        lines.append(f"- {_code(backend.spec)}: {line}")
    return lines


def render_markdown(result: AuditResult, policies_report: PolicyReport | None = None) -> str:
    lines: list[str] = []
    flipped = [b for b in result.candidates if b.flips is not None and b.flips.count]
    failed = [b for b in result.backends if not b.ok]
    if failed:
        headline = "❌ " + ", ".join(f"{b.spec} {b.status}" for b in failed)
    elif policies_report is not None and policies_report.failed:
        headline = f"❌ {len(policies_report.failures)} policy check(s) failed"
    elif flipped:
        headline = "⚠️ decisions flipped on " + ", ".join(
            f"{b.spec} ({b.flips.count})" for b in flipped if b.flips)
    else:
        headline = "✅ no decision flipped on any backend"
    lines += [f"## modelparity: {headline}", ""]
    lines += [f"model {_code(result.model.get('source'))}, inputs "
              f"{_code(result.inputs.get('source'))}, task {result.task.get('kind')} on "
              f"{_code(result.task.get('output'))}, reference {_code(result.reference.spec)}",
              ""]

    lines += ["| backend | status | precision reported / measured | max abs error | flips "
              "| metric changes | p50 ms/batch |",
              "|---|---|---|---:|---:|---|---:|"]
    for backend in result.backends:
        reference = backend.role == "reference"
        flips = "-" if backend.flips is None else flips_count(backend.flips)
        if backend.flips is not None and backend.flips.count:
            flips = f"**{flips}**"
        latency = backend.measured_latency
        lines.append("| " + " | ".join([
            _code(backend.spec),
            _status(backend, reference),
            _precision(backend),
            "-" if reference else _number(backend.max_abs, ".2e"),
            flips,
            "-" if reference else _cell(_metric_changes(backend)),
            _number(latency.p50_ms if latency else None, ".2f"),
        ]) + " |")
    lines.append("")

    for backend in result.backends:
        note = predicted_note(backend)
        if note:
            lines.append(f"- {_cell(note)}")
    for backend in failed:
        lines.append(f"- {_code(backend.spec)} {backend.status}: {_cell(backend.error or '')}")
    testimonies = _testimonies(result)
    lines += testimonies
    if failed or testimonies:
        lines.append("")

    findings = [f for backend in result.backends for f in backend.findings]
    if findings:
        lines += ["### Silent precision defaults (knowledge base)", ""]
        for finding in findings:
            verdict = finding.verdict()
            lines.append(f"- {_code(finding.backend)} **{finding.rule.id}** "
                         f"{_cell(finding.rule.title)}"
                         + (f"; {_cell(verdict)}" if verdict else "")
                         + (f"; fix: {_code(finding.fixed_spec)}" if finding.fixed_spec
                            else ""))
        lines.append("")
    drift = drift_rows(result, lambda v: _number(v, ".2e"))
    if drift:
        lines += ["Carried state: each backend on its own state and teacher-forced (fed the "
                  "reference's state); flips only on its own state are drift.", "",
                  "| " + " | ".join(DRIFT_COLUMNS) + " |", "|" + "---|" * len(DRIFT_COLUMNS)]
        lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in drift]
        lines.append("")
    if result.fixes:
        lines += ["| " + " | ".join(FIX_COLUMNS) + " |",
                  "|" + "---|" * len(FIX_COLUMNS)]
        for row in fix_rows(result, lambda v: _number(v, ".2e")):
            lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
        lines.append("")

    if policies_report is not None and policies_report.outcomes:
        lines += ["### Policies", "", policies_report.summary(), "",
                  "| policy | backend | value | result |", "|---|---|---:|---|"]
        for outcome in policies_report.outcomes:
            value = (format_actual(outcome.actual) if outcome.checked
                     else _cell(outcome.reason or ""))
            lines.append(f"| {_code(outcome.policy.text)} | {_code(outcome.backend)} | "
                         f"{value} | {VERDICT_MARK[outcome.verdict]} |")
        lines.append("")

    for backend in flipped:
        assert backend.flips is not None
        flips = backend.flips
        shown = min(flips.count, FLIPS_PER_BACKEND)
        extra = "".join(f" {name} |" for name in ELEMENT_COLUMNS) if flips.per_element else ""
        lines += [f"### {_cell(backend.spec)}: {flipped_text(flips)}"
                  + (f", the {shown} closest to the boundary" if shown < flips.count
                     else ""), "",
                  "| sample | reference score | candidate score | margin | decision |" + extra,
                  "|---:|---:|---:|---:|---|" + "---:|" * (len(ELEMENT_COLUMNS)
                                                        if flips.per_element else 0)]
        for record in flips.records(FLIPS_PER_BACKEND):
            cells = "".join(f" {_cell(cell)} |" for cell in element_cells(flips, record))
            lines.append(
                f"| {record['index']} | {_number(record['reference_score'], '.7f')} | "
                f"{_number(record['candidate_score'], '.7f')} | "
                f"{_number(record['reference_margin'], '.2e')} | "
                f"{_text(result_change_text(result, record, '→'))} |" + cells)
        if backend.fingerprint is not None:
            lines += ["", f"precision: {_cell(backend.fingerprint.evidence)}"]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_markdown(result: AuditResult, path: str,
                   policies_report: PolicyReport | None = None) -> str:
    """Write the Markdown summary to `path` (append it to $GITHUB_STEP_SUMMARY in CI)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(result, policies_report))
    return path
