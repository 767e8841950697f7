"""Analyse what the backends did (pure): flips, metrics, fingerprints, at-risk counts,
knowledge-base findings, fix pairs and repro paths, computed from the runs' accumulations into
one frozen `AuditResult`. Nothing is written into a result after it is made."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelparity.analyse.fixes import fix_outcomes
from modelparity.analyse.precision import fingerprints
from modelparity.backends.registry import get_runtime
from modelparity.decisions import DecisionHead, TaskConfig, compute_metrics, find_flips
from modelparity.decisions import metric_deltas as deltas
from modelparity.errors import InputError, ModelParityError
from modelparity.execute.outcome import BackendRun
from modelparity.knowledge import compare_with_measurement, lint
from modelparity.model import PreparedModel
from modelparity.plan import PROFILE_BACKENDS, Plan, Planned
from modelparity.result import AuditResult, BackendResult
from modelparity.spec import slug


@dataclass(frozen=True)
class Question:
    """What the audit asks of the runs: the task and its labels, on which model and inputs."""

    model: PreparedModel
    inputs: dict[str, Any]  # the source's description and batch size
    task: TaskConfig
    head: DecisionHead
    labels: np.ndarray | None
    label_name: str | None
    environment: dict[str, Any]
    out: str | None  # where repro scripts go
    class_names: list[str] | None = None  # by class index, for the reports
    probes: tuple[tuple[str, str], ...] = ()  # activation inputs added as outputs -> their output


def _metrics(question: Question, run: BackendRun) -> Any:
    if question.labels is None or run.decided is None:
        return None
    if len(question.labels) != len(run.decided):
        raise InputError(f"{question.label_name}: expected {len(run.decided)} labels (one per "
                         f"sample), got {len(question.labels)}")
    return compute_metrics(question.head, question.labels, run.decided)


def _result(run: BackendRun, planned: Planned, **values: Any) -> BackendResult:
    return BackendResult(
        spec=run.spec, role=run.role, status=run.status, error=run.error, failure=run.failure,
        description=run.description, latency=run.latency, errors=run.errors,
        decided=run.decided, roundtrip=run.roundtrip, resumed=run.resumed,
        fixed_by=planned.fixed_by, fix_of=planned.fix_of, **values)


def _compared(question: Question, reference: BackendResult, run: BackendRun,
              planned: Planned) -> BackendResult:
    """A candidate or yardstick with its flips (and metrics, for a candidate)."""
    if not run.ok or reference.decided is None or run.decided is None:
        return _result(run, planned)
    decided = reference.decided
    if len(run.decided) < len(decided):  # a yardstick, run on the first samples only
        decided = decided.head(len(run.decided))
    flips = find_flips(question.head, decided, run.decided, run.element_flips)
    if planned.role == "profile":
        return _result(run, planned, flips=flips)
    metrics = _metrics(question, run)
    changed = deltas(reference.metrics, metrics) if metrics and reference.metrics else None
    return _result(run, planned, flips=flips, metrics=metrics, metric_deltas=changed)


def _with_findings(result: BackendResult) -> BackendResult:
    """Match the knowledge base against what the backend reported, and set what the
    fingerprint says about each finding (the measurement wins)."""
    confidence = result.fingerprint.confidence if result.fingerprint else None
    # a capture is judged as the backend it replays, on the machine it was taken on
    captured = (result.description.get("capture") or {}).get("spec")
    try:
        matched = lint(captured or result.spec, result.description)
    except ModelParityError:  # captured by a tool whose configurations we have no rules for
        matched = []
    findings = [compare_with_measurement(dataclasses.replace(f, backend=result.spec),
                                         result.measured_precision, result.predicted,
                                         confidence) for f in matched]
    return dataclasses.replace(result, findings=findings)


def repro_path(out: str | None, result: BackendResult, runtime: str,
               model: PreparedModel) -> str | None:
    """Where the repro script for a candidate's findings goes, if it gets one: it has a fixable
    finding and its runtime knows how to build a standalone script."""
    if out is None or result.role != "candidate" or not result.ok:
        return None  # a backend that failed or was skipped compared nothing to reproduce
    fixed = next((f.fixed_spec for f in result.findings if f.fixed_spec), None)
    repro = get_runtime(runtime).repro
    if fixed is None or repro is None:
        return None
    if repro.needs_factory and (model.torch_source is None
                                or model.torch_source.kind != "factory"):
        return None
    return os.path.join(out, "repro", slug(result.spec)[:80], "repro.py")


def analyse(plan: Plan, runs: dict[str, BackendRun], samples: int,
            question: Question) -> AuditResult:
    """The audit's result, from the plan and what each planned backend did."""
    ref_run = runs[plan.reference.key]
    reference = _result(ref_run, plan.reference, metrics=_metrics(question, ref_run))
    candidates = [_compared(question, reference, runs[p.key], p) for p in plan.candidates]
    forced = [_compared(question, reference, runs[p.key], p) for p in plan.teacher_forced]
    profiles = {p.label or p.text: _compared(question, reference, runs[p.key], p)
                for p in plan.yardsticks}
    if plan.settings.fingerprint:
        # the yardsticks the user also named as candidates, in the yardsticks' order
        named = {p.label: result for p, result in zip(plan.candidates, candidates, strict=True)
                 if p.label}
        profiles.update((label, named[label]) for label in PROFILE_BACKENDS if label in named)
        tensors = frozenset(o.name for o in question.model.signature.outputs) | {
            hidden for hidden, _ in question.probes}
        at_risk, prints = fingerprints(question.task, reference, candidates, profiles,
                                       question.probes, question.model.quantized, tensors)
        candidates = [dataclasses.replace(c, fingerprint=prints[c.spec][0],
                                          at_risk_flips=prints[c.spec][1])
                      if c.spec in prints else c for c in candidates]
    else:
        at_risk = []
    reference = _with_findings(reference)
    candidates = [_with_findings(c) for c in candidates]
    candidates = [dataclasses.replace(c, repro=repro_path(question.out, c, p.spec.runtime,
                                                          question.model))
                  for p, c in zip(plan.candidates, candidates, strict=True)]
    model = question.model
    result = AuditResult(
        model={"source": model.source, "onnx_path": model.onnx_path,
               "exporter": model.exporter,
               **({"probes": dict(question.probes)} if question.probes else {}),
               **({"quantized": list(model.quantized)} if model.quantized else {}),
               "inputs": [asdict(i) for i in model.signature.inputs],
               "outputs": [asdict(o) for o in model.signature.outputs]},
        inputs={**question.inputs, "samples": samples},
        task=asdict(question.task),
        labels=question.label_name,
        reference=reference,
        candidates=candidates,
        environment=question.environment,
        profiles=profiles,
        at_risk=at_risk,
        class_names=question.class_names,
        teacher_forced=forced,
    )
    return dataclasses.replace(result, fixes=fix_outcomes(result))
