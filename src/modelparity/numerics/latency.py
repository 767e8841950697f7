"""Latency figures from per-call inference times (pure NumPy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Per-batch inference time after warm-up, measured inside the worker around infer()."""

    warmup: int
    batches: int
    samples: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float  # samples per second of inference time

    @classmethod
    def from_times(cls, seconds: list[float], samples: int, warmup: int) -> Latency:
        times = np.sort(np.asarray(seconds, dtype=np.float64) * 1e3)
        total = float(times.sum()) / 1e3
        return cls(
            warmup=warmup,
            batches=len(times),
            samples=samples,
            p50_ms=_percentile(times, 50),
            p95_ms=_percentile(times, 95),
            mean_ms=float(times.mean()),
            throughput=samples / total if total > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        values = {k: data[k] for k in ("warmup", "batches", "samples")}
        floats = {k: float("nan") if data.get(k) is None else float(data[k])
                  for k in ("p50_ms", "p95_ms", "mean_ms", "throughput")}
        return cls(**values, **floats)


def _percentile(ordered: np.ndarray, q: float) -> float:
    """np.percentile's default (linear) on sorted values. np.percentile itself imports
    numpy.ma on first use, 70 ms of an audit's own time."""
    position = (len(ordered) - 1) * q / 100.0
    low = int(np.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
