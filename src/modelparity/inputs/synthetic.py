"""Random inputs drawn from the model's signature, for a parity check without a data set.

Data is generated in fixed blocks seeded by (seed, block, input), then re-batched, so sample i
is the same whatever batch size a backend uses, and on every pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from modelparity.errors import InputError
from modelparity.inputs.base import Batch, dims_text, rebatch
from modelparity.model.signature import Signature, TensorInfo

MAX_BLOCK_SAMPLES = 1024
BLOCK_BYTES = 16 * 1024 * 1024  # caps a block of large samples (images) at ~16 MiB

_SHAPE_RE = re.compile(r"^\s*(?P<name>.+?)\s*:\s*(?P<dims>\d+(?:\s*[x,]\s*\d+)*)\s*$")


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`"x:1x3x224x224"` -> `("x", (1, 3, 224, 224))`; the name may itself contain ':'."""
    match = _SHAPE_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise InputError(
            f"--shape {text!r}: expected NAME:DIMS with positive integer dims, e.g. x:1x3x224x224"
        )
    dims = tuple(int(d) for d in re.split(r"\s*[x,]\s*", match["dims"]))
    if any(d <= 0 for d in dims):
        raise InputError(f"--shape {text!r}: dimensions must be positive integers")
    return match["name"], dims


def _example_shape(info: TensorInfo) -> str:
    dims = ["1"] + [str(d) if isinstance(d, int) else "N" for d in info.shape[1:]]
    return f"{info.name}:{'x'.join(dims)}"


def resolve_sample_shape(info: TensorInfo, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """The per-sample shape (without the batch dim) from the signature and any --shape."""
    if len(info.shape) == 0:
        raise InputError(
            f"input '{info.name}' is a scalar (shape []); synthetic inputs need a batch "
            f"dimension, give --data instead"
        )
    if override is not None:
        if len(override) != len(info.shape):
            raise InputError(
                f"--shape {info.name}:{'x'.join(map(str, override))}: input '{info.name}' has "
                f"rank {len(info.shape)} (shape {dims_text(info.shape)})"
            )
        for axis in range(1, len(info.shape)):
            want = info.shape[axis]
            if isinstance(want, int) and override[axis] != want:
                raise InputError(
                    f"--shape {info.name}:{'x'.join(map(str, override))}: dimension {axis} of "
                    f"input '{info.name}' is fixed at {want} (shape {dims_text(info.shape)})"
                )
        return tuple(override[1:])
    dims = info.shape[1:]
    if not all(isinstance(d, int) for d in dims):
        raise InputError(
            f"input '{info.name}' has a dynamic dimension (shape {dims_text(info.shape)}); "
            f"set it with --shape {_example_shape(info)}"
        )
    return tuple(int(d) for d in dims)  # type: ignore[arg-type]


def _draw(
    rng: np.random.Generator,
    dtype: np.dtype,
    size: tuple[int, ...],
    low: float,
    high: float,
) -> np.ndarray:
    if dtype.kind == "b":
        return rng.random(size) < 0.5
    if dtype.kind == "f":
        work = np.float64 if dtype.itemsize > 4 else np.float32
        values = rng.random(size, dtype=work)
        values *= work(high - low)
        values += work(low)
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    ilo, ihi = max(math.ceil(low), info.min), min(math.floor(high), info.max)
    return rng.integers(ilo, ihi, size=size, dtype=dtype, endpoint=True)


@dataclass(frozen=True)
class SyntheticSource:
    """Uniform random inputs: floats in value_range, integers in it (inclusive), random bools."""

    signature: Signature
    sample_shapes: tuple[tuple[int, ...], ...]  # per input, in signature order, no batch dim
    samples: int
    seed: int
    value_range: tuple[float, float]

    @property
    def num_samples(self) -> int | None:
        return self.samples

    @property
    def block_samples(self) -> int:
        """Samples per generated block: depends on the shapes only, never on the batch size."""
        per_sample = sum(
            math.prod(shape) * info.np_dtype.itemsize
            for info, shape in zip(self.signature.inputs, self.sample_shapes, strict=True)
        )
        return max(1, min(MAX_BLOCK_SAMPLES, BLOCK_BYTES // max(1, per_sample)))

    def _blocks(self) -> Iterator[Batch]:
        low, high = self.value_range
        block = self.block_samples
        for index, start in enumerate(range(0, self.samples, block)):
            n = min(block, self.samples - start)
            out: Batch = {}
            for k, (info, shape) in enumerate(
                zip(self.signature.inputs, self.sample_shapes, strict=True)
            ):
                rng = np.random.default_rng([self.seed, index, k])
                out[info.name] = _draw(rng, info.np_dtype, (n, *shape), low, high)
            yield out

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return rebatch(self._blocks(), batch_size, "synthetic inputs")

    def describe(self) -> str:
        n = len(self.signature.inputs)
        return (
            f"synthetic inputs ({n} input{'s' if n != 1 else ''}, {self.samples} samples, "
            f"seed {self.seed})"
        )


def open_synthetic(
    signature: Signature,
    shapes: dict[str, tuple[int, ...]],
    samples: int,
    seed: int,
    value_range: tuple[float, float],
) -> SyntheticSource:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InputError(f"--samples: expected a positive integer, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"--seed: expected a non-negative integer, got {seed!r}")
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--value-range: expected LOW,HIGH, got {value_range!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InputError(f"--value-range: expected finite LOW <= HIGH, got {low},{high}")
    sample_shapes = []
    for info in signature.inputs:
        dtype = info.np_dtype
        if dtype.kind not in "biuf":
            raise InputError(
                f"input '{info.name}' has dtype {dtype}; synthetic inputs cover numbers and bool "
                f"only, give --data instead"
            )
        if dtype.kind in "iu":
            iinfo = np.iinfo(dtype)
            if max(math.ceil(low), iinfo.min) > min(math.floor(high), iinfo.max):
                raise InputError(
                    f"--value-range {low},{high}: holds no {dtype} value for input '{info.name}'"
                )
        sample_shapes.append(resolve_sample_shape(info, shapes.get(info.name)))
    return SyntheticSource(signature, tuple(sample_shapes), samples, seed, (low, high))
