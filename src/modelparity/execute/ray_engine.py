"""The Ray engine (`--engine ray`): each backend runs in a pool of Ray actors instead of one
worker process, so a large evaluation is sharded across the cores, or the nodes, of a cluster.

`RayWorker` has the interface of `runner.BackendWorker` (start, wait_ready, blocks, latency,
close), so the rest of the audit is the one the local engine runs: each actor loads its
backend once and computes the outputs of the shards it is given (a shard: consecutive batches,
read by this process and put in Ray's object store); the shards' outputs come back in order and
stream into the same sinks, compared row by row against the reference's spool, so every
accumulator sees the rows in the order the local engine gives them and the results are the
same. A backend goes to the nodes that declare its target as a Ray resource (`cuda`, `coreml`,
`gpu`...: `ray start --resources '{"coreml": 1}'` on a Mac) where the cluster has one.

Ray is an optional extra (`pip install 'modelparity[ray]'`), imported only here.
"""

from __future__ import annotations

import itertools
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from modelparity.errors import InputError
from modelparity.execute.protocol import Block
from modelparity.execute.runner import BackendFailed
from modelparity.inputs import InputSource
from modelparity.model import PreparedModel
from modelparity.numerics.latency import Latency
from modelparity.spec import BackendSpec

SHARD_BATCHES = 64  # batches per shard: one actor call, one object in Ray's store
RAY_HINT = "pip install 'modelparity[ray]'"


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"--engine ray needs Ray: {RAY_HINT}") from None
    return ray


def start_ray(address: str | None, workers: int) -> bool:
    """Connect to `address`, or start a local Ray with `workers` CPUs; True when started here
    (so the audit shuts it down)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    return True


class _Actor:
    """One copy of a backend, loaded once, computing the outputs of the shards it is given."""

    def __init__(self, spec: BackendSpec, model: PreparedModel, prediction: Any,
                 runtime: Any, warmup: int) -> None:
        from modelparity.backends.registry import create_backend

        os.environ.update(spec.env)
        self.spec, self.model, self.warmup = spec, model, warmup
        self.backend = create_backend(spec, prediction, runtime)
        self.backend.activate(model)

    def prime(self, batch: dict[str, np.ndarray], times: int) -> None:
        """Untimed calls on the audit's first batch, in every actor: the warm-up, and what a
        backend that settles on its first call (static INT8 calibrates on it) settles on is
        the batch the local engine's worker settles on."""
        from modelparity.inputs import conform_batch

        feed = conform_batch(batch, self.model.signature, "a Ray shard")
        for _ in range(times):
            self.backend.infer(feed)

    def describe(self) -> dict[str, Any]:
        from modelparity.execute.worker import _describe

        return _describe(self.backend, self.spec)

    def run(self, batches: list[dict[str, np.ndarray]]) -> tuple[Any, ...]:
        from modelparity.inputs import conform_batch
        from modelparity.inputs.base import row_digests, rows_of

        rows, seconds, outputs, digests = [], [], [], []
        for batch in batches:
            feed = conform_batch(batch, self.model.signature, "a Ray shard")
            start = time.perf_counter()
            result = self.backend.infer(feed)
            seconds.append(time.perf_counter() - start)
            rows.append(rows_of(feed))
            outputs.append({k: np.asarray(v) for k, v in result.items()})
            digests.append(row_digests(batch))
        joined = {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes, Linux
        return tuple(rows), tuple(seconds), joined, np.concatenate(digests), os.getpid(), peak


class RayWorker:
    """A backend on a pool of Ray actors, with `BackendWorker`'s interface."""

    def __init__(self, spec: BackendSpec, model: PreparedModel, source: InputSource,
                 batch_size: int, *, timeout: float, warmup: int, workers: int,
                 prediction: Any = None) -> None:
        from modelparity.backends.registry import get_runtime

        self.spec, self.model, self.source = spec, model, source
        self.batch_size, self.timeout, self.warmup = batch_size, timeout, warmup
        self.workers, self.prediction = workers, prediction
        self.runtime = get_runtime(spec.runtime)
        self.actors: list[Any] = []
        self.description: dict[str, Any] = {}
        self.times: list[float] = []
        self.samples = 0
        self.load_failure: BackendFailed | None = None
        self.peaks: dict[int, int] = {}  # actor pid -> its peak resident memory

    def start(self) -> None:
        ray = ray_module()
        # every backend of an audit loads at once, as on the local engine: an actor holds no
        # CPU while it waits, so the pools never wait for each other
        options: dict[str, Any] = {"num_cpus": 0}
        wanted = self.spec.target.split(":")[0].lower()
        if wanted in (ray.cluster_resources() or {}):  # a node declared this backend
            options["resources"] = {wanted: 1}
        actor = ray.remote(_Actor).options(**options)
        self.actors = [actor.remote(self.spec, self.model, self.prediction, self.runtime,
                                    self.warmup) for _ in range(self.workers)]

    def wait_ready(self) -> dict[str, Any]:
        ray = ray_module()
        try:
            descriptions = ray.get([a.describe.remote() for a in self.actors],
                                   timeout=self.timeout)
            first = next(iter(self.source.batches(self.batch_size)), None)
            if first is not None:
                shared = ray.put(first)
                ray.get([a.prime.remote(shared, max(self.warmup, 1)) for a in self.actors],
                        timeout=self.timeout)
        except Exception as exc:  # the actor's own error, raised again by Ray
            self.load_failure = BackendFailed("load", "exception", _message(self.spec, exc))
            raise self.load_failure from None
        self.description = descriptions[0]
        return self.description

    def _shards(self) -> Iterator[list[dict[str, np.ndarray]]]:
        shard: list[dict[str, np.ndarray]] = []
        for batch in self.source.batches(self.batch_size):
            shard.append(batch)
            if len(shard) == SHARD_BATCHES:
                yield shard
                shard = []
        if shard:
            yield shard

    def blocks(self) -> Iterator[Block]:
        """The shards' outputs in order, `workers` shards in flight at once."""
        if self.load_failure is not None:
            raise self.load_failure
        ray = ray_module()
        pending: list[Any] = []
        index = 0
        shards = self._shards()
        submitted = itertools.count()  # round robin over the actors

        def submit() -> None:
            shard = next(shards, None)
            if shard is not None:
                actor = self.actors[next(submitted) % len(self.actors)]
                pending.append(actor.run.remote(ray.put(shard)))

        for _ in range(2 * len(self.actors)):
            submit()
        while pending:
            try:
                rows, seconds, outputs, digests, pid, peak = ray.get(pending.pop(0),
                                                                     timeout=self.timeout)
            except Exception as exc:
                raise BackendFailed(f"batch {index}", _kind(exc),
                                    _message(self.spec, exc)) from None
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
            self.times.extend(seconds)
            self.samples += sum(rows)
            yield Block(index, rows, seconds, outputs, digests)
            index += len(rows)
            submit()
        self.description = {
            **ray.get(self.actors[0].describe.remote(), timeout=self.timeout),
            "ray": {"actors": len(self.actors),
                    "peak_rss_mb": sorted(round(v / 2**20, 1) for v in self.peaks.values())}}

    def latency(self) -> Latency | None:
        if not self.times:
            return None
        return Latency.from_times(self.times, self.samples, self.warmup)

    def close(self) -> None:
        if self.actors:
            ray = ray_module()
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []


def _kind(exc: BaseException) -> str:
    """A failure's kind as the local engine names it: an actor that died (a segfault, an
    exit) is a crash, a call past --timeout a timeout, anything the backend raised an
    exception."""
    name = type(exc).__name__
    if "ActorDied" in name or name in ("RayActorError", "ActorUnavailableError"):
        return "crash"
    return "timeout" if name == "GetTimeoutError" else "exception"


def _message(spec: BackendSpec, exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{spec.text}: {text[:300]}"
