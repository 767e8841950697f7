"""The knowledge base of silent precision defaults, and the check that matches it against a
backend's configuration: `lint(spec)` needs no model and runs nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelparity.backends.registry import get_runtime, parse_spec
from modelparity.knowledge.configuration import Configuration, resolve
from modelparity.knowledge.matcher import Finding, compare_with_measurement, fixed_spec, match
from modelparity.knowledge.rules import Rule, load_rules
from modelparity.spec import BackendSpec


def lint(spec: str | BackendSpec, description: Mapping[str, Any] | None = None,
         environ: Mapping[str, str] | None = None) -> list[Finding]:
    """The rules that apply to `spec` on this machine (and to what its runtime reported, when
    `description` comes from a run)."""
    parsed = parse_spec(spec)
    runtime = get_runtime(parsed.runtime)
    if runtime.rules is None:
        return []
    config = resolve(parsed, description, environ=environ, package=runtime.distribution)
    return match(config)


def predicted_precision(findings: list[Finding]) -> str:
    """The precision these findings expect a backend to compute in (fp32 when none applies)."""
    precisions = [f.rule.precision for f in findings if f.rule.precision != "reduced"]
    return precisions[0] if precisions else "fp32"


__all__ = ["Configuration", "Finding", "Rule", "compare_with_measurement", "fixed_spec", "lint",
           "load_rules", "match", "predicted_precision", "resolve"]
