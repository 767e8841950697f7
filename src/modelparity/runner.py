"""Runs one backend in its own worker process and turns whatever happens into data.

A Python exception, a crash (the process dies, e.g. a segfault inside an execution provider) and
a hang (no answer within `timeout` seconds for one step: loading, or one batch) all become a
`BackendFailed` with the stage it happened in; the parent process and the other backends go on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from modelparity.backends.standin import Prediction
from modelparity.inputs import InputSource
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec
from modelparity.worker import Job


@dataclass
class Latency:
    """Per-batch inference time after warm-up, measured inside the worker around infer()."""

    warmup: int
    batches: int
    samples: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput: float  # samples per second of inference time

    @classmethod
    def from_times(cls, seconds: list[float], samples: int, warmup: int) -> Latency:
        times = np.asarray(seconds, dtype=np.float64) * 1e3
        total = float(times.sum()) / 1e3
        return cls(
            warmup=warmup,
            batches=len(times),
            samples=samples,
            p50_ms=float(np.percentile(times, 50)),
            p95_ms=float(np.percentile(times, 95)),
            mean_ms=float(times.mean()),
            throughput=samples / total if total > 0 else float("inf"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BackendFailed(Exception):
    """A backend that could not finish: kind is user | exception | crash | timeout."""

    def __init__(self, stage: str, kind: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage
        self.kind = kind
        self.message = message
        self.detail = detail


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _log_tail(path: str | None, lines: int = 3) -> str | None:
    if not path or not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, os.path.getsize(path) - 4096))
        text = handle.read().decode("utf-8", "replace")
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail) or None


class BackendWorker:
    """Parent-side handle on one worker process: start, wait until loaded, stream outputs."""

    def __init__(
        self,
        spec: BackendSpec,
        model: PreparedModel,
        source: InputSource,
        batch_size: int,
        *,
        timeout: float,
        warmup: int,
        log_path: str | None = None,
        prediction: Prediction | None = None,
    ) -> None:
        self.spec = spec
        self.job = Job(spec, model, source, batch_size, warmup, log_path, prediction)
        self.timeout = timeout
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.description: dict[str, Any] = {}
        self.times: list[float] = []
        self.samples = 0
        self.finished = False
        self.load_failure: BackendFailed | None = None  # set when wait_ready() failed

    def start(self) -> None:
        parent, child = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelparity.worker", str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send(self.job)

    def _receive(self, stage: str) -> tuple[Any, ...]:
        assert self.conn is not None and self.process is not None
        try:
            if not self.conn.poll(self.timeout):
                self.kill()
                raise BackendFailed(stage, "timeout",
                                    f"no answer within --timeout {self.timeout:g} s during {stage}")
            message = self.conn.recv()
        except (EOFError, OSError, ConnectionError):
            message = None
        if message is None:
            code = self._exit_code()
            how = f"crashed ({_signal_name(code)})" if code < 0 else f"exited with code {code}"
            tail = _log_tail(self.log_path)
            raise BackendFailed(stage, "crash", f"worker {how} during {stage}"
                                + (f"; last output: {tail}" if tail else ""))
        if message[0] == "error":
            _, where, kind, text, trace = message
            raise BackendFailed(where, kind, text, trace)
        return message

    def _exit_code(self) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def wait_ready(self) -> dict[str, Any]:
        _, self.description = self._receive("load")
        return self.description

    def outputs(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (rows, outputs) per batch; the first call also tells the worker to go."""
        if self.load_failure is not None:
            raise self.load_failure
        assert self.conn is not None
        self.conn.send("go")
        stage = "batch 0"
        while True:
            message = self._receive(stage)
            if message[0] == "done":
                self.description = message[1]
                self.finished = True
                return
            _, index, rows, outputs, seconds = message
            self.times.append(seconds)
            self.samples += rows
            stage = f"batch {index + 1}"
            yield rows, outputs

    def latency(self) -> Latency | None:
        if not self.times:
            return None
        return Latency.from_times(self.times, self.samples, self.job.warmup)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        """End the worker: wait for a finished one to exit, kill one that was cut short."""
        if not self.finished:
            self.kill()
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
