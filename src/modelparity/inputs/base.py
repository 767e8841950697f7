"""What every input source shares: the protocol, the dtype/shape contract, and re-batching.

Sources yield chunks of any size; `rebatch` turns them into exact `batch_size` batches so each
source only has to know how to read its format. `conform_batch` is the single place that decides
which arrays a model input accepts, so every source reports mismatches in the same words.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelparity.errors import InputError
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.model.signature import Signature, TensorInfo

Batch = dict[str, np.ndarray]


@runtime_checkable
class InputSource(Protocol):
    """A re-iterable, picklable stream of input batches (the same batches on every call)."""

    def batches(self, batch_size: int) -> Iterator[Batch]: ...

    @property
    def num_samples(self) -> int | None: ...

    def describe(self) -> str: ...


def one_line(exc: BaseException) -> str:
    """A library exception as one short line, so our messages stay one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def dims_text(shape: tuple[object, ...]) -> str:
    return " x ".join("?" if d is None else str(d) for d in shape) or "scalar"


def input_text(info: TensorInfo) -> str:
    """`x float32 [batch x 30]`: how the model's inputs are shown in messages."""
    return f"{info.name} {info.dtype} [{dims_text(info.shape)}]"


def takes_text(signature: Signature) -> str:
    return "the model takes: " + ", ".join(input_text(i) for i in signature.inputs)


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"--batch-size: expected a positive integer, got {batch_size!r}")


def check_names(names: Iterable[str], signature: Signature, where: str,
                optional: frozenset[str] = frozenset()) -> None:
    """Unknown and missing input names, named against the model's inputs (`optional`: carried
    state, which only an item that starts a sequence gives)."""
    names = list(names)
    expected = signature.input_names
    for name in names:
        if name not in expected:
            raise InputError(
                f"{where}: input '{name}' is not a model input ({takes_text(signature)})"
            )
    for name in expected:
        if name not in names and name not in optional:
            raise InputError(f"{where}: missing input '{name}' ({takes_text(signature)})")


def check_meta(
    name: str, dtype: np.dtype, shape: tuple[int, ...], info: TensorInfo, where: str
) -> np.dtype:
    """Check an array's dtype and shape (dim 0 = samples) against a model input.

    Returns the dtype to cast to. Works from metadata alone, so .npy/.npz headers can be
    checked before any data is read.
    """
    dtype = np.dtype(dtype)
    target = info.np_dtype
    what = f"{where}: input '{name}'"
    if len(shape) != len(info.shape):
        raise InputError(
            f"{what} has shape [{dims_text(shape)}] (rank {len(shape)}), expected rank "
            f"{len(info.shape)} ({input_text(info)})"
        )
    for axis in range(1, len(shape)):
        want = info.shape[axis]
        if isinstance(want, int) and shape[axis] != want:
            raise InputError(
                f"{what} has shape [{dims_text(shape)}], expected dimension {axis} to be {want} "
                f"({input_text(info)})"
            )
    if dtype == target:
        return target
    kind, tkind = dtype.kind, target.kind
    if dtype.hasobject or kind in "OSUVMmc" or tkind in "OSUVMmc":
        raise InputError(
            f"{what} has dtype {dtype}, which cannot be fed as {target} ({input_text(info)})"
        )
    if kind == "b" or tkind == "b":
        raise InputError(
            f"{what} has dtype {dtype}, expected {target}: bool is not converted to or from "
            f"numbers ({input_text(info)})"
        )
    if kind == "f" and tkind in "iu":
        raise InputError(
            f"{what} has dtype {dtype}, expected {target}: floats are not rounded to integers "
            f"({input_text(info)})"
        )
    # Left: float->float, int->int (range checked on the data), int->float.
    return target


def conform_batch(batch: dict[str, np.ndarray], signature: Signature, where: str,
                  layout: Layout = DEFAULT_LAYOUT) -> Batch:
    """Check a batch against the model's inputs and cast it to the model's dtypes.

    `signature` is canonical (samples on axis 0). With `layout`, the batch is in the model's
    own layout and each input's batch axis is moved to the front first; inputs it carries
    from one call to the next may be absent.

    Same-kind casts (float64->float32, int32->int64) and int->float are done; float->int,
    anything<->bool, object and string arrays are refused, since they would silently change
    what the model sees. Integer narrowing is refused when values do not fit, and so
    are float values that overflow the narrower float to inf.
    """
    if not isinstance(batch, dict):
        raise InputError(f"{where}: expected a dict of arrays, got {type(batch).__name__}")
    check_names(batch.keys(), signature, where, layout.carried_inputs)
    out: Batch = {}
    rows: tuple[str, int] | None = None
    for info in signature.inputs:
        if info.name not in batch:
            continue
        value = batch[info.name]
        try:
            arr = np.asarray(value)
        except Exception as exc:  # arbitrary user objects: report, never a traceback
            raise InputError(
                f"{where}: input '{info.name}' is not an array ({one_line(exc)})"
            ) from exc
        if arr.ndim == 0 and not info.shape:  # a scalar input (a sample rate): every call's own
            out[info.name] = arr.astype(check_meta(info.name, arr.dtype, (), info, where))
            continue
        if arr.ndim == 0:
            raise InputError(
                f"{where}: input '{info.name}' is a scalar, expected a batch ({input_text(info)})"
            )
        axis = layout.axis(info.name)
        if axis:
            if arr.ndim != len(info.shape):
                raise InputError(f"{where}: input '{info.name}' has rank {arr.ndim}, expected "
                                 f"{len(info.shape)} with its batch on axis {axis}")
            arr = np.moveaxis(arr, axis, 0)
        target = check_meta(info.name, arr.dtype, arr.shape, info, where)
        if rows is None:
            rows = (info.name, arr.shape[0])
        elif arr.shape[0] != rows[1]:
            raise InputError(
                f"{where}: inputs '{rows[0]}' ({rows[1]} samples) and '{info.name}' "
                f"({arr.shape[0]} samples) differ in length"
            )
        if arr.dtype != target:
            narrowing = arr.dtype.kind in "iu" and target.kind in "iu"
            if narrowing and arr.size and not np.can_cast(arr.dtype, target, "safe"):
                lo, hi = np.iinfo(target).min, np.iinfo(target).max
                amin, amax = int(arr.min()), int(arr.max())
                if amin < lo or amax > hi:
                    raise InputError(
                        f"{where}: input '{info.name}' has values in [{amin}, {amax}], "
                        f"which do not fit {target} ({input_text(info)})"
                    )
            with np.errstate(over="ignore"):
                cast = arr.astype(target)
            if arr.dtype.kind == "f" and target.kind == "f" and arr.size:
                overflow = np.isinf(cast) & np.isfinite(arr)  # float64 beyond float32's range
                if overflow.any():
                    value = arr[overflow].flat[0]
                    raise InputError(
                        f"{where}: input '{info.name}' has values such as {value:.6g}, which "
                        f"overflow {target} to inf ({input_text(info)})")
            arr = cast
        out[info.name] = arr
    return out


def rows_of(chunk: Batch) -> int:
    """Samples in a batch (scalar inputs, the same for every sample, do not count)."""
    return next((v.shape[0] for v in chunk.values() if np.ndim(v)), 0)


@functools.lru_cache(maxsize=64)
def _word_weights(seed: int, words: int) -> np.ndarray:
    """Odd weights, one per 8-byte word of a sample, drawn from the input's name: a word
    changed anywhere in a sample, or two swapped, changes its digest (a mix, not a
    cryptographic hash). Drawn once per input and width, not once per batch."""
    weights = np.random.default_rng(seed).integers(0, 2**63, words, dtype=np.uint64) * 2 + 1
    weights.flags.writeable = False
    return weights


def row_digests(chunk: Batch) -> np.ndarray:
    """One 64-bit digest per sample of what a batch feeds (uint64, `rows_of(chunk)` long):
    every worker reads the inputs itself, so the audit compares these, sample by sample, to
    know that every backend was fed the same data whatever its batch size. Scalar inputs, the
    same for every sample, count in every row."""
    import hashlib

    rows = rows_of(chunk)
    digests = np.full(rows, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for name in sorted(chunk):
        value = np.asarray(chunk[name])
        seed = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        if value.dtype.kind in "OUSV":  # text or objects: each sample's bytes hashed
            per_row = value.reshape(rows, -1) if value.ndim else np.repeat(value, rows)
            column = np.array([int.from_bytes(hashlib.blake2b(
                repr(row.tolist()).encode(), digest_size=8).digest(), "little")
                for row in per_row], dtype=np.uint64)
        else:
            data = np.ascontiguousarray(value).reshape(rows, -1) if value.ndim else \
                np.broadcast_to(np.ascontiguousarray(value).reshape(1, -1), (rows, value.size))
            raw = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)
            pad = -raw.shape[1] % 8
            if pad:
                raw = np.concatenate([raw, np.zeros((rows, pad), np.uint8)], axis=1)
            words = raw.view(np.uint64)
            weights = _word_weights(seed, words.shape[1])
            column = (words * weights).sum(axis=1, dtype=np.uint64) \
                ^ np.uint64(words.shape[1] * 0x100000001B3 % 2**64)
        digests = digests * np.uint64(0x100000001B3) ^ column ^ np.uint64(seed)
    return digests


def _head(chunk: Batch, rows: int) -> Batch:
    return {k: v[:rows] if np.ndim(v) else v for k, v in chunk.items()}


def _tail(chunk: Batch, rows: int) -> Batch:
    return {k: v[rows:] if np.ndim(v) else v for k, v in chunk.items()}


def _concat(parts: list[Batch], where: str) -> Batch:
    if len(parts) == 1:
        return parts[0]
    out: Batch = {}
    for name in parts[0]:
        if not np.ndim(parts[0][name]):  # a scalar input: one value for every sample
            out[name] = parts[0][name]
            continue
        try:
            out[name] = np.concatenate([p[name] for p in parts])
        except ValueError as exc:
            shapes = sorted({dims_text(p[name].shape[1:]) for p in parts})
            raise InputError(
                f"{where}: input '{name}' changes its per-sample shape between chunks "
                f"({', '.join(shapes)}); it must be the same for all samples"
            ) from exc
    return out


def rebatch(chunks: Iterable[Batch], batch_size: int, where: str) -> Iterator[Batch]:
    """Chunks of any size in, batches of exactly `batch_size` out (the last may be short).

    Holds at most one batch plus one chunk: a large chunk is sliced (views, no copy), small
    chunks are concatenated once per batch.
    """
    check_batch_size(batch_size)
    pending: list[Batch] = []
    count = 0
    keys: set[str] | None = None
    for chunk in chunks:
        if keys is None:
            keys = set(chunk)
        elif set(chunk) != keys:
            raise InputError(
                f"{where}: chunks disagree on input names ({', '.join(sorted(keys))} vs "
                f"{', '.join(sorted(chunk))})"
            )
        n = rows_of(chunk)
        if n == 0:
            continue
        pending.append(chunk)
        count += n
        while count >= batch_size:
            merged = _concat(pending, where)
            yield _head(merged, batch_size)
            count -= batch_size
            pending = [_tail(merged, batch_size)] if count else []
    if count:
        yield _concat(pending, where)


def calls(source: InputSource, batch_size: int, layout: Layout = DEFAULT_LAYOUT
          ) -> Iterator[Batch]:
    """What each inference call is fed, samples first: batches of `batch_size`, or with a
    per-item layout each item of the source as it came."""
    if layout.per_item:
        items = getattr(source, "items", None)
        if items is None:
            raise InputError(f"{source.describe()}: cannot be read item by item (--per-item, "
                             f"--carry); give a module:function feed or a directory of .npz "
                             f"shards, one item each")
        return iter(items())
    return iter(source.batches(batch_size))


def first_call(source: InputSource, batch_size: int, layout: Layout = DEFAULT_LAYOUT
               ) -> Batch | None:
    """What the first inference call is fed, the source closed right after (a feed's
    generator is not left half-read)."""
    gen = calls(source, batch_size, layout)
    try:
        return next(gen, None)
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()


def check_inputs(source: InputSource, signature: Signature, batch_size: int,
                 layout: Layout = DEFAULT_LAYOUT) -> None:
    """Fail early, in the parent, on data that does not fit the model: read one batch (one
    item, per item). With carried state, the first item must start a sequence: give it."""
    first = first_call(source, batch_size, layout)
    if first is None or rows_of(first) == 0:
        raise InputError(f"{source.describe()}: no samples (expected at least one)")
    for output, name in layout.carry:
        if name not in first:
            raise InputError(f"{source.describe()}: the first item must give '{name}' (the "
                             f"state that starts a sequence; later items may leave it out to "
                             f"carry '{output}' into it)")
    conform_batch(first, signature, source.describe())


def hash_file(path: str, digest: Any = None) -> Any:
    """`digest` (a new SHA-256 by default) updated with the file's bytes, read 1 MiB at a
    time: the one place data and model files are hashed for the run key."""
    import hashlib

    digest = digest if digest is not None else hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest


def content_digest(source: InputSource, batch_size: int, layout: Layout = DEFAULT_LAYOUT
                   ) -> str:
    """A hash of what the source holds, so `--resume` never reuses results for other data
    under the same names and shapes (a rewritten x.npz): a file's bytes, or a folder's file
    names and bytes; for a source without a file (a module:function feed, synthetic data) the
    first call's arrays. Reading a file once costs far less than one inference pass over it."""
    import hashlib
    import os

    digest = hashlib.sha256()
    path = getattr(source, "path", None)
    if isinstance(path, str) and os.path.exists(path):
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
        for name in files:
            digest.update(os.path.relpath(name, path).encode() + b"\0")
            hash_file(name, digest)
        return digest.hexdigest()[:16]
    first = first_call(source, batch_size, layout)
    for name, value in sorted((first or {}).items()):
        array = np.ascontiguousarray(value)
        digest.update(f"{name} {array.dtype} {array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class LaterSamples:
    """Another source without its first `skip` samples: an interrupted capture resumes where
    it stopped instead of running them again."""

    source: InputSource
    skip: int

    @property
    def num_samples(self) -> int | None:
        total = self.source.num_samples
        return None if total is None else max(0, total - self.skip)

    def describe(self) -> str:
        return f"{self.source.describe()} from sample {self.skip}"

    def batches(self, batch_size: int) -> Iterator[Batch]:
        left = self.skip
        for batch in self.source.batches(batch_size):
            rows = rows_of(batch)
            if left >= rows:
                left -= rows
                continue
            yield _tail(batch, left) if left else batch
            left = 0


@dataclass(frozen=True)
class FirstSamples:
    """The first `limit` samples of another source: an error profile needs a sample of the
    data, not all of it, so reference profiles (emulations, FP32 noise) are run on this."""

    source: InputSource
    limit: int

    @property
    def num_samples(self) -> int | None:
        total = self.source.num_samples
        return self.limit if total is None else min(total, self.limit)

    def describe(self) -> str:
        return f"first {self.limit} samples of {self.source.describe()}"

    def batches(self, batch_size: int) -> Iterator[Batch]:
        left = self.limit
        for batch in self.source.batches(batch_size):
            if left <= 0:
                return
            rows = rows_of(batch)
            yield batch if rows <= left else _head(batch, left)
            left -= rows

    def items(self) -> Iterator[Batch]:
        """Whole items until `limit` samples are reached (an item is never cut)."""
        left = self.limit
        for item in self.source.items():  # type: ignore[attr-defined]
            if left <= 0:
                return
            yield item
            left -= rows_of(item)
