"""The capture artifact (`run.mpc`): one backend's outputs on some data, portable to any machine.

A folder, written as the capture runs so that an interrupted one resumes:
- `manifest.json`: what was run (the model's content hash and signature, the backend's spec
  and full description: versions, options, device, OS, CPU flags or GPU, its precision
  testimony), on what (the data's description, the batch size), its timings, and the shards
  so far; rewritten atomically after each shard, so it never names a shard that is not whole;
- `shard-00000.safetensors`, ...: per batch block, each output (`out/NAME`), one 64-bit digest
  per sample of the inputs fed (`digest`, the audit's `row_digests`) and, unless the capture
  was told not to keep them, the inputs themselves (`in/NAME`): safetensors, never a pickle.

A capture replays by digest, not by position (`Capture.lookup`), so a compare may batch the
data as it likes and every sample is checked to be the one the capture ran.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from modelparity.errors import InputError
from modelparity.folders import output_folder, write_atomic

FORMAT = "modelparity-capture"
VERSION = 1
MANIFEST = "manifest.json"
OUT, IN, DIGEST = "out/", "in/", "digest"


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]  # source, sha256, inputs and outputs (name, dtype, shape)
    spec: str  # the backend that ran
    data: str  # what it ran on, in words
    batch_size: int
    description: dict[str, Any] = field(default_factory=dict)  # as the backend reported it
    environment: dict[str, Any] = field(default_factory=dict)  # the machine
    latency: dict[str, Any] | None = None
    shards: tuple[tuple[str, int], ...] = ()  # (file, samples)
    inputs_kept: bool = True
    complete: bool = False

    @property
    def samples(self) -> int:
        return sum(rows for _, rows in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "spec": self.spec,
                "data": self.data, "batch_size": self.batch_size,
                "description": self.description, "environment": self.environment,
                "latency": self.latency, "inputs_kept": self.inputs_kept,
                "complete": self.complete, "samples": self.samples,
                "shards": [{"file": name, "samples": rows} for name, rows in self.shards]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(dict(data["model"]), str(data["spec"]), str(data["data"]),
                   int(data["batch_size"]), dict(data.get("description") or {}),
                   dict(data.get("environment") or {}), data.get("latency"),
                   tuple((str(s["file"]), int(s["samples"])) for s in data["shards"]),
                   bool(data.get("inputs_kept", True)), bool(data.get("complete", False)))


def _tensor_error(path: str, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def read_manifest(path: str) -> Manifest:
    """The manifest of the capture folder `path`; one line naming the file for anything that
    is not a whole capture of this format."""
    if not os.path.isdir(path):
        what = "is a file" if os.path.exists(path) else "no such capture"
        raise InputError(f"{path}: {what}; expected a capture folder written by "
                         f"'modelparity capture' (with {MANIFEST} in it)")
    manifest = os.path.join(path, MANIFEST)
    try:
        with open(manifest, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{path}: no {MANIFEST}; not a capture folder") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{manifest}: not a readable capture manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{manifest}: not a modelparity capture manifest")
    if data.get("version") != VERSION:
        raise InputError(f"{manifest}: capture format version {data.get('version')!r}; this "
                         f"modelparity reads version {VERSION}")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{manifest}: damaged capture manifest ({type(exc).__name__}: "
                         f"{exc})") from None


class CaptureWriter:
    """Writes a capture shard by shard; reopens an interrupted one with `resume`."""

    def __init__(self, path: str, manifest: Manifest, *, resume: bool = False) -> None:
        self.path = path
        if os.path.isdir(path) and os.path.exists(os.path.join(path, MANIFEST)):
            found = read_manifest(path)
            if not resume:
                state = "complete" if found.complete else f"{found.samples} samples so far"
                raise InputError(f"-o {path}: holds a capture already ({state}); pass "
                                 f"--resume to continue it, or choose another folder")
            for key, mine, theirs in (("model", manifest.model.get("sha256"),
                                       found.model.get("sha256")),
                                      ("backend", manifest.spec, found.spec),
                                      ("data", manifest.data, found.data),
                                      ("batch size", manifest.batch_size, found.batch_size),
                                      ("inputs kept", manifest.inputs_kept,
                                       found.inputs_kept)):
                if mine != theirs:
                    raise InputError(f"-o {path}: --resume with another {key} than the "
                                     f"capture's ({theirs!r}, now {mine!r})")
            self.manifest = replace(found, description=found.description or
                                    manifest.description)
        else:
            output_folder(path, "-o")
            self.manifest = manifest
            self._save()

    @property
    def samples(self) -> int:
        return self.manifest.samples

    def add(self, outputs: dict[str, np.ndarray], digests: np.ndarray,
            inputs: dict[str, np.ndarray] | None) -> None:
        """One block: written whole beside the others, then named in the manifest."""
        from safetensors.numpy import save_file

        name = f"shard-{len(self.manifest.shards):05d}.safetensors"
        tensors = {OUT + k: np.ascontiguousarray(v) for k, v in outputs.items()}
        tensors[DIGEST] = np.ascontiguousarray(digests, dtype=np.uint64)
        if inputs is not None and self.manifest.inputs_kept:
            tensors.update({IN + k: np.ascontiguousarray(v) for k, v in inputs.items()})
        temporary = os.path.join(self.path, f".{name}.partial")
        save_file(tensors, temporary)
        os.replace(temporary, os.path.join(self.path, name))
        self.manifest = replace(self.manifest,
                                shards=(*self.manifest.shards, (name, len(digests))))
        self._save()

    def finish(self, description: dict[str, Any], latency: dict[str, Any] | None) -> Manifest:
        self.manifest = replace(self.manifest, description=description, latency=latency,
                                complete=True)
        self._save()
        return self.manifest

    def _save(self) -> None:
        write_atomic(os.path.join(self.path, MANIFEST),
                     json.dumps(_jsonable(self.manifest.to_dict()), indent=1,
                                allow_nan=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    return value


class Capture:
    """A capture read back: its manifest, and each sample's outputs found by its digest."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        if not self.manifest.complete:
            raise InputError(f"{path}: the capture was interrupted after "
                             f"{self.manifest.samples} samples; finish it with 'modelparity "
                             f"capture ... -o {path} --resume'")
        for name, _ in self.manifest.shards:
            if not os.path.isfile(os.path.join(path, name)):
                raise InputError(f"{path}: shard {name} is missing")
        self._index: dict[int, tuple[int, int]] | None = None
        self._cached: tuple[int, dict[str, np.ndarray]] | None = None

    def shard(self, index: int) -> dict[str, np.ndarray]:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        name = self.manifest.shards[index][0]
        try:
            tensors = load_file(os.path.join(self.path, name))
        except (SafetensorError, OSError, ValueError) as exc:
            raise _tensor_error(os.path.join(self.path, name),
                                f"not a readable safetensors shard ({exc})") from None
        if DIGEST not in tensors or len(tensors[DIGEST]) != self.manifest.shards[index][1]:
            raise _tensor_error(os.path.join(self.path, name),
                                "damaged shard (its digests do not match the manifest)")
        self._cached = (index, tensors)
        return tensors

    def shards(self) -> Iterator[dict[str, np.ndarray]]:
        for index in range(len(self.manifest.shards)):
            yield self.shard(index)

    def digests(self) -> np.ndarray:
        """Every sample's input digest, in capture order."""
        parts = [tensors[DIGEST] for tensors in self.shards()]
        return np.concatenate(parts) if parts else np.zeros(0, np.uint64)

    def lookup(self, digests: np.ndarray) -> dict[str, np.ndarray] | int:
        """The outputs of the samples with these input digests, stacked in their order; the
        position of the first digest the capture does not hold, when one is missing."""
        if self._index is None:
            index: dict[int, tuple[int, int]] = {}
            for shard in range(len(self.manifest.shards)):
                for row, digest in enumerate(self.shard(shard)[DIGEST].tolist()):
                    index.setdefault(int(digest), (shard, row))
            self._index = index
        places = []
        for position, digest in enumerate(digests.tolist()):
            place = self._index.get(int(digest))
            if place is None:
                return position
            places.append(place)
        where = np.asarray(places, dtype=np.int64).reshape(-1, 2)
        outputs: dict[str, np.ndarray] = {}
        for shard in np.unique(where[:, 0]).tolist():  # one fancy index per shard
            chosen = np.flatnonzero(where[:, 0] == shard)
            for key, value in self.shard(shard).items():
                if not key.startswith(OUT):
                    continue
                name = key[len(OUT):]
                if name not in outputs:
                    outputs[name] = np.empty((len(where), *value.shape[1:]), value.dtype)
                outputs[name][chosen] = value[where[chosen, 1]]
        return outputs


@dataclass(frozen=True)
class CapturedInputs:
    """The inputs a capture kept, as an input source: a compare needs no data file. Reads the
    shards in the process that iterates it (a worker), so it stays small to pickle."""

    path: str

    @property
    def num_samples(self) -> int:
        return read_manifest(self.path).samples

    def describe(self) -> str:
        manifest = read_manifest(self.path)
        return f"the inputs kept in {self.path} ({manifest.data}, {manifest.samples} samples)"

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        leftover: dict[str, np.ndarray] | None = None
        for tensors in Capture(self.path).shards():
            shard = {k[len(IN):]: v for k, v in tensors.items() if k.startswith(IN)}
            if not shard:
                raise InputError(f"{self.path}: kept no inputs (captured with --no-inputs); "
                                 f"give the data with --data")
            if leftover is not None:  # the last shard's tail starts this one's first batch
                shard = {k: np.concatenate([leftover[k], v]) for k, v in shard.items()}
            rows = len(next(iter(shard.values())))
            start = 0
            while rows - start >= batch_size:
                yield {k: v[start:start + batch_size] for k, v in shard.items()}
                start += batch_size
            leftover = {k: v[start:] for k, v in shard.items()} if start < rows else None
        if leftover is not None:
            yield leftover
