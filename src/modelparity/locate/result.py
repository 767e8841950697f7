"""What `localize` found, as a frozen result that saves to JSON and loads back (`locate.json`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from modelparity.folders import write_atomic
from modelparity.locate.analyse import NodeError, OpSummary
from modelparity.serialize import json_float

LOCATE_SCHEMA = "1.0"


@dataclass(frozen=True)
class FinalOutput:
    """A model output's error with the intermediates exposed and without: a runtime that fuses
    differently once its intermediates are outputs computes other values (openvino #25744)."""

    name: str
    exposed: float
    plain: float

    @property
    def changed(self) -> bool:
        if math.isnan(self.exposed) or math.isnan(self.plain):
            return math.isnan(self.exposed) != math.isnan(self.plain)
        return not math.isclose(self.exposed, self.plain, rel_tol=0.05, abs_tol=1e-12)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "exposed": json_float(self.exposed),
                "plain": json_float(self.plain), "changed": self.changed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinalOutput:
        def number(key: str) -> float:
            return math.nan if data.get(key) is None else float(data[key])

        return cls(str(data["name"]), number("exposed"), number("plain"))


@dataclass(frozen=True)
class LocateResult:
    model: str
    candidate: str
    reference: str
    precision: str  # the precision the candidate's errors are judged against
    precision_from: str  # "given", or how it was found ("fingerprint: fp16 0.91")
    samples: int
    nodes: tuple[NodeError, ...]  # every compared node, in graph order
    first: str | None  # the first divergent node
    amplifiers: tuple[str, ...]
    by_op: tuple[OpSummary, ...]
    final: tuple[FinalOutput, ...]
    unmatched: tuple[tuple[str, str], ...] = field(default=())
    flips: int | None = None  # the candidate's flips on these samples, intermediates hidden
    yardsticks: dict[str, str] = field(default_factory=dict)  # floor/explained -> spec run
    not_isolated: tuple[tuple[str, str], ...] = field(default=())  # (node, why), --isolate

    @property
    def exposure_changed(self) -> bool:
        return any(f.changed for f in self.final)

    def node(self, name: str) -> NodeError:
        for entry in self.nodes:
            if entry.node == name:
                return entry
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": LOCATE_SCHEMA, "tool": "modelparity locate",
                "model": self.model, "candidate": self.candidate, "reference": self.reference,
                "precision": self.precision, "precision_from": self.precision_from,
                "samples": self.samples, "first": self.first,
                "amplifiers": list(self.amplifiers),
                "by_op": [s.to_dict() for s in self.by_op],
                "final": [f.to_dict() for f in self.final],
                "exposure_changed": self.exposure_changed,
                "unmatched": [{"tensor": t, "why": why} for t, why in self.unmatched],
                "flips": self.flips, "yardsticks": self.yardsticks,
                "not_isolated": [{"node": n, "why": why} for n, why in self.not_isolated],
                # error growth along the graph, ready for a chart: one row per node
                "nodes": [n.to_dict() for n in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocateResult:
        return cls(str(data["model"]), str(data["candidate"]), str(data["reference"]),
                   str(data["precision"]), str(data["precision_from"]), int(data["samples"]),
                   tuple(NodeError.from_dict(n) for n in data["nodes"]), data.get("first"),
                   tuple(data.get("amplifiers") or ()),
                   tuple(OpSummary.from_dict(s) for s in data.get("by_op") or ()),
                   tuple(FinalOutput.from_dict(f) for f in data.get("final") or ()),
                   tuple((u["tensor"], u["why"]) for u in data.get("unmatched") or ()),
                   data.get("flips"), dict(data.get("yardsticks") or {}),
                   tuple((u["node"], u["why"]) for u in data.get("not_isolated") or ()))

    def save(self, path: str) -> str:
        return write_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @classmethod
    def load(cls, path: str) -> LocateResult:
        with open(path) as handle:
            return cls.from_dict(json.load(handle))
