"""What an audit found, as frozen dataclasses that serialise to report.json and load back
(`AuditResult.load`; see docs/report-schema.md). Made once, by `analyse`; never changed after.

Bump `SCHEMA_VERSION` on any change a reader of report.json would notice.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from modelparity.decisions import Decided, Flips, Metrics
from modelparity.folders import write_atomic
from modelparity.knowledge.matcher import Finding
from modelparity.numerics import ErrorStats
from modelparity.numerics.fingerprint import Fingerprint
from modelparity.numerics.latency import Latency
from modelparity.numerics.risk import AtRisk
from modelparity.numerics.roundtrip import RoundTrip
from modelparity.serialize import jsonable

SCHEMA_VERSION = "1.7"
FLIPS_LISTED = 1000  # flips listed per backend in report.json; the count is always exact

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class FixOutcome:
    """A candidate with a finding beside its fixed variant: what the fix buys (flips, errors)
    and what it costs (latency), from the same audit on the same inputs."""

    backend: str
    fixed: str
    rules: list[str]
    before: dict[str, Any]
    after: dict[str, Any]

    @property
    def latency_ratio(self) -> float | None:
        """Median batch latency of the fixed variant over the original's (the fix's price)."""
        before, after = self.before["p50_ms"], self.after["p50_ms"]
        return after / before if before and after is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "fixed": self.fixed, "rules": self.rules,
                "before": self.before, "after": self.after,
                "latency_ratio": self.latency_ratio}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixOutcome:
        return cls(data["backend"], data["fixed"], list(data["rules"]), dict(data["before"]),
                   dict(data["after"]))


@dataclass(frozen=True)
class BackendResult:
    spec: str
    role: str  # reference | candidate | profile | teacher-forced
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
    resumed: bool = False  # read back from an earlier run's folder (--resume), not run again

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
        """The largest error over the outputs; inf where the candidate returned NaN or Inf for
        a finite reference value (NaN where no finite value was compared)."""
        values = [s.max_abs_or_inf for s in self.errors.values()]
        return max(values, key=lambda v: -math.inf if math.isnan(v) else v) if values else None

    @property
    def nonfinite(self) -> int:
        """Output values that are finite in the reference and NaN or Inf here."""
        return sum(s.nonfinite for s in self.errors.values())

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
                **self.flips.totals(),
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
            "resumed": self.resumed,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any], decided: Decided | None = None) -> BackendResult:
        """Inverse of `to_dict`. report.json holds no per-sample decisions: pass them as
        `decided` where they were saved beside it (`AuditResult.load` does)."""
        flips = data.get("flips")
        return cls(
            spec=data["spec"], role=data["role"], status=data["status"], error=data.get("error"),
            failure=data.get("failure"), description=data.get("description") or {},
            latency=Latency.from_dict(data["latency"]) if data.get("latency") else None,
            errors={name: ErrorStats.from_dict(stats)
                    for name, stats in (data.get("errors") or {}).items()},
            flips=Flips.from_dict(flips) if flips else None,
            metrics=Metrics.from_dict(data["metrics"]) if data.get("metrics") else None,
            metric_deltas=data.get("metric_deltas"),
            decided=decided,
            fingerprint=(Fingerprint.from_dict(data["fingerprint"]) if data.get("fingerprint")
                         else None),
            at_risk_flips=data.get("at_risk_flips"),
            findings=[Finding.from_dict(f, data["spec"]) for f in data.get("findings") or []],
            fixed_by=data.get("fixed_by"), fix_of=data.get("fix_of"), repro=data.get("repro"),
            resumed=bool(data.get("resumed", False)))


@dataclass(frozen=True)
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
    class_names: list[str] | None = None  # by class index (--class-names), for the reports
    # With carried state (--carry): each candidate fed the reference's state at every step.
    # Its flips beside the candidate's own-state ones: one step's error vs drift.
    teacher_forced: list[BackendResult] = field(default_factory=list)
    # Written by `modelparity locate --out`: where in the model the candidate's error comes
    # from, every compared node's error in graph order (a `LocateResult`)
    locate: Any = None

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
            "class_names": self.class_names,
            "teacher_forced": [t.to_dict() for t in self.teacher_forced],
            "locate": self.locate.to_dict() if self.locate is not None else None,
        })

    def save(self, path: str) -> str:
        return write_atomic(path, json.dumps(self.to_dict(), indent=2, allow_nan=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], decisions: Any = None) -> AuditResult:
        """Inverse of `to_dict`. `decisions(spec) -> Decided | None` supplies the per-sample
        decisions report.json does not hold (the score scatter needs them)."""
        major = str(data.get("schema_version", "")).split(".")[0]
        if data.get("tool") != "modelparity" or major != SCHEMA_VERSION.split(".")[0]:
            raise ValueError(f"not a modelparity report of schema {SCHEMA_VERSION.split('.')[0]}"
                             f".x (tool {data.get('tool')!r}, schema "
                             f"{data.get('schema_version')!r})")

        def backend(item: dict[str, Any]) -> BackendResult:
            return BackendResult.from_dict(item, decisions(item["spec"]) if decisions else None)

        return cls(
            model=data["model"], inputs=data["inputs"], task=data["task"],
            labels=data.get("labels"), reference=backend(data["reference"]),
            candidates=[backend(c) for c in data["candidates"]],
            environment=data.get("environment") or {},
            profiles={label: backend(p) for label, p in (data.get("profiles") or {}).items()},
            at_risk=[AtRisk.from_dict(a) for a in data.get("at_risk") or []],
            fixes=[FixOutcome.from_dict(f) for f in data.get("fixes") or []],
            class_names=(None if data.get("class_names") is None
                         else [str(name) for name in data["class_names"]]),
            teacher_forced=[backend(t) for t in data.get("teacher_forced") or []],
            locate=_located(data.get("locate")),
        )

    @classmethod
    def load(cls, path: str) -> AuditResult:
        """A saved report.json; the per-sample decisions saved beside it (backends/*.npz, when
        the audit wrote them) come back too. `ValueError` for a file that is not a report."""
        from modelparity.decisions.store import decided_path, load_decided

        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError("not a modelparity report (expected a JSON object)")
        folder = os.path.join(os.path.dirname(os.path.abspath(path)), "backends")
        return cls.from_dict(data, lambda spec: load_decided(decided_path(folder, spec)))


def _located(data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    from modelparity.locate.result import LocateResult

    return LocateResult.from_dict(data)


def _key(text: str) -> str:
    """The canonical identity of a spec text; the text itself where it does not parse."""
    from modelparity.backends.registry import parse_spec
    from modelparity.errors import ModelParityError

    try:
        return parse_spec(text).key
    except ModelParityError:  # a runtime not installed here, in a report from elsewhere
        return text
