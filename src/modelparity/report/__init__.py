"""Renderings of an AuditResult (report.json lives on the result itself): terminal.py,
html.py, markdown.py, junit.py. What several renderings show the same way is built here once."""

from __future__ import annotations

from collections.abc import Callable

from modelparity.decisions import Flips
from modelparity.plan import TEACHER_FORCED
from modelparity.result import AuditResult, BackendResult

ELEMENT_COLUMNS = ("position", "flipped elements")  # flips decided per element


def flips_count(flips: Flips) -> str:
    """`12 / 40`, and for decisions made per element `12 / 40 samples (3,411 of 1,228,800
    elements)`."""
    text = f"{flips.count} / {flips.total}"
    if flips.per_element:
        text += (f" samples ({flips.elements_flipped or 0:,} of {flips.elements or 0:,} "
                 "elements)")
    return text


def flipped_text(flips: Flips, decisions: str = "decision(s)") -> str:
    """A flips table's heading: `3 flipped decision(s)`, or per element `3 / 40 samples (...)
    flipped`."""
    if flips.per_element:
        return f"{flips_count(flips)} flipped"
    return f"{flips.count} flipped {decisions}"


def element_cells(flips: Flips, record: dict) -> list[str]:
    """The per-element columns of a listed flip (none for per-sample decisions): where in the
    sample the flip closest to the boundary is, and how many of its elements flipped."""
    if not flips.per_element:
        return []
    position = record.get("position")
    flipped = record.get("flipped_elements")
    return ["-" if position is None else "(" + ", ".join(str(p) for p in position) + ")",
            "-" if flipped is None else f"{flipped:,}"]


YARDSTICK_COLUMNS = ("precision", "backend", "max abs error", "flips", "at risk: format band",
                     "at risk: error scale")


def profile_samples(result: AuditResult) -> int:
    """How many samples the yardsticks (emulations, FP32 noise) ran on."""
    return max((len(p.decided) for p in result.profiles.values() if p.decided is not None),
               default=0)


def yardstick_rows(result: AuditResult, number: Callable[[float | None], str]) -> list[list[str]]:
    """One row per yardstick: what the same model does in that precision, and the reference
    samples at risk in it (by the format's rounding band, and by the emulation's error)."""
    risks = {(r.precision, r.method): r for r in result.at_risk}
    labels = list(dict.fromkeys([*result.profiles, *(r.precision for r in result.at_risk)]))
    rows = []
    for label in labels:
        profile = result.profiles.get(label)
        band = risks.get((label, "format"))
        scale = risks.get((label, "error"))
        scale_text = "-"
        if scale is not None:
            scale_text = f"{scale.count} / {scale.total}"
            if scale.flips_total:
                scale_text += f" (has {scale.flips_covered} of its {scale.flips_total} flips)"
        if profile is None:
            max_abs = "-"
        else:
            max_abs = number(profile.max_abs) if profile.ok else profile.status
        rows.append([
            label + (" noise" if label == "fp32" else ""),
            profile.spec if profile else "-",
            max_abs,
            f"{profile.flips.count} / {profile.flips.total}" if profile and profile.flips
            else "-",
            f"{band.count} / {band.total}" if band else "-",
            scale_text,
        ])
    return rows


FIX_COLUMNS = ("run", "backend", "rules", "status", "flips", "max abs error",
               "precision measured", "p50 ms/batch", "latency vs before")


DRIFT_COLUMNS = ("backend", "flips, own state", "flips, teacher-forced", "max abs error, own state",
                 "max abs error, teacher-forced")


def drift_rows(result: AuditResult, number: Callable[[float | None], str]) -> list[list[str]]:
    """With carried state: each candidate on its own state beside teacher-forced (fed the
    reference's state). Flips on its own state that teacher-forced does not have are drift:
    a small error per step carried from call to call."""
    forced = {t.spec.removesuffix(TEACHER_FORCED): t for t in result.teacher_forced}
    rows = []
    for own in result.candidates:
        twin = forced.get(own.spec)
        if twin is None:
            continue
        rows.append([own.spec, *("-" if b.flips is None else flips_count(b.flips)
                                 for b in (own, twin)),
                     number(own.max_abs), number(twin.max_abs)])
    return rows


def fix_rows(result: AuditResult, number: Callable[[float | None], str]) -> list[list[str]]:
    """Two rows per fix run with `fix=True`, the original ("before") and its fixed variant
    ("fixed"), and the fixed variant's latency over the original's: the fix's price."""
    rows = []
    for outcome in result.fixes:
        for label, side, spec in (("before", outcome.before, outcome.backend),
                                  ("fixed", outcome.after, outcome.fixed)):
            measured = side["measured"] or "-"
            if side["predicted"]:
                measured += " (predicted)"
            ratio = outcome.latency_ratio
            rows.append([
                label, spec, ", ".join(outcome.rules) if label == "before" else "",
                side["status"], "-" if side["flips"] is None else str(side["flips"]),
                number(side["max_abs"]), measured,
                "-" if side["p50_ms"] is None else f"{side['p50_ms']:.3f}",
                f"x{ratio:.2f}" if label == "fixed" and ratio is not None else "",
            ])
    return rows


def predicted_note(backend: BackendResult) -> str | None:
    """For a backend that could not run here: what was predicted, from what, and what ran."""
    predicted = backend.description.get("predicted")
    if not predicted:
        return None
    return (f"{backend.spec}: predicted, not measured: {predicted.get('reason')}; the "
            f"{str(predicted.get('precision', '?')).upper()} prediction comes from "
            f"{predicted.get('basis')}, and {predicted.get('stand_in')} ran in its place")
