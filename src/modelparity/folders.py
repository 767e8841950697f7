"""The folders modelparity writes results into (`--out`), checked before anything runs.

Why: an audit that finds out at its end that it cannot write its report loses the results
it spent minutes on; a path that is a file, or a folder it may not write, is bad input and
gets one line naming the option, like any other.
"""

from __future__ import annotations

import os
import tempfile

from modelparity.errors import InputError


def output_folder(path: str, option: str = "--out") -> str:
    """Create `path` if missing and prove it can be written (by writing a file: permission
    bits say nothing for root or on some network file systems); return it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise InputError(f"{option} {path}: is a file; expected a folder (created if missing)")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".modelparity-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write there ({exc.strerror or exc})") \
            from None
    return path


REPORT_NAMES = {"html": "report.html", "junit": "results.xml", "markdown": "summary.md"}


def report_files(**paths: str | None) -> None:
    """Check report paths (`--html` and the like) before the audit runs: a folder where a file
    is expected would fail only at the end, with the results in hand."""
    for option, path in paths.items():
        if path and os.path.isdir(path):
            example = os.path.join(path, REPORT_NAMES.get(option, "report"))
            raise InputError(f"--{option} {path}: is a folder; expected a file path such as "
                             f"{example}")


def write_atomic(path: str, text: str) -> str:
    """Write `text` (UTF-8) to `path` through a temporary file beside it, so a reader, or a
    later `--resume`, never finds half a file; the folder is made if missing. Returns `path`."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
    return path
