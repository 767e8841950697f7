"""What one backend did, as `execute` hands it to `analyse`: raw accumulations, nothing decided."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelparity.decisions import Decided
from modelparity.decisions.elements import ElementFlips
from modelparity.numerics import ErrorStats
from modelparity.numerics.latency import Latency
from modelparity.numerics.roundtrip import RoundTrip

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class BackendRun:
    """One backend's status, its description, and what its sink accumulated."""

    spec: str
    role: str
    status: str = OK
    error: str | None = None  # one line, when not ok
    failure: dict[str, Any] | None = None  # stage and kind (user|exception|crash|timeout|...)
    description: dict[str, Any] = field(default_factory=dict)
    latency: Latency | None = None
    errors: dict[str, ErrorStats] = field(default_factory=dict)  # per output, candidates only
    decided: Decided | None = None
    roundtrip: RoundTrip | None = None
    element_flips: ElementFlips | None = None  # outputs decided per element: flips per sample
    resumed: bool = False  # read back from an earlier run's folder (--resume)

    @property
    def ok(self) -> bool:
        return self.status == OK
