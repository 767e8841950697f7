"""Pure-NumPy numerical comparison of backend outputs (no runtime imports, no I/O)."""

from modelparity.numerics.error_stats import (
    ErrorAccumulator,
    ErrorStats,
    Log2Histogram,
)

__all__ = ["ErrorAccumulator", "ErrorStats", "Log2Histogram"]
