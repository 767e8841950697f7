"""The reference's outputs on disk, so every candidate is compared batch by batch without
holding a data set's worth of outputs in memory, and so `--resume` need not run it again."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

MANIFEST = "manifest.json"


def _file_name(index: int) -> str:
    return f"output_{index}.bin"


class OutputSpool:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.names: list[str] = []
        self.dtypes: list[str] = []
        self.sample_shapes: list[list[int]] = []
        self.rows: list[int] = []
        self.key: str = ""
        self._files: list[Any] = []

    # writing -------------------------------------------------------------------------------
    def begin(self, key: str) -> None:
        os.makedirs(self.directory, exist_ok=True)
        manifest = os.path.join(self.directory, MANIFEST)
        if os.path.exists(manifest):
            os.remove(manifest)  # an unfinished spool must never look finished
        self.key = key

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        if not self._files:
            self.names = list(outputs)
            for index, name in enumerate(self.names):
                array = outputs[name]
                self.dtypes.append(array.dtype.str)
                self.sample_shapes.append(list(array.shape[1:]))
                path = os.path.join(self.directory, _file_name(index))
                self._files.append(open(path, "wb"))  # noqa: SIM115 - closed in finish()
        rows = None
        for index, name in enumerate(self.names):
            array = np.ascontiguousarray(outputs[name], dtype=np.dtype(self.dtypes[index]))
            if list(array.shape[1:]) != self.sample_shapes[index]:
                raise ValueError(
                    f"reference output '{name}' changed shape between batches: "
                    f"{array.shape[1:]} after {tuple(self.sample_shapes[index])}"
                )
            rows = array.shape[0]
            self._files[index].write(array.tobytes())
        self.rows.append(int(rows or 0))

    def finish(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []
        manifest = {"key": self.key, "names": self.names, "dtypes": self.dtypes,
                    "sample_shapes": self.sample_shapes, "rows": self.rows}
        with open(os.path.join(self.directory, MANIFEST), "w") as handle:
            json.dump(manifest, handle)

    def abandon(self) -> None:
        for handle in self._files:
            handle.close()
        self._files = []

    # reading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str, key: str) -> OutputSpool | None:
        """A finished spool made with the same run key, or None."""
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            return None
        with open(path) as handle:
            manifest = json.load(handle)
        if manifest.get("key") != key:
            return None
        spool = cls(directory)
        spool.key = key
        spool.names = manifest["names"]
        spool.dtypes = manifest["dtypes"]
        spool.sample_shapes = manifest["sample_shapes"]
        spool.rows = manifest["rows"]
        return spool

    @property
    def total_rows(self) -> int:
        return sum(self.rows)

    def reader(self) -> SpoolReader:
        """The reference outputs again, read in any number of rows at a time."""
        return SpoolReader(self)


class SpoolReader:
    """Reads a finished spool front to back, `read(rows)` at a time: a candidate's blocks need
    not have the reference's boundaries."""

    def __init__(self, spool: OutputSpool) -> None:
        self.spool = spool
        self.remaining = spool.total_rows
        self._handles = [open(os.path.join(spool.directory, _file_name(i)), "rb")  # noqa: SIM115
                         for i in range(len(spool.names))]

    def read(self, rows: int) -> dict[str, np.ndarray] | None:
        """The next `rows` rows of every output; None when fewer than that are left."""
        if rows > self.remaining:
            return None
        self.remaining -= rows
        out = {}
        for index, name in enumerate(self.spool.names):
            dtype = np.dtype(self.spool.dtypes[index])
            shape = (rows, *self.spool.sample_shapes[index])
            count = int(np.prod(shape))
            out[name] = np.fromfile(self._handles[index], dtype=dtype, count=count).reshape(shape)
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
