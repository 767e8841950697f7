"""Round-trip evidence on outputs with a known precision."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from modelparity.numerics.roundtrip import (
    RoundTrip,
    RoundTripAccumulator,
    chance_fraction,
    compare_roundtrip,
    survives,
)


def bf16_round(a: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bf16 (ties to even), returned as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & ~np.uint64(0xFFFF)
    return bits.astype(np.uint32).view(np.float32)


def fp16_round(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def roundtrip(*batches: np.ndarray) -> RoundTrip:
    acc = RoundTripAccumulator()
    for batch in batches:
        acc.update(batch)
    return acc.result()


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def reference(rng) -> RoundTrip:
    """A true FP32 computation: sigmoid of float64 logits, cast to float32 once."""
    return roundtrip((1 / (1 + np.exp(-3 * rng.standard_normal(50_000)))).astype(np.float32))


def fp32_outputs(rng, n=50_000) -> np.ndarray:
    return (1 / (1 + np.exp(-3 * rng.standard_normal(n)))).astype(np.float32)


def test_fp16_outputs_are_fp16(rng, reference):
    evidence = compare_roundtrip(roundtrip(fp16_round(fp32_outputs(rng))), reference)
    assert evidence.verdict == "fp16"
    assert evidence.per_format["fp16"]["significant"]
    assert evidence.per_format["fp16"]["candidate_fraction"] == 1.0
    assert "outputs are fp16" in evidence.text
    # FP16 values are BF16 numbers 1/8 of the time: beyond FP32 chance, yet not a bf16 verdict.
    assert evidence.per_format["bf16"]["significant"]


def test_bf16_outputs_are_bf16_not_fp16(rng, reference):
    evidence = compare_roundtrip(roundtrip(bf16_round(fp32_outputs(rng))), reference)
    assert evidence.verdict == "bf16"
    assert evidence.per_format["fp16"]["significant"]  # in range, bf16 numbers are fp16 numbers
    assert evidence.text.startswith("100.0% of output values survive a round trip through bf16")


def test_fp16_outputs_half_of_them_round_numbers_are_fp16_not_bf16(rng, reference):
    """A Softmax over logits that FP16 collapsed to one value: the logits are 1000 exactly (a
    BF16 number too), the probabilities FP16's 1/3. Half the values survive BF16, which passed
    the share-of-TF32-survivors test; the other half are FP16 numbers no BF16 run writes."""
    collapsed = np.full(5000, 1000.0, np.float32)
    thirds = fp16_round(np.full(5000, 1 / 3, np.float32) + rng.normal(0, 1e-3, 5000)
                        .astype(np.float32))
    evidence = compare_roundtrip(roundtrip(np.concatenate([collapsed, thirds])), reference)
    assert evidence.per_format["bf16"]["candidate_fraction"] >= 0.5
    assert evidence.verdict == "fp16"
    assert any("are fp16 numbers" in note for note in evidence.notes)
    # true BF16 outputs with the same share of round numbers stay BF16
    bf16 = compare_roundtrip(roundtrip(np.concatenate([collapsed, bf16_round(thirds)])),
                             reference)
    assert bf16.verdict == "bf16"


def test_true_fp32_outputs_give_no_verdict(rng, reference):
    evidence = compare_roundtrip(roundtrip(fp32_outputs(rng)), reference)
    assert evidence.verdict is None
    assert not any(row["significant"] for row in evidence.per_format.values())
    assert "no downcast visible" in evidence.text


def test_mostly_fp32_with_a_few_fp16_values_is_not_enough(rng, reference):
    out = fp32_outputs(rng)
    out[:5] = fp16_round(out[:5])  # 5 of 50,000: about what chance gives
    assert compare_roundtrip(roundtrip(out), reference).verdict is None


def test_tf32_outputs_outside_fp16_range_are_tf32(rng, reference):
    out = fp16_round(rng.uniform(0.5, 0.99, 50_000))  # 10-bit mantissas, inside fp16's range
    out[25_000:] *= np.float32(2.0**20)  # half of them moved beyond 65504
    evidence = compare_roundtrip(roundtrip(out), reference)
    assert evidence.verdict == "tf32"
    assert evidence.per_format["fp16"]["candidate_fraction"] == pytest.approx(0.5, abs=0.01)


def test_zero_one_and_nonfinite_are_excluded():
    values = np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf] * 100, dtype=np.float32)
    rt = roundtrip(values)
    assert rt.tested == 0
    assert rt.excluded == values.size
    evidence = compare_roundtrip(rt, rt)
    assert evidence.verdict is None
    assert "no output values to test" in evidence.text
    assert not survives(values, "bf16").any()


def test_values_beyond_fp16_range_never_survive_fp16():
    values = np.array([65504.0, 65536.0, 131072.0, 1e6, -70000.0, 2.0**-25], dtype=np.float32)
    assert survives(values, "fp16").tolist() == [True, False, False, False, False, False]
    assert survives(values[1:3], "bf16").all() and survives(values[1:3], "tf32").all()
    rt = roundtrip(values)
    assert rt.formats["fp16"].survived == 1
    assert rt.tf32_not_fp16 == 3  # 65536, 131072 and 2**-25: tf32 numbers fp16 cannot hold


def test_bit_tests_agree_with_casts(rng):
    """The vectorised bit tests give what an actual cast round trip gives, subnormals included."""
    bits = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    values = np.concatenate([
        bits.view(np.float32),
        fp16_round(rng.standard_normal(10_000) * 1e-6),  # fp16 subnormals
        np.float32(2.0**-24) * np.arange(-2000, 2000, dtype=np.float32),
        rng.standard_normal(10_000).astype(np.float32) * np.float32(1e5),
    ])
    trivial = ~np.isfinite(values) | (values == 0) | (np.abs(values) == 1)
    with np.errstate(over="ignore", invalid="ignore"):
        fp16_ok = (fp16_round(values) == values) & ~trivial
        bf16_ok = (bf16_round(values) == values) & ~trivial
    assert np.array_equal(survives(values, "fp16"), fp16_ok)
    assert np.array_equal(survives(values, "bf16"), bf16_ok)
    assert fp16_ok.sum() > 10_000


def test_float64_and_float16_inputs():
    exact = np.array([0.5 + 2.0**-10, 3.0], dtype=np.float64)
    inexact = np.array([0.1, 1e300], dtype=np.float64)  # not float32 numbers
    assert survives(exact, "fp16").all()
    assert not survives(inexact, "fp16").any() and not survives(inexact, "bf16").any()
    rt = roundtrip(np.array([0.25, 0.3], dtype=np.float16))
    assert rt.formats["fp16"].survived == 2 and rt.tested == 2
    assert roundtrip(np.arange(10)).tested == 0  # integer outputs carry no evidence


def test_streaming_equals_one_batch(rng):
    out = fp16_round(fp32_outputs(rng, 9_000))
    whole = roundtrip(out)
    batched = roundtrip(*np.array_split(out, 7))
    assert whole.to_dict() == batched.to_dict()
    a, b = RoundTripAccumulator(), RoundTripAccumulator()
    a.update(out[:4000])
    b.update(out[4000:])
    a.merge(b)
    assert a.result().to_dict() == whole.to_dict()
    saved = json.loads(json.dumps(whole.to_counts()))
    assert RoundTrip.from_counts(saved).to_dict() == whole.to_dict()


def test_baseline_from_reference_prevents_false_verdict(rng):
    """Outputs that are round numbers in FP32 too (quarter steps) survive for the reference as
    much as for the candidate: no verdict, although they beat the theoretical chance."""
    quarters = (rng.integers(2, 400, 20_000) / 4).astype(np.float32)
    evidence = compare_roundtrip(roundtrip(quarters), roundtrip(quarters[::-1].copy()))
    assert evidence.verdict is None
    row = evidence.per_format["fp16"]
    assert row["candidate_fraction"] > 0.99 and row["baseline_fraction"] > 0.99
    assert row["chance_fraction"] == chance_fraction("fp16") == 2.0**-13


def test_small_reference_sample_is_bounded_conservatively(rng):
    tiny_reference = roundtrip(fp32_outputs(rng, 50))
    row = compare_roundtrip(roundtrip(fp32_outputs(rng)), tiny_reference).per_format["bf16"]
    assert row["null_fraction"] > row["chance_fraction"]


def test_only_requested_formats_and_to_dict_is_json(rng, reference):
    acc = RoundTripAccumulator(formats=("fp16",))
    acc.update(fp16_round(fp32_outputs(rng, 5_000)))
    evidence = compare_roundtrip(acc.result(), reference)
    assert list(evidence.per_format) == ["fp16"]
    assert evidence.verdict == "fp16"
    json.dumps(evidence.to_dict())
    with pytest.raises(ValueError, match="unknown format"):
        RoundTripAccumulator(formats=("fp8",))


def test_fast_on_millions_of_values(rng):
    values = rng.standard_normal(2_000_000).astype(np.float32)
    t0 = time.perf_counter()
    acc = RoundTripAccumulator()
    acc.update(values)
    assert acc.result().tested == values.size
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s here: vectorised, no per-element loop
