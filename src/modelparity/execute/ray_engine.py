"""The Ray engine (`--engine ray`): each backend runs in a pool of Ray actors instead of one
worker process, so a large evaluation is sharded across the cores, or the nodes, of a cluster.

`RayWorker` has the interface of `runner.BackendWorker` (start, wait_ready, blocks, latency,
close), so the rest of the audit is the one the local engine runs: each actor loads its
backend once and computes the outputs of the shards it is given (a shard: consecutive batches,
read by this process and put in Ray's object store); the shards' outputs come back in order and
stream into the same sinks, compared row by row against the reference's spool, so every
accumulator sees the rows in the order the local engine gives them and the results are the
same. A backend goes to the nodes that declare its target or its runtime as a Ray resource
(`cuda`, `coreml`, `openvino`...: `ray start --resources '{"coreml": 1}'` on a Mac) where the
cluster has one (`route`).

Why Ray core's actors and not Ray Data's `map_batches` over an actor pool: the inputs are read
once, here, in order, by the input sources the local engine uses, so a CSV, a module:function
feed or a folder of shards need not exist on the worker nodes, and at most two shards per actor
are in Ray's store at once; a Ray Dataset would be read on the cluster or held in the store
whole, and its blocks come back in order only with `preserve_order`.

A failure is reported as the local engine reports it: an exception with the batch it happened
in (`ActorFailed`), a dead actor with the signal and the batch read from its log (each batch is
marked there before it runs), a call past --timeout as a timeout.

Ray is an optional extra (`pip install 'modelparity[ray]'`), imported only here.
"""

from __future__ import annotations

import itertools
import os
import re
import resource
import sys
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
ROUTE_SHARE = 0.001  # of a node's declared backend resource, taken by each actor
MARK = "modelparity: batch "  # written to the actor's log before each batch
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


class ActorFailed(Exception):
    """A backend's failure inside an actor, with the stage and kind the local worker reports
    (Ray raises it again in the audit's process)."""

    def __init__(self, stage: str, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.stage, self.kind, self.message, self.detail = stage, kind, message, detail

    def __reduce__(self) -> tuple[Any, ...]:
        return ActorFailed, (self.stage, self.kind, self.message, self.detail)


def _caught(stage: str, exc: BaseException) -> ActorFailed:
    from modelparity.execute.worker import what_failed

    return ActorFailed(stage, *what_failed(exc))


class _Actor:
    """One copy of a backend, loaded once, computing the outputs of the shards it is given."""

    def __init__(self, spec: BackendSpec, model: PreparedModel, prediction: Any,
                 runtime: Any, warmup: int, cwd: str) -> None:
        from modelparity.backends.registry import create_backend

        self.spec, self.model, self.warmup = spec, model, warmup
        self.failed: ActorFailed | None = None  # a load failure, raised by the first call
        try:
            # the audit's folder where this node has it, as a local worker inherits it: a
            # factory module or a relative path in an option is found from there
            if os.path.isdir(cwd):
                os.chdir(cwd)
            os.environ.update(spec.env)
            self.backend = create_backend(spec, prediction, runtime)
            self.backend.activate(model)
        except BaseException as exc:
            self.failed = _caught("load", exc)

    def prime(self, batch: dict[str, np.ndarray], times: int) -> None:
        """Untimed calls on the audit's first batch, in every actor: the warm-up, and what a
        backend that settles on its first call (static INT8 calibrates on it) settles on is
        the batch the local engine's worker settles on."""
        from modelparity.inputs import conform_batch

        try:
            feed = conform_batch(batch, self.model.signature, "a Ray shard")
            for _ in range(times):
                self.backend.infer(feed)
        except BaseException as exc:
            raise _caught("warm-up", exc) from None

    def describe(self) -> dict[str, Any]:
        from modelparity.execute.worker import _describe

        if self.failed is not None:
            raise self.failed
        return _describe(self.backend, self.spec)

    def where(self) -> tuple[str, str | None, str]:
        """This actor's id, the file its stderr goes to (Ray's worker log: what is left to read
        when it dies) and its node's id."""
        import ray

        try:
            log = os.readlink("/proc/self/fd/2")
        except OSError:  # not Linux
            log = None
        context = ray.get_runtime_context()
        return context.get_actor_id(), log, context.get_node_id()

    def run(self, batches: list[dict[str, np.ndarray]], first: int) -> tuple[Any, ...]:
        from modelparity.inputs import conform_batch
        from modelparity.inputs.base import row_digests, rows_of

        rows, seconds, outputs, digests = [], [], [], []
        for offset, batch in enumerate(batches):
            # the batch marked last is the one a crash or a hang happened in
            print(f"{MARK}{first + offset}", file=sys.stderr, flush=True)
            try:
                feed = conform_batch(batch, self.model.signature, "a Ray shard")
                start = time.perf_counter()
                result = self.backend.infer(feed)
                seconds.append(time.perf_counter() - start)
            except BaseException as exc:
                raise _caught(f"batch {first + offset}", exc) from None
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
        self.places: list[tuple[str, str | None, str]] = []  # per actor: id, log, node

    def start(self) -> None:
        ray = ray_module()
        # every backend of an audit loads at once, as on the local engine: an actor holds no
        # CPU while it waits, so the pools never wait for each other
        options: dict[str, Any] = {"num_cpus": 0}
        wanted = route(self.spec, ray.cluster_resources() or {})
        if wanted is not None:  # a node declared this backend
            # a small share: the declaration marks the node, it does not cap the actors on it
            options["resources"] = {wanted: ROUTE_SHARE}
        actor = ray.remote(_Actor).options(**options)
        self.actors = [actor.remote(self.spec, self.model, self.prediction, self.runtime,
                                    self.warmup, os.getcwd()) for _ in range(self._pool_size())]

    def _pool_size(self) -> int:
        """--workers, or fewer where the data has fewer shards: an actor that would get no
        shard is not started."""
        samples = self.source.num_samples
        if samples is None:
            return self.workers
        shards = -(-samples // (self.batch_size * SHARD_BATCHES))
        return max(1, min(self.workers, shards))

    def wait_ready(self) -> dict[str, Any]:
        ray = ray_module()
        try:
            descriptions = ray.get([a.describe.remote() for a in self.actors],
                                   timeout=self.timeout)
            self.places = ray.get([a.where.remote() for a in self.actors], timeout=self.timeout)
            first = next(iter(self.source.batches(self.batch_size)), None)
            if first is not None:
                # the first actor's first shard starts with this batch, as the local worker's
                # does; the others see it first too, so all settle on the same batch
                shared = ray.put(first)
                ray.get([a.prime.remote(shared, self.warmup if i == 0 else max(self.warmup, 1))
                         for i, a in enumerate(self.actors)], timeout=self.timeout)
        except Exception as exc:  # the actor's own error, raised again by Ray, or its death
            self.load_failure = self._failure(None, "load", exc)
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

        queued = 0  # batches handed out

        def submit() -> None:
            nonlocal queued
            shard = next(shards, None)
            if shard is not None:
                which = next(submitted) % len(self.actors)
                pending.append((which, self.actors[which].run.remote(ray.put(shard), queued)))
                queued += len(shard)

        for _ in range(2 * len(self.actors)):
            submit()
        while pending:
            which, ref = pending.pop(0)
            try:
                rows, seconds, outputs, digests, pid, peak = ray.get(ref, timeout=self.timeout)
            except Exception as exc:
                raise self._failure(which, f"batch {index}", exc) from None
            self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
            self.times.extend(seconds)
            self.samples += sum(rows)
            yield Block(index, rows, seconds, outputs, digests)
            index += len(rows)
            submit()
        self.description = {
            **ray.get(self.actors[0].describe.remote(), timeout=self.timeout),
            "ray": {"actors": len(self.actors),
                    "nodes": sorted({node for _, _, node in self.places}),
                    "peak_rss_mb": sorted(round(v / 2**20, 1) for v in self.peaks.values())}}

    def _failure(self, which: int | None, stage: str, exc: BaseException) -> BackendFailed:
        """The failure as the local engine reports it: in a batch, the batch it happened in
        and, for an actor that died, the signal, both read from the actor `which`'s log."""
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ActorFailed):  # the backend's own error, raised again by Ray
            return BackendFailed(cause.stage, cause.kind, cause.message, cause.detail)
        kind = _kind(exc)
        if kind == "exception":  # Ray's own
            return BackendFailed(stage, kind, _message(self.spec, exc))
        batch = signal = tail = None
        if which is not None and which < len(self.places):
            actor_id, log, _ = self.places[which]
            batch, signal, tail = _read_log(_log_text(actor_id, log))
        stage = f"batch {batch}" if batch is not None else stage
        if kind == "timeout":
            return BackendFailed(stage, kind, f"no answer within --timeout {self.timeout:g} s "
                                 f"during {stage}")
        how = f"crashed ({signal})" if signal else "died"
        return BackendFailed(stage, kind, f"Ray actor {how} during {stage}"
                             + (f"; last output: {tail}" if tail else ""))

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


def route(spec: BackendSpec, declared: dict[str, Any]) -> str | None:
    """The Ray resource that marks the nodes for this backend: its target (`cuda` for
    ort:cuda and torch:cuda, `coreml` for ort:coreml) or else its runtime (`coreml` for
    coreml:all, `openvino`), where some node declares it; None: any node."""
    for name in (spec.target.split(":")[0].lower(), spec.runtime.lower()):
        if name and name in declared:
            return name
    return None


def _kind(exc: BaseException) -> str:
    """A failure's kind as the local engine names it: an actor that died (a segfault, an
    exit) is a crash, a call past --timeout a timeout, anything the backend raised an
    exception."""
    name = type(exc).__name__
    if "ActorDied" in name or name in ("RayActorError", "ActorUnavailableError"):
        return "crash"
    return "timeout" if name == "GetTimeoutError" else "exception"


def _log_text(actor_id: str, path: str | None) -> str:
    """The end of a dead actor's stderr: its file when the actor ran on this machine, else
    from Ray's log API (a cluster with its dashboard), else nothing."""
    if path and os.path.isfile(path):
        with open(path, "rb") as handle:
            handle.seek(max(0, os.path.getsize(path) - 65536))
            return handle.read().decode("utf-8", "replace")
    try:
        from ray.util.state import get_log

        return "\n".join(get_log(actor_id=actor_id, suffix="err", tail=400, timeout=10))
    except Exception:  # no dashboard, no log: the failure is still reported, with less
        return ""


def _read_log(text: str) -> tuple[int | None, str | None, str | None]:
    """(the batch marked last, the signal Ray's handler logged, the last lines of output)."""
    batch = signal = None
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(MARK):
            batch, lines = int(line[len(MARK):]), []
        elif found := re.search(r"\*\*\* (SIG[A-Z]+) received", line):
            signal = found.group(1)
        elif line and "logging.cc" not in line:  # Ray's own stack dump lines
            lines.append(line)
    return batch, signal, " | ".join(lines[-3:]) or None


def _message(spec: BackendSpec, exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return f"{spec.text}: {text[:300]}"
