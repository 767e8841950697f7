"""report.json loads back: every leaf result type's `from_dict` inverts its `to_dict` (the JSON
form, where NaN and Inf became None). Each instance is a real one, computed the way an audit
computes it from seeded data; nothing runs a runtime."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest

from modelparity.decisions import Flips, Metrics, TaskConfig, compute_metrics, find_flips, make_head
from modelparity.knowledge import Finding, compare_with_measurement, match
from modelparity.knowledge.configuration import Configuration, resolve
from modelparity.knowledge.matcher import CONTRADICTS, UNMEASURED
from modelparity.knowledge.rules import load_rules
from modelparity.numerics import ErrorAccumulator, ErrorStats
from modelparity.numerics.fingerprint import (
    Fingerprint,
    Profile,
    fingerprint,
    merge_profiles,
    profile_distance,
    profile_from_histogram,
)
from modelparity.numerics.risk import (
    MAX_LISTED_INDICES,
    AtRisk,
    at_risk_by_error,
    at_risk_by_format,
    at_risk_summary,
    error_scale,
)
from modelparity.numerics.roundtrip import (
    FormatSurvival,
    RoundTrip,
    RoundTripAccumulator,
    RoundTripEvidence,
    compare_roundtrip,
)
from modelparity.result import FLIPS_LISTED, BackendResult
from modelparity.serialize import jsonable
from modelparity.spec import BackendSpec


def saved(data: dict[str, Any]) -> dict[str, Any]:
    """What report.json holds: `jsonable`, then strict JSON (no NaN), read back."""
    return json.loads(json.dumps(jsonable(data), allow_nan=False))


def assert_round_trips(cls: type, obj: Any) -> Any:
    """cls.from_dict(saved form) writes the same dict again; returns the restored object."""
    data = saved(obj.to_dict())
    restored = cls.from_dict(data)
    assert type(restored) is cls
    assert restored.to_dict() == obj.to_dict()
    assert saved(restored.to_dict()) == data
    return restored


def fp16(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def bf16(a: np.ndarray) -> np.ndarray:
    """float32 rounded to 7 mantissa bits, ties to even."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + (1 << 15) - 1 + ((bits >> 16) & 1)) & ~np.uint64((1 << 16) - 1)
    return bits.astype(np.uint32).view(np.float32)


def error_stats(reference: np.ndarray, candidate: np.ndarray) -> ErrorStats:
    acc = ErrorAccumulator(np.float32)
    for r, c in zip(np.array_split(reference, 3), np.array_split(candidate, 3), strict=True):
        acc.update(r, c)  # batch by batch, as a run folds them
    return acc.result()


def profile(label: str, reference: np.ndarray, candidate: np.ndarray) -> Profile:
    """Two outputs' profiles merged, as `precision.error_profile` does."""
    half = len(reference) // 2
    parts = [profile_from_histogram(label, error_stats(r, c).profile_hist)
             for r, c in ((reference[:half], candidate[:half]),
                          (reference[half:], candidate[half:]))]
    return merge_profiles(label, parts)


# --------------------------------------------------------------------------------- flips


def binary_flips(n: int, noise: float, seed: int = 0) -> Flips:
    rng = np.random.default_rng(seed)
    head = make_head(TaskConfig(kind="binary"))
    ref_scores = rng.uniform(0.0, 1.0, n)
    cand_scores = np.clip(ref_scores + rng.normal(0.0, noise, n), 0.0, 1.0)
    ref_scores[7], cand_scores[7] = np.nan, 0.9  # a NaN reference score that flips
    return find_flips(head, head.decide(ref_scores), head.decide(cand_scores))


def test_flips_load_back_from_the_report_form_with_more_flips_than_listed() -> None:
    flips = binary_flips(60_000, 0.1)
    assert flips.count > FLIPS_LISTED  # otherwise nothing is left unlisted
    report = saved(BackendResult(spec="ort:cpu", role="candidate", flips=flips).to_dict())
    data = report["flips"]
    assert len(data["listed"]) == FLIPS_LISTED

    restored = Flips.from_dict(data)
    assert (restored.count, restored.total) == (flips.count, flips.total) == (
        data["count"], data["total"])
    assert restored.rate == flips.rate
    assert restored.index.size == FLIPS_LISTED < restored.count
    assert np.all(np.diff(restored.index) > 0)  # sample-index order, as find_flips keeps them
    assert restored.records(FLIPS_LISTED) == data["listed"]
    assert restored.records(10) == flips.records(10)
    assert restored.to_dict(FLIPS_LISTED) == flips.to_dict(FLIPS_LISTED)


def test_flips_load_back_from_to_dict_with_a_nan_score() -> None:
    flips = binary_flips(2_000, 0.05)
    assert 7 in flips.index.tolist()
    restored = assert_round_trips(Flips, flips)
    assert np.array_equal(restored.index, flips.index)
    assert restored.index.dtype == np.int64
    at = int(np.flatnonzero(restored.index == 7)[0])
    assert math.isnan(restored.reference_score[at])
    assert math.isnan(restored.reference_margin[at])
    assert restored.candidate_score[at] == 0.9
    np.testing.assert_array_equal(restored.reference_score, flips.reference_score)
    np.testing.assert_array_equal(restored.reference_margin, flips.reference_margin)
    assert restored.reference_decision == flips.reference_decision
    assert restored.candidate_decision == flips.candidate_decision


def test_flips_of_list_decisions_load_back_as_lists() -> None:
    rng = np.random.default_rng(1)
    head = make_head(TaskConfig("topk", k=2))
    ref = rng.normal(size=(300, 5))
    cand = ref + rng.normal(0.0, 0.3, ref.shape)
    flips = find_flips(head, head.decide(ref), head.decide(cand))
    assert flips.count > 0
    restored = assert_round_trips(Flips, flips)
    assert restored.reference_decision == flips.reference_decision
    assert all(isinstance(d, list) and len(d) == 2 for d in restored.candidate_decision)


def test_flips_refuse_a_count_below_the_listed_records() -> None:
    data = saved(binary_flips(2_000, 0.05).to_dict())
    data["count"] = len(data["records"]) - 1
    with pytest.raises(ValueError, match="count"):
        Flips.from_dict(data)


# --------------------------------------------------------------------------------- metrics


def test_binary_metrics_load_back_with_the_confusion_matrix() -> None:
    rng = np.random.default_rng(2)
    head = make_head(TaskConfig(kind="binary"))
    scores = rng.uniform(size=500)
    labels = (scores + rng.normal(0.0, 0.2, 500) > 0.5).astype(np.int64)
    metrics = compute_metrics(head, labels, head.decide(scores))
    restored = assert_round_trips(Metrics, metrics)
    assert restored.values == metrics.values
    assert restored.confusion is not None and metrics.confusion is not None
    assert restored.confusion.dtype == metrics.confusion.dtype
    np.testing.assert_array_equal(restored.confusion, metrics.confusion)
    assert restored.confusion.sum() == 500
    assert restored.classes == [0, 1]


def test_multiclass_and_multilabel_confusions_keep_their_shapes() -> None:
    rng = np.random.default_rng(3)
    head = make_head(TaskConfig(kind="multiclass"))
    outputs = rng.normal(size=(200, 5))
    metrics = compute_metrics(head, rng.integers(0, 5, 200), head.decide(outputs))
    restored = assert_round_trips(Metrics, metrics)
    assert restored.confusion is not None and restored.confusion.shape == (5, 5)
    assert restored.classes == [0, 1, 2, 3, 4]

    head = make_head(TaskConfig(kind="multilabel"))
    labels = rng.integers(0, 2, (200, 3))
    metrics = compute_metrics(head, labels, head.decide(rng.uniform(size=(200, 3))))
    restored = assert_round_trips(Metrics, metrics)
    assert restored.confusion is not None and restored.confusion.shape == (3, 2, 2)


def test_nan_metrics_load_back_as_nan() -> None:
    head = make_head(TaskConfig(kind="regression"))
    metrics = compute_metrics(head, np.array([1.0, 2.0, 3.0]),
                              head.decide(np.array([1.0, np.nan, 3.0])))
    data = saved(metrics.to_dict())
    assert data["values"] == {"mae": None, "rmse": None, "r2": None}
    restored = Metrics.from_dict(data)
    assert set(restored.values) == {"mae", "rmse", "r2"}
    assert all(math.isnan(v) for v in restored.values.values())
    assert restored.confusion is None and restored.classes == []
    assert restored.to_dict() == metrics.to_dict()


# --------------------------------------------------------------------------------- error stats


def test_error_stats_load_back_with_their_histograms() -> None:
    rng = np.random.default_rng(4)
    reference = rng.normal(size=3_000).astype(np.float32)
    candidate = fp16(reference)
    candidate[10] = np.nan  # a NaN mismatch, left out of every other statistic
    stats = error_stats(reference, candidate)
    assert stats.nan_mismatch == 1
    restored = assert_round_trips(ErrorStats, stats)
    for name in ("log2_rel_hist", "profile_hist"):
        a, b = getattr(restored, name), getattr(stats, name)
        assert (a.start, a.bin_width, a.zero_count) == (b.start, b.bin_width, b.zero_count)
        np.testing.assert_array_equal(a.counts, b.counts)  # re-padded onto the fixed edges
    assert restored.log2_rel_hist.quantile(0.9) == stats.log2_rel_hist.quantile(0.9)
    assert restored.max_ulp == stats.max_ulp and restored.median_rel == stats.median_rel


def test_error_stats_of_nothing_compared_load_back_as_nan() -> None:
    stats = error_stats(np.full(6, np.nan, np.float32), np.full(6, np.nan, np.float32))
    data = saved(stats.to_dict())
    assert data["max_abs"] is None and data["cosine"] is None
    restored = ErrorStats.from_dict(data)
    for name in ("max_abs", "mean_abs", "max_rel", "median_rel", "cosine", "exact_fraction"):
        assert math.isnan(getattr(restored, name)), name
    assert restored.count == 0 and restored.log2_rel_hist.total == 0
    assert restored.to_dict() == stats.to_dict()


# --------------------------------------------------------------------------------- round trip


def roundtrip(values: np.ndarray) -> RoundTrip:
    acc = RoundTripAccumulator()
    for batch in np.array_split(values, 4):
        acc.update(batch)
    return acc.result()


def test_roundtrip_counts_load_back_equal() -> None:
    rng = np.random.default_rng(5)
    counts = roundtrip(fp16(rng.normal(size=4_000)))
    assert counts.formats["fp16"].survived == counts.tested > 0
    restored = assert_round_trips(RoundTrip, counts)
    assert restored == counts
    assert FormatSurvival.from_dict(counts.formats["bf16"].to_dict()) == counts.formats["bf16"]


def test_roundtrip_of_no_testable_value_loads_back_with_nan_fractions() -> None:
    counts = roundtrip(np.array([0.0, 1.0, -1.0, np.inf], dtype=np.float32))
    assert counts.tested == 0 and counts.excluded == 4
    restored = assert_round_trips(RoundTrip, counts)
    assert all(math.isnan(s.fraction) for s in restored.formats.values())
    assert restored.excluded == 4


def test_roundtrip_evidence_loads_back_with_a_nan_baseline() -> None:
    rng = np.random.default_rng(6)
    candidate = roundtrip(fp16(rng.normal(size=2_000)))
    evidence = compare_roundtrip(candidate, roundtrip(np.zeros(10, np.float32)))
    assert evidence.verdict is not None
    assert math.isnan(evidence.per_format["fp16"]["baseline_fraction"])
    restored = assert_round_trips(RoundTripEvidence, evidence)
    assert math.isnan(restored.per_format["fp16"]["baseline_fraction"])
    assert restored.per_format["fp16"]["p_value"] == evidence.per_format["fp16"]["p_value"]
    assert (restored.verdict, restored.text, restored.alpha, restored.notes) == (
        evidence.verdict, evidence.text, evidence.alpha, evidence.notes)


# --------------------------------------------------------------------------------- fingerprint


def test_fingerprint_and_profiles_load_back() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=8_000).astype(np.float32)
    # the candidate: FP16 outputs of another computation of the same values
    candidate = fp16(reference * np.float32(1 + 2**-20))
    other = rng.normal(size=8_000).astype(np.float32)
    yardsticks = {
        "fp32": profile("fp32", reference, np.nextafter(reference, np.float32(np.inf))),
        "fp16": profile("fp16", other, fp16(other)),
        "bf16": profile("bf16", other, bf16(other)),
    }
    own = profile("ort:cpu", reference, candidate)
    evidence = compare_roundtrip(roundtrip(candidate), roundtrip(reference))
    found = fingerprint(own, yardsticks, evidence)
    assert found.verdict == "fp16" and found.roundtrip is not None

    restored = assert_round_trips(Fingerprint, found)
    assert restored.verdict == "fp16"
    assert restored.distances == found.distances
    assert restored.confidence == found.confidence
    assert restored.roundtrip is not None
    assert restored.roundtrip.per_format == found.roundtrip.per_format

    for p in [own, *yardsticks.values()]:
        back = assert_round_trips(Profile, p)
        assert back.probabilities.size <= p.probabilities.size  # trailing empty bins trimmed
        assert back.count == p.count and back.empty == p.empty
        assert back.quantile(0.5) == p.quantile(0.5)
        assert back.quantile(0.999) == p.quantile(0.999)
        assert profile_distance(back, yardsticks["fp16"]) == pytest.approx(
            profile_distance(p, yardsticks["fp16"]), abs=1e-12)


def test_a_fingerprint_without_evidence_and_with_a_nan_distance_loads_back() -> None:
    found = Fingerprint("unknown", math.nan, {"fp16": math.nan, "fp32": 1.5}, "no data")
    data = saved(found.to_dict())
    assert data["confidence"] is None and data["roundtrip"] is None
    restored = Fingerprint.from_dict(data)
    assert math.isnan(restored.confidence) and math.isnan(restored.distances["fp16"])
    assert restored.distances["fp32"] == 1.5 and restored.roundtrip is None


# --------------------------------------------------------------------------------- at risk


def test_at_risk_by_format_loads_back_with_the_full_count() -> None:
    rng = np.random.default_rng(8)
    scores = 0.5 + rng.uniform(-2e-3, 2e-3, 5_000)
    risk = at_risk_summary("fp16", "format", at_risk_by_format(scores, 0.5, "fp16"))
    assert risk.count > MAX_LISTED_INDICES
    restored = assert_round_trips(AtRisk, risk)
    assert restored.count == risk.count and restored.total == 5_000
    assert restored.fraction == risk.fraction
    assert restored.to_dict()["indices_truncated"] is True
    np.testing.assert_array_equal(restored.indices, risk.indices[:MAX_LISTED_INDICES])
    assert restored.scale is None and restored.coverage is None


def test_at_risk_by_error_loads_back_with_its_flip_coverage() -> None:
    rng = np.random.default_rng(9)
    head = make_head(TaskConfig(kind="binary"))
    ref_scores = rng.uniform(size=400)
    cand_scores = ref_scores + rng.normal(0.0, 0.01, 400)
    ref, cand = head.decide(ref_scores), head.decide(cand_scores)
    flips = find_flips(head, ref, cand)
    scale = error_scale(np.abs(cand_scores - ref_scores))
    risk = at_risk_summary("fp16", "error", at_risk_by_error(ref.margin, scale),
                           flip_indices=flips.index, scale=scale)
    assert 0 < risk.count <= MAX_LISTED_INDICES and risk.flips_total == flips.count > 0
    restored = assert_round_trips(AtRisk, risk)
    np.testing.assert_array_equal(restored.indices, risk.indices)  # all listed: nothing lost
    assert restored.to_dict()["indices_truncated"] is False
    assert (restored.flips_covered, restored.flips_total) == (risk.flips_covered,
                                                              risk.flips_total)
    assert restored.coverage == risk.coverage and restored.scale == scale


# --------------------------------------------------------------------------------- findings


def config_for(spec: BackendSpec, context: dict) -> Configuration:
    """`spec` resolved on a made-up machine (as in test_knowledge): this one's CPU is not used."""
    return dataclasses.replace(
        resolve(spec, environ={}),
        machine=context.get("machine", "x86_64"),
        system=context.get("os", "linux"),
        cpu_flags=context.get("cpu_flags"),
        gpu_sm=context.get("gpu_sm"),
        version=context.get("version", "99.0"),
    )


def ov1(context: dict) -> Finding:
    findings = {f.rule.id: f for f in match(config_for(BackendSpec("openvino", "cpu"), context))}
    return findings["OV-1"]


def test_a_measured_finding_loads_back_with_its_bundled_rule() -> None:
    finding = compare_with_measurement(ov1({"cpu_flags": ("amx_bf16",)}), "fp32", False)
    assert finding.agreement == CONTRADICTS and finding.fixed_spec is not None
    restored = assert_round_trips(Finding, finding)
    assert restored.rule is next(r for r in load_rules() if r.id == "OV-1")
    assert (restored.measured, restored.agreement, restored.fixed_spec) == (
        "fp32", CONTRADICTS, "openvino:cpu?INFERENCE_PRECISION_HINT=f32")
    assert restored.verdict() == finding.verdict()
    restored = Finding.from_dict(saved(finding.to_dict()), backend=finding.backend)
    assert restored == finding


def test_an_unchecked_finding_keeps_what_it_depends_on() -> None:
    finding = ov1({})  # cpu_flags None: this OS does not say
    assert finding.unchecked and finding.agreement == UNMEASURED
    restored = assert_round_trips(Finding, finding)
    assert restored.unchecked == finding.unchecked and restored.conditional
    assert restored.measured is None


def test_a_finding_of_another_version_keeps_its_saved_rule() -> None:
    data = saved(compare_with_measurement(ov1({"cpu_flags": ("amx_bf16",)}), "bf16",
                                          False).to_dict())
    data.update(rule="OV-99", title="a rule this version does not bundle", status="draft")
    data["fix"]["code"] = "something else"
    restored = Finding.from_dict(data, backend="openvino:cpu")
    assert saved(restored.to_dict()) == data
    assert restored.rule.id == "OV-99" and restored.rule.runtime == "openvino"
    assert restored.rule.fix.code == "something else" and restored.rule.targets == ()

    known = saved(ov1({"cpu_flags": ("amx_bf16",)}).to_dict())
    known["title"] = "the title an older version gave OV-1"
    restored = Finding.from_dict(known)
    assert restored.rule.title == known["title"]
    assert restored.rule.when == next(r for r in load_rules() if r.id == "OV-1").when
    assert saved(restored.to_dict()) == known


@pytest.mark.parametrize("obj", [
    Flips(0, 0, np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0), [], []),
    Metrics({}, None, []),
    Profile("x", -24.0, -24.0, 0.125, np.zeros(3), 0),
    FormatSurvival("fp16", 0, 0, math.nan),
    AtRisk("fp16", "format", 0, 0, np.zeros(0, np.int64)),
    Fingerprint("fp32", 1.0, {}, "at FP32 noise scale"),
    Finding(load_rules()[0], "openvino:cpu"),
], ids=lambda o: type(o).__name__)
def test_loaded_results_are_frozen(obj: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.count = 1
