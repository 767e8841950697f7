"""The model's input/output signature, as the rest of the tool sees it (no runtime involved)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Dim = int | str | None
"""A dimension: an int when fixed, a name when symbolic (e.g. "batch"), None when unknown."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name: "float32", "int64", "bool", ...
    shape: tuple[Dim, ...]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def shape_text(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape) or "scalar"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def input(self, name: str) -> TensorInfo:
        for info in self.inputs:
            if info.name == name:
                return info
        raise KeyError(name)

    def output(self, name: str) -> TensorInfo:
        for info in self.outputs:
            if info.name == name:
                return info
        raise KeyError(name)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]
