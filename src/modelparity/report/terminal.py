"""The terminal summary: one table of backends, then what flipped and what it did to the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from modelparity.analyse.testimony import disagrees, runtime_says, told_line
from modelparity.report import (
    DRIFT_COLUMNS,
    ELEMENT_COLUMNS,
    FIX_COLUMNS,
    YARDSTICK_COLUMNS,
    drift_rows,
    element_cells,
    fix_rows,
    flipped_text,
    flips_count,
    predicted_note,
    profile_samples,
    yardstick_rows,
)
from modelparity.report.findings import render_findings
from modelparity.report.names import class_label, plain, result_change_text
from modelparity.result import AuditResult, BackendResult


def _text(value: object = "", *args: Any, **kwargs: Any) -> Text:
    """rich Text (never markup) of text that may come from a model file or the user, with
    control characters shown as escapes (`report.names.plain`)."""
    return Text(plain(value), *args, **kwargs)


SHORT = {"accuracy": "acc", "precision": "prec", "recall": "rec", "precision_macro": "prec",
         "recall_macro": "rec", "f1_macro": "f1", "top1_accuracy": "top1", "topk_accuracy": "topk",
         "subset_accuracy": "subset acc", "hamming_loss": "hamming"}
STATUS_STYLE = {"ok": "green", "failed": "bold red", "skipped": "yellow"}
MAX_CONFUSION_CLASSES = 12  # wider does not fit a terminal: the HTML and report.json have it
MAX_METRIC_CHANGES = 6


def _number(value: float | None, fmt: str = ".2e") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return format(value, fmt)


def _metric_changes(result: BackendResult) -> str:
    if not result.metric_deltas:
        return "-"
    # percentage points: a change of 3 samples in 23,329 reads +0.013pp, not +0.0001
    changed = [f"{SHORT.get(name, name)} {delta * 100:+.2g}pp"
               for name, delta in result.metric_deltas.items()
               if delta is not None and abs(delta) > 0]
    if len(changed) > MAX_METRIC_CHANGES:  # a row per backend stays a row
        changed = [*changed[:MAX_METRIC_CHANGES],
                   f"{len(changed) - MAX_METRIC_CHANGES} more in report.json"]
    return ", ".join(changed) if changed else "none"


SHORT_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "tfloat32": "tf32",
                   "f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def _precision(result: BackendResult) -> Text:
    """What the runtime says it ran / what the outputs say it ran (with the confidence)."""
    reported = SHORT_PRECISION.get(result.precision or "", result.precision or "-")
    predicted = result.description.get("precision", {}).get("predicted") \
        if isinstance(result.description.get("precision"), dict) else None
    if predicted:
        reported = SHORT_PRECISION.get(predicted, predicted)
    fingerprint = result.fingerprint
    if fingerprint is None:
        return _text(("pred " if predicted else "") + reported)
    measured = f"{fingerprint.verdict} {fingerprint.confidence:.2f}"
    style = "" if fingerprint.verdict == "fp32" else "bold red"
    disagree = reported not in ("-", fingerprint.verdict)
    return Text.assemble("pred " if predicted else "", reported, " / ", (measured, style),
                         ("  !" if disagree else "", "bold"))


SPEC_WIDTH = 48  # a longer spec (an IR's path, many options) folds, so the numbers stay


def summary_table(result: AuditResult) -> Table:
    table = Table(title="every backend against the reference", title_justify="left")
    table.add_column("backend", overflow="fold", max_width=SPEC_WIDTH)  # a long spec folds
    table.add_column("status", no_wrap=True)
    table.add_column("precision\nreported / measured", no_wrap=True)
    table.add_column("max abs\nerror", justify="right", no_wrap=True)
    table.add_column("flips", justify="right", no_wrap=True)
    table.add_column("metric changes", min_width=12)
    table.add_column("p50/p95\nms/batch", justify="right", no_wrap=True)
    for backend in result.backends:
        reference = backend.role == "reference"
        status = _text("ref" if reference and backend.ok else backend.status,
                      style=STATUS_STYLE.get(backend.status, ""))
        if backend.ok and backend.predicted:
            stand_in = backend.description["predicted"].get("stand_in", "?")
            status = _text(f"predicted\n({stand_in})", style="yellow")
        flips = "-"
        if backend.flips is not None:
            flips = flips_count(backend.flips)
        latency = backend.measured_latency
        table.add_row(
            _text(backend.spec),
            status,
            _precision(backend),
            "-" if reference else _number(backend.max_abs),
            _text(flips, style="bold red" if backend.flips and backend.flips.count else ""),
            _text("-" if reference else _metric_changes(backend)),
            f"{latency.p50_ms:.2f}/{latency.p95_ms:.2f}" if latency else "-",
        )
    return table


def flips_table(backend: BackendResult, limit: int,
                result: AuditResult | None = None) -> Table | None:
    """The first `limit` flips, closest to the boundary first; with `result`, decisions read
    with its class names (`cat (3) -> dog (5)`)."""
    flips = backend.flips
    if flips is None or flips.count == 0 or limit <= 0:
        return None
    title = (f"{backend.spec}: {flipped_text(flips, 'decisions')}, closest to the boundary "
             "first")
    # Text, not markup: a spec or a class name with [brackets] prints as it is
    table = Table(title=_text(title), title_justify="left", min_width=len(title))
    columns = ["sample", "reference score", "candidate score", "margin", "decision"]
    if flips.per_element:
        columns += ELEMENT_COLUMNS
    for column in columns:
        table.add_column(column, justify="right")
    for record in flips.records(limit):
        change = result_change_text(result, record)
        table.add_row(
            str(record["index"]),
            _number(record["reference_score"], ".7f"),
            _number(record["candidate_score"], ".7f"),
            _number(record["reference_margin"], ".2e"),
            _text(change),
            *element_cells(flips, record),
        )
    return table


def confusion_table(result: AuditResult, backend: BackendResult) -> Table | None:
    metrics = backend.metrics
    reference = result.reference.metrics
    if metrics is None or metrics.confusion is None or metrics.confusion.ndim != 2:
        return None
    classes = [class_label(c, result.class_names) for c in metrics.classes]
    if len(classes) > MAX_CONFUSION_CLASSES:
        return None  # too wide for a terminal (`render` says so); the HTML and report.json
    title = f"{backend.spec}: confusion matrix"
    if backend is not result.reference and reference is not None:
        title += " (change vs reference)"
    table = Table(title=_text(title), title_justify="left", min_width=len(title))
    table.add_column("true \\ predicted")
    for name in classes:
        table.add_column(_text(name), justify="right")
    for i, name in enumerate(classes):
        cells = []
        for j in range(len(classes)):
            value = int(metrics.confusion[i, j])
            text = str(value)
            if backend is not result.reference and reference is not None \
                    and reference.confusion is not None \
                    and reference.confusion.shape == metrics.confusion.shape:
                delta = value - int(reference.confusion[i, j])
                if delta:
                    text += f" ({delta:+d})"
            cells.append(text)
        table.add_row(_text(name), *cells)
    return table


def _confusion_too_wide(backend: BackendResult) -> int:
    """The number of classes of a confusion matrix too wide to print here, else 0."""
    metrics = backend.metrics
    if metrics is None or metrics.confusion is None or metrics.confusion.ndim != 2:
        return 0
    classes = len(metrics.classes)
    return classes if classes > MAX_CONFUSION_CLASSES else 0


def fixes_table(result: AuditResult) -> Table | None:
    """Flips, errors, measured precision and latency before and after each fix."""
    if not result.fixes:
        return None
    table = Table(title="each fix, run beside the original on the same inputs",
                  title_justify="left")
    for column in FIX_COLUMNS:
        left = column in ("run", "backend", "rules", "status", "precision measured")
        table.add_column(column, justify="left" if left else "right",
                         **({"overflow": "fold", "max_width": SPEC_WIDTH}
                            if column == "backend" else {}))
    for row in fix_rows(result, _number):
        fixed = row[0] == "fixed"
        flips = _text(row[4], style="bold green" if fixed and row[4] == "0" else "")
        table.add_row(*row[:4], flips, *row[5:], end_section=fixed)
    return table


def drift_table(result: AuditResult) -> Table | None:
    """With --carry: own state beside teacher-forced, per candidate."""
    rows = drift_rows(result, _number)
    if not rows:
        return None
    table = Table(title="carried state: each backend on its own state, and fed the reference's "
                  "(teacher-forced); flips only on its own state are drift", title_justify="left")
    for column in DRIFT_COLUMNS:
        table.add_column(column, no_wrap=column == "backend",
                         justify="left" if column == "backend" else "right")
    for row in rows:
        table.add_row(_text(row[0]), *row[1:])
    return table


def profiles_table(result: AuditResult) -> Table | None:
    """What the same model does in each precision: the yardsticks, and the at-risk counts."""
    if not result.profiles and not result.at_risk:
        return None
    table = Table(title=f"the same model in each precision (emulated on the first "
                        f"{profile_samples(result)} samples; at risk: reference samples near "
                        "the boundary)", title_justify="left")
    for column in YARDSTICK_COLUMNS:
        table.add_column(column, justify="left" if column in ("precision", "backend")
                         else "right")
    for row in yardstick_rows(result, _number):
        table.add_row(*map(Text, row))  # plain text: "[batch 1]" is no markup
    return table


def render(result: AuditResult, console: Console, *, show_flips: int = 10) -> None:
    console.print(_text(f"model: {result.model['source']}   inputs: {result.inputs['source']}"
                       f"   task: {result.task['kind']} on '{result.task['output']}'", style="dim"))
    console.print(summary_table(result))
    resumed = [b.spec for b in result.backends if b.resumed]
    if resumed:  # results read back from --out, not run again: say which
        console.print(_text(f"from the earlier run in this folder (--resume), same data and "
                           f"settings: {', '.join(resumed)}", style="dim"))
    for backend in result.backends:
        note = predicted_note(backend)
        if note:
            console.print(_text(note, style="yellow"))
        if backend.error:
            console.print(_text(f"{backend.spec}: {backend.status}: {backend.error}",
                               style=STATUS_STYLE.get(backend.status, "")))
        for name, stats in backend.errors.items():
            if stats.nan_mismatch or stats.inf_mismatch:
                console.print(_text(
                    f"{backend.spec}: output '{name}' has {stats.nan_mismatch} NaN and "
                    f"{stats.inf_mismatch} Inf value(s) where the reference differs",
                    style="bold red"))
    for backend in result.candidates:
        fingerprint = backend.fingerprint
        reported = SHORT_PRECISION.get(backend.precision or "", backend.precision)
        told = runtime_says(backend.description)
        disputed = told is not None and disagrees(told, fingerprint)
        # the evidence for a plain FP32 verdict that nobody disputes stays in report.json
        if fingerprint is not None and (fingerprint.verdict != "fp32" or disputed
                                        or reported not in (None, "fp32")):
            stand_in = backend.description.get("predicted", {}).get("stand_in")
            where = f" (measured on its stand-in, {stand_in})" if stand_in else ""
            console.print(Text.assemble((plain(f"{backend.spec}{where}: "), "bold"),
                                        plain(fingerprint.evidence)))
            if told is not None:  # Text, not markup: layer names come from the model file
                console.print(_text(f"    {told_line(told, fingerprint)}",
                                   style="bold red" if disputed else "dim"))
        if backend.at_risk_flips:
            risk = backend.at_risk_flips
            console.print(_text(
                f"    {risk['flips_in_at_risk_set']} of its {risk['flips']} flips were among the "
                f"samples predicted at risk for {risk['precision']}", style="dim"))
    findings = [f for backend in result.backends for f in backend.findings]
    if findings:
        console.print(_text("silent precision defaults that apply (knowledge base; "
                           "`modelparity lint` explains each in full)", style="bold"))
        render_findings(findings, console)
    for table in (drift_table(result), fixes_table(result)):
        if table is not None:
            console.print(table)
    repros = [b for b in result.candidates if b.repro]
    for backend in repros:
        console.print(_text(f"repro for {backend.spec}: python {backend.repro}", style="dim"))
    profiles = profiles_table(result)
    if profiles is not None:
        console.print(profiles)
    parts: list[Any] = []
    wide = _confusion_too_wide(result.reference)
    if result.reference.metrics is not None:
        table = confusion_table(result, result.reference)
        if table is not None:
            parts.append(table)
    for backend in result.candidates:
        flips = flips_table(backend, show_flips, result)
        if flips is not None:
            parts.append(flips)
        if backend.flips is not None and backend.flips.count:
            wide = wide or _confusion_too_wide(backend)
            table = confusion_table(result, backend)
            if table is not None:
                parts.append(table)
    if wide:
        parts.append(_text(f"confusion matrices: {wide:,} classes, too many to print here (up "
                          f"to {MAX_CONFUSION_CLASSES}); --html shows the most confused pairs, "
                          "report.json the whole matrix", style="dim"))
    if parts:
        console.print(Group(*parts))
    if result.locate is not None:  # a report written by `modelparity locate --out`
        from modelparity.report.locate import render_locate

        console.print(_text("where in the model the error comes from (modelparity locate):",
                            style="bold"))
        render_locate(result.locate, console)
    flipped = [b for b in result.candidates if b.flips is not None and b.flips.count]
    if flipped:
        names = ", ".join(f"{b.spec} ({b.flips.count})" for b in flipped if b.flips)
        console.print(_text(f"Decisions flipped on: {names}.", style="bold red"))
    elif result.ok:
        console.print(_text("No decision flipped on any backend.", style="bold green"))
