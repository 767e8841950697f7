"""The parent's handle on one backend's worker process; turns whatever happens into data.

A Python exception, a crash (the process dies, e.g. a segfault inside an execution provider) and
a hang (no answer within `timeout` seconds for one step: loading, or one block of batches) all
become a `BackendFailed` with the stage it happened in; the audit and the other backends go on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelparity.backends.registry import get_runtime
from modelparity.backends.runtime import Runtime
from modelparity.backends.standin import Prediction
from modelparity.execute.protocol import (
    Block,
    Child,
    ChildLost,
    Done,
    Failed,
    Ready,
    StageMarker,
    private_file,
)
from modelparity.inputs import InputSource
from modelparity.inputs.layout import DEFAULT_LAYOUT, Layout
from modelparity.model import PreparedModel
from modelparity.numerics.latency import Latency
from modelparity.spec import BackendSpec

WORKER = "modelparity.execute.worker"
TEMP = "tmp"  # the workers' temporary files, in the run's folder


@dataclass(frozen=True)
class Job:
    """Parent to worker: the backend to run, on which model and inputs."""

    spec: BackendSpec
    model: PreparedModel
    source: InputSource
    batch_size: int
    warmup: int
    log_path: str | None
    prediction: Prediction | None = None  # the runtime cannot execute here: a stand-in runs
    stage_path: str | None = None  # where the worker marks the batch it is in (StageMarker)
    runtime: Runtime | None = None  # the spec's runtime declaration
    layout: Layout = DEFAULT_LAYOUT  # batch axes, per-item calls, carried state
    teacher: tuple[str, str] | None = None  # (spool folder, run key): feed the reference's state


class BackendFailed(Exception):
    """A backend that could not finish: kind is user | exception | crash | timeout | mismatch."""

    def __init__(self, stage: str, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.message = message
        self.detail = detail


def _log_tail(path: str | None, lines: int = 3) -> str | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - 4096))
        text = handle.read().decode("utf-8", "replace")
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail) or None


class BackendWorker:
    """Start, wait until loaded, stream outputs: one backend in its own process."""

    def __init__(self, spec: BackendSpec, model: PreparedModel, source: InputSource,
                 batch_size: int, *, timeout: float, warmup: int, log_path: str | None = None,
                 prediction: Prediction | None = None, layout: Layout = DEFAULT_LAYOUT,
                 teacher: tuple[str, str] | None = None) -> None:
        self.spec = spec
        if log_path:  # created here, where a planted link is refused with one line
            os.close(private_file(log_path))
        self.stage_path = StageMarker.create(log_path + ".stage") if log_path else None
        self.job = Job(spec, model, source, batch_size, warmup, log_path, prediction,
                       self.stage_path, get_runtime(spec.runtime), layout, teacher)
        self.timeout = timeout
        self.log_path = log_path
        self.child: Child | None = None
        self.description: dict[str, Any] = {}
        self.times: list[float] = []
        self.samples = 0
        self.finished = False
        self.load_failure: BackendFailed | None = None  # set when wait_ready() failed

    def start(self) -> None:
        temp = None
        if self.log_path:  # OUT/logs/x.log -> OUT/tmp/x, removed when the run ends
            out = os.path.dirname(os.path.dirname(self.log_path))
            temp = os.path.join(out, TEMP, os.path.splitext(os.path.basename(self.log_path))[0])
        self.child = Child(WORKER, temp)
        self.child.send(self.job)

    def _receive(self, stage: str) -> Any:
        assert self.child is not None
        try:
            message = self.child.receive(self.timeout)
        except ChildLost as lost:
            if stage.startswith("batch"):  # blocks come when full: which batch was it in?
                marked = StageMarker.read(self.stage_path)
                stage = f"batch {marked}" if marked is not None else stage
            if lost.timed_out:
                raise BackendFailed(stage, "timeout", f"no answer within --timeout "
                                    f"{self.timeout:g} s during {stage}") from None
            tail = _log_tail(self.log_path)
            raise BackendFailed(stage, "crash", f"worker {lost.describe()} during {stage}"
                                + (f"; last output: {tail}" if tail else "")) from None
        if isinstance(message, Failed):
            raise BackendFailed(message.stage, message.kind, message.message, message.detail)
        return message

    def wait_ready(self) -> dict[str, Any]:
        message = self._receive("load")
        assert isinstance(message, Ready)
        self.description = message.description
        return self.description

    def blocks(self) -> Iterator[Block]:
        """Yield the outputs block by block; the first call also tells the worker to go."""
        if self.load_failure is not None:
            raise self.load_failure
        assert self.child is not None
        self.child.send("go")
        stage = "batch 0"
        while True:
            message = self._receive(stage)
            if isinstance(message, Done):
                self.description = message.description
                self.finished = True
                return
            self.times.extend(message.seconds)
            self.samples += sum(message.rows)
            stage = f"batch {message.index + len(message.rows)}"
            yield message

    def latency(self) -> Latency | None:
        if not self.times:
            return None
        return Latency.from_times(self.times, self.samples, self.job.warmup)

    def close(self) -> None:
        if self.child is not None:
            self.child.close(finished=self.finished)
