"""Class names, so that reports say `cat (3) -> dog (5)` instead of `3 -> 5`.

A text file has one name per line, in class-index order (line 1 is class 0); blank lines at
the end are ignored. A .json file holds a list of names in index order, or a mapping either
way: {"0": "cat", "1": "dog"} (index -> name) or {"cat": 0, "dog": 1} (name -> index). An index
a mapping leaves out stays unnamed (its reports show the bare index).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from modelparity.errors import InputError
from modelparity.inputs.base import one_line

MAX_INDEX = 1_000_000  # a mapping's indices become a list: refuse one absurdly sparse


def load_class_names(path: str) -> list[str]:
    """The names of the classes, by index, from a text file or a .json file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: class names file not found")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: class names file is not UTF-8 text ({one_line(exc)})") \
            from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read class names ({one_line(exc)})") from exc
    if os.path.splitext(path)[1].lower() == ".json":
        names = _from_json(path, text)
    else:
        names = _from_text(path, text)
    if not names:
        raise InputError(f"{path}: no class names (expected one name per line, or a .json "
                         "list or mapping)")
    return names


def as_class_names(value: str | Sequence[str] | None) -> list[str] | None:
    """`audit(class_names=...)`: a file to load, a sequence of names, or None."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return load_class_names(os.fspath(value))
    names = list(value)
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise InputError(f"class_names: entry {index} is {type(name).__name__} "
                             f"{name!r}, expected a string")
    if not names:
        raise InputError("class_names: empty (expected one name per class)")
    return names


def _from_text(path: str, text: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise InputError(f"{path}: line {number} is blank (expected one class name per "
                             "line, in class-index order)")
    return [line.strip() for line in lines]


def _from_json(path: str, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({one_line(exc)})") from exc
    if isinstance(data, list):
        for index, name in enumerate(data):
            if not isinstance(name, str):
                raise InputError(f"{path}: entry {index} is {json.dumps(name)[:40]}, expected "
                                 "a list of class-name strings")
        return [name.strip() for name in data]
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON list of class names or a mapping "
                         f"(index -> name or name -> index), got {type(data).__name__}")
    if not data:
        return []
    if all(_is_index(value) for value in data.values()):  # {"cat": 0}
        pairs = [(int(value), str(name)) for name, value in data.items()]
    elif all(isinstance(value, str) for value in data.values()):  # {"0": "cat"}
        pairs = []
        for key, name in data.items():
            try:
                pairs.append((int(key), name))
            except ValueError:
                raise InputError(f"{path}: key {key!r} is not a class index (expected "
                                 '{"0": "cat", ...} or {"cat": 0, ...})') from None
    else:
        raise InputError(f"{path}: a mapping's values must be all class indices "
                         '({"cat": 0, ...}) or all names ({"0": "cat", ...})')
    names: dict[int, str] = {}
    for index, name in pairs:
        if index < 0 or index >= MAX_INDEX:
            raise InputError(f"{path}: class index {index} is out of range (0 to "
                             f"{MAX_INDEX - 1})")
        if index in names:
            raise InputError(f"{path}: duplicate class index {index} ({names[index]!r} and "
                             f"{name!r})")
        names[index] = name.strip()
    return [names.get(i, "") for i in range(max(names) + 1)]


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
