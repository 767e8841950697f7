""".npy / .npz files and directories of them, read batch by batch.

Memory must not grow with the data set, so arrays are never loaded whole: the .npy header is
parsed and then `rows * rowbytes` bytes are read per chunk from the open file, or from the open
zip member for .npz (which works for stored and deflated members alike). No mmap either: touched
pages count as resident memory. Nothing is ever unpickled; object arrays are refused from the
header alone.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from modelparity.errors import InputError
from modelparity.inputs.base import (
    Batch,
    check_meta,
    check_names,
    conform_batch,
    one_line,
    rebatch,
    takes_text,
)
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.model.signature import Signature

# What a corrupt or truncated file can raise while we read it.
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def rows(self) -> int:
        return self.shape[0]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def check_size(self, available: int, where: str) -> None:
        """The header's shape against the bytes that follow it: a forged or truncated header
        (10**12 rows in a 19 KB file) is refused before anything allocates for it."""
        claimed = self.rows * self.row_bytes
        if claimed > available:
            raise InputError(f"{where}: its header claims shape {self.shape} of "
                             f"{self.dtype} ({claimed:,} bytes), but the file holds "
                             f"{available:,} bytes of data: truncated or damaged")


def read_npy_header(f: BinaryIO, where: str) -> NpyHeader:
    """Parse a .npy header, leaving `f` at the first data byte."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # 3.0 (utf-8 field names) has no public reader
            shape, fortran, dtype = np.lib.format._read_array_header(f, version)
    except _READ_ERRORS as exc:
        raise InputError(f"{where}: not a readable .npy array ({one_line(exc)})") from exc
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise InputError(
            f"{where}: holds an object array ({dtype}); only plain numeric arrays are read, "
            f"since object arrays would need unpickling"
        )
    if len(shape) == 0:
        raise InputError(f"{where}: holds a scalar, expected an array with one row per sample")
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran))


def _read_exact(f: BinaryIO, nbytes: int, where: str) -> bytearray:
    buf = bytearray(nbytes)
    view = memoryview(buf)
    got = 0
    try:
        while got < nbytes:
            n = f.readinto(view[got:])
            if not n:
                break
            got += n
    except _READ_ERRORS as exc:
        raise InputError(f"{where}: cannot read array data ({one_line(exc)})") from exc
    if got < nbytes:
        raise InputError(f"{where}: file is truncated ({got} of {nbytes} bytes of array data)")
    return buf


def iter_npy_rows(
    f: BinaryIO, header: NpyHeader, chunk_rows: int, where: str
) -> Iterator[np.ndarray]:
    """Arrays of up to `chunk_rows` rows, read from `f` positioned after the header."""
    row_shape = header.shape[1:]
    if header.fortran_order:
        # Fortran order stores the first axis fastest, so rows are not contiguous on disk: only
        # for these files do we read the whole array (memory grows with the data set).
        total = header.rows * header.row_bytes
        buf = _read_exact(f, total, where)
        whole = np.frombuffer(buf, dtype=header.dtype).reshape(header.shape[::-1]).T
        for start in range(0, header.rows, chunk_rows):
            yield np.ascontiguousarray(whole[start : start + chunk_rows])
        return
    for start in range(0, header.rows, chunk_rows):
        n = min(chunk_rows, header.rows - start)
        if header.row_bytes == 0:
            yield np.empty((n, *row_shape), dtype=header.dtype)
            continue
        buf = _read_exact(f, n * header.row_bytes, where)
        yield np.frombuffer(buf, dtype=header.dtype).reshape((n, *row_shape))


def _open_file(path: str, where: str) -> BinaryIO:
    try:
        return open(path, "rb")  # closed by the caller's `with`
    except OSError as exc:
        raise InputError(f"{where}: cannot open ({one_line(exc)})") from exc


def _open_zip(path: str, where: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (*_READ_ERRORS, zipfile.LargeZipFile) as exc:
        raise InputError(f"{where}: not a readable .npz archive ({one_line(exc)})") from exc


def npz_members(zf: zipfile.ZipFile, where: str) -> dict[str, str]:
    """Array name -> member name (np.savez stores array `x` as member `x.npy`)."""
    out: dict[str, str] = {}
    for member in zf.namelist():
        if member.endswith("/"):
            continue
        if not member.endswith(".npy"):
            raise InputError(f"{where}: member '{member}' is not a .npy array")
        out[member[: -len(".npy")]] = member
    return out


def read_npz_headers(path: str, where: str) -> dict[str, NpyHeader]:
    with _open_zip(path, where) as zf:
        members = npz_members(zf, where)
        headers = {}
        for name, member in members.items():
            try:
                with zf.open(member) as f:
                    header = read_npy_header(f, f"{where}[{name}]")
                    header.check_size(zf.getinfo(member).file_size - f.tell(),
                                      f"{where}[{name}]")
                    headers[name] = header
            except (zipfile.BadZipFile, OSError, zlib.error) as exc:
                raise InputError(
                    f"{where}: cannot read member '{member}' ({one_line(exc)})"
                ) from exc
    return headers


def read_npy_file_header(path: str, where: str) -> NpyHeader:
    with _open_file(path, where) as f:
        header = read_npy_header(f, where)
        header.check_size(os.fstat(f.fileno()).st_size - f.tell(), where)
        return header


def check_headers(headers: dict[str, NpyHeader], signature: Signature, where: str,
                  layout: Layout = DEFAULT_LAYOUT) -> int:
    """Names, lengths, ranks, fixed dims and dtypes, before any data is read. Returns rows
    (samples, along each array's batch axis)."""
    if not headers:
        raise InputError(f"{where}: holds no arrays ({takes_text(signature)})")
    check_names(headers, signature, where, layout.carried_inputs)
    first = None
    for name, header in headers.items():
        shape = list(header.shape)
        axis = layout.axis(name)
        if axis and len(shape) == len(signature.input(name).shape):
            shape.insert(0, shape.pop(axis))
        check_meta(name, header.dtype, tuple(shape), signature.input(name), where)
        rows = shape[0]
        if first is None:
            first = (name, rows)
        elif rows != first[1]:
            raise InputError(
                f"{where}: arrays '{first[0]}' ({first[1]} samples) and '{name}' "
                f"({rows} samples) differ in length; all must share the batch dimension"
            )
    assert first is not None
    return first[1]


def npy_input_name(signature: Signature, where: str) -> str:
    if len(signature.inputs) != 1:
        raise InputError(
            f"{where}: a .npy file holds one array, but the model takes "
            f"{len(signature.inputs)} inputs ({', '.join(signature.input_names)}); "
            f"use a .npz with one array per input name"
        )
    return signature.inputs[0].name


WHOLE = 1 << 62  # rows per chunk that read an array whole


def npy_chunks(
    path: str, name: str, signature: Signature, where: str, rows: int,
    layout: Layout = DEFAULT_LAYOUT,
) -> Iterator[Batch]:
    with _open_file(path, where) as f:
        header = read_npy_header(f, where)
        for arr in iter_npy_rows(f, header, rows, where):
            yield conform_batch({name: arr}, signature, where, layout)


def npz_chunks(path: str, signature: Signature, where: str, rows: int,
               layout: Layout = DEFAULT_LAYOUT) -> Iterator[Batch]:
    """Chunks of `rows` rows along each file's axis 0; a layout that puts some batch on
    another axis reads every array whole (rows=WHOLE)."""
    with _open_zip(path, where) as zf:
        members = npz_members(zf, where)
        streams = {}
        try:
            iters = {}
            for name, member in members.items():
                try:
                    f = zf.open(member)
                except _READ_ERRORS as exc:
                    raise InputError(
                        f"{where}: cannot read member '{member}' ({one_line(exc)})"
                    ) from exc
                streams[name] = f
                header = read_npy_header(f, f"{where}[{name}]")
                iters[name] = iter_npy_rows(f, header, rows, f"{where}[{name}]")
            check_names(iters, signature, where, layout.carried_inputs)
            while True:
                chunk = {name: next(it, None) for name, it in iters.items()}
                if any(v is None for v in chunk.values()):
                    if not all(v is None for v in chunk.values()):
                        raise InputError(
                            f"{where}: arrays differ in length; all must share the first dimension"
                        )
                    return
                yield conform_batch(chunk, signature, where, layout)  # type: ignore[arg-type]
        finally:
            for f in streams.values():
                f.close()


@dataclass(frozen=True)
class NpySource:
    """A single .npy file, for a model with one input."""

    path: str
    name: str  # as the user gave it, for messages
    input_name: str
    signature: Signature
    num_samples: int | None
    layout: Layout = DEFAULT_LAYOUT

    def batches(self, batch_size: int) -> Iterator[Batch]:
        rows = WHOLE if self.layout.moves else batch_size
        return rebatch(
            npy_chunks(self.path, self.input_name, self.signature, self.name, rows, self.layout),
            batch_size,
            self.name,
        )

    def describe(self) -> str:
        return f"{self.name} (1 input, {self.num_samples} samples)"


@dataclass(frozen=True)
class NpzSource:
    """A .npz archive with one array per model input, all with the same number of samples."""

    path: str
    name: str
    signature: Signature
    num_samples: int | None
    layout: Layout = DEFAULT_LAYOUT

    def batches(self, batch_size: int) -> Iterator[Batch]:
        rows = WHOLE if self.layout.moves else batch_size
        return rebatch(npz_chunks(self.path, self.signature, self.name, rows, self.layout),
                       batch_size, self.name)

    def describe(self) -> str:
        n = len(self.signature.inputs)
        return f"{self.name} ({n} input{'s' if n != 1 else ''}, {self.num_samples} samples)"


@dataclass(frozen=True)
class DirectorySource:
    """Sorted .npz/.npy shards read one after another, re-batched across shard boundaries."""

    path: str
    name: str
    shards: tuple[str, ...]  # file names inside `path`, in reading order
    signature: Signature
    num_samples: int | None
    layout: Layout = DEFAULT_LAYOUT

    def _chunks(self, rows: int) -> Iterator[Batch]:
        if self.layout.moves:
            rows = WHOLE
        for shard in self.shards:
            full = os.path.join(self.path, shard)
            where = os.path.join(self.name, shard)
            if shard.lower().endswith(".npz"):
                yield from npz_chunks(full, self.signature, where, rows, self.layout)
            else:
                name = npy_input_name(self.signature, where)
                yield from npy_chunks(full, name, self.signature, where, rows, self.layout)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return rebatch(self._chunks(batch_size), batch_size, self.name)

    def items(self) -> Iterator[Batch]:
        """Each shard whole, as one call."""
        return self._chunks(WHOLE)

    def describe(self) -> str:
        return f"{self.name} ({len(self.shards)} shards, {self.num_samples} samples)"


def open_npy(path: str, where: str, signature: Signature,
             layout: Layout = DEFAULT_LAYOUT) -> NpySource:
    name = npy_input_name(signature, where)
    header = read_npy_file_header(path, where)
    rows = check_headers({name: header}, signature, where, layout)
    return NpySource(os.path.abspath(path), where, name, signature, rows, layout)


def open_npz(path: str, where: str, signature: Signature,
             layout: Layout = DEFAULT_LAYOUT) -> NpzSource:
    rows = check_headers(read_npz_headers(path, where), signature, where, layout)
    return NpzSource(os.path.abspath(path), where, signature, rows, layout)


def open_directory(path: str, where: str, signature: Signature,
                   layout: Layout = DEFAULT_LAYOUT) -> DirectorySource:
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        raise InputError(f"{where}: cannot list directory ({one_line(exc)})") from exc
    shards = tuple(
        e
        for e in entries
        if e.lower().endswith((".npz", ".npy"))
        and not e.startswith(".")
        and os.path.isfile(os.path.join(path, e))
    )
    if not shards:
        raise InputError(
            f"{where}: directory holds no .npz or .npy shards (expected one or more, read in "
            f"sorted order)"
        )
    total = 0
    for shard in shards:
        full, shard_where = os.path.join(path, shard), os.path.join(where, shard)
        if shard.lower().endswith(".npz"):
            total += check_headers(read_npz_headers(full, shard_where), signature, shard_where,
                                   layout)
        else:
            name = npy_input_name(signature, shard_where)
            header = read_npy_file_header(full, shard_where)
            total += check_headers({name: header}, signature, shard_where, layout)
    return DirectorySource(os.path.abspath(path), where, shards, signature, total, layout)
