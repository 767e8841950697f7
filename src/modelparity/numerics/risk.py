"""At-risk samples: which decisions a lower precision *could* flip, known before deployment.

A sample is at risk for a precision when its reference score is within that precision's reach
of the decision boundary. Two reaches, two measures:

- **format** (`at_risk_by_format`): only the final score is rounded to the format. Exact and
  needs no model run, but a lower bound: a backend that computes the whole network in BF16
  moves scores much further than one rounding of the output.
- **error** (`at_risk_by_error`, `at_risk_by_argmax_error`): the margin to the boundary is below
  an empirical error scale, a high quantile of |candidate - reference| measured on an emulation
  of that precision (`error_scale`). Catches error that accumulates through the layers.

After a run, `at_risk_summary(..., flip_indices=...)` says how many of the observed flips the
at-risk set predicted, which is how a user learns to trust (or distrust) the measure.

All functions are pure and work on per-sample arrays, so they fit the streaming design: the
per-sample scores and margins are already kept; errors can be folded into a `Log2Histogram`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelparity.numerics.error_stats import Log2Histogram
from modelparity.numerics.floats import FloatFormat, get_format, round_to

MAX_LISTED_INDICES = 100
"""`AtRisk.to_dict` lists at most this many sample indices; the count is always complete."""


def at_risk_by_format(
    scores: np.ndarray, threshold: float | np.ndarray, fmt: str | FloatFormat
) -> np.ndarray:
    """Scores whose decision `score > threshold` changes once the score is rounded to `fmt`.

    The threshold is not rounded: user code compares in its own precision. This is exactly
    membership of the format's flip band (`FormatView.flip_band`), vectorised. NaN scores are
    never at risk. `threshold` may be an array broadcast against `scores` (multilabel).
    """
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(threshold, dtype=np.float64)
    return (round_to(s, get_format(fmt)) > t) != (s > t)


def at_risk_by_error(margins: np.ndarray, error_scale: float) -> np.ndarray:
    """Samples whose margin (distance to the boundary, >= 0) is below `error_scale`.

    For a threshold task the margin is |score - threshold|: one score moving by up to
    `error_scale` can cross the boundary only if the margin is smaller. Strict, so a zero scale
    puts nothing at risk. NaN margins are never at risk.
    """
    return np.asarray(margins, dtype=np.float64) < float(error_scale)


def at_risk_by_argmax_error(margins: np.ndarray, error_scale: float) -> np.ndarray:
    """Argmax (multiclass) samples whose top1 - top2 margin is below 2 * `error_scale`.

    Both the winning and the runner-up score can move, in opposite directions, by up to
    `error_scale` each, so the gap between them can close by twice that. Here `error_scale`
    should come from per-sample errors over all classes (see `per_sample_abs_error`).
    """
    return at_risk_by_error(margins, 2.0 * float(error_scale))


def per_sample_abs_error(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """|candidate - reference| per sample: as is for (n,), the max over classes for (n, C, ...).

    The max over classes is what matters for argmax: any class may be the one that moves.
    """
    r = np.asarray(reference, dtype=np.float64)
    c = np.asarray(candidate, dtype=np.float64)
    if r.shape != c.shape:
        raise ValueError(f"shape mismatch: reference {r.shape} vs candidate {c.shape}")
    diff = np.abs(c - r)
    return diff if diff.ndim <= 1 else diff.reshape(len(diff), -1).max(axis=1)


def error_scale(errors: np.ndarray | Log2Histogram, quantile: float = 0.999) -> float:
    """The error a precision typically reaches: a high quantile of per-sample absolute errors.

    Accepts either an array of per-sample |candidate - reference| of the decision score (exact:
    the value is an observed error, nearest-rank, NaN ignored, +inf kept since an overflow is a
    real error), or a `Log2Histogram` of those errors filled batch by batch (constant memory).
    From a histogram the answer is the *upper* edge of the quantile's bin, so it errs on the
    side of calling more samples at risk, by at most one bin (1/8 octave, ~9%).
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if isinstance(errors, Log2Histogram):
        return _histogram_upper_quantile(errors, quantile)
    values = np.asarray(errors, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no errors to take a quantile of")
    if np.any(values < 0):
        raise ValueError("errors must be absolute values (>= 0)")
    rank = max(1, math.ceil(quantile * values.size))  # 1-based nearest rank
    return float(np.partition(values, rank - 1)[rank - 1])


def _histogram_upper_quantile(histogram: Log2Histogram, quantile: float) -> float:
    total = histogram.total
    if total == 0:
        raise ValueError("no errors to take a quantile of")
    rank = max(1, math.ceil(quantile * total))
    if rank <= histogram.zero_count:
        return 0.0
    cumulative = np.cumsum(histogram.counts)
    i = int(np.searchsorted(cumulative, rank - histogram.zero_count))
    return float(2.0 ** (histogram.start + (i + 1) * histogram.bin_width))


@dataclass(frozen=True)
class AtRisk:
    """How many samples a precision puts at risk, and (after a run) how many flips that caught."""

    precision: str
    method: str
    count: int
    total: int
    indices: np.ndarray = field(repr=False)
    flips_covered: int | None = None
    flips_total: int | None = None
    scale: float | None = None
    """The reach used: the error scale for the error methods, None for the format method."""

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else math.nan

    @property
    def coverage(self) -> float | None:
        """Share of observed flips that were in the at-risk set (None before a run)."""
        if self.flips_total is None or self.flips_covered is None:
            return None
        return self.flips_covered / self.flips_total if self.flips_total else math.nan

    def to_dict(self) -> dict:
        """JSON-ready; only the first MAX_LISTED_INDICES indices are listed. `indices_truncated`
        also holds for one loaded by `from_dict` that has fewer indices than its count."""
        def number(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "precision": self.precision,
            "method": self.method,
            "count": int(self.count),
            "total": int(self.total),
            "fraction": number(self.fraction),
            "scale": number(self.scale),
            "indices": [int(i) for i in self.indices[:MAX_LISTED_INDICES]],
            "indices_truncated": bool(self.indices.size > MAX_LISTED_INDICES
                                      or self.indices.size < self.count),
            "flips_covered": self.flips_covered,
            "flips_total": self.flips_total,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AtRisk:
        """Inverse of `to_dict`, as far as it goes: `indices` holds only the listed ones (at most
        `MAX_LISTED_INDICES`; `count` stays the full count), and a scale saved as None (none, or
        non-finite) comes back as None. `fraction` is derived from count/total."""
        def optional_int(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        scale = data.get("scale")
        return cls(
            precision=str(data["precision"]),
            method=str(data["method"]),
            count=int(data["count"]),
            total=int(data["total"]),
            indices=np.array([int(i) for i in data.get("indices") or []], dtype=np.int64),
            flips_covered=optional_int("flips_covered"),
            flips_total=optional_int("flips_total"),
            scale=None if scale is None else float(scale),
        )


def at_risk_summary(
    precision: str,
    method: str,
    mask: np.ndarray,
    flip_indices: np.ndarray | None = None,
    scale: float | None = None,
) -> AtRisk:
    """Summarise an at-risk mask; with `flip_indices` (observed flips) also count the hits."""
    mask = np.asarray(mask, dtype=bool).ravel()
    indices = np.flatnonzero(mask)
    covered = total = None
    if flip_indices is not None:
        flips = np.unique(np.asarray(flip_indices, dtype=np.int64))
        if flips.size and (flips.min() < 0 or flips.max() >= mask.size):
            raise ValueError(f"flip indices must lie in [0, {mask.size})")
        covered, total = int(np.count_nonzero(mask[flips])), int(flips.size)
    return AtRisk(precision=precision, method=method, count=int(indices.size),
                  total=int(mask.size), indices=indices, flips_covered=covered,
                  flips_total=total, scale=scale)
