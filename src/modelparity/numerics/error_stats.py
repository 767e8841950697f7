"""Streaming error statistics for one output tensor: reference vs candidate, batch by batch.

Memory is constant: each `update` folds a batch into running sums, maxima and a fixed-size
histogram of log2(relative error), so a whole evaluation set never has to be held at once.

Definitions (all arithmetic in float64):
- elements where either side is NaN or +-Inf are *excluded* from every statistic except
  `nan_mismatch`, `inf_mismatch` and `nonfinite` (finite in the reference, NaN or +-Inf in the
  candidate: an unbounded error, which the policies count as an infinite max_abs/max_rel/max_ulp);
- relative error = |c - r| / max(|r|, tiny), where tiny is the smallest positive normal of the
  output dtype (1.0 for integer/bool outputs), so a zero reference does not divide by zero;
- ULP distance is measured in the output dtype: floats are mapped to integers that are ordered
  like the floats (the sign-magnitude to two's-complement trick), so the distance counts the
  representable values between the two numbers, across zero too (-0.0 and +0.0 are 0 apart);
- the median relative error is read from the histogram and is approximate within one bin
  (1/8 octave, i.e. a factor of 2**(1/8) ~ 9%).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelparity.errors import InputError
from modelparity.serialize import json_float

HIST_START = -64.0
"""Left edge of bin 0 in log2 units; relative errors below 2**-64 are counted in bin 0."""
HIST_STOP = 64.0
"""Right edge of the last bin; relative errors above 2**64 are counted in the last bin."""
HIST_BIN_WIDTH = 0.125
"""1/8 octave: fine enough to tell FP16 (2**-11) from BF16 (2**-8) rounding apart."""

_UINT_FOR_FLOAT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT_FOR_FLOAT = {2: np.int16, 4: np.int32, 8: np.int64}


# 2^-14, FP16's smallest normal number: below it, relative errors say little about precision
PROFILE_MAGNITUDE_FLOOR = 2.0**-14


@dataclass
class Log2Histogram:
    """Histogram of log2(relative error) for the nonzero errors, plus a count of exact zeros.

    Fixed bin edges make histograms from different batches (or machines) add up exactly.
    """

    start: float
    bin_width: float
    counts: np.ndarray
    zero_count: int = 0

    @classmethod
    def empty(
        cls, start: float = HIST_START, stop: float = HIST_STOP, bin_width: float = HIST_BIN_WIDTH
    ) -> Log2Histogram:
        nbins = round((stop - start) / bin_width)
        return cls(start=start, bin_width=bin_width, counts=np.zeros(nbins, dtype=np.int64))

    @property
    def total(self) -> int:
        """All elements counted: zeros and nonzeros."""
        return int(self.zero_count + self.counts.sum())

    def add(self, rel: np.ndarray) -> None:
        """Fold relative errors (finite, >= 0, float64) into the histogram."""
        if rel.size == 0:
            return
        zeros = int(rel.size - np.count_nonzero(rel))
        nbins = self.counts.size
        with np.errstate(divide="ignore"):
            idx = np.log2(rel)  # log2(0) = -inf lands in bin 0 and is taken out again below
        idx -= self.start
        idx *= 1.0 / self.bin_width
        np.floor(idx, out=idx)
        np.clip(idx, 0, nbins - 1, out=idx)
        counts = np.bincount(idx.astype(np.intp), minlength=nbins)
        counts[0] -= zeros
        self.counts += counts
        self.zero_count += zeros

    def quantile(self, q: float) -> float:
        """Relative error at quantile `q` over all elements (exact zeros count as 0.0).

        Nearest-rank quantile; a nonzero answer is the geometric middle of its bin, so it is
        within half a bin (1/16 octave) of some value in that bin. NaN when the histogram is empty.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        total = self.total
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))  # 1-based rank of the element we want
        if rank <= self.zero_count:
            return 0.0
        cumulative = np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, rank - self.zero_count))
        return float(2.0 ** (self.start + (i + 0.5) * self.bin_width))

    def merge(self, other: Log2Histogram) -> None:
        """Add another histogram with the same bins (e.g. from another shard)."""
        if (other.start, other.bin_width, other.counts.size) != (
            self.start,
            self.bin_width,
            self.counts.size,
        ):
            raise ValueError("cannot merge histograms with different bins")
        self.counts += other.counts
        self.zero_count += other.zero_count

    def to_dict(self) -> dict:
        """JSON-ready form; empty bins at both ends are trimmed and `start` moved to match."""
        nz = np.flatnonzero(self.counts)
        if nz.size:
            first, last = int(nz[0]), int(nz[-1])
            counts = self.counts[first : last + 1]
        else:
            first, counts = 0, self.counts[:0]
        return {
            "start": float(self.start + first * self.bin_width),
            "bin_width": float(self.bin_width),
            "zero_count": int(self.zero_count),
            "counts": [int(c) for c in counts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Log2Histogram:
        """Inverse of `to_dict`, re-padded onto the standard fixed edges so merges still add."""
        histogram = cls.empty()
        offset = round((float(data["start"]) - histogram.start) / histogram.bin_width)
        counts = np.asarray(data["counts"], dtype=np.int64)
        if counts.size:
            histogram.counts[offset : offset + counts.size] = counts
        histogram.zero_count = int(data["zero_count"])
        return histogram


@dataclass
class ErrorStats:
    """Agreement of one output tensor between a reference and a candidate backend."""

    count: int
    max_abs: float
    mean_abs: float
    max_rel: float
    median_rel: float
    max_ulp: int
    cosine: float
    nan_mismatch: int
    inf_mismatch: int
    exact_fraction: float
    log2_rel_hist: Log2Histogram
    # The same histogram over the elements whose reference magnitude is at least
    # PROFILE_MAGNITUDE_FLOOR, less those exactly +-1 in both runs (saturated): the error
    # profile the fingerprint matches. Near zero a relative error measures how a runtime
    # approximates exp/sigmoid tails and flushes tiny values, not the precision it computes
    # in, and those few elements can dominate a small sample.
    profile_hist: Log2Histogram | None = None
    # Elements where the reference is finite and the candidate is NaN or +-Inf: an error of
    # unbounded size, which every error gate must see (they are outside max_abs and the rest).
    nonfinite: int = 0
    # ||c - r|| / ||r|| over the finite elements: the error at the tensor's own scale, which
    # per-node localization compares along the graph (a cancellation or a Softmax over large
    # logits raises it where the inputs' is small). NaN where ||r|| is 0 and c differs.
    norm_error: float = math.nan

    @property
    def max_abs_or_inf(self) -> float:
        """max_abs, or inf where the candidate lost finite values: what gates and tables use."""
        return math.inf if self.nonfinite else self.max_abs

    def to_dict(self) -> dict:
        """JSON-ready: plain ints and floats, NaN/Inf -> None."""
        return {
            "count": int(self.count),
            "max_abs": json_float(self.max_abs),
            "mean_abs": json_float(self.mean_abs),
            "max_rel": json_float(self.max_rel),
            "median_rel": json_float(self.median_rel),
            "max_ulp": int(self.max_ulp),
            "cosine": json_float(self.cosine),
            "nan_mismatch": int(self.nan_mismatch),
            "inf_mismatch": int(self.inf_mismatch),
            "nonfinite": int(self.nonfinite),
            "exact_fraction": json_float(self.exact_fraction),
            "norm_error": json_float(self.norm_error),
            "log2_rel_hist": self.log2_rel_hist.to_dict(),
            "profile_hist": self.profile_hist.to_dict() if self.profile_hist else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ErrorStats:
        """Inverse of `to_dict` (None back to NaN), for results saved by an earlier run."""
        def number(key: str) -> float:
            return float("nan") if data[key] is None else float(data[key])

        return cls(
            count=int(data["count"]), max_abs=number("max_abs"), mean_abs=number("mean_abs"),
            max_rel=number("max_rel"), median_rel=number("median_rel"),
            max_ulp=int(data["max_ulp"]), cosine=number("cosine"),
            nan_mismatch=int(data["nan_mismatch"]), inf_mismatch=int(data["inf_mismatch"]),
            exact_fraction=number("exact_fraction"),
            log2_rel_hist=Log2Histogram.from_dict(data["log2_rel_hist"]),
            profile_hist=(Log2Histogram.from_dict(data["profile_hist"])
                          if data.get("profile_hist") else None),
            nonfinite=int(data.get("nonfinite", 0)),
            norm_error=(math.nan if data.get("norm_error") is None
                        else float(data["norm_error"])),
        )


def _ordered_ints(values: np.ndarray) -> np.ndarray:
    """Map floats to ints whose order and differences match float order and ULP counts.

    IEEE floats are sign-magnitude; negative ones are mapped to minus their magnitude, so that
    -0.0 and +0.0 both map to 0 and the distance across zero is the sum of both magnitudes.
    Done in the float's own integer width (no overflow: -magnitude always fits).
    """
    bits = 8 * values.dtype.itemsize
    signed = values.view(_INT_FOR_FLOAT[values.dtype.itemsize])
    magnitude = signed & signed.dtype.type((1 << (bits - 1)) - 1)
    negative = signed >> (bits - 1)  # all ones for negative floats, zero otherwise
    return (magnitude ^ negative) - negative  # two's-complement negation where negative


def _ulp_distance(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """|ordered(r) - ordered(c)|, exact: int64 for 16/32-bit floats, uint64 for float64."""
    a, b = _ordered_ints(r), _ordered_ints(c)
    if r.dtype.itemsize < 8:
        return np.abs(a.astype(np.int64) - b)
    return _abs_int_distance(a, b)


def _abs_int_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| for int64 arrays as uint64, exact even when the difference exceeds int64."""
    hi = np.maximum(a, b)
    lo = np.minimum(a, b)
    return (hi - lo).view(np.uint64)  # wraps in int64, the unsigned view is the true distance


class ErrorAccumulator:
    """Folds (reference, candidate) batches of one output into running error statistics."""

    def __init__(self, dtype: np.dtype | str) -> None:
        try:
            dt = np.dtype(dtype)
        except TypeError as exc:
            raise InputError(f"output dtype: not a numpy dtype: {dtype!r}") from exc
        if dt.kind == "f" and dt.itemsize not in _UINT_FOR_FLOAT:
            raise InputError(f"output dtype: {dt.name} is not supported (float16/32/64 are)")
        if dt.kind not in "fiub":
            raise InputError(f"output dtype: {dt.name} cannot be compared numerically")
        self.dtype = dt
        self._count = 0
        self._sum_abs = 0.0
        self._max_abs = 0.0
        self._max_rel = 0.0
        self._max_ulp = 0
        self._dot = 0.0
        self._norm_r = 0.0
        self._norm_c = 0.0
        self._sq_diff = 0.0
        self._nan_mismatch = 0
        self._inf_mismatch = 0
        self._nonfinite = 0
        self._exact = 0
        self._hist = Log2Histogram.empty()
        self._profile_hist = Log2Histogram.empty()

    @property
    def _is_float(self) -> bool:
        return self.dtype.kind == "f"

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Fold one batch in. Both arrays must have the same shape; values are cast to `dtype`."""
        reference = np.asarray(reference)
        candidate = np.asarray(candidate)
        if reference.shape != candidate.shape:
            raise ValueError(
                f"shape mismatch: reference {reference.shape} vs candidate {candidate.shape}"
            )
        r = reference.astype(self.dtype, copy=False).ravel()
        c = candidate.astype(self.dtype, copy=False).ravel()
        if r.size == 0:
            return

        if self._is_float:
            r_nan, c_nan = np.isnan(r), np.isnan(c)
            finite = np.isfinite(r) & np.isfinite(c)
            if not finite.all():
                self._nan_mismatch += int(np.count_nonzero(r_nan ^ c_nan))
                inf_pos = (np.isinf(r) | np.isinf(c)) & ~(r_nan | c_nan)
                self._inf_mismatch += int(np.count_nonzero(inf_pos & (r != c)))
                self._nonfinite += int(np.count_nonzero(np.isfinite(r) & ~np.isfinite(c)))
                r, c = r[finite], c[finite]
                if r.size == 0:
                    return
            tiny = float(np.finfo(self.dtype).tiny)
            uint = _UINT_FOR_FLOAT[self.dtype.itemsize]
            self._exact += int(np.count_nonzero(r.view(uint) == c.view(uint)))
            ulp = _ulp_distance(r, c)
        else:
            tiny = 1.0
            self._exact += int(np.count_nonzero(r == c))
            if self.dtype.kind == "u" and self.dtype.itemsize == 8:
                ulp = np.maximum(r, c) - np.minimum(r, c)
            else:
                ulp = _abs_int_distance(r.astype(np.int64), c.astype(np.int64))
        self._max_ulp = max(self._max_ulp, int(ulp.max()))

        with np.errstate(over="ignore", invalid="ignore"):  # huge float64 values -> inf
            r64 = r.astype(np.float64)
            c64 = c.astype(np.float64)
            diff = np.abs(c64 - r64)
            abs_r = np.abs(r64)
            rel = diff / np.maximum(abs_r, tiny)

            self._count += int(r64.size)
            self._sum_abs += float(diff.sum())
            self._max_abs = max(self._max_abs, float(diff.max()))
            self._max_rel = max(self._max_rel, float(rel.max()))
            # einsum, not np.dot: a BLAS dot wakes OpenBLAS's thread pool, which then spins on
            # the cores the backends' workers are timed on
            self._dot += float(np.einsum("i,i->", r64, c64))
            self._norm_r += float(np.einsum("i,i->", r64, r64))
            self._norm_c += float(np.einsum("i,i->", c64, c64))
            self._sq_diff += float(np.einsum("i,i->", diff, diff))
            self._hist.add(rel)
            # Saturated in both runs (a sigmoid's or softmax's exact 1.0) says nothing about
            # the precision: every format holds 1 exactly. A map that is mostly 0 and 1 would
            # otherwise read as FP32 noise whatever ran before its last activation.
            saturated = (diff == 0) & (abs_r == 1.0)
            self._profile_hist.add(rel[(abs_r >= PROFILE_MAGNITUDE_FLOOR) & ~saturated])

    def merge(self, other: ErrorAccumulator) -> None:
        """Add another accumulator of the same dtype (e.g. one per shard)."""
        if other.dtype != self.dtype:
            raise ValueError(f"cannot merge {other.dtype} statistics into {self.dtype}")
        self._count += other._count
        self._sum_abs += other._sum_abs
        self._max_abs = max(self._max_abs, other._max_abs)
        self._max_rel = max(self._max_rel, other._max_rel)
        self._max_ulp = max(self._max_ulp, other._max_ulp)
        self._dot += other._dot
        self._norm_r += other._norm_r
        self._norm_c += other._norm_c
        self._sq_diff += other._sq_diff
        self._nan_mismatch += other._nan_mismatch
        self._inf_mismatch += other._inf_mismatch
        self._nonfinite += other._nonfinite
        self._exact += other._exact
        self._hist.merge(other._hist)
        self._profile_hist.merge(other._profile_hist)

    def _cosine(self) -> float:
        if self._norm_r == 0.0 and self._norm_c == 0.0:
            return 1.0 if self._count else math.nan
        if self._norm_r == 0.0 or self._norm_c == 0.0:
            return math.nan
        value = self._dot / (math.sqrt(self._norm_r) * math.sqrt(self._norm_c))
        return min(1.0, max(-1.0, value))

    def result(self) -> ErrorStats:
        """Statistics so far. With no finite element compared, the float statistics are NaN."""
        n = self._count
        nan = math.nan
        hist = Log2Histogram(
            start=self._hist.start,
            bin_width=self._hist.bin_width,
            counts=self._hist.counts.copy(),
            zero_count=self._hist.zero_count,
        )
        return ErrorStats(
            count=n,
            max_abs=self._max_abs if n else nan,
            mean_abs=self._sum_abs / n if n else nan,
            max_rel=self._max_rel if n else nan,
            median_rel=hist.quantile(0.5),
            max_ulp=self._max_ulp,
            cosine=self._cosine(),
            nan_mismatch=self._nan_mismatch,
            inf_mismatch=self._inf_mismatch,
            exact_fraction=self._exact / n if n else nan,
            log2_rel_hist=hist,
            profile_hist=Log2Histogram(
                start=self._profile_hist.start, bin_width=self._profile_hist.bin_width,
                counts=self._profile_hist.counts.copy(),
                zero_count=self._profile_hist.zero_count),
            nonfinite=self._nonfinite,
            norm_error=self._norm_error(),
        )

    def _norm_error(self) -> float:
        if not self._count:
            return math.nan
        if self._norm_r == 0.0:
            return 0.0 if self._sq_diff == 0.0 else math.nan
        return math.sqrt(self._sq_diff / self._norm_r)
