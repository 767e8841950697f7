"""What an audit found, as dataclasses that serialise to report.json (see docs/report-schema.md).

Bump `SCHEMA_VERSION` on any change a reader of report.json would notice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelparity.decisions import Decided, Flips, Metrics
from modelparity.knowledge import Finding
from modelparity.numerics import ErrorStats
from modelparity.numerics.fingerprint import Fingerprint
from modelparity.numerics.risk import AtRisk
from modelparity.numerics.roundtrip import RoundTrip
from modelparity.runner import Latency
from modelparity.serialize import jsonable

if TYPE_CHECKING:
    from modelparity.fixes import FixOutcome

SCHEMA_VERSION = "1.2"
FLIPS_LISTED = 1000  # flips listed per backend in report.json; the count is always exact

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class BackendResult:
    spec: str
    role: str  # "reference" or "candidate"
    status: str = OK  # ok | failed | skipped
    error: str | None = None  # one line, when not ok
    failure: dict[str, Any] | None = None  # stage and kind (user | exception | crash | timeout)
    description: dict[str, Any] = field(default_factory=dict)
    latency: Latency | None = None
    errors: dict[str, ErrorStats] = field(default_factory=dict)  # per output, candidates only
    flips: Flips | None = None
    metrics: Metrics | None = None
    metric_deltas: dict[str, float] | None = None
    decided: Decided | None = None  # per-sample decisions (kept in memory, not in report.json)
    roundtrip: RoundTrip | None = None  # how many output values survive FP16/BF16/TF32 trips
    fingerprint: Fingerprint | None = None  # the precision it really used, with the evidence
    at_risk_flips: dict[str, Any] | None = None  # its flips that were predicted at risk
    findings: list[Finding] = field(default_factory=list)  # knowledge-base rules that apply
    fixed_by: str | None = None  # the spec of its fixed variant, when run with fix=True
    fix_of: str | None = None  # for a fixed variant: the spec it fixes
    repro: str | None = None  # the standalone repro script written for its findings

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def predicted(self) -> bool:
        """True when the runtime could not execute here and an emulation stood in for it."""
        return bool(self.description.get("predicted"))

    @property
    def measured_latency(self) -> Latency | None:
        """The latency, unless a stand-in ran: its speed says nothing about the runtime's."""
        return None if self.predicted else self.latency

    @property
    def max_abs(self) -> float | None:
        values = [s.max_abs for s in self.errors.values()]
        return max(values) if values else None

    @property
    def measured_precision(self) -> str | None:
        """The precision the fingerprint infers from the outputs."""
        return self.fingerprint.verdict if self.fingerprint else None

    @property
    def precision(self) -> str | None:
        """The precision the runtime itself reports, where it reports one."""
        reported = self.description.get("precision", {})
        return reported.get("reported") if isinstance(reported, dict) else None

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "spec": self.spec,
            "role": self.role,
            "status": self.status,
            "error": self.error,
            "failure": self.failure,
            "description": self.description,
            "latency": self.latency.to_dict() if self.latency else None,
            "errors": {name: stats.to_dict() for name, stats in self.errors.items()},
            "flips": None if self.flips is None else {
                "count": self.flips.count,
                "total": self.flips.total,
                "fraction": self.flips.count / self.flips.total if self.flips.total else 0.0,
                "listed": self.flips.records(FLIPS_LISTED),
            },
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "metric_deltas": self.metric_deltas,
            "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
            "at_risk_flips": self.at_risk_flips,
            "findings": [f.to_dict() for f in self.findings],
            "fixed_by": self.fixed_by,
            "fix_of": self.fix_of,
            "repro": self.repro,
        })


@dataclass
class AuditResult:
    model: dict[str, Any]  # source, onnx_path, exporter, inputs, outputs
    inputs: dict[str, Any]  # description, samples, batch_size
    task: dict[str, Any]
    labels: str | None
    reference: BackendResult
    candidates: list[BackendResult]
    environment: dict[str, Any]
    profiles: dict[str, BackendResult] = field(default_factory=dict)  # label -> emulation/noise
    at_risk: list[AtRisk] = field(default_factory=list)
    fixes: list[FixOutcome] = field(default_factory=list)  # before and after each fix

    @property
    def backends(self) -> list[BackendResult]:
        return [self.reference, *self.candidates]

    @property
    def ok(self) -> bool:
        """True when every backend ran to the end (flips are findings, not failures)."""
        return all(b.ok for b in self.backends)

    @property
    def total_flips(self) -> int:
        return sum(b.flips.count for b in self.candidates if b.flips is not None)

    def backend(self, spec: str) -> BackendResult:
        """The result for `spec`, as given or in any form that names the same configuration
        (`ort:` is `ort:cpu`; option order does not matter)."""
        for result in self.backends:
            if result.spec == spec:
                return result
        key = _key(spec)
        for result in self.backends:
            if _key(result.spec) == key:
                return result
        raise KeyError(spec)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "schema_version": SCHEMA_VERSION,
            "tool": "modelparity",
            "model": self.model,
            "inputs": self.inputs,
            "task": self.task,
            "labels": self.labels,
            "environment": self.environment,
            "reference": self.reference.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "profiles": {label: p.to_dict() for label, p in self.profiles.items()},
            "at_risk": [a.to_dict() for a in self.at_risk],
            "fixes": [f.to_dict() for f in self.fixes],
        })

    def save(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.to_dict(), handle, indent=2, allow_nan=False)
        os.replace(tmp, path)
        return path


def _key(text: str) -> str:
    """The canonical identity of a spec text; the text itself where it does not parse."""
    from modelparity.backends.registry import parse_spec

    try:
        return parse_spec(text).key
    except Exception:
        return text
