"""Round-trip evidence: do a backend's outputs survive FP32 -> low precision -> FP32 unchanged?

Why: a backend that computed its last op in FP16 returns float32 values that are all FP16 numbers
(their low 13 mantissa bits are zero and they sit in FP16's range). A true FP32 value is one only
by chance: with a uniformly distributed mantissa, 2**-(23 - m) of the time for a format with `m`
explicit mantissa bits. So "how many outputs survive the round trip" is a statistical test, and
we run it as one: the candidate's survival count against the survival rate of the reference's own
outputs (a true FP32 computation over the same kind of values), never below the theoretical chance.

Rules (from the field notes):
- exact 0, +-1 and non-finite values are excluded: they survive every format trivially;
- a value outside a format's finite range never survives it (65536 is not an FP16 number);
- formats are tried most restrictive first: bf16 (7 mantissa bits, 8-bit exponent), then fp16
  (10 bits, 5-bit exponent), then tf32 (10 bits, 8-bit exponent). Because the formats nest (every
  BF16 or FP16 number in range is a TF32 number; a BF16 number in FP16's range is an FP16 number)
  a significant test alone does not name the format; see `compare_roundtrip` for the nested tests.

Limit: a backend that runs its last op in FP32 on top of lower-precision layers (OpenVINO CPU's
BF16 mode, TF32 hardware, which accumulates in FP32) shows nothing here; the error-profile match in
`fingerprint` is what catches it.

Everything is vectorised on the uint32 view of the float32 values: no Python loop over elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMATS: tuple[str, ...] = ("bf16", "fp16", "tf32")
"""Known formats, most restrictive first: the order in which a verdict is looked for."""

MANTISSA_BITS: dict[str, int] = {"bf16": 7, "fp16": 10, "tf32": 10}
"""Explicit mantissa bits of each format (float32 has 23)."""

BASELINE_CONFIDENCE = 0.999
"""The reference's survival rate is itself an estimate: its one-sided upper bound at this level
(Clopper-Pearson) is the null rate, so a small reference sample cannot make chance look rarer
than it is and turn luck into a verdict."""

NESTED_BF16_MIN_FRACTION = 0.5
"""A BF16 verdict needs at least this share of the TF32-survivors to also be BF16 numbers. FP16
outputs are TF32 numbers of which only 1/8 are BF16 numbers by chance (3 more low bits zero);
BF16 outputs are all BF16 numbers. Halfway between keeps uneven mantissas from tipping it."""

_LOW16 = np.uint32(0xFFFF)
_LOW13 = np.uint32(0x1FFF)


def chance_fraction(fmt: str) -> float:
    """Chance that an FP32 value with a uniform mantissa is representable in `fmt`: 2**-(23-m)."""
    return 2.0 ** -(23 - MANTISSA_BITS[fmt])


def _testable_float32(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(uint32 bits of the testable values, float32-exactness mask or None, excluded count).

    float16 values are exact in float32; float64 values are tested as the float32 they round to,
    and a value that is not exactly a float32 (the mask) survives no format.
    """
    v = np.asarray(values).ravel()
    if v.dtype.itemsize > 4:
        v = v.astype(np.float64, copy=False)
    keep = np.isfinite(v) & (v != 0) & (np.abs(v) != 1)
    excluded = int(v.size - np.count_nonzero(keep))
    v = v[keep]
    exact = None
    if v.dtype == np.float64:
        with np.errstate(over="ignore"):
            v32 = v.astype(np.float32)
        exact = v32.astype(np.float64) == v
    else:
        v32 = v.astype(np.float32, copy=False)
    return np.ascontiguousarray(v32).view(np.uint32), exact, excluded


def _survival_masks(bits: np.ndarray) -> dict[str, np.ndarray]:
    """Per format, which float32 bit patterns are exactly representable in it (finite inputs).

    bf16 / tf32 share float32's 8-bit exponent, so only the low 16 / 13 mantissa bits must be
    zero (a float32 with them zero is at most bf16's / tf32's largest finite value).
    fp16 normals have unbiased exponent -14..15 and need the low 13 bits zero; fp16 subnormals
    (exponent -24..-15) are multiples of 2**-24, so they need the low (-1 - exponent) bits zero.
    Everything else (|v| >= 65536, |v| < 2**-24, float32 subnormals) is out of fp16's range.
    """
    exponent = ((bits >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int32) - 127
    in_fp16_range = (exponent >= -24) & (exponent <= 15)
    need_zero = np.where(exponent >= -14, 13, np.clip(-1 - exponent, 0, 23)).astype(np.uint32)
    fp16_mask = (np.uint32(1) << need_zero) - np.uint32(1)
    return {
        "bf16": (bits & _LOW16) == 0,
        "fp16": in_fp16_range & ((bits & fp16_mask) == 0),
        "tf32": (bits & _LOW13) == 0,
    }


def survives(values: np.ndarray, fmt: str) -> np.ndarray:
    """Boolean mask over `values.ravel()`: does each survive a round trip through `fmt`?

    Excluded values (0, +-1, non-finite) are False: they are evidence of nothing.
    """
    if fmt not in MANTISSA_BITS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    v = np.asarray(values).ravel()
    out = np.zeros(v.size, dtype=bool)
    if v.dtype.kind != "f" or v.size == 0:
        return out
    wide = v.astype(np.float64) if v.dtype.itemsize > 4 else v
    keep = np.isfinite(wide) & (wide != 0) & (np.abs(wide) != 1)
    bits, exact, _ = _testable_float32(v)
    mask = _survival_masks(bits)[fmt]
    if exact is not None:
        mask &= exact
    out[keep] = mask
    return out


@dataclass(frozen=True)
class FormatSurvival:
    """How many tested output values survived a round trip through one format."""

    format: str
    tested: int
    survived: int
    fraction: float

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "tested": int(self.tested),
            "survived": int(self.survived),
            "fraction": float(self.fraction) if self.tested else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FormatSurvival:
        """Inverse of `to_dict`: a fraction saved as None (nothing tested) is NaN again."""
        fraction = data.get("fraction")
        return cls(
            format=str(data["format"]),
            tested=int(data["tested"]),
            survived=int(data["survived"]),
            fraction=math.nan if fraction is None else float(fraction),
        )


@dataclass(frozen=True)
class RoundTrip:
    """Survival counts of one backend's outputs (one output tensor, or several merged).

    `tf32_survived`, `tf32_not_fp16` and `fp16_not_bf16` are always counted (whatever `formats`
    holds): the nested tests that tell bf16 from fp16 from tf32 need them.
    """

    formats: dict[str, FormatSurvival]
    excluded: int = 0
    tf32_survived: int = 0
    tf32_not_fp16: int = 0
    fp16_not_bf16: int = 0

    @property
    def tested(self) -> int:
        """Values tested (the same for every format: out-of-range values are tested and fail)."""
        return next(iter(self.formats.values())).tested if self.formats else 0

    def to_dict(self) -> dict:
        return {
            "formats": {k: s.to_dict() for k, s in self.formats.items()},
            "excluded": int(self.excluded),
            "tf32_survived": int(self.tf32_survived),
            "tf32_not_fp16": int(self.tf32_not_fp16),
            "fp16_not_bf16": int(self.fp16_not_bf16),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundTrip:
        """Inverse of `to_dict`, which loses nothing (a NaN fraction comes back as `math.nan`)."""
        return cls(
            formats={k: FormatSurvival.from_dict(s) for k, s in data["formats"].items()},
            excluded=int(data.get("excluded", 0)),
            tf32_survived=int(data.get("tf32_survived", 0)),
            tf32_not_fp16=int(data.get("tf32_not_fp16", 0)),
            fp16_not_bf16=int(data.get("fp16_not_bf16", 0)),
        )

    def to_counts(self) -> dict:
        """The raw counts only (plain ints), enough to rebuild it: for saved results."""
        return {
            "tested": int(self.tested),
            "excluded": int(self.excluded),
            "survived": {k: int(s.survived) for k, s in self.formats.items()},
            "tf32_survived": int(self.tf32_survived),
            "tf32_not_fp16": int(self.tf32_not_fp16),
            "fp16_not_bf16": int(self.fp16_not_bf16),
        }

    @classmethod
    def from_counts(cls, data: dict) -> RoundTrip:
        """Inverse of `to_counts`."""
        n = int(data["tested"])
        formats = {
            f: FormatSurvival(f, n, int(k), int(k) / n if n else math.nan)
            for f, k in data["survived"].items()
        }
        return cls(
            formats=formats,
            excluded=int(data.get("excluded", 0)),
            tf32_survived=int(data.get("tf32_survived", 0)),
            tf32_not_fp16=int(data.get("tf32_not_fp16", 0)),
            fp16_not_bf16=int(data.get("fp16_not_bf16", 0)),
        )


class RoundTripAccumulator:
    """Counts, batch by batch, how many output values survive each format's round trip.

    Memory is constant; integer and bool outputs carry no rounding evidence and are ignored.
    """

    def __init__(self, formats: tuple[str, ...] | list[str] = FORMATS) -> None:
        unknown = [f for f in formats if f not in MANTISSA_BITS]
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
        self.formats = tuple(f for f in FORMATS if f in formats)  # most restrictive first
        self._tested = 0
        self._excluded = 0
        self._survived = dict.fromkeys(FORMATS, 0)
        self._tf32_not_fp16 = 0
        self._fp16_not_bf16 = 0

    def update(self, values: np.ndarray) -> None:
        """Fold one batch of float16/32/64 outputs in (any shape)."""
        values = np.asarray(values)
        if values.dtype.kind != "f" or values.size == 0:
            return
        bits, exact, excluded = _testable_float32(values)
        self._excluded += excluded
        if bits.size == 0:
            return
        masks = _survival_masks(bits)
        if exact is not None:
            for mask in masks.values():
                mask &= exact
        self._tested += int(bits.size)
        for fmt, mask in masks.items():
            self._survived[fmt] += int(np.count_nonzero(mask))
        self._tf32_not_fp16 += int(np.count_nonzero(masks["tf32"] & ~masks["fp16"]))
        self._fp16_not_bf16 += int(np.count_nonzero(masks["fp16"] & ~masks["bf16"]))

    def merge(self, other: RoundTripAccumulator) -> None:
        """Add another accumulator's counts (another shard, or another output tensor)."""
        self._tested += other._tested
        self._excluded += other._excluded
        for fmt in FORMATS:
            self._survived[fmt] += other._survived[fmt]
        self._tf32_not_fp16 += other._tf32_not_fp16
        self._fp16_not_bf16 += other._fp16_not_bf16

    def result(self) -> RoundTrip:
        n = self._tested
        return RoundTrip(
            formats={
                f: FormatSurvival(f, n, self._survived[f], self._survived[f] / n if n else math.nan)
                for f in self.formats
            },
            excluded=self._excluded,
            tf32_survived=self._survived["tf32"],
            tf32_not_fp16=self._tf32_not_fp16,
            fp16_not_bf16=self._fp16_not_bf16,
        )


def _upper_bound(survived: int, tested: int) -> float:
    """One-sided upper confidence bound of a survival proportion (Clopper-Pearson)."""
    if tested == 0:
        return 0.0
    if survived >= tested:
        return 1.0
    two_sided = 2 * BASELINE_CONFIDENCE - 1  # the upper end of this interval is one-sided
    from scipy.stats import binomtest  # on first use: scipy costs ~0.3 s and ~60 MiB

    return float(binomtest(survived, tested).proportion_ci(two_sided, method="exact").high)


def _p_greater(k: int, n: int, p0: float) -> float:
    """One-sided binomial p-value of seeing >= k successes in n at rate p0."""
    if n == 0 or k == 0:
        return 1.0
    if p0 >= 1.0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(k, n, max(p0, 0.0), alternative="greater").pvalue)


def _pct(x: float) -> str:
    """A percentage readable at both ends (0.012%, 98.7%)."""
    if x != x:  # NaN
        return "n/a"
    pct = 100.0 * x
    if pct == 0 or pct >= 1:
        return f"{pct:.1f}%"
    return f"{pct:.2g}%"


@dataclass(frozen=True)
class RoundTripEvidence:
    """Which formats' survival is beyond chance, and the precision that explains the outputs.

    `per_format[fmt]` holds candidate_fraction, baseline_fraction (the reference's), chance_fraction
    (2**-(23-m)), null_fraction (the rate tested against), p_value and significant.
    `verdict` is None when the outputs show no downcast (which does not prove FP32: see the module).
    """

    per_format: dict[str, dict]
    verdict: str | None
    text: str
    alpha: float = 1e-6
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        def clean(x: object) -> object:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            return x

        return {
            "verdict": self.verdict,
            "text": self.text,
            "alpha": self.alpha,
            "per_format": {
                f: {k: clean(v) for k, v in row.items()} for f, row in self.per_format.items()
            },
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundTripEvidence:
        """Inverse of `to_dict`: row values saved as None (`to_dict` writes non-finite floats,
        e.g. a NaN baseline_fraction, so) come back as NaN; +-Inf would too (none occur)."""
        per_format = {
            fmt: {k: math.nan if v is None else v for k, v in row.items()}
            for fmt, row in (data.get("per_format") or {}).items()
        }
        alpha = data.get("alpha")
        return cls(
            per_format=per_format,
            verdict=data.get("verdict"),
            text=str(data.get("text", "")),
            alpha=1e-6 if alpha is None else float(alpha),
            notes=list(data.get("notes") or []),
        )


def compare_roundtrip(
    candidate: RoundTrip, reference: RoundTrip, alpha: float = 1e-6
) -> RoundTripEvidence:
    """Test the candidate's survival per format against the reference's, and name the format.

    Test: one-sided exact binomial test of the candidate's survivals against the null rate
    max(chance, upper bound of the reference's rate). Chosen over a pooled two-proportion test
    because the two samples play different roles: the reference's only job is to say how often
    FP32 values like these survive by chance (round numbers, saturated values), and bounding it
    from above makes the test conservative in the one direction that matters (never accuse an
    FP32 backend), whereas pooling would let a downcast candidate inflate its own null rate.
    `alpha` is tiny (1e-6) because outputs are many and a false "your backend is FP16" is costly.

    Verdict, most restrictive first, with nested tests because the formats nest:
    - bf16: bf16 significant, and among the values that survive tf32, the share that also
      survives bf16 is significantly above 1/8 (what FP16/TF32 values give by chance) and at least
      `NESTED_BF16_MIN_FRACTION`; otherwise FP16 outputs would be called BF16. And the values
      that fail bf16 are not FP16 numbers beyond chance: BF16 values inside FP16's range are
      FP16 numbers too, so FP16 outputs that are often BF16 numbers as well (a value that
      collapsed to a round number, beside others that did not) would pass the first test; what
      gives them away is the rest, FP16 numbers that no BF16 computation writes.
    - fp16: fp16 significant, unless the values that fail fp16 survive tf32 beyond chance: those
      are TF32 numbers an FP16 computation could not produce (outside FP16's range) -> tf32.
      (TF32 outputs that all lie inside FP16's range are indistinguishable from FP16 here.)
    - tf32: tf32 significant.
    """
    per_format: dict[str, dict] = {}
    for fmt in FORMATS:
        if fmt not in candidate.formats:
            continue
        cand = candidate.formats[fmt]
        ref = reference.formats.get(fmt)
        chance = chance_fraction(fmt)
        baseline = ref.fraction if ref is not None and ref.tested else math.nan
        bound = _upper_bound(ref.survived, ref.tested) if ref is not None else 0.0
        null = max(chance, bound)
        p = _p_greater(cand.survived, cand.tested, null)
        per_format[fmt] = {
            "tested": int(cand.tested),
            "survived": int(cand.survived),
            "candidate_fraction": float(cand.fraction) if cand.tested else math.nan,
            "baseline_fraction": float(baseline),
            "chance_fraction": chance,
            "null_fraction": null,
            "p_value": p,
            "significant": bool(cand.tested > 0 and p <= alpha),
        }

    def significant(fmt: str) -> bool:
        return fmt in per_format and per_format[fmt]["significant"]

    notes: list[str] = []
    verdict: str | None = None
    if significant("bf16"):
        k, n = candidate.formats["bf16"].survived, candidate.tf32_survived
        p = _p_greater(k, n, 2.0**-3)
        rest = candidate.tested - candidate.formats["bf16"].survived
        half = candidate.fp16_not_bf16
        null = per_format.get("fp16", {}).get("null_fraction", chance_fraction("fp16"))
        if rest and half and _p_greater(half, rest, null) <= alpha:
            notes.append(f"{_pct(half / rest)} of the values that are not bf16 numbers are "
                         "fp16 numbers: fp16 outputs, some of which are bf16 numbers too")
        elif n and k / n >= NESTED_BF16_MIN_FRACTION and p <= alpha:
            verdict = "bf16"
        else:
            notes.append(
                "bf16 survival is beyond chance but explained by a 10-bit format: "
                f"{_pct(k / n if n else math.nan)} of tf32 survivors are bf16 numbers "
                "(1/8 by chance)"
            )
    if verdict is None and significant("fp16"):
        verdict = "fp16"
        k = candidate.tf32_not_fp16
        n = candidate.formats["fp16"].tested - candidate.formats["fp16"].survived
        if _p_greater(k, n, chance_fraction("tf32")) <= alpha:
            verdict = "tf32"
            notes.append(f"{k} values are tf32 numbers outside fp16's range: not fp16")
    if verdict is None and significant("tf32"):
        verdict = "tf32"
    if verdict is None:
        verdict = next((f for f in FORMATS if significant(f)), None)

    return RoundTripEvidence(
        per_format=per_format,
        verdict=verdict,
        text=_text(per_format, verdict, candidate),
        alpha=alpha,
        notes=notes,
    )


def _text(per_format: dict[str, dict], verdict: str | None, candidate: RoundTrip) -> str:
    """One line a user understands."""
    if not per_format or candidate.tested == 0:
        return "no output values to test (only 0, +-1 or non-finite values)"
    if verdict is not None:
        row = per_format[verdict]
        return (
            f"{_pct(row['candidate_fraction'])} of output values survive a round trip through "
            f"{verdict} ({_pct(row['null_fraction'])} would by chance for FP32 values like the "
            f"reference's): outputs are {verdict}"
        )
    parts = [
        f"{fmt} {_pct(row['candidate_fraction'])} (chance {_pct(row['null_fraction'])})"
        for fmt, row in per_format.items()
    ]
    return (
        "no downcast visible in the output values, round-trip survival: "
        + ", ".join(parts)
        + "; a last op computed in FP32 would hide lower precision before it"
    )
