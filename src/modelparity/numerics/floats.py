"""Floating-point formats, exact rounding into them, and the view of one number in each.

Why this exists: a runtime that silently computes in FP16/BF16/TF32 returns scores rounded to
that format, and a decision `score > threshold` flips for every score that rounds across the
threshold. To say *which* scores those are before anything is deployed, we need the format's
representable numbers around the threshold, exactly.

Rounding is done from float64 in one step (round to nearest, ties to even, the IEEE default
and what hardware conversions do), by scaling the value so the format's last mantissa bit is
the units digit and calling `np.rint`. That is exact for every format here and avoids the
double rounding of going through float32 first (float64 -> float32 -> bf16 can land on the
wrong neighbour when the float32 step creates a tie). For float32 inputs it agrees with the
usual bit manipulation, and for float16 with `astype(np.float16)`; the tests check both.

Scores are assumed to be float64 (the reference), so "fp32" here means the rounding of a
float64 score to float32. Every format here has gradual underflow (subnormals) and overflows
to +-inf, like IEEE binary formats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelparity.errors import InputError


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: sign bit, `exponent_bits`, explicit `mantissa_bits`."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    note: str = ""

    @property
    def bits(self) -> int:
        """Storage bits (TF32 has 19 significant ones, held in a 32-bit register)."""
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return self.bias

    @property
    def max_finite(self) -> float:
        return math.ldexp(2.0 - math.ldexp(1.0, -self.mantissa_bits), self.emax)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def min_subnormal(self) -> float | None:
        """Smallest positive number; None would mean no subnormals (every format here has them)."""
        return math.ldexp(1.0, self.emin - self.mantissa_bits)

    @property
    def epsilon(self) -> float:
        """Gap between 1.0 and the next number up: 2**-mantissa_bits."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def overflow_threshold(self) -> float:
        """Smallest magnitude that rounds to infinity: max_finite plus half its gap (a tie)."""
        return math.ldexp(2.0 - math.ldexp(1.0, -self.mantissa_bits - 1), self.emax)


FORMATS: dict[str, FloatFormat] = {
    "fp32": FloatFormat("fp32", 8, 23, "IEEE single precision"),
    "fp16": FloatFormat("fp16", 5, 10, "IEEE half: 11 significant bits, max 65504"),
    "bf16": FloatFormat("bf16", 8, 7, "bfloat16: FP32's range, 8 significant bits"),
    "tf32": FloatFormat("tf32", 8, 10, "TensorFloat-32: FP32's range, FP16's precision"),
    "fp8_e5m2": FloatFormat("fp8_e5m2", 5, 2, "8-bit float, IEEE-like, max 57344"),
}
"""The formats by canonical name. fp64 is left out: it is the precision scores are held in."""

ALIASES: dict[str, str] = {
    "float32": "fp32", "f32": "fp32", "single": "fp32",
    "float16": "fp16", "f16": "fp16", "half": "fp16",
    "bfloat16": "bf16",
    "tfloat32": "tf32", "tensorfloat32": "tf32",
    "e5m2": "fp8_e5m2", "float8_e5m2": "fp8_e5m2",
}


def get_format(name: str | FloatFormat) -> FloatFormat:
    """Look a format up by name or alias (case-insensitive); unknown names are a user error."""
    if isinstance(name, FloatFormat):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        known = ", ".join(FORMATS)
        raise InputError(f"unknown float format {name!r}: expected one of {known} "
                         "(aliases float32, float16, half, bfloat16, tfloat32)")
    return FORMATS[key]


def _exponent(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """floor(log2|a|) clamped below at emin (the subnormal range shares emin's spacing)."""
    _, e = np.frexp(a)  # frexp(0) gives exponent 0, so zero is sent to emin explicitly
    return np.where(a == 0, fmt.emin, np.maximum(e.astype(np.int64) - 1, fmt.emin))


def _pow2(exponent: np.ndarray) -> np.ndarray:
    return np.ldexp(1.0, exponent.astype(np.int32))


def round_to(x: np.ndarray | float, fmt: str | FloatFormat) -> np.ndarray:
    """Round to nearest (ties to even) into `fmt`; float64 array holding the exact values.

    Magnitudes at or above `overflow_threshold` become +-inf; NaN stays NaN; signs of zeros
    are kept.
    """
    f = get_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        shift = _exponent(x, f) - f.mantissa_bits
        scaled = np.ldexp(x, (-shift).astype(np.int32))  # exact: a power-of-two scaling
        rounded = np.ldexp(np.rint(scaled), shift.astype(np.int32))
        return np.where(np.abs(rounded) > f.max_finite, np.copysign(np.inf, x), rounded)


def _gap_up(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Distance from a representable magnitude a >= 0 to the next one up."""
    return _pow2(_exponent(a, fmt) - fmt.mantissa_bits)


def _gap_down(a: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """Distance from a representable magnitude a > 0 to the next one down (half at powers of 2)."""
    mantissa, e = np.frexp(a)
    exponent = e.astype(np.int64) - 1 - (mantissa == 0.5)
    return _pow2(np.maximum(exponent, fmt.emin) - fmt.mantissa_bits)


def _step_up(y: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """The next representable value above a representable (or infinite) y."""
    with np.errstate(invalid="ignore", over="ignore"):
        a = np.abs(y)
        up = y + _gap_up(a, fmt)
        up = np.where(up > fmt.max_finite, np.inf, up)
        toward_zero = np.where(np.isinf(a), fmt.max_finite, a - _gap_down(a, fmt))
        return np.where(y >= 0, up, -toward_zero)


def next_up(x: np.ndarray | float, fmt: str | FloatFormat) -> np.ndarray:
    """Smallest number of `fmt` strictly above x (+inf past max_finite); x need not be in fmt."""
    f = get_format(fmt)
    x = np.asarray(x, dtype=np.float64)
    y = round_to(x, f)
    return np.where(y > x, y, _step_up(y, f))


def next_down(x: np.ndarray | float, fmt: str | FloatFormat) -> np.ndarray:
    """Largest number of `fmt` strictly below x (-inf past -max_finite)."""
    return -next_up(-np.asarray(x, dtype=np.float64), fmt)


def _is_even(y: float, fmt: FloatFormat) -> bool:
    """Last mantissa bit of a representable finite y is 0 (zero counts as even)."""
    if y == 0.0:
        return True
    shift = int(_exponent(np.float64(abs(y)), fmt)) - fmt.mantissa_bits
    return math.fmod(math.ldexp(abs(y), -shift), 2.0) == 0.0


@dataclass
class FormatView:
    """Everything about one number in one format: where it lands and what rounds across it.

    `rounds_onto` is the interval of reals that round onto `nearest` (half a gap each side).
    Under ties-to-even both its ends are closed when `nearest` has an even last mantissa bit
    and both are open when it is odd (`rounds_onto_closed`).

    `flip_band` reads `value` as a decision threshold t with decision = score > t: the scores
    s for which round(s) > t differs from s > t, i.e. whose decision changes when a runtime
    returns them in this format. `flip_band_closed` says which of its ends belong to it. It
    lies just above t when t is representable (those scores round down onto t), and on the side
    t was rounded towards when it is not. None when no score flips.
    """

    format: str
    value: float
    nearest: float
    below: float
    above: float
    gap_below: float
    gap_above: float
    rounds_onto: tuple[float, float]
    rounds_onto_closed: bool
    flip_band: tuple[float, float] | None
    flip_band_closed: tuple[bool, bool] | None
    exact: bool

    @property
    def flip_band_width(self) -> float | None:
        if self.flip_band is None:
            return None
        return self.flip_band[1] - self.flip_band[0]

    def in_flip_band(self, scores: np.ndarray | float) -> np.ndarray:
        """Membership of scores in the flip band, ends included or not as the band says."""
        s = np.asarray(scores, dtype=np.float64)
        if self.flip_band is None or self.flip_band_closed is None:
            return np.zeros(s.shape, dtype=bool)
        (low, high), (closed_low, closed_high) = self.flip_band, self.flip_band_closed
        above_low = s >= low if closed_low else s > low
        below_high = s <= high if closed_high else s < high
        return above_low & below_high

    def to_dict(self) -> dict:
        """JSON-ready; infinities become None (JSON has no inf)."""
        def number(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        band = None if self.flip_band is None else [number(v) for v in self.flip_band]
        return {
            "format": self.format, "value": number(self.value), "exact": self.exact,
            "nearest": number(self.nearest), "below": number(self.below),
            "above": number(self.above), "gap_below": number(self.gap_below),
            "gap_above": number(self.gap_above),
            "rounds_onto": [number(v) for v in self.rounds_onto],
            "rounds_onto_closed": self.rounds_onto_closed,
            "flip_band": band,
            "flip_band_closed": None if self.flip_band_closed is None
            else list(self.flip_band_closed),
        }


def _lower_edge(u: float, fmt: FloatFormat) -> tuple[float, bool]:
    """Where the reals rounding onto u (or above it) start, and whether that tie goes to u."""
    d = float(next_down(u, fmt))
    if math.isinf(u):  # u = +inf: overflow starts at the threshold, and the tie overflows
        return fmt.overflow_threshold, True
    if math.isinf(d):  # u = -max_finite: the tie goes to -inf
        return -fmt.overflow_threshold, False
    return (u + d) / 2.0, _is_even(u, fmt)  # exact in float64 for formats up to 51 bits


def _flip_band(t: float, fmt: FloatFormat) -> tuple[tuple[float, float], tuple[bool, bool]] | None:
    """Scores s with (round(s) > t) != (s > t). round(s) > t iff round(s) >= u, the first number
    of fmt above t, iff s lies above the lower edge of u's rounding interval."""
    u = float(next_up(t, fmt))
    edge, tie_to_u = _lower_edge(u, fmt)
    if edge > t:  # scores in (t, edge) round down to <= t
        return (t, edge), (False, not tie_to_u)
    if edge < t:  # scores in (edge, t] round up to u > t
        return (edge, t), (tie_to_u, True)
    return ((t, t), (True, True)) if tie_to_u else None


def describe(value: float, fmt: str | FloatFormat) -> FormatView:
    """The FormatView of one finite value in one format."""
    f = get_format(fmt)
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"value {value}: expected a finite number")
    nearest = float(round_to(value, f))
    below = float(next_down(nearest, f))
    above = float(next_up(nearest, f))
    if math.isinf(nearest):  # overflowed: only the far side is finite
        low = f.overflow_threshold if nearest > 0 else -math.inf
        high = math.inf if nearest > 0 else -f.overflow_threshold
        rounds_onto, closed = (low, high), True
    else:
        low = -f.overflow_threshold if math.isinf(below) else (nearest + below) / 2.0
        high = f.overflow_threshold if math.isinf(above) else (nearest + above) / 2.0
        rounds_onto, closed = (low, high), _is_even(nearest, f)
    band = _flip_band(value, f)
    gaps = (math.inf, math.inf) if math.isinf(nearest) else (nearest - below, above - nearest)
    return FormatView(
        format=f.name, value=value, nearest=nearest, below=below, above=above,
        gap_below=gaps[0], gap_above=gaps[1],
        rounds_onto=rounds_onto, rounds_onto_closed=closed,
        flip_band=None if band is None else band[0],
        flip_band_closed=None if band is None else band[1],
        exact=nearest == value,
    )


def describe_value(
    value: float, formats: Sequence[str | FloatFormat] = ("fp32", "fp16", "bf16", "tf32")
) -> list[FormatView]:
    """One FormatView per format, in the order given."""
    resolved = [get_format(name) for name in formats]  # every bad name fails before any work
    if not resolved:
        raise InputError("no float formats given")
    return [describe(value, f) for f in resolved]
