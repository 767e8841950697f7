"""Known-value tests for the streaming error statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from modelparity.errors import InputError
from modelparity.numerics import ErrorAccumulator, ErrorStats, Log2Histogram


def stats(r, c, dtype="float32") -> ErrorStats:
    acc = ErrorAccumulator(dtype)
    acc.update(np.asarray(r, dtype=dtype), np.asarray(c, dtype=dtype))
    return acc.result()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ulp_next_representable_is_one(dtype):
    one = np.array([1.0], dtype=dtype)
    nxt = np.nextafter(one, np.array([2.0], dtype=dtype))
    s = stats(one, nxt, dtype)
    assert s.max_ulp == 1
    assert s.exact_fraction == 0.0


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ulp_across_zero(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    assert stats([-tiny], [tiny], dtype).max_ulp == 2
    # -0.0 and +0.0 are the same number (0 ULP) but not bit-identical.
    s = stats([-0.0], [0.0], dtype)
    assert s.max_ulp == 0
    assert s.exact_fraction == 0.0
    assert s.max_abs == 0.0


def test_ulp_float64_extremes_do_not_overflow():
    big = np.finfo(np.float64).max
    s = stats([-big], [big], "float64")
    assert s.max_ulp == 2 * 0x7FEFFFFFFFFFFFFF


def test_ulp_is_measured_in_output_dtype():
    # 1 + 2**-10 is one float16 ULP above 1.0 but many float32 ULPs.
    r, c = np.array([1.0]), np.array([1.0 + 2**-10])
    assert stats(r, c, "float16").max_ulp == 1
    assert stats(r, c, "float32").max_ulp == 2**13


def test_integer_dtype_ulp_is_abs_difference():
    s = stats([1, 5, -3], [1, 2, 4], "int32")
    assert s.max_ulp == 7
    assert s.max_abs == 7.0
    assert s.exact_fraction == pytest.approx(1 / 3)
    assert stats([True, False], [True, True], "bool").max_ulp == 1


def test_nan_and_inf_mismatch_counts():
    inf, nan = np.inf, np.nan
    r = [1.0, nan, nan, 2.0, inf, inf, -inf, 3.0, inf]
    c = [1.0, nan, 1.0, nan, inf, -inf, 5.0, 3.0, nan]
    s = stats(r, c)
    assert s.nan_mismatch == 3  # positions 2, 3, 8
    assert s.inf_mismatch == 2  # positions 5, 6 (8 is NaN, 4 identical)
    assert s.count == 2  # only positions 0 and 7 are finite on both sides
    assert s.max_abs == 0.0
    assert s.exact_fraction == 1.0


def test_abs_rel_mean_values():
    s = stats([1.0, 2.0, 0.0, -4.0], [1.5, 2.0, 0.0, -3.0], "float64")
    assert s.count == 4
    assert s.max_abs == 1.0
    assert s.mean_abs == pytest.approx(1.5 / 4)
    assert s.max_rel == pytest.approx(0.5)
    assert s.exact_fraction == 0.5


def test_relative_error_floor_is_smallest_normal():
    s = stats([0.0], [1e-30], "float32")
    assert s.max_rel == pytest.approx(float(np.float32(1e-30)) / float(np.finfo(np.float32).tiny))


def test_cosine_values():
    assert stats([1.0, 0.0], [0.0, 1.0]).cosine == 0.0
    assert stats([1.0, 2.0], [2.0, 4.0]).cosine == pytest.approx(1.0)
    assert stats([1.0, 2.0], [-1.0, -2.0]).cosine == pytest.approx(-1.0)
    assert stats([0.0, 0.0], [0.0, 0.0]).cosine == 1.0
    assert math.isnan(stats([0.0, 0.0], [0.0, 1.0]).cosine)


def test_shape_mismatch_names_both_shapes():
    acc = ErrorAccumulator("float32")
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        acc.update(np.zeros((2, 3)), np.zeros((3, 2)))


def test_unsupported_dtype():
    with pytest.raises(InputError):
        ErrorAccumulator("complex64")
    with pytest.raises(InputError):
        ErrorAccumulator("U3")


def test_streaming_equals_one_batch():
    rng = np.random.default_rng(0)
    r = rng.standard_normal((1000, 7)).astype(np.float32)
    c = (r + rng.standard_normal(r.shape) * 1e-3).astype(np.float32)
    c[:5] = r[:5]
    c[3, 2] = np.nan
    r[10, 1] = np.inf
    one = stats(r, c).to_dict()
    acc = ErrorAccumulator(np.float32)
    for start in range(0, 1000, 137):
        acc.update(r[start : start + 137], c[start : start + 137])
    many = acc.result().to_dict()
    for key in ("count", "max_abs", "max_rel", "median_rel", "max_ulp", "nan_mismatch"):
        assert many[key] == one[key], key
    for key in ("mean_abs", "cosine", "exact_fraction"):
        assert many[key] == pytest.approx(one[key], rel=1e-12), key
    assert many["log2_rel_hist"] == one["log2_rel_hist"]
    assert many["profile_hist"] == one["profile_hist"]
    assert one["inf_mismatch"] == 1 and one["nan_mismatch"] == 1


def test_merge_equals_one_batch():
    rng = np.random.default_rng(1)
    r = rng.standard_normal(500)
    c = r * (1 + rng.standard_normal(500) * 1e-6)
    a, b = ErrorAccumulator("float64"), ErrorAccumulator("float64")
    a.update(r[:200], c[:200])
    b.update(r[200:], c[200:])
    a.merge(b)
    merged, whole = a.result().to_dict(), stats(r, c, "float64").to_dict()
    assert merged.pop("log2_rel_hist") == whole.pop("log2_rel_hist")
    assert merged.pop("profile_hist") == whole.pop("profile_hist")
    assert merged == pytest.approx(whole, rel=1e-12)


def test_histogram_median_within_one_bin():
    rng = np.random.default_rng(2)
    r = rng.uniform(0.5, 2.0, 100_000)
    c = r * (1 + rng.lognormal(-12, 2, r.size) * rng.choice([-1, 1], r.size))
    s = stats(r, c, "float64")
    true = np.median(np.abs(c - r) / np.abs(r))
    assert abs(math.log2(s.median_rel) - math.log2(true)) <= 0.125
    q90 = s.log2_rel_hist.quantile(0.9)
    assert abs(math.log2(q90) - math.log2(np.quantile(np.abs(c - r) / r, 0.9))) <= 0.125


def test_histogram_quantile_counts_zeros():
    h = Log2Histogram.empty()
    h.add(np.array([0.0, 0.0, 0.0, 2.0**-10]))
    assert h.quantile(0.5) == 0.0
    assert h.quantile(0.75) == 0.0
    assert h.quantile(1.0) == pytest.approx(2.0 ** (-10 + 0.0625))
    assert math.isnan(Log2Histogram.empty().quantile(0.5))
    with pytest.raises(ValueError):
        h.quantile(1.5)


def test_histogram_to_dict_is_trimmed_and_consistent():
    h = Log2Histogram.empty()
    h.add(np.array([2.0**-20, 2.0**-10, 2.0**-10, 0.0]))
    d = h.to_dict()
    assert d["start"] == -20.0
    assert d["zero_count"] == 1
    assert sum(d["counts"]) == 3
    assert d["counts"][0] == 1 and d["counts"][-1] == 2
    assert len(d["counts"]) == 81  # 10 octaves at 8 bins each, plus one


def test_to_dict_is_json_ready():
    s = stats([np.nan], [1.0])
    d = s.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["count"] == 0 and d["max_abs"] is None and d["nan_mismatch"] == 1


def test_empty_and_all_equal():
    acc = ErrorAccumulator("float32")
    acc.update(np.zeros((0, 3)), np.zeros((0, 3)))
    assert acc.result().count == 0
    s = stats([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (s.max_abs, s.max_ulp, s.median_rel, s.exact_fraction) == (0.0, 0, 0.0, 1.0)


def test_error_stats_survive_json_round_trip():
    import json

    rng = np.random.default_rng(3)
    reference = rng.normal(size=4000).astype(np.float32)
    candidate = (reference * (1 + rng.normal(scale=1e-3, size=4000))).astype(np.float32)
    accumulator = ErrorAccumulator(np.float32)
    accumulator.update(reference, candidate)
    stats = accumulator.result()
    again = ErrorStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert again.to_dict() == stats.to_dict()
    assert again.log2_rel_hist.quantile(0.5) == stats.log2_rel_hist.quantile(0.5)


def test_profile_histogram_leaves_out_near_zero_references():
    """Relative errors where the reference is below FP16's smallest normal say nothing about
    precision (they come from how exp/sigmoid tails are approximated): the profile skips them."""
    r = np.array([1e-30, 1e-8, 0.25, 0.5, 3.0], dtype=np.float32)
    c = np.array([0.0, 2e-8, 0.25, 0.5 + 2**-20, 3.0 + 2**-19], dtype=np.float32)
    s = stats(r, c)
    assert s.log2_rel_hist.total == 5
    assert s.profile_hist.total == 3  # 0.25, 0.5, 3.0
    assert s.profile_hist.zero_count == 1


def test_latency_percentiles_are_numpys_linear_ones():
    from modelparity.numerics.latency import Latency

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 98, 1001):
        seconds = rng.exponential(1e-3, n)
        latency = Latency.from_times(list(seconds), samples=100 * n, warmup=3)
        assert latency.p50_ms == pytest.approx(np.percentile(seconds * 1e3, 50), rel=1e-12)
        assert latency.p95_ms == pytest.approx(np.percentile(seconds * 1e3, 95), rel=1e-12)
        assert latency.batches == n and Latency.from_dict(latency.to_dict()) == latency
