"""`module:function` entry points: user code named on the command line (a model factory, an
input feed, a custom decision rule, a backend). One loader, so every kind fails in the same
words and finds the user's modules the same way (the working directory is on the path)."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from modelparity.errors import ModelParityError

ENTRY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def looks_like_entry_point(text: str) -> bool:
    return bool(ENTRY_RE.match(text))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_entry_point(
    entry: str,
    error: type[ModelParityError],
    *,
    expected: str = "module:function",
    directory: str | None = None,
) -> Callable[..., Any]:
    """Import `module:attribute` (dotted attributes allowed) and return it, callable.

    Every failure raises `error` with one line that starts with the entry point and says what
    was expected. `directory` (default: the working directory) is put on sys.path first.
    """
    module_name, _, attribute = entry.partition(":")
    if not module_name or not attribute:
        raise error(f"{entry}: expected {expected}")
    directory = directory or os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise error(f"{entry}: cannot import module '{module_name}' (not found from "
                        f"{directory}); expected {expected}") from None
        raise error(f"{entry}: importing '{module_name}' failed ({_one_line(exc)})") from None
    except Exception as exc:  # the user's module raised while importing
        raise error(f"{entry}: importing '{module_name}' raised {type(exc).__name__}: "
                    f"{_one_line(exc)}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise error(f"{entry}: module '{module_name}' has no attribute '{attribute}'")
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{entry}: '{attribute}' is not callable; expected {expected}")
    return target
