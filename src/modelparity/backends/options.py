"""Small helpers for backends: a choice from an option string, and one-line error texts.
Options are declared and checked by each runtime's declaration (`runtime.Option`)."""

from __future__ import annotations

from modelparity.errors import SpecError
from modelparity.spec import BackendSpec


def as_choice(spec: BackendSpec, key: str, value: str, choices: dict[str, object]) -> object:
    low = value.strip().lower()
    if low not in choices:
        raise SpecError(
            f"{spec.text}: option {key}={value} is not one of: {', '.join(choices)}"
        )
    return choices[low]


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first meaningful line of an exception, for one-line error messages."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if ln.strip() and not ln.startswith("Exception from ")  # OpenVINO's source locations
    ]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
