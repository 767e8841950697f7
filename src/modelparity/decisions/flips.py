"""Flipped decisions: the samples where a candidate backend decides differently.

The flips are what a user acts on, so each one is listed with the reference score and margin:
a flip close to the boundary is precision noise, a flip far from it is a real defect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.decisions.elements import ElementFlips
from modelparity.decisions.tasks import Decided, DecisionHead
from modelparity.serialize import jsonable


def _float(value: Any) -> float:
    """A JSON number back to a float: None (NaN or Inf before `jsonable`) -> NaN."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
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
    # Outputs decided per element (maps, sequences): each listed sample's flipped element
    # closest to the boundary (`position`, its index within the sample) and how many of the
    # sample's elements flipped; the totals over all samples. None for per-sample decisions.
    position: list | None = None
    flipped_elements: np.ndarray | None = None
    elements: int | None = None
    elements_flipped: int | None = None

    @property
    def rate(self) -> float:
        return self.count / self.total if self.total else 0.0

    @property
    def per_element(self) -> bool:
        return self.elements is not None

    def records(self, limit: int | None = None) -> list[dict]:
        """JSON-ready dicts, closest to the boundary first (smallest reference margin; NaN last)."""
        margin = np.where(np.isnan(self.reference_margin), np.inf, self.reference_margin)
        order = np.lexsort((self.index, margin))
        if limit is not None:
            order = order[: max(0, limit)]
        records = []
        for i in order:
            record = {
                "index": int(self.index[i]),
                "reference_decision": jsonable(self.reference_decision[i]),
                "candidate_decision": jsonable(self.candidate_decision[i]),
                "reference_score": jsonable(float(self.reference_score[i])),
                "candidate_score": jsonable(float(self.candidate_score[i])),
                "reference_margin": jsonable(float(self.reference_margin[i])),
            }
            if self.position is not None:
                record["position"] = [int(p) for p in self.position[i]]
            if self.flipped_elements is not None:
                record["flipped_elements"] = int(self.flipped_elements[i])
            records.append(record)
        return records

    def totals(self) -> dict[str, Any]:
        """count and total (samples), and for per-element decisions the element totals."""
        out: dict[str, Any] = {"count": self.count, "total": self.total}
        if self.per_element:
            out.update(elements=self.elements, elements_flipped=self.elements_flipped)
        return out

    def to_dict(self, limit: int | None = None) -> dict:
        return {**self.totals(), "records": self.records(limit)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Flips:
        """Inverse of `to_dict` and of the report's form (`BackendResult.to_dict`: count, total,
        fraction, "listed"), from the JSON form.

        Only the listed records come back as arrays (in sample-index order); `count` and `total`
        are the saved ones, so `count` may exceed the records (report.json lists at most
        `FLIPS_LISTED`). Scores and margins saved as None (NaN or Inf) come back as NaN, so
        `records(limit)` gives the saved records again for the same limit.
        """
        listed = data.get("listed")
        if listed is None:
            listed = data.get("records") or []
        rows = sorted(listed, key=lambda r: int(r["index"]))
        count = int(data["count"])
        if count < len(rows):
            raise ValueError(f"flips: count {count} is below the {len(rows)} records listed")
        return cls(
            count=count,
            total=int(data["total"]),
            index=np.array([int(r["index"]) for r in rows], dtype=np.int64),
            reference_score=np.array([_float(r["reference_score"]) for r in rows]),
            candidate_score=np.array([_float(r["candidate_score"]) for r in rows]),
            reference_margin=np.array([_float(r["reference_margin"]) for r in rows]),
            reference_decision=[r["reference_decision"] for r in rows],
            candidate_decision=[r["candidate_decision"] for r in rows],
            position=([tuple(r.get("position") or ()) for r in rows]
                      if data.get("elements") is not None else None),
            flipped_elements=(np.array([int(r.get("flipped_elements", 0)) for r in rows],
                                       dtype=np.int64)
                              if data.get("elements") is not None else None),
            elements=None if data.get("elements") is None else int(data["elements"]),
            elements_flipped=(None if data.get("elements_flipped") is None
                              else int(data["elements_flipped"])),
        )


def find_flips(head: DecisionHead, reference: Decided, candidate: Decided,
               elements: ElementFlips | None = None) -> Flips:
    """Compare a whole run's decisions; sample indices are positions in the run. With
    `elements` (an output decided per element, compared as it ran) the flips are its samples
    with any flipped element."""
    if elements is not None:
        return _element_flips(elements)
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


def _element_flips(elements: ElementFlips) -> Flips:
    index = np.flatnonzero(elements.flipped > 0)
    return Flips(
        count=int(index.size),
        total=len(elements),
        index=index,
        reference_score=elements.reference_score[index].astype(np.float64),
        candidate_score=elements.candidate_score[index].astype(np.float64),
        reference_margin=elements.reference_margin[index].astype(np.float64),
        reference_decision=[jsonable(v) for v in elements.reference_decision[index]],
        candidate_decision=[jsonable(v) for v in elements.candidate_decision[index]],
        position=[tuple(int(p) for p in row) for row in elements.position[index]],
        flipped_elements=elements.flipped[index].astype(np.int64),
        elements=int(elements.elements.sum()),
        elements_flipped=int(elements.flipped.sum()),
    )
