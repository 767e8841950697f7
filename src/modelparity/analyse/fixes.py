"""What a fix buys and what it costs: each candidate with a finding beside its fixed variant,
run in the same audit on the same inputs (`audit(..., fix=True)`, `modelparity run --fix`)."""

from __future__ import annotations

from typing import Any

from modelparity.result import AuditResult, BackendResult, FixOutcome


def _side(result: BackendResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "flips": result.flips.count if result.flips is not None else None,
        "max_abs": result.max_abs,
        "p50_ms": result.measured_latency.p50_ms if result.measured_latency else None,
        "measured": result.measured_precision,
        "reported": result.precision,
        "predicted": result.predicted,
    }


def fix_outcomes(result: AuditResult) -> list[FixOutcome]:
    outcomes = []
    for candidate in result.candidates:
        if candidate.fixed_by is None:
            continue
        try:
            fixed = result.backend(candidate.fixed_by)
        except KeyError:
            continue
        outcomes.append(FixOutcome(candidate.spec, fixed.spec,
                                   [f.rule.id for f in candidate.findings],
                                   _side(candidate), _side(fixed)))
    return outcomes
