"""How the data maps onto the model's calls: where each tensor keeps its batch, whether the
model's batch is fixed, whether each item of the data is one call, and which outputs are
carried into the next call's inputs (recurrent state).

Inside modelparity every tensor is *canonical*: samples on axis 0. A recurrent state
[layers, B, hidden] has its batch on axis 1; the sources move it to the front once, the worker
moves it back for the runtime and moves every output's batch to the front again. So
re-batching, the spool, comparisons and decisions all work on axis 0 and never need to know.
Pure NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modelparity.errors import InputError
from modelparity.model.signature import Signature, TensorInfo

Batch = dict[str, np.ndarray]
MAX_SLICES = 16  # more than this in front of the batch is no stack of a few state tensors


@dataclass(frozen=True)
class Layout:
    """`axes`: the tensors (inputs and outputs) whose batch is not on axis 0; `carry`:
    (output, input) pairs fed from one call into the next; `per_item`: each item of the data
    is one call, never re-batched; `fixed_batch`: the batch the model's inputs fix."""

    axes: tuple[tuple[str, int], ...] = ()
    carry: tuple[tuple[str, str], ...] = ()
    per_item: bool = False
    fixed_batch: int | None = None

    def axis(self, name: str) -> int:
        return dict(self.axes).get(name, 0)

    def slices(self, name: str, shape: tuple[int, ...]) -> list[tuple[str, tuple]]:
        """A tensor whose batch is not its first axis stacks tensors on the axes before it
        (the layers of a GRU's state, an LSTM's h and c): each slice's name ("hN[1]") and its
        index in the samples-first array, so each is looked at on its own; [] otherwise."""
        axis = self.axis(name)
        stack = tuple(shape[1 : axis + 1])
        if axis == 0 or len(shape) <= axis or not 1 < math.prod(stack) <= MAX_SLICES:
            return []
        return [(f"{name}[{','.join(map(str, index))}]", (slice(None), *index))
                for index in np.ndindex(*stack)]

    @property
    def carried_inputs(self) -> frozenset[str]:
        return frozenset(inp for _, inp in self.carry)

    @property
    def moves(self) -> bool:
        return bool(self.axes)

    def to_canonical(self, arrays: Batch) -> Batch:
        """Model layout -> samples first."""
        return {name: _move(value, self.axis(name), 0) for name, value in arrays.items()}

    def to_model(self, arrays: Batch) -> Batch:
        """Samples first -> the model's layout."""
        return {name: _move(value, 0, self.axis(name)) for name, value in arrays.items()}

    def canonical(self, signature: Signature) -> Signature:
        """The signature with every tensor's batch on axis 0 (what the sources check)."""
        def moved(info: TensorInfo) -> TensorInfo:
            axis = self.axis(info.name)
            if axis == 0:
                return info
            shape = list(info.shape)
            return TensorInfo(info.name, info.dtype, (shape.pop(axis), *shape))
        return Signature(tuple(moved(i) for i in signature.inputs),
                         tuple(moved(o) for o in signature.outputs))

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.axes:
            out["batch_axes"] = dict(self.axes)
        if self.carry:
            out["carry"] = dict(self.carry)
        if self.per_item:
            out["per_item"] = True
        if self.fixed_batch is not None:
            out["fixed_batch"] = self.fixed_batch
        return out


DEFAULT_LAYOUT = Layout()
"""Every batch on axis 0, batches re-sliced to the batch size, nothing carried."""


def _move(value: np.ndarray, source: int, target: int) -> np.ndarray:
    if source == target:
        return value
    return np.moveaxis(np.asarray(value), source, target)


def _batch_symbol(signature: Signature) -> str | None:
    """The name the model gives its batch dimension: a symbolic axis-0 dim of an input."""
    for info in signature.inputs:
        if info.shape and isinstance(info.shape[0], str):
            return info.shape[0]
    return None


def parse_axes(values: list[str] | tuple[str, ...]) -> dict[str, int]:
    """`--batch-axis NAME=AXIS` values."""
    out: dict[str, int] = {}
    for text in values:
        name, sep, axis = text.rpartition("=")
        try:
            number = int(axis)
        except ValueError:
            number = -1
        if not sep or not name or number < 0:
            raise InputError(f"--batch-axis {text}: expected NAME=AXIS with AXIS a "
                             f"non-negative integer, e.g. state=1")
        out[name] = number
    return out


def parse_carry(values: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """`--carry OUTPUT=INPUT` values."""
    out = []
    for text in values:
        output, sep, inp = text.partition("=")
        if not sep or not output or not inp:
            raise InputError(f"--carry {text}: expected OUTPUT=INPUT, e.g. stateN=state")
        out.append((output, inp))
    return tuple(out)


def resolve_layout(signature: Signature, axes: dict[str, int] | None = None,
                   carry: tuple[tuple[str, str], ...] = (), per_item: bool = False) -> Layout:
    """Every tensor's batch axis (given, else where the signature names the batch dimension,
    else 0), the fixed batch, the carried state; one-line errors for what cannot fit."""
    given = dict(axes or {})
    tensors = {t.name: t for t in (*signature.inputs, *signature.outputs)}
    for name, axis in given.items():
        info = tensors.get(name)
        if info is None:
            raise InputError(f"--batch-axis {name}={axis}: '{name}' is not an input or output "
                             f"of the model (inputs: {', '.join(signature.input_names)}; "
                             f"outputs: {', '.join(signature.output_names)})")
        if axis >= max(1, len(info.shape)):
            raise InputError(f"--batch-axis {name}={axis}: '{name}' has rank {len(info.shape)} "
                             f"[{info.shape_text()}], so its axes are 0 to "
                             f"{max(0, len(info.shape) - 1)}")
    symbol = _batch_symbol(signature)
    found: dict[str, int] = {}
    for name, info in tensors.items():
        if name in given:
            found[name] = given[name]
        elif symbol is not None and info.shape and info.shape[0] != symbol \
                and symbol in info.shape:
            found[name] = info.shape.index(symbol)  # the model says where its batch is
    for output, inp in carry:  # a carried state keeps its batch where its input does
        if output in tensors and inp in tensors:
            if output not in found and inp in found:
                found[output] = found[inp]
            elif inp not in found and output in found:
                found[inp] = found[output]
    moved = tuple((name, axis) for name, axis in found.items() if axis)
    fixed = {info.shape[found.get(info.name, 0)] for info in signature.inputs if info.shape}
    fixed_batch = next(iter(fixed)) if len(fixed) == 1 and isinstance(next(iter(fixed)), int) \
        else None
    for output, inp in carry:
        if output not in signature.output_names:
            raise InputError(f"--carry {output}={inp}: '{output}' is not a model output "
                             f"(outputs: {', '.join(signature.output_names)})")
        if inp not in signature.input_names:
            raise InputError(f"--carry {output}={inp}: '{inp}' is not a model input "
                             f"(inputs: {', '.join(signature.input_names)})")
        out_info, in_info = tensors[output], tensors[inp]
        if len(out_info.shape) != len(in_info.shape):
            raise InputError(f"--carry {output}={inp}: output '{output}' [{out_info.shape_text()}]"
                             f" and input '{inp}' [{in_info.shape_text()}] differ in rank")
    return Layout(moved, tuple(carry), per_item or bool(carry), fixed_batch)
