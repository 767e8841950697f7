"""Decisions made per element of a sample: a probability map decided per pixel, a sequence
decided per time step, a large regression output checked value by value.

Such outputs are far too large to keep per sample, so flips are counted where both sides are
at hand (the candidate's comparison with the spooled reference, one block at a time) and only
per-sample scalars are kept: how many elements flipped, and the flipped element closest to
the boundary (its position, both decisions, scores and the reference's margin). Pure NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Elements:
    """Per-element decisions of one block: arrays of shape (n, *E), samples first."""

    decision: np.ndarray
    score: np.ndarray
    margin: np.ndarray  # distance to the boundary; NaN where the task has none (regression)

    def __len__(self) -> int:
        return int(self.decision.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample element shape E."""
        return tuple(self.decision.shape[1:])


@dataclass(frozen=True)
class ElementFlips:
    """Per sample of a run (or a block): how many elements flipped, of how many, and the
    flipped element shown for it (closest to the boundary; for regression the largest
    difference). Samples without a flip carry position -1 and NaN scores."""

    flipped: np.ndarray  # (n,) int64
    elements: np.ndarray  # (n,) int64
    position: np.ndarray  # (n, R) int64
    reference_decision: np.ndarray  # (n,)
    candidate_decision: np.ndarray  # (n,)
    reference_score: np.ndarray  # (n,) float64
    candidate_score: np.ndarray  # (n,) float64
    reference_margin: np.ndarray  # (n,) float64

    def __len__(self) -> int:
        return int(self.flipped.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in _FIELDS}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ElementFlips:
        return cls(*(np.asarray(arrays[f]) for f in _FIELDS))

    @staticmethod
    def concat(parts: list[ElementFlips]) -> ElementFlips:
        if not parts:
            empty = np.zeros(0, dtype=np.float64)
            none = np.zeros(0, dtype=np.int64)
            return ElementFlips(none, none, np.zeros((0, 0), np.int64), empty, empty, empty,
                                empty, empty)
        return ElementFlips(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in _FIELDS))


_FIELDS = ("flipped", "elements", "position", "reference_decision", "candidate_decision",
           "reference_score", "candidate_score", "reference_margin")


def nearest(elements: Elements) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the decision, score and margin of its element closest to the boundary (a
    sample is as much at risk as its most marginal element)."""
    n = len(elements)
    margin = elements.margin.reshape(n, -1)
    if margin.shape[1] == 0:
        nan = np.full(n, np.nan)
        return np.zeros(n, dtype=elements.decision.dtype), nan, nan.copy()
    key = np.where(np.isnan(margin), np.inf, margin)
    j = np.argmin(key, axis=1)
    rows = np.arange(n)
    return (elements.decision.reshape(n, -1)[rows, j],
            elements.score.reshape(n, -1)[rows, j].astype(np.float64),
            margin[rows, j].astype(np.float64))


def compare(reference: Elements, candidate: Elements, flipped: np.ndarray,
            priority: np.ndarray) -> ElementFlips:
    """Per-sample flip counts of one block. `flipped` is the per-element mask (n, *E);
    `priority` orders a sample's flipped elements (lowest is shown)."""
    n = len(reference)
    shape = reference.shape
    mask = flipped.reshape(n, -1)
    count = mask.sum(axis=1).astype(np.int64)
    key = np.where(mask, np.nan_to_num(priority.reshape(n, -1), nan=np.inf), np.inf)
    j = np.argmin(key, axis=1) if mask.shape[1] else np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    any_flip = count > 0

    def pick(values: np.ndarray, fill: float | None = np.nan) -> np.ndarray:
        flat = values.reshape(n, -1)
        out = flat[rows, j] if flat.shape[1] else np.zeros(n, dtype=flat.dtype)
        if fill is None:
            return out
        out = out.astype(np.float64)
        out[~any_flip] = fill
        return out

    position = (np.stack(np.unravel_index(j, shape), axis=1).astype(np.int64)
                if shape and mask.shape[1] else np.zeros((n, len(shape)), np.int64))
    position[~any_flip] = -1
    return ElementFlips(
        flipped=count,
        elements=np.full(n, mask.shape[1], dtype=np.int64),
        position=position,
        reference_decision=pick(reference.decision, fill=None),
        candidate_decision=pick(candidate.decision, fill=None),
        reference_score=pick(reference.score),
        candidate_score=pick(candidate.score),
        reference_margin=pick(reference.margin),
    )


class ElementFlipAccumulator:
    """Per-sample element flips of a whole run, block by block (per-sample scalars only)."""

    def __init__(self) -> None:
        self._parts: list[ElementFlips] = []

    def update(self, flips: ElementFlips) -> None:
        self._parts.append(flips)

    def result(self) -> ElementFlips:
        return ElementFlips.concat(self._parts)
