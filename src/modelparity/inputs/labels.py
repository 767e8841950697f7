"""Ground-truth labels, for metrics next to the flips. Labels are one small value per sample, so
they are loaded whole (unlike inputs). CSV is parsed with the standard library, so labels need
no pandas.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from modelparity.errors import InputError
from modelparity.inputs.base import one_line


def _number(text: str) -> int | float | None:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def _load_npy(path: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # also raised for object arrays, instead of unpickling
        raise InputError(f"{path}: not a plain numeric .npy array ({one_line(exc)})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read labels ({one_line(exc)})") from exc
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: expected a .npy array of labels, got an archive")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: labels have dtype {arr.dtype}, expected numbers")
    if arr.ndim not in (1, 2):
        raise InputError(
            f"{path}: labels have shape {arr.shape}, expected (n,) or (n, classes) for multilabel"
        )
    return arr


def _load_csv(path: str) -> np.ndarray:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read labels ({one_line(exc)})") from exc
    if rows and any(_number(cell) is None for cell in rows[0]):
        rows = rows[1:]  # a header row: the first row is not all numbers
    if not rows:
        raise InputError(f"{path}: no labels (expected one row per sample)")
    width = len(rows[0])
    values: list[list[int | float]] = []
    for line, row in enumerate(rows, start=1):
        if len(row) != width:
            raise InputError(f"{path}: label row {line} has {len(row)} columns, expected {width}")
        parsed = [_number(cell) for cell in row]
        for col, value in enumerate(parsed):
            if value is None:
                raise InputError(
                    f"{path}: label row {line}, column {col + 1} is {row[col].strip()!r}, "
                    f"expected a number"
                )
        values.append(parsed)  # type: ignore[arg-type]
    is_int = all(isinstance(v, int) for row in values for v in row)
    try:
        arr = np.array(values, dtype=np.int64 if is_int else np.float64)
    except OverflowError as exc:
        raise InputError(f"{path}: a label does not fit int64 ({one_line(exc)})") from exc
    return arr[:, 0] if width == 1 else arr


def load_labels(path: str) -> np.ndarray:
    """`(n,)` class labels, or `(n, C)` for multilabel, from .npy or .csv."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: labels file not found")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        arr = _load_npy(path)
    elif ext == ".csv":
        arr = _load_csv(path)
    else:
        raise InputError(f"{path}: labels must be a .npy or .csv file")
    if arr.shape[0] == 0:
        raise InputError(f"{path}: no labels (expected one per sample)")
    return arr
