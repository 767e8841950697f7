"""Flipped decisions: the samples where a candidate backend decides differently.

The flips are what a user acts on, so each one is listed with the reference score and margin:
a flip close to the boundary is precision noise, a flip far from it is a real defect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelparity.decisions.tasks import Decided, DecisionHead
from modelparity.serialize import jsonable


@dataclass
class Flips:
    """The flipped samples of one candidate against the reference, in sample order."""

    count: int
    total: int
    index: np.ndarray
    reference_score: np.ndarray
    candidate_score: np.ndarray
    reference_margin: np.ndarray
    reference_decision: list
    candidate_decision: list

    @property
    def rate(self) -> float:
        return self.count / self.total if self.total else 0.0

    def records(self, limit: int | None = None) -> list[dict]:
        """JSON-ready dicts, closest to the boundary first (smallest reference margin; NaN last)."""
        margin = np.where(np.isnan(self.reference_margin), np.inf, self.reference_margin)
        order = np.lexsort((self.index, margin))
        if limit is not None:
            order = order[: max(0, limit)]
        return [
            {
                "index": int(self.index[i]),
                "reference_decision": jsonable(self.reference_decision[i]),
                "candidate_decision": jsonable(self.candidate_decision[i]),
                "reference_score": jsonable(float(self.reference_score[i])),
                "candidate_score": jsonable(float(self.candidate_score[i])),
                "reference_margin": jsonable(float(self.reference_margin[i])),
            }
            for i in order
        ]

    def to_dict(self, limit: int | None = None) -> dict:
        return {"count": self.count, "total": self.total, "records": self.records(limit)}


def find_flips(head: DecisionHead, reference: Decided, candidate: Decided) -> Flips:
    """Compare a whole run's decisions; sample indices are positions in the run."""
    mask = np.asarray(head.flipped(reference, candidate), dtype=bool)
    index = np.flatnonzero(mask)
    return Flips(
        count=int(index.size),
        total=len(reference),
        index=index,
        reference_score=np.asarray(reference.score, dtype=np.float64)[index],
        candidate_score=np.asarray(candidate.score, dtype=np.float64)[index],
        reference_margin=np.asarray(reference.margin, dtype=np.float64)[index],
        reference_decision=[jsonable(v) for v in reference.decision[index]],
        candidate_decision=[jsonable(v) for v in candidate.decision[index]],
    )
