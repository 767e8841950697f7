"""At-risk samples: crafted scores with known answers, and emulated flips they must cover."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelparity.numerics import Log2Histogram
from modelparity.numerics.risk import (
    MAX_LISTED_INDICES,
    at_risk_by_argmax_error,
    at_risk_by_error,
    at_risk_by_format,
    at_risk_summary,
    error_scale,
    per_sample_abs_error,
)

P = math.ldexp


def test_at_risk_by_format_around_half_in_fp16():
    scores = np.array([0.5, 0.5 + P(1, -13), 0.5 + P(1, -12), 0.5 + P(1, -12) + P(1, -30),
                       0.5 - P(1, -14), 0.49, 0.7, np.nan])
    expected = [False, True, True, False, False, False, False, False]
    assert at_risk_by_format(scores, 0.5, "fp16").tolist() == expected


def test_at_risk_by_format_bf16_band_is_wider_than_fp16s():
    scores = np.array([0.5 + P(1, -11), 0.5 + P(1, -9), 0.5 + P(1, -9) + P(1, -20)])
    assert at_risk_by_format(scores, 0.5, "bf16").tolist() == [True, True, False]
    assert at_risk_by_format(scores, 0.5, "fp16").tolist() == [False, False, False]


def test_at_risk_by_format_non_representable_threshold_flips_from_below():
    scores = np.array([0.2997, 0.2998046875, 0.2999, 0.3, 0.3001])
    assert at_risk_by_format(scores, 0.3, "bf16").tolist() == [False, True, True, True, False]


def test_at_risk_by_format_broadcasts_per_class_thresholds():
    scores = np.array([[0.5 + P(1, -13), 0.5 + P(1, -13)]])
    assert at_risk_by_format(scores, np.array([0.5, 0.25]), "fp16").tolist() == [[True, False]]


def test_emulated_output_rounding_flips_are_all_predicted():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0, 1, 100_000), 0.5 + rng.uniform(-1e-3, 1e-3, 5000)])
    candidate = scores.astype(np.float16).astype(np.float64)  # what an FP16 output returns
    flips = np.flatnonzero((candidate > 0.5) != (scores > 0.5))
    mask = at_risk_by_format(scores, 0.5, "fp16")
    assert flips.size > 0
    assert np.array_equal(np.flatnonzero(mask), flips)  # exact: nothing missed, nothing extra
    summary = at_risk_summary("fp16", "format", mask, flip_indices=flips)
    assert summary.flips_covered == summary.flips_total == flips.size
    assert summary.coverage == 1.0


def test_at_risk_by_error_is_strict():
    margins = np.array([0.0, 1e-3, 2e-3, 3e-3, np.nan])
    assert at_risk_by_error(margins, 2e-3).tolist() == [True, True, False, False, False]
    assert not at_risk_by_error(margins, 0.0).any()


def test_at_risk_by_argmax_error_doubles_the_reach():
    margins = np.array([1e-3, 3e-3, 4e-3, 5e-3])
    assert at_risk_by_argmax_error(margins, 2e-3).tolist() == [True, True, False, False]


def test_error_scale_covers_every_flip_of_a_bounded_perturbation():
    rng = np.random.default_rng(1)
    n = 50_000
    reference = rng.uniform(0, 1, n)
    candidate = reference + rng.uniform(-4e-3, 4e-3, n)
    flips = np.flatnonzero((candidate > 0.5) != (reference > 0.5))
    scale = error_scale(per_sample_abs_error(reference, candidate), quantile=1.0)
    mask = at_risk_by_error(np.abs(reference - 0.5), scale)
    summary = at_risk_summary("bf16", "error", mask, flip_indices=flips, scale=scale)
    assert summary.flips_total > 0 and summary.flips_covered == summary.flips_total
    assert summary.count < n // 50  # and the set stays small


def test_error_scale_from_values_is_a_nearest_rank_observed_value():
    values = np.arange(1000) / 1000.0
    assert error_scale(values, quantile=0.999) == 0.998
    assert error_scale(values, quantile=1.0) == 0.999
    assert error_scale(np.array([np.nan, 0.1, 0.2]), quantile=1.0) == 0.2  # NaN ignored
    assert error_scale(np.array([0.1, np.inf]), quantile=1.0) == math.inf  # overflow is kept
    with pytest.raises(ValueError):
        error_scale(np.array([]))
    with pytest.raises(ValueError):
        error_scale(np.array([-1.0]))
    with pytest.raises(ValueError):
        error_scale(values, quantile=1.5)


def test_error_scale_from_a_histogram_is_an_upper_bound_within_a_bin():
    rng = np.random.default_rng(2)
    values = np.abs(rng.standard_normal(100_000)) * 1e-3
    histogram = Log2Histogram.empty()
    for chunk in np.array_split(values, 10):  # filled batch by batch
        histogram.add(chunk)
    exact = error_scale(values, quantile=0.999)
    approx = error_scale(histogram, quantile=0.999)
    assert exact <= approx <= exact * 2 ** 0.125


def test_error_scale_from_a_histogram_of_mostly_zeros_is_zero():
    histogram = Log2Histogram.empty()
    histogram.add(np.concatenate([np.zeros(999), [1e-3]]))
    assert error_scale(histogram, quantile=0.99) == 0.0
    assert error_scale(histogram, quantile=1.0) >= 1e-3
    with pytest.raises(ValueError):
        error_scale(Log2Histogram.empty())


def test_per_sample_abs_error_takes_the_worst_class():
    ref = np.array([[0.1, 0.9], [0.5, 0.5]])
    cand = np.array([[0.2, 0.8], [0.5, 0.53]])
    assert per_sample_abs_error(ref, cand) == pytest.approx([0.1, 0.03])
    assert per_sample_abs_error(np.array([1.0, 2.0]), np.array([1.5, 1.0])).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError):
        per_sample_abs_error(ref, cand[:1])


def test_at_risk_summary_counts_and_serialises_briefly():
    mask = np.zeros(1000, dtype=bool)
    mask[::5] = True  # 200 at risk
    summary = at_risk_summary("fp16", "format", mask, flip_indices=np.array([0, 5, 7, 7]))
    assert (summary.count, summary.total) == (200, 1000)
    assert (summary.flips_covered, summary.flips_total) == (2, 3)  # duplicates counted once
    data = summary.to_dict()
    json.dumps(data, allow_nan=False)
    assert len(data["indices"]) == MAX_LISTED_INDICES and data["indices_truncated"]
    assert data["fraction"] == 0.2 and data["flips_covered"] == 2
    before = at_risk_summary("fp16", "format", mask)
    assert before.flips_total is None and before.coverage is None
    with pytest.raises(ValueError):
        at_risk_summary("fp16", "format", mask, flip_indices=np.array([1000]))
