"""Turning spec option strings into typed values, with errors that name the option."""

from __future__ import annotations

from modelparity.errors import SpecError
from modelparity.spec import BackendSpec

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


def as_bool(spec: BackendSpec, key: str, value: str) -> bool:
    low = value.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise SpecError(
        f"{spec.text}: option {key}={value} is not a boolean (expected 1/0, true/false)"
    )


def as_int(spec: BackendSpec, key: str, value: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise SpecError(f"{spec.text}: option {key}={value} is not an integer >= {minimum}")
    return number


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
