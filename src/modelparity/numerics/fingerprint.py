"""Fingerprint: which precision did a backend really use, judged from its error profile.

Why: the round-trip test (`roundtrip`) is blind when the last op runs in FP32 on top of
lower-precision layers (OpenVINO CPU computes BF16 layers and an FP32 Sigmoid/Softmax). The size
and shape of the error against the reference still carry the layers' precision: each format
rounds at its own scale (FP16 and TF32 at 2**-11 relative, BF16 at 2**-8, INT8 coarser). So the
candidate's distribution of log2(relative error) is compared with the distributions of emulated
runs of the same model on the same inputs (FP16, BF16, TF32, INT8) and with FP32 noise (the
reference against itself under another thread count or optimisation level), and the nearest wins,
under rules that keep FP32 reordering noise from ever being called a downcast.

Distances are 1-D Wasserstein (earth mover's) distances in octaves: "how far, in factors of two,
must the candidate's errors move to look like that profile". It is meaningful across profiles
that do not overlap at all, which a divergence (KL) is not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.numerics.error_stats import HIST_BIN_WIDTH, HIST_STOP, Log2Histogram
from modelparity.numerics.roundtrip import RoundTripEvidence

DEFAULT_FLOOR = -24.0
"""log2 relative error below which errors are indistinguishable from zero: half an FP32 ulp."""

DEFAULT_CEILING = 0.0
"""log2 relative error above which errors are all alike: at 100% relative error a value has lost
every digit, and how far beyond it lands depends on how close to zero the reference value was,
not on the precision. Measured on a logistic-regression Sigmoid (outputs down to 1e-30): 7% of
OpenVINO's FP32 outputs had relative errors of 2**20 to 2**64 against ONNX Runtime; without the
ceiling that tail alone put every profile more than 5 octaves away."""

NOISE_QUANTILES = (0.5, 0.999)
"""Quantiles compared with the FP32 noise profile's; the candidate is at noise scale when EITHER
is. A downcast moves the bulk of the distribution by octaves (every element goes through the
low-precision layers), so the median catches it; FP32 implementation differences (another
Sigmoid formula: tiny outputs with large relative error) move only a tail, which is why a high
quantile alone would call them a downcast. The 99.9th percentile (not the maximum) covers a noise
profile that is broad as a whole (batch-size effects)."""

NOISE_MARGIN_OCTAVES = 2.0
"""A candidate whose high quantile is at most this far above the noise profile's is FP32 noise.
Measured FP32 noise varies by about an octave between runs (thread counts, batch sizes); the
nearest downcast, TF32/FP16 at 2**-11, sits many octaves above typical FP32 noise (2**-20..-24)."""

NOISE_CEILING_LOG2 = -20.0
"""A candidate whose median (or 99.9th percentile) relative error is below 2**-20 (16 FP32 ulps)
is FP32 whatever else is near: no downcast format rounds that finely (TF32/FP16 round at
2**-11; a TF32 emulation of a saturating Sigmoid model still had its median at 2**-19.2)."""

UNKNOWN_DISTANCE = 4.0
"""Farther than this (octaves) from every profile means unlike all of them: "unknown". Adjacent
formats' rounding scales are ~3 octaves apart (FP16 2**-11, BF16 2**-8), so a candidate > 4
octaves from all is something else (a broken kernel, an un-emulated mixed precision)."""

WEAK_CONFIDENCE = 0.3
"""Below this confidence the verdict is "inconclusive" (the two nearest profiles are within a
factor 0.7 of each other in distance, e.g. FP16 vs TF32 on a model whose values stay in FP16's
range, or errors shrunk by a saturating last activation): naming the nearest would be a guess,
and a wrong verdict is worse than none. The evidence still names both."""

INCONCLUSIVE = "inconclusive"

_NAMES = {"fp32": "fp32 noise"}


def _name(label: str) -> str:
    return _NAMES.get(label, f"{label} emulation")


def _float(value: Any) -> float:
    """A JSON number back to a float: None (NaN or Inf before `jsonable`) -> NaN."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Profile:
    """A normalised distribution of log2 relative error on a fixed 1/8-octave grid.

    Bin 0 starts at `start` (== `floor` when built by `profile_from_histogram`) and holds exact
    zeros and every error below the floor; `count` is how many elements it summarises (0: empty).
    """

    label: str
    floor: float
    start: float
    bin_width: float
    probabilities: np.ndarray
    count: int

    @property
    def empty(self) -> bool:
        return self.count == 0 or float(self.probabilities.sum()) == 0.0

    def quantile(self, q: float) -> float:
        """log2 relative error at quantile `q` (nearest rank; bin middle, the floor for bin 0)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.empty:
            return math.nan
        cdf = np.cumsum(self.probabilities)
        i = int(np.searchsorted(cdf, q * cdf[-1] * (1 - 1e-12), side="left"))
        i = min(i, cdf.size - 1)
        if i == 0:
            return float(self.start)
        return float(self.start + (i + 0.5) * self.bin_width)

    def to_dict(self) -> dict:
        """JSON-ready; trailing empty bins trimmed."""
        nz = np.flatnonzero(self.probabilities)
        probs = self.probabilities[: int(nz[-1]) + 1] if nz.size else self.probabilities[:0]
        return {
            "label": self.label,
            "floor": float(self.floor),
            "start": float(self.start),
            "bin_width": float(self.bin_width),
            "count": int(self.count),
            "probabilities": [float(p) for p in probs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Inverse of `to_dict`. The trailing empty bins `to_dict` trimmed stay trimmed: the
        grid ends at the last nonzero bin, which changes no quantile, distance or `empty`."""
        return cls(
            label=str(data["label"]),
            floor=float(data["floor"]),
            start=float(data["start"]),
            bin_width=float(data["bin_width"]),
            probabilities=np.array([_float(p) for p in data["probabilities"]],
                                   dtype=np.float64),
            count=int(data["count"]),
        )


def profile_from_histogram(
    label: str,
    hist: Log2Histogram,
    floor: float = DEFAULT_FLOOR,
    ceiling: float = DEFAULT_CEILING,
) -> Profile:
    """Normalise a histogram into a profile, collapsing zeros and sub-floor errors onto the floor
    (and errors above `ceiling` onto the ceiling's bin, see `DEFAULT_CEILING`).

    Why the floor: an error below half an FP32 ulp (2**-24 relative) cannot be told from zero, so
    FP32 noise that happens to be bit-identical and FP32 noise at one ulp must look alike.
    Without it a bit-identical noise profile (all zeros, at -inf) would be further from a true
    FP32 candidate than an FP16 profile is.
    """
    nbins = hist.counts.size
    i0 = int(np.clip(round((floor - hist.start) / hist.bin_width), 0, nbins - 1))
    i1 = int(np.clip(round((ceiling - hist.start) / hist.bin_width), i0, nbins - 1))
    counts = hist.counts[i0 : i1 + 1].astype(np.float64)
    counts[0] += float(hist.counts[:i0].sum()) + hist.zero_count
    counts[-1] += float(hist.counts[i1 + 1 :].sum())
    total = hist.total
    probs = counts / total if total else np.zeros_like(counts)
    start = float(hist.start + i0 * hist.bin_width)
    return Profile(label, start, start, float(hist.bin_width), probs, int(total))


def _regrid(p: Profile, start: float, nbins: int) -> np.ndarray:
    """`p`'s probabilities on the grid starting at `start` (>= p.start: lower mass collapses
    onto bin 0) with `nbins` bins (mass beyond the end collapses onto the last bin)."""
    out = np.zeros(nbins)
    offset = round((p.start - start) / p.bin_width)  # where p's bin 0 lands
    src = p.probabilities
    if offset < 0:
        out[0] += src[: -offset].sum()
        src, offset = src[-offset:], 0
    if offset >= nbins:
        out[-1] += src.sum()
        return out
    n = min(src.size, nbins - offset)
    out[offset : offset + n] += src[:n]
    out[-1] += src[n:].sum()
    return out


def _common_grid(profiles: list[Profile]) -> tuple[float, float, int]:
    """(start, bin_width, nbins): the highest floor (below it nothing can be told apart), to
    the furthest end. All profiles must share a bin width."""
    widths = {p.bin_width for p in profiles}
    if len(widths) != 1:
        raise ValueError(f"profiles have different bin widths: {sorted(widths)}")
    width = widths.pop()
    start = max(p.start for p in profiles)
    end = max(p.start + p.probabilities.size * p.bin_width for p in profiles)
    return start, width, max(1, round((end - start) / width))


def merge_profiles(label: str, profiles: list[Profile]) -> Profile:
    """Several outputs' profiles -> one, each weighted by its element count."""
    if not profiles:
        nbins = round((HIST_STOP - DEFAULT_FLOOR) / HIST_BIN_WIDTH)
        return Profile(label, DEFAULT_FLOOR, DEFAULT_FLOOR, HIST_BIN_WIDTH, np.zeros(nbins), 0)
    start, width, nbins = _common_grid(profiles)
    total = sum(p.count for p in profiles)
    mass = np.zeros(nbins)
    for p in profiles:
        if p.count:
            mass += p.count * _regrid(p, start, nbins)
    probs = mass / total if total else mass
    return Profile(label, start, start, width, probs, int(total))


def profile_distance(a: Profile, b: Profile) -> float:
    """1-D Wasserstein distance in octaves: sum over the grid of |CDF_a - CDF_b| * bin width.

    NaN when either profile is empty.
    """
    if a.empty or b.empty:
        return math.nan
    start, width, nbins = _common_grid([a, b])
    pa, pb = _regrid(a, start, nbins), _regrid(b, start, nbins)
    pa, pb = pa / pa.sum(), pb / pb.sum()
    return float(np.abs(np.cumsum(pa) - np.cumsum(pb)).sum() * width)


@dataclass(frozen=True)
class Fingerprint:
    """The inferred effective precision of one backend, with its evidence."""

    verdict: str
    confidence: float
    distances: dict[str, float]
    evidence: str
    roundtrip: RoundTripEvidence | None = None

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "confidence": float(self.confidence),
            "distances": {k: float(v) for k, v in self.distances.items()},
            "evidence": self.evidence,
            "roundtrip": self.roundtrip.to_dict() if self.roundtrip is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        """Inverse of `to_dict`, from the JSON form (a confidence or distance saved as None by
        `jsonable` is NaN again); the round-trip evidence is rebuilt when it was saved."""
        roundtrip = data.get("roundtrip")
        return cls(
            verdict=str(data["verdict"]),
            confidence=_float(data["confidence"]),
            distances={k: _float(v) for k, v in (data.get("distances") or {}).items()},
            evidence=str(data.get("evidence", "")),
            roundtrip=RoundTripEvidence.from_dict(roundtrip) if roundtrip is not None else None,
        )


def _separation(d1: float, d2: float | None) -> float:
    """Confidence from how much nearer the nearest profile is than the runner-up: 1 - d1/d2.

    With a single profile, its distance against `UNKNOWN_DISTANCE` stands in for the runner-up.
    """
    if d2 is None:
        d2 = UNKNOWN_DISTANCE
    if d2 <= 0.0:
        return 0.0
    return float(np.clip(1.0 - d1 / d2, 0.0, 1.0))


def _listing(distances: dict[str, float], skip: str | None = None) -> str:
    return "; ".join(
        f"{'fp32 noise' if k == 'fp32' else k} {d:.2g}" for k, d in distances.items() if k != skip
    )


def _exact_profile(like: Profile) -> Profile:
    """Stand-in FP32 profile when no noise was measured: bit-identical (all at floor)."""
    probs = np.zeros(like.probabilities.size)
    probs[0] = 1.0
    return Profile("fp32", like.floor, like.start, like.bin_width, probs, 1)


def fingerprint(
    candidate: Profile,
    profiles: dict[str, Profile],
    roundtrip: RoundTripEvidence | None = None,
    noise: Sequence[Profile] = (),
    quantized: Sequence[str] = (),
) -> Fingerprint:
    """Name the precision whose error profile the candidate's matches, under these rules:

    (a) FP32 noise is never a downcast: if the candidate's median or 99.9th percentile error is
        within `NOISE_MARGIN_OCTAVES` of the FP32 band or below 2**`NOISE_CEILING_LOG2`, the
        verdict is fp32 whatever profile is nearest ("inconclusive" when a downcast's profile
        is as close, below `WEAK_CONFIDENCE`). The band, at each quantile, is the widest
        of the measured FP32 runs: `noise` (other FP32 implementations: thread counts, batch
        sizes, runtimes), else the profile keyed "fp32". Without a measured noise profile, a
        bit-identical one stands in for distances (evidence says so).
        Confidence: 1 - d_fp32/d_next when fp32 noise is also the nearest profile; when the rule
        overrules a nearer downcast profile the evidence disagrees, and it is half the rule's
        own margin (octaves between the candidate's quantile and the nearest downcast
        profile's, over `UNKNOWN_DISTANCE`), so at most 0.5.
    (b) Significant round-trip evidence wins over the profile: the outputs literally are numbers
        of that format. The evidence text gives both.
    (c) Otherwise the nearest profile; confidence = 1 - d1/d2 (nearest vs runner-up distance);
        "inconclusive" below `WEAK_CONFIDENCE`, "unknown" when every profile is farther than
        `UNKNOWN_DISTANCE` octaves.
    (d) On a model that quantizes itself (`quantized`: its quantizing op types) a verdict from
        the profile is "inconclusive", unless the errors are below any downcast's scale or
        the profile is an FP32 run's to within a bin: the model's own int8 steps make every
        precision's errors alike (measured: ddddocr's OCR model, ONNX Runtime against OpenVINO
        pinned to f32, median relative error 2**-6.7, nearest the BF16 emulation).
    Empty profiles (count 0) are skipped; an empty candidate gives "unknown" unless (b) applies.
    """
    usable = {k: p for k, p in profiles.items() if not p.empty}
    skipped = sorted(set(profiles) - set(usable))
    rt_verdict = roundtrip.verdict if roundtrip is not None else None
    notes: list[str] = []
    if skipped:
        notes.append(f"no data for {', '.join(skipped)}")

    if candidate.empty:
        if rt_verdict is not None:
            return Fingerprint(
                rt_verdict, _rt_confidence(roundtrip), {},
                f"round trip: {roundtrip.text}; no error profile to compare", roundtrip,
            )
        return Fingerprint("unknown", 0.0, {}, "no finite values were compared", roundtrip)

    band = [p for p in noise if not p.empty] or ([usable["fp32"]] if "fp32" in usable else [])
    noise_measured = bool(band)
    if "fp32" not in usable:
        usable["fp32"] = min(band, key=lambda p: profile_distance(candidate, p)) if band \
            else _exact_profile(candidate)
    if not noise_measured:
        notes.append("no FP32 noise measured: compared with bit-identical outputs")
    distances = dict(
        sorted(((k, profile_distance(candidate, p)) for k, p in usable.items()),
               key=lambda kv: kv[1])
    )
    ranked = list(distances.items())
    nearest, d1 = ranked[0]
    d2 = ranked[1][1] if len(ranked) > 1 else None

    scale = ""
    at_noise = False
    fired_q, fired_value = 0.5, math.nan
    for q in NOISE_QUANTILES:
        cand_q = candidate.quantile(q)
        limit = NOISE_CEILING_LOG2
        widest = max((p.quantile(q) for p in band), default=-math.inf)
        if noise_measured:
            limit = max(limit, widest + NOISE_MARGIN_OCTAVES)
        if cand_q <= limit:
            at_noise = True
            fired_q, fired_value = q, cand_q
            scale = f"{q:.1%} of relative errors at or below 2^{cand_q:.1f}"
            if len(band) > 1:
                scale += f" (FP32 noise: up to 2^{widest:.1f} over {len(band)} FP32 runs)"
            elif noise_measured:
                scale += f" (FP32 noise: 2^{widest:.1f})"
            break

    if at_noise:
        verdict = "fp32"
        others = [d for k, d in ranked if k != "fp32"]
        confidence = _separation(distances["fp32"], others[0] if others else None)
        if nearest != "fp32":
            gap = min(usable[k].quantile(fired_q) for k in distances if k != "fp32") - fired_value
            confidence = 0.5 * float(np.clip(gap / UNKNOWN_DISTANCE, 0.0, 1.0))
        text = f"at FP32 noise scale: {scale}; distances: {_listing(distances)} octaves"
        if nearest != "fp32":
            text += f" (nearest is {_name(nearest)}, but its error is within FP32 noise)"
        if confidence < WEAK_CONFIDENCE and others:
            # a downcast's profile is at FP32 noise scale too: never a downcast, but no proof
            # of FP32 either
            rival = next(k for k, _ in ranked if k != "fp32")
            verdict = INCONCLUSIVE
            text = (f"inconclusive: at FP32 noise scale, and so is {_name(rival)} "
                    f"({distances[rival]:.2g} octaves away); {text}")
    elif d1 > UNKNOWN_DISTANCE:
        verdict, confidence = "unknown", 0.0
        text = (
            f"unlike every profile: nearest is {_name(nearest)} at {d1:.2g} octaves "
            f"(more than {UNKNOWN_DISTANCE:g}); {_listing(distances, nearest)}"
        )
    else:
        verdict = nearest
        confidence = _separation(d1, d2)
        rest = _listing(distances, nearest)
        if confidence < WEAK_CONFIDENCE and d2 is not None:
            runner = _name(ranked[1][0])
            verdict = INCONCLUSIVE
            text = (
                f"inconclusive: {_name(nearest)} ({d1:.2g} octaves) and {runner} ({d2:.2g}) "
                f"are about as near; {rest}"
            )
        else:
            text = f"matches {_name(nearest)}: distance {d1:.2g} octaves; {rest}"

    if quantized and verdict not in (INCONCLUSIVE, "unknown") and not _same_as_fp32(
            candidate, distances, verdict):
        text = (f"inconclusive: the model quantizes itself ({', '.join(quantized)}); its int8 "
                f"steps turn any difference before them, FP32 reordering included, into whole "
                f"steps, so its errors cannot tell one float precision from another; the "
                f"profile alone would say {verdict}: {text}")
        verdict, confidence = INCONCLUSIVE, 0.0
    if rt_verdict is not None:
        agree = "agrees" if verdict == rt_verdict else f"alone would say {verdict}"
        text = f"round trip: {roundtrip.text}; error profile {agree}: {text}"
        verdict, confidence = rt_verdict, _rt_confidence(roundtrip)
    elif roundtrip is not None:
        notes.append(f"round trip: {roundtrip.text}")
    if notes:
        text += " [" + "; ".join(notes) + "]"
    return Fingerprint(verdict, float(confidence), distances, text, roundtrip)


def _same_as_fp32(candidate: Profile, distances: dict[str, float], verdict: str) -> bool:
    """On a self-quantized model, what still proves FP32: errors below any downcast's scale,
    or a profile that is an FP32 run's, to within one histogram bin."""
    if candidate.quantile(0.5) <= NOISE_CEILING_LOG2:
        return True
    return verdict == "fp32" and distances.get("fp32", math.inf) <= HIST_BIN_WIDTH


def _rt_confidence(roundtrip: RoundTripEvidence) -> float:
    """Confidence of a round-trip verdict: 1 - its p-value (>= 1 - alpha when significant)."""
    row = roundtrip.per_format.get(roundtrip.verdict or "", {})
    return float(np.clip(1.0 - row.get("p_value", 1.0), 0.0, 1.0))
