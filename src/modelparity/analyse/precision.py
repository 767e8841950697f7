"""Which precision did each backend really use, and which samples were at risk?

The audit runs the model a few more times on the first samples of the data (the plan's
yardsticks): emulated in FP16, BF16, TF32 and INT8, and as FP32 noise from other FP32 runs (ONNX
Runtime with another thread count, optimisation level or batch size; OpenVINO pinned to f32;
PyTorch for a PyTorch model). Their error profiles against the
reference are what a candidate's own profile is matched against (`numerics.fingerprint`),
beside the round-trip evidence from its outputs (`numerics.roundtrip`). Pure functions over
results: no runtime, and nothing is written into the results they read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelparity.decisions import TaskConfig
from modelparity.numerics.fingerprint import (
    Fingerprint,
    Profile,
    fingerprint,
    merge_profiles,
    profile_distance,
    profile_from_histogram,
)
from modelparity.numerics.risk import (
    AtRisk,
    at_risk_by_error,
    at_risk_by_format,
    at_risk_summary,
    error_scale,
)
from modelparity.numerics.roundtrip import compare_roundtrip
from modelparity.plan import PROFILE_BACKENDS, PROFILE_SAMPLES
from modelparity.result import BackendResult

THRESHOLD_FORMATS = ("fp16", "bf16", "tf32")
# Both scores of an argmax margin (top1 - top2) can move, so the margin moves up to twice as far.
# Multi-label is left out: its per-sample score is the class nearest its threshold, which can be
# another class in another run, so score differences are no error scale.
MARGIN_FACTOR = {"binary": 1.0, "multiclass": 2.0, "topk": 2.0}


def error_profile(label: str, result: BackendResult,
                  probes: tuple[tuple[str, str], ...] = (),
                  tensors: frozenset[str] | None = None) -> Profile | None:
    """One profile over all of a backend's outputs, weighted by their element counts. Where it
    ran the probes ((input of a final activation, that activation's output) pairs), each probed
    output is read at its probe instead: a Sigmoid or Softmax squeezes or saturates the error
    the layers before it made; every other output (boxes, states) still counts. With `tensors`
    (the model's outputs and probes), the other entries, a stacked state's slices, are left
    out: each element counts once."""
    errors = result.errors
    probed = {output for hidden, output in probes if hidden in errors}
    errors = {name: stats for name, stats in errors.items() if name not in probed
              and (tensors is None or name in tensors)}
    parts = [profile_from_histogram(label, stats.profile_hist or stats.log2_rel_hist)
             for stats in errors.values() if stats.count]
    return merge_profiles(label, parts) if parts else None


def precision_of(name: str) -> str:
    """The precision a yardstick stands for: "bf16 layer" -> "bf16"."""
    return name.split()[0]


def _stands_for(name: str, result: BackendResult) -> bool:
    """A yardstick stands for its precision where its runtime does not report another: an
    OpenVINO pinned to f32 that reports BF16 (a device ignoring the hint) is no FP32 noise."""
    if precision_of(name) != "fp32":
        return True
    return result.precision in (None, "float32")


def at_risk(task: TaskConfig, reference: BackendResult,
            profiles: dict[str, BackendResult]) -> list[AtRisk]:
    """Reference samples within each precision's reach of the decision boundary: by the format's
    rounding band at the threshold (binary), and by the error scale its emulation showed."""
    decided = reference.decided
    if decided is None or task.kind not in MARGIN_FACTOR:
        return []
    risks = []
    if task.kind == "binary":
        for name in THRESHOLD_FORMATS:
            mask = at_risk_by_format(decided.score, float(task.threshold), name)  # type: ignore[arg-type]
            risks.append(at_risk_summary(name, "format", mask))
    for label, profile in profiles.items():
        if precision_of(label) == "fp32" or not profile.ok or profile.decided is None:
            continue
        n = len(profile.decided)
        errors = np.abs(profile.decided.score.astype(np.float64)
                        - decided.score[:n].astype(np.float64))
        scale = error_scale(errors) * MARGIN_FACTOR[task.kind]
        mask = at_risk_by_error(decided.margin, scale)
        flips = profile.flips.index if profile.flips is not None else None
        # the emulation's own flips (first n samples) check the prediction on the same samples
        risks.append(at_risk_summary(label, "error", mask, flip_indices=flips))
    return risks


def fingerprints(task: TaskConfig, reference: BackendResult, candidates: list[BackendResult],
                 profiles: dict[str, BackendResult], probes: tuple[tuple[str, str], ...] = (),
                 quantized: tuple[str, ...] = (), tensors: frozenset[str] | None = None
                 ) -> tuple[list[AtRisk], dict[str, tuple[Fingerprint, dict[str, Any] | None]]]:
    """The at-risk counts per precision, and for every candidate that ran: its fingerprint and
    how many of its flips were predicted at risk (by spec). With `probes` (the inputs of final
    activations, run as extra outputs), the profiles are read there."""
    yardsticks = {name: error_profile(precision_of(name), result, probes, tensors)
                  for name, result in profiles.items() if result.ok and _stands_for(name, result)}
    measured = {name: p for name, p in yardsticks.items() if p is not None}
    risks = at_risk(task, reference, profiles)
    by_error = {r.precision: r for r in risks if r.method == "error"}
    found: dict[str, tuple[Fingerprint, dict[str, Any] | None]] = {}
    for candidate in candidates:
        if not candidate.ok:
            continue
        evidence = None
        if candidate.roundtrip is not None and reference.roundtrip is not None:
            evidence = compare_roundtrip(candidate.roundtrip, reference.roundtrip)
        own = error_profile(candidate.spec, candidate, probes, tensors)
        # a candidate that is an FP32 yardstick is never its own: the band would fit it
        usable = {name: p for name, p in measured.items()
                  if not (precision_of(name) == "fp32" and profiles[name].spec == candidate.spec)}
        if own is None or not usable:
            continue
        nearest: dict[str, str] = {}  # precision -> the name of its nearest yardstick
        for name, profile in usable.items():
            label = precision_of(name)
            if label not in nearest or (profile_distance(own, profile)
                                        < profile_distance(own, usable[nearest[label]])):
                nearest[label] = name
        noise = [p for name, p in usable.items() if precision_of(name) == "fp32"]
        found_print = fingerprint(
            own, {label: usable[name] for label, name in nearest.items()}, evidence, noise,
            quantized)
        name = nearest.get(found_print.verdict or "")
        at_risk_flips = None
        if name in by_error and candidate.flips is not None and candidate.flips.count:
            predicted = set(by_error[name].indices.tolist())
            flipped = candidate.flips.index.tolist()
            at_risk_flips = {
                "precision": name, "method": "error",
                "flips_in_at_risk_set": sum(i in predicted for i in flipped),
                "flips": len(flipped)}
        found[candidate.spec] = (found_print, at_risk_flips)
    return risks, found


__all__ = ["PROFILE_BACKENDS", "PROFILE_SAMPLES", "at_risk", "error_profile", "fingerprints",
           "precision_of"]
