"""The reference's outputs on disk, so every candidate is compared batch by batch without
holding a data set's worth of outputs in memory, and so `--resume` need not run it again."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
INPUTS = "inputs.bin"  # one uint64 digest per sample of what the reference was fed


def _file_name(index: int) -> str:
    return f"output_{index}.bin"


class OutputSpool:
    """Written one block at a time, in order. Each block's per-sample shapes are recorded:
    images of different sizes give maps of different sizes, block by block."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.names: list[str] = []
        self.dtypes: list[str] = []
        self.chunks: list[tuple[int, list[list[int]]]] = []  # rows, per-sample shape per output
        self.key: str = ""
        self.has_inputs = False
        self._files: list[Any] = []
        self._inputs: Any = None

    # writing -------------------------------------------------------------------------------
    def begin(self, key: str) -> None:
        os.makedirs(self.directory, exist_ok=True)
        manifest = os.path.join(self.directory, MANIFEST)
        if os.path.exists(manifest):
            os.remove(manifest)  # an unfinished spool must never look finished
        self.key = key

    def write(self, outputs: dict[str, np.ndarray], inputs: np.ndarray | None = None) -> None:
        """One block's outputs and, where given, its per-sample input digests."""
        if not self._files:
            self.has_inputs = inputs is not None
            if self.has_inputs:
                self._inputs = open(os.path.join(self.directory, INPUTS), "wb")  # noqa: SIM115
            self.names = list(outputs)
            for index, name in enumerate(self.names):
                self.dtypes.append(outputs[name].dtype.str)
                path = os.path.join(self.directory, _file_name(index))
                self._files.append(open(path, "wb"))  # noqa: SIM115 - closed in finish()
        rows = None
        shapes = []
        for index, name in enumerate(self.names):
            array = np.ascontiguousarray(outputs[name], dtype=np.dtype(self.dtypes[index]))
            if rows is not None and array.shape[0] != rows:
                raise ValueError(f"reference output '{name}' has {array.shape[0]} samples in a "
                                 f"block of {rows}")
            rows = array.shape[0]
            shapes.append([int(d) for d in array.shape[1:]])
            self._files[index].write(array.tobytes())
        rows = int(rows or 0)
        if self.has_inputs:
            digests = np.asarray(inputs if inputs is not None else (), dtype=np.uint64)
            if digests.shape != (rows,):
                raise ValueError(f"{digests.size} input digests for a block of {rows} samples")
            self._inputs.write(digests.tobytes())
        if self.chunks and self.chunks[-1][1] == shapes:  # same shapes: one longer chunk
            self.chunks[-1] = (self.chunks[-1][0] + rows, shapes)
        else:
            self.chunks.append((rows, shapes))

    def _close(self) -> None:
        for handle in (*self._files, *([self._inputs] if self._inputs else [])):
            handle.close()
        self._files = []
        self._inputs = None

    def finish(self) -> None:
        self._close()
        manifest = {"key": self.key, "names": self.names, "dtypes": self.dtypes,
                    "inputs": self.has_inputs,
                    "chunks": [[rows, shapes] for rows, shapes in self.chunks]}
        with open(os.path.join(self.directory, MANIFEST), "w") as handle:
            json.dump(manifest, handle)

    def abandon(self) -> None:
        self._close()

    # reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str, key: str) -> OutputSpool | None:
        """A finished spool made with the same run key, or None."""
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as handle:
                manifest = json.load(handle)
            if manifest.get("key") != key:
                return None
            spool = cls(directory)
            spool.key = key
            spool.names = manifest["names"]
            spool.dtypes = manifest["dtypes"]
            spool.chunks = [(int(rows), shapes) for rows, shapes in manifest["chunks"]]
            spool.has_inputs = bool(manifest.get("inputs"))
            if spool.has_inputs and os.path.getsize(os.path.join(directory, INPUTS)) \
                    != spool.total_rows * 8:
                return None
            for index, dtype in enumerate(spool.dtypes):  # a truncated file is damaged too
                expected = sum(rows * math.prod(shapes[index]) for rows, shapes in spool.chunks)
                path = os.path.join(directory, _file_name(index))
                if os.path.getsize(path) != expected * np.dtype(dtype).itemsize:
                    return None
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None  # an older or damaged spool is run again, never half-read
        return spool

    @property
    def total_rows(self) -> int:
        return sum(rows for rows, _ in self.chunks)

    def columns(self, names: list[str]) -> dict[str, np.ndarray]:
        """Whole outputs, every row, for a spool whose per-sample shapes never change (a few
        samples' intermediate tensors, which `locate --isolate` feeds back to single nodes)."""
        if len(self.chunks) > 1:
            raise ValueError("the spooled outputs change shape between blocks")
        rows, shapes = self.chunks[0] if self.chunks else (0, [[] for _ in self.names])
        out = {}
        for name in names:
            index = self.names.index(name)
            data = np.fromfile(os.path.join(self.directory, _file_name(index)),
                               dtype=np.dtype(self.dtypes[index]))
            out[name] = data.reshape((rows, *shapes[index]))
        return out

    @classmethod
    def finished(cls, directory: str) -> OutputSpool | None:
        """The finished spool in `directory`, whatever run made it, or None."""
        try:
            with open(os.path.join(directory, MANIFEST)) as handle:
                key = json.load(handle).get("key", "")
        except (OSError, ValueError, AttributeError):
            return None
        return cls.load(directory, str(key))

    def reader(self) -> SpoolReader:
        """The reference outputs again, read in any number of rows at a time."""
        return SpoolReader(self)


class SpoolReader:
    """Reads a finished spool front to back, `read(rows)` at a time: a candidate's blocks need
    not have the reference's boundaries, as long as the rows asked for have one shape."""

    def __init__(self, spool: OutputSpool) -> None:
        self.spool = spool
        self.remaining = spool.total_rows
        self._chunk = 0
        self._used = 0  # rows already read from the current chunk
        self._handles = [open(os.path.join(spool.directory, _file_name(i)), "rb")  # noqa: SIM115
                         for i in range(len(spool.names))]
        self._inputs = open(os.path.join(spool.directory, INPUTS), "rb") \
            if spool.has_inputs else None  # noqa: SIM115
        self.last_inputs: np.ndarray | None = None  # the input digests of the rows last read

    def read(self, rows: int) -> dict[str, np.ndarray] | None:
        """The next `rows` rows of every output; None when fewer than that are left. Raises
        ValueError when those rows span blocks of different per-sample shapes."""
        if rows > self.remaining:
            return None
        chunks = self.spool.chunks
        size, shapes = chunks[min(self._chunk, len(chunks) - 1)] if chunks else (0, [])
        if self._used + rows > size:
            # next chunk: consecutive chunks always differ in shape (written ones merge)
            raise ValueError(f"the reference's {rows} rows here have different shapes")
        self._used += rows
        self.remaining -= rows
        if self._used == size and rows:
            self._chunk += 1
            self._used = 0
        out = {}
        for index, name in enumerate(self.spool.names):
            dtype = np.dtype(self.spool.dtypes[index])
            shape = (rows, *shapes[index]) if shapes else (rows,)
            count = int(np.prod(shape))
            out[name] = np.fromfile(self._handles[index], dtype=dtype, count=count).reshape(shape)
        if self._inputs is not None:
            self.last_inputs = np.fromfile(self._inputs, dtype=np.uint64, count=rows)
        return out

    def close(self) -> None:
        for handle in (*self._handles, *([self._inputs] if self._inputs else [])):
            handle.close()
