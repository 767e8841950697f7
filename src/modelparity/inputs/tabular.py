"""CSV and Parquet tables, read in chunks (pandas `chunksize`, pyarrow `iter_batches`).

Columns map to inputs in one of two ways, fixed when the source is opened:
- by name: every model input is a column (rank-1 `[n]` or `[n, 1]` inputs);
- as features: a model with a single rank-2 input takes all columns but the excluded ones, in
  file order.
pandas and pyarrow are optional (`modelparity[tabular]`), so they are imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelparity.errors import InputError
from modelparity.inputs.base import Batch, conform_batch, input_text, one_line, rebatch
from modelparity.model.signature import Signature


def _import(module: str, where: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise InputError(
            f"{where}: reading tables needs {module.split('.')[0]}; install modelparity[tabular]"
        ) from exc


@dataclass(frozen=True)
class ColumnMap:
    """Which columns feed which input: by name, or all of `features` stacked into one input."""

    by_name: tuple[tuple[str, str, bool], ...] = ()  # (input, column, as [n, 1])
    features_input: str | None = None
    features: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        if self.features_input is not None:
            return self.features
        return tuple(col for _, col, _ in self.by_name)


def map_columns(
    columns: list[str], signature: Signature, exclude: tuple[str, ...], where: str
) -> ColumnMap:
    for col in exclude:
        if col not in columns:
            raise InputError(
                f"{where}: excluded column '{col}' is not in the file (columns: "
                f"{', '.join(columns)})"
            )
    names = signature.input_names
    by_name_ok = all(
        name in columns and (len(i.shape) == 1 or (len(i.shape) == 2 and i.shape[1] == 1))
        for name, i in zip(names, signature.inputs, strict=True)
    )
    if by_name_ok:
        return ColumnMap(
            by_name=tuple((i.name, i.name, len(i.shape) == 2) for i in signature.inputs)
        )
    if len(signature.inputs) == 1 and len(signature.inputs[0].shape) == 2:
        info = signature.inputs[0]
        features = tuple(c for c in columns if c not in exclude)
        want = info.shape[1]
        if isinstance(want, int) and len(features) != want:
            raise InputError(
                f"{where}: {len(features)} feature columns, but input '{info.name}' takes "
                f"{want} ({input_text(info)}); exclude non-feature columns such as labels"
            )
        if not features:
            raise InputError(f"{where}: no feature columns left after exclusions")
        return ColumnMap(features_input=info.name, features=features)
    for info in signature.inputs:
        if info.name not in columns:
            raise InputError(
                f"{where}: no column '{info.name}' for input '{info.name}' ({input_text(info)}); "
                f"a table needs one column per input, or one rank-2 input fed by all columns"
            )
        if len(info.shape) != 1:
            raise InputError(
                f"{where}: input '{info.name}' ({input_text(info)}) cannot come from one column; "
                f"use .npz for inputs that are not [n] or [n x 1]"
            )
    raise AssertionError("unreachable")


def _column_array(values: Any, column: str, where: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"{where}: column '{column}' is not numeric (dtype {arr.dtype}); exclude it or "
            f"convert it to numbers"
        )
    return arr


def build_chunk(
    columns: dict[str, np.ndarray], cmap: ColumnMap, signature: Signature, where: str
) -> Batch:
    if cmap.features_input is not None:
        stacked = np.column_stack([columns[c] for c in cmap.features])
        return conform_batch({cmap.features_input: stacked}, signature, where)
    batch = {
        name: (columns[col].reshape(-1, 1) if as_2d else columns[col])
        for name, col, as_2d in cmap.by_name
    }
    return conform_batch(batch, signature, where)


@dataclass(frozen=True)
class CsvSource:
    path: str
    name: str
    signature: Signature
    columns: ColumnMap

    @property
    def num_samples(self) -> int | None:
        return None  # counting rows would mean reading the whole file

    def _chunks(self, batch_size: int) -> Iterator[Batch]:
        pd = _import("pandas", self.name)
        try:
            reader = pd.read_csv(
                self.path, chunksize=batch_size, usecols=list(self.columns.columns)
            )
            with reader:
                for frame in reader:
                    cols = {c: _column_array(frame[c].to_numpy(), c, self.name) for c in frame}
                    yield build_chunk(cols, self.columns, self.signature, self.name)
        except InputError:
            raise
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise InputError(f"{self.name}: cannot read CSV ({one_line(exc)})") from exc

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return rebatch(self._chunks(batch_size), batch_size, self.name)

    def describe(self) -> str:
        return f"{self.name} ({len(self.columns.columns)} columns)"


@dataclass(frozen=True)
class ParquetSource:
    path: str
    name: str
    signature: Signature
    columns: ColumnMap
    num_samples: int | None

    def _chunks(self, batch_size: int) -> Iterator[Batch]:
        pq = _import("pyarrow.parquet", self.name)
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(self.path)
            try:
                for rb in pf.iter_batches(
                    batch_size=batch_size, columns=list(self.columns.columns)
                ):
                    cols = {
                        c: _column_array(rb.column(c).to_numpy(zero_copy_only=False), c, self.name)
                        for c in rb.schema.names
                    }
                    yield build_chunk(cols, self.columns, self.signature, self.name)
            finally:
                pf.close()
        except InputError:
            raise
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputError(f"{self.name}: cannot read Parquet ({one_line(exc)})") from exc

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return rebatch(self._chunks(batch_size), batch_size, self.name)

    def describe(self) -> str:
        return f"{self.name} ({len(self.columns.columns)} columns, {self.num_samples} samples)"


def open_csv(path: str, where: str, signature: Signature, exclude: tuple[str, ...]) -> CsvSource:
    pd = _import("pandas", where)
    try:
        header = pd.read_csv(path, nrows=0)
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{where}: empty file (expected a header row and data rows)") from exc
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"{where}: cannot read CSV ({one_line(exc)})") from exc
    columns = [str(c) for c in header.columns]
    _check_rows(path, where, len(columns))
    cmap = map_columns(columns, signature, exclude, where)
    return CsvSource(os.path.abspath(path), where, signature, cmap)


def _check_rows(path: str, where: str, width: int) -> None:
    """Every data row has the header's number of fields, and there is at least one: pandas
    pads a short row with NaN and reads a header-only file as columns of no numbers, both
    silently. One streaming pass, cheaper than one inference pass over the rows."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = csv.reader(handle)
            next(rows, None)  # the header
            count = 0
            for count, row in enumerate(rows, start=1):
                if row and len(row) != width:
                    raise InputError(f"{where}: row {count} has {len(row)} of the header's "
                                     f"{width} values")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{where}: cannot read CSV ({one_line(exc)})") from exc
    if count == 0:
        raise InputError(f"{where}: has a header but no data rows")


def open_parquet(
    path: str, where: str, signature: Signature, exclude: tuple[str, ...]
) -> ParquetSource:
    pq = _import("pyarrow.parquet", where)
    import pyarrow as pa

    try:
        with pq.ParquetFile(path) as pf:
            schema = pf.schema_arrow
            rows = pf.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{where}: cannot read Parquet ({one_line(exc)})") from exc
    cmap = map_columns(list(schema.names), signature, exclude, where)
    for col in cmap.columns:
        kind = schema.field(col).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise InputError(
                f"{where}: column '{col}' is not numeric ({kind}); exclude it or convert it "
                f"to numbers"
            )
    return ParquetSource(os.path.abspath(path), where, signature, cmap, rows)
