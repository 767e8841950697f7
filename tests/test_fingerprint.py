"""Fingerprints of a small NumPy network computed in known precisions.

The reference is the network in float64, cast to float32 once. The emulation profiles are the
network with weights and activations rounded to each format; the candidates compute the same
network the way a backend would, differently from the emulation (a fused kernel: no rounding
between matmul and bias, another summation order), so a match is never a bit-for-bit copy.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from modelparity.numerics import ErrorAccumulator
from modelparity.numerics.fingerprint import (
    UNKNOWN_DISTANCE,
    WEAK_CONFIDENCE,
    Profile,
    fingerprint,
    merge_profiles,
    profile_distance,
    profile_from_histogram,
)
from modelparity.numerics.roundtrip import RoundTripAccumulator, compare_roundtrip

Array = np.ndarray
Round = Callable[[Array], Array]

# ---------------------------------------------------------------- precisions, emulated in NumPy


def fp32(a: Array) -> Array:
    return np.asarray(a, dtype=np.float32)


def fp16(a: Array) -> Array:
    return fp32(a).astype(np.float16).astype(np.float32)


def _round_low_bits(a: Array, drop: int) -> Array:
    """Round float32 to `23 - drop` mantissa bits, ties to even (bf16: 16, tf32: 13)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + (1 << (drop - 1)) - 1 + ((bits >> drop) & 1)) & ~np.uint64((1 << drop) - 1)
    return bits.astype(np.uint32).view(np.float32)


def bf16(a: Array) -> Array:
    return _round_low_bits(a, 16)


def tf32(a: Array) -> Array:
    return _round_low_bits(a, 13)


def int8(a: Array) -> Array:
    """Symmetric per-tensor fake quantisation (dynamic for activations)."""
    a = fp32(a)
    scale = float(np.abs(a).max()) / 127
    return (np.clip(np.rint(a / scale), -127, 127) * scale).astype(np.float32)


# ---------------------------------------------------------------- the network

RNG = np.random.default_rng(1)
DIMS = (16, 64, 64, 8)
X = RNG.standard_normal((4000, DIMS[0])).astype(np.float32)
LAYERS = [
    ((RNG.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
     (0.1 * RNG.standard_normal(b)).astype(np.float32))
    for a, b in itertools.pairwise(DIMS)
]


def matmul(a: Array, w: Array) -> Array:
    return a @ w


def matmul_reversed(a: Array, w: Array) -> Array:
    return a[:, ::-1] @ w[::-1]


def matmul_split(a: Array, w: Array) -> Array:
    k = a.shape[1] // 2
    return (a[:, k:] @ w[k:]) + (a[:, :k] @ w[:k])


def reference() -> Array:
    h = X.astype(np.float64)
    for i, (w, b) in enumerate(LAYERS):
        h = h @ w.astype(np.float64) + b
        if i < len(LAYERS) - 1:
            h = np.tanh(h)
    return (1 / (1 + np.exp(-h))).astype(np.float32)


def network(
    q_in: Round = fp32,
    q_act: Round = fp32,
    q_out: Round | None = None,
    mm: Callable[[Array, Array], Array] = matmul,
    fused: bool = False,
) -> Array:
    """q_in rounds matmul inputs (weights, activations, bias), q_act every stored activation,
    q_out the final sigmoid (q_act if None). `fused`: no rounding between matmul and bias."""
    h = X
    for i, (w, b) in enumerate(LAYERS):
        product = mm(q_in(h), q_in(w))
        h = product + q_in(b) if fused else q_act(product + q_act(b))
        if i < len(LAYERS) - 1:
            h = q_act(np.tanh(h))
    return (q_out or q_act)(1 / (1 + np.exp(-h)))


def backend(q_in: Round = fp32, q_act: Round = fp32, q_out: Round | None = None) -> Array:
    """A backend's own kernels: fused bias, another summation order than the emulation's."""
    return network(q_in, q_act, q_out, mm=matmul_split, fused=True)


REF = reference()


def profile(label: str, out: Array, ref: Array = REF) -> Profile:
    acc = ErrorAccumulator("float32")
    acc.update(ref, out)
    return profile_from_histogram(label, acc.result().log2_rel_hist)


def roundtrip_of(out: Array, ref: Array = REF):
    cand, base = RoundTripAccumulator(), RoundTripAccumulator()
    cand.update(out)
    base.update(ref)
    return compare_roundtrip(cand.result(), base.result())


@pytest.fixture(scope="module")
def profiles() -> dict[str, Profile]:
    """Emulations, and FP32 noise: float32 with another summation order than the reference's."""
    return {
        "fp32": profile("fp32", network()),
        "fp16": profile("fp16", network(fp16, fp16)),
        "bf16": profile("bf16", network(bf16, bf16)),
        "tf32": profile("tf32", network(q_in=tf32)),
        "int8": profile("int8", network(q_in=int8)),
    }


# ---------------------------------------------------------------- the network's candidates

CANDIDATES = {
    "fp16": (lambda: backend(fp16, fp16), "fp16"),
    "bf16": (lambda: backend(bf16, bf16), "bf16"),
    "tf32": (lambda: backend(q_in=tf32), "tf32"),
    "int8": (lambda: backend(q_in=int8), "int8"),
}


@pytest.mark.parametrize("name", list(CANDIDATES))
def test_each_precision_is_recognised(profiles, name):
    make, expected = CANDIDATES[name]
    out = make()
    rt = roundtrip_of(out)
    fp = fingerprint(profile(name, out), profiles, rt)
    assert fp.verdict == expected, fp.evidence
    assert fp.confidence > 0.5
    assert next(iter(fp.distances)) == expected  # the profile alone agrees
    json.dumps(fp.to_dict())


def test_roundtrip_names_fp16_and_bf16_outputs(profiles):
    assert roundtrip_of(backend(fp16, fp16)).verdict == "fp16"
    assert roundtrip_of(backend(bf16, bf16)).verdict == "bf16"
    fp = fingerprint(profile("c", backend(bf16, bf16)), profiles, roundtrip_of(backend(bf16, bf16)))
    assert fp.evidence.startswith("round trip: ") and "error profile agrees" in fp.evidence


def test_bf16_layers_with_fp32_sigmoid(profiles):
    """The OpenVINO case: BF16 layers, final Sigmoid in FP32. Round trip: blind. Profile: bf16."""
    out = backend(bf16, bf16, q_out=fp32)
    rt = roundtrip_of(out)
    assert rt.verdict is None
    fp = fingerprint(profile("ov", out), profiles, rt)
    assert fp.verdict == "bf16", fp.evidence
    # The emulation rounds its final Sigmoid to bf16 and this candidate does not, so the match
    # is looser than for a full-bf16 run (confidence 0.25..0.45 over seeds), but bf16 is nearest.
    assert fp.confidence > 0.2
    assert "bf16 emulation" in fp.evidence.split(";")[0]
    assert "round trip: no downcast visible" in fp.evidence


NOISE = {
    "reversed": lambda: network(mm=matmul_reversed),
    "split": lambda: network(mm=matmul_split),
    "fused": lambda: network(mm=matmul_split, fused=True),
    "tanh-sigmoid": lambda: fp32(0.5 * (1 + np.tanh(0.5 * fp32(np.log(1 / REF - 1) * -1)))),
    "float64-cast": lambda: fp32(REF.astype(np.float64) * (1 + 1e-9)),
}


@pytest.mark.parametrize("name", list(NOISE))
@pytest.mark.parametrize("noise_kind", ["measured", "bit-identical", "not-measured"])
def test_fp32_noise_is_never_a_downcast(profiles, name, noise_kind):
    profs = dict(profiles)
    if noise_kind == "bit-identical":
        profs["fp32"] = profile("fp32", REF.copy())  # reference against itself, same bits
    elif noise_kind == "not-measured":
        del profs["fp32"]
    out = NOISE[name]()
    fp = fingerprint(profile(name, out), profs, roundtrip_of(out))
    assert fp.verdict == "fp32", fp.evidence
    assert fp.confidence > 0.8
    assert fp.evidence.startswith("at FP32 noise scale")


def test_identical_to_reference_is_fp32_with_high_confidence(profiles):
    fp = fingerprint(profile("same", REF.copy()), profiles, roundtrip_of(REF.copy()))
    assert fp.verdict == "fp32"
    assert fp.confidence > 0.9
    bare = fingerprint(profile("same", REF.copy()), {k: profiles[k] for k in ("fp16", "bf16")})
    assert bare.verdict == "fp32" and bare.confidence == 1.0
    assert "no FP32 noise measured" in bare.evidence


# ---------------------------------------------------------------- rules, on synthetic profiles


def synthetic(label: str, mu: float, sigma: float = 0.3, n: int = 20_000, seed: int = 0) -> Profile:
    """Relative errors 2**N(mu, sigma), through the real ErrorAccumulator."""
    rng = np.random.default_rng(seed)
    ref = rng.uniform(1.0, 2.0, n)
    cand = ref * (1 + rng.choice([-1.0, 1.0], n) * 2.0 ** rng.normal(mu, sigma, n))
    acc = ErrorAccumulator("float64")
    acc.update(ref, cand)
    return profile_from_histogram(label, acc.result().log2_rel_hist)


def test_distance_is_the_shift_in_octaves():
    a, b = synthetic("a", -12.0, seed=1), synthetic("b", -9.0, seed=2)
    assert profile_distance(a, b) == pytest.approx(3.0, abs=0.05)
    assert profile_distance(a, a) == 0.0
    assert profile_distance(a, b) == pytest.approx(profile_distance(b, a))
    empty = merge_profiles("none", [])
    assert math.isnan(profile_distance(a, empty))


def test_floor_collapses_zeros_and_sub_ulp_errors():
    """Bit-identical noise and noise below half an FP32 ulp are the same profile."""
    zeros = profile("z", REF.copy())
    assert zeros.probabilities[0] == 1.0 and zeros.floor == -24.0
    tiny = synthetic("t", -40.0)
    assert profile_distance(zeros, tiny) == 0.0
    assert zeros.quantile(0.999) == -24.0
    assert profile_distance(zeros, profile("n", network())) < 1.0


def test_quantile_and_merge():
    a, b = synthetic("a", -12.0, n=30_000, seed=3), synthetic("b", -6.0, n=10_000, seed=4)
    assert a.quantile(0.5) == pytest.approx(-12.0, abs=0.15)
    merged = merge_profiles("ab", [a, b])
    assert merged.count == 40_000
    assert merged.probabilities.sum() == pytest.approx(1.0)
    assert merged.quantile(0.5) == pytest.approx(a.quantile(0.5), abs=0.3)  # 3:1 weight
    assert merged.quantile(0.9) == pytest.approx(b.quantile(0.5), abs=0.5)
    assert math.isnan(merge_profiles("none", []).quantile(0.5))
    json.dumps(merged.to_dict())


def test_noise_rule_beats_a_nearer_downcast_profile():
    """Nearer to a (hypothetical) tf32 profile, but within 2 octaves of measured noise: never
    tf32; "inconclusive" while tf32 is that near, fp32 once it is far."""
    profs = {"fp32": synthetic("fp32", -21.0, seed=5), "tf32": synthetic("tf32", -18.5, seed=6)}
    cand = synthetic("c", -19.6, seed=7)
    assert profile_distance(cand, profs["tf32"]) < profile_distance(cand, profs["fp32"])
    fp = fingerprint(cand, profs)
    assert fp.verdict == "inconclusive"  # never tf32; but tf32 is too near to call it fp32
    assert "within FP32 noise" in fp.evidence and "so is tf32 emulation" in fp.evidence
    clear = fingerprint(cand, {**profs, "tf32": synthetic("tf32", -11.0, seed=6)})
    assert clear.verdict == "fp32" and clear.confidence >= WEAK_CONFIDENCE


def test_unknown_when_far_from_every_profile():
    profs = {"fp32": synthetic("fp32", -22.0), "fp16": synthetic("fp16", -11.0),
             "bf16": synthetic("bf16", -8.0)}
    fp = fingerprint(synthetic("broken", 0.0), profs)
    assert fp.verdict == "unknown" and fp.confidence == 0.0
    assert min(fp.distances.values()) > UNKNOWN_DISTANCE
    assert fp.evidence.startswith("unlike every profile")


def test_two_profiles_about_as_near_are_inconclusive_and_both_named():
    profs = {"fp32": synthetic("fp32", -22.0, seed=1), "fp16": synthetic("fp16", -11.0, seed=2),
             "tf32": synthetic("tf32", -11.5, seed=3)}
    fp = fingerprint(synthetic("c", -11.25, seed=4), profs)
    assert fp.verdict == "inconclusive"
    assert fp.confidence < WEAK_CONFIDENCE
    assert fp.evidence.startswith("inconclusive: ")
    assert "fp16 emulation" in fp.evidence and "tf32 emulation" in fp.evidence
    assert list(fp.distances) == sorted(fp.distances, key=fp.distances.get)


def test_significant_roundtrip_wins_over_profile():
    """Outputs that are FP16 numbers are fp16, even if the error profile looks like bf16."""
    profs = {"fp32": synthetic("fp32", -22.0), "fp16": synthetic("fp16", -11.0),
             "bf16": synthetic("bf16", -8.0)}
    rt = roundtrip_of(fp16(REF))
    assert rt.verdict == "fp16"
    fp = fingerprint(synthetic("c", -8.0, seed=9), profs, rt)
    assert fp.verdict == "fp16" and fp.confidence > 0.99
    assert "round trip: " in fp.evidence and "alone would say bf16" in fp.evidence


def test_empty_inputs():
    profs = {"fp32": synthetic("fp32", -22.0), "fp16": merge_profiles("fp16", [])}
    empty = merge_profiles("c", [])
    fp = fingerprint(empty, profs)
    assert fp.verdict == "unknown" and fp.confidence == 0.0 and fp.distances == {}
    fp = fingerprint(synthetic("c", -22.0), profs)
    assert fp.verdict == "fp32" and "fp16" not in fp.distances
    assert "no data for fp16" in fp.evidence
    fp = fingerprint(empty, profs, roundtrip_of(fp16(REF)))
    assert fp.verdict == "fp16"


def test_errors_beyond_100_percent_are_all_alike():
    """Past the ceiling (2**0) the size of a relative error says how near zero the reference
    was, not which precision ran: 2**30 and 2**2 errors make the same profile."""
    assert profile_distance(synthetic("a", 30.0), synthetic("b", 2.0)) == 0.0
    assert synthetic("a", 30.0).quantile(0.5) < 1.0


def test_fp32_with_a_tail_of_near_zero_outputs_is_not_a_downcast():
    """Another FP32 Sigmoid formula: bit-identical bulk, tiny outputs off by 2**10..2**60
    relative (the OpenVINO-vs-ONNX-Runtime logistic-regression case). The median is at noise."""
    rng = np.random.default_rng(11)
    ref = rng.uniform(1.0, 2.0, 20_000)
    cand = ref.copy()
    tail = rng.random(ref.size) < 0.15
    cand[tail] *= 1 + 2.0 ** rng.uniform(-12, 60, tail.sum())
    acc = ErrorAccumulator("float64")
    acc.update(ref, cand)
    candidate = profile_from_histogram("ov-f32", acc.result().log2_rel_hist)
    profs = {"fp32": profile("fp32", REF.copy()), "tf32": synthetic("tf32", -19.0),
             "fp16": synthetic("fp16", -12.0)}
    fp = fingerprint(candidate, profs)
    assert fp.verdict == "fp32", fp.evidence
    assert fp.evidence.startswith("at FP32 noise scale: 50.0% of relative errors")


def test_the_fp32_band_is_the_widest_of_the_fp32_runs():
    """Two FP32 implementations of a deep or ill-conditioned model can differ at 2**-10 while
    the reference's runtime against itself is bit-identical: one yardstick would call the other
    implementation a downcast. The band is the widest measured FP32 run."""
    identical = synthetic("fp32", -40.0, seed=1)  # ORT against ORT: bit-identical
    other_runtime = synthetic("fp32", -10.0, seed=2)  # another FP32 implementation
    profs = {"fp32": identical, "tf32": synthetic("tf32", 0.0, seed=3),
             "bf16": synthetic("bf16", -1.0, seed=4)}
    cand = synthetic("c", -10.2, seed=5)
    alone = fingerprint(cand, profs, noise=[identical])
    assert alone.verdict != "fp32"  # what one yardstick says: far from its bit-identical noise
    banded = fingerprint(cand, profs, noise=[identical, other_runtime])
    assert banded.verdict == "fp32", banded.evidence
    assert "over 2 FP32 runs" in banded.evidence
    # a downcast above the whole band is still seen
    assert fingerprint(synthetic("d", -1.0, seed=6), profs,
                       noise=[identical, other_runtime]).verdict == "bf16"


def test_a_model_that_quantizes_itself_gets_no_float_verdict_from_its_errors():
    """ddddocr's OCR model ships int8-quantized (DynamicQuantizeLinear, ConvInteger): ONNX
    Runtime against OpenVINO pinned to f32 differed at 2**-6.7, and the profile named BF16.
    Its own int8 steps make every precision's errors alike: inconclusive, said why."""
    profs = {"fp32": synthetic("fp32", -23.0, seed=1), "bf16": synthetic("bf16", -7.0, seed=2),
             "fp16": synthetic("fp16", -10.0, seed=3)}
    cand = synthetic("c", -6.8, seed=4)
    ops = ("ConvInteger", "DynamicQuantizeLinear")
    assert fingerprint(cand, profs).verdict == "bf16"  # what the profile alone says
    found = fingerprint(cand, profs, quantized=ops)
    assert found.verdict == "inconclusive" and found.confidence == 0.0
    assert "quantizes itself (ConvInteger, DynamicQuantizeLinear)" in found.evidence
    assert "alone would say bf16" in found.evidence
    # what still proves FP32 there: errors below any downcast's scale, or an FP32 run's profile
    assert fingerprint(synthetic("c", -23.0, seed=5), profs, quantized=ops).verdict == "fp32"
    twin = synthetic("fp32", -6.8, seed=4)
    assert fingerprint(cand, {**profs, "fp32": twin}, quantized=ops).verdict == "fp32"
