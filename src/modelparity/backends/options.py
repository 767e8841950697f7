"""Small helpers for backends: a choice from an option string, and one-line error texts.
Options are declared and checked by each runtime's declaration (`runtime.Option`)."""

from __future__ import annotations

import re

from modelparity.errors import SpecError
from modelparity.spec import BackendSpec


def as_choice(spec: BackendSpec, key: str, value: str, choices: dict[str, object]) -> object:
    low = value.strip().lower()
    if low not in choices:
        raise SpecError(
            f"{spec.text}: option {key}={value} is not one of: {', '.join(choices)}"
        )
    return choices[low]


_LOCATION = re.compile(r"^(Exception from |Check '.*' failed at )")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception, for one-line error messages. OpenVINO's
    source locations are skipped, and its summary lines (`-- No conversion rule found for
    operations: ai.onnx.ml.TreeEnsembleClassifier`) are what it says."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if ln.strip() and not _LOCATION.match(ln.strip())
    ]
    summary = [ln[3:] for ln in lines if ln.startswith("-- ")]
    text = "; ".join(summary) if summary else lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
