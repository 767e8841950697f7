"""The worker process: runs one backend over all batches and streams its outputs back.

Started by `runner.py` as `python -m modelparity.worker <fd>`, a fresh interpreter that imports
the runtime, so a runtime that segfaults, hangs or leaks takes only this process with it. It
reads its job from the socket, loads the model and runs the warm-up on the first batch, then sends
("ready", description), waits for "go", then sends one
("batch", index, rows, outputs, seconds) per batch, and ("done", description); or, on a Python
exception, ("error", stage, kind, message, traceback).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from modelparity.backends.options import first_line
from modelparity.backends.registry import create_backend
from modelparity.backends.standin import Prediction
from modelparity.errors import ModelParityError
from modelparity.inputs import InputSource, conform_batch
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec


@dataclass(frozen=True)
class Job:
    spec: BackendSpec
    model: PreparedModel
    source: InputSource
    batch_size: int
    warmup: int
    log_path: str | None
    prediction: Prediction | None = None  # the runtime cannot execute here: a stand-in runs


def run_job(job: Job, conn: Connection) -> None:
    stage = "load"
    try:
        os.environ.update(job.spec.env)  # before the runtime is imported: it may read them once
        backend = create_backend(job.spec, job.prediction)
        backend.activate(job.model)
        where = job.source.describe()
        stage = "warm-up"
        # Warm up while loading, before "ready": untimed work overlaps other workers' loading.
        first = next(iter(job.source.batches(job.batch_size)), None)
        if first is not None:
            feed = conform_batch(first, job.model.signature, where)
            for _ in range(job.warmup):
                backend.infer(feed)
        conn.send(("ready", _describe(backend, job.spec)))
        conn.recv()  # "go": wait while other backends run, so timings never overlap
        for index, batch in enumerate(job.source.batches(job.batch_size)):
            stage = f"batch {index}"
            feed = conform_batch(batch, job.model.signature, where)
            start = time.perf_counter()
            outputs = backend.infer(feed)
            seconds = time.perf_counter() - start
            rows = len(next(iter(feed.values())))
            conn.send(("batch", index, rows, outputs, seconds))
        stage = "finish"
        description = _describe(backend, job.spec)
        backend.deactivate()
        conn.send(("done", description))
    except ModelParityError as exc:
        conn.send(("error", stage, "user", str(exc), traceback.format_exc()))
    except BaseException as exc:  # anything else the runtime throws is a finding
        message = f"{type(exc).__name__}: {first_line(exc)}"
        conn.send(("error", stage, "exception", message, traceback.format_exc()))


def _describe(backend: Any, spec: BackendSpec) -> dict[str, Any]:
    description = backend.describe()
    if spec.env:
        description["env"] = spec.env
    return description


def main() -> None:
    fd = int(sys.argv[1])
    conn = Connection(socket.socket(fileno=fd).detach())
    job: Job = conn.recv()
    if job.log_path:
        # Runtimes print to the C-level stdout/stderr; keep that out of the user's terminal.
        log = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    run_job(job, conn)
    conn.close()
    # Skip interpreter teardown (unloading a runtime can take a while): everything the parent
    # needs has been sent, and the backend was deactivated.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

__all__: list[Any] = ["Job", "run_job"]
