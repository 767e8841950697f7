"""Plain JSON values from what the numerics produce, for report.json and every to_dict()."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """NumPy scalars and arrays become numbers and lists, NaN and Inf become None (JSON has
    neither), dicts and sequences are converted all the way down."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_float(value: float) -> float | None:
    """A number as a JSON float: None for NaN and Inf."""
    return jsonable(float(value))
