"""The worker process: runs one backend over all batches and streams its outputs back.

Started as `python -P -m modelparity.execute.worker <fd>` (see `protocol.py`): a fresh
interpreter that imports the runtime, so a runtime that segfaults, hangs or leaks takes only
this process with it. It reads its `Job`, sets the spec's env.* variables, loads the model and
runs the warm-up on the first batch, sends `Ready`, waits for "go" (so no backend's timed
batches overlap another's), then sends the outputs in `Block`s and a final `Done`; on a Python
exception, `Failed` with the stage it happened in.

Outputs cross the process boundary in blocks of batches (up to BLOCK_BYTES, BLOCK_BATCHES or
BLOCK_SECONDS, whichever comes first), not one message per inference call; each call is still
timed on its own.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from modelparity.backends.options import first_line
from modelparity.backends.registry import create_backend
from modelparity.errors import ModelParityError
from modelparity.execute.protocol import (
    Block,
    Done,
    Failed,
    Ready,
    StageMarker,
    redirect_output,
    serve,
)
from modelparity.execute.runner import Job
from modelparity.execute.spool import OutputSpool, SpoolReader
from modelparity.inputs import conform_batch
from modelparity.inputs.base import calls, row_digests, rows_of
from modelparity.inputs.layout import Layout
from modelparity.serialize import jsonable
from modelparity.spec import BackendSpec

BLOCK_BYTES = 8 << 20  # outputs per block
BLOCK_BATCHES = 256
BLOCK_SECONDS = 0.25  # a slow model still reports progress (and beats --timeout) often


class _Block:
    """Batches gathered until the block is full."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.rows: list[int] = []
        self.seconds: list[float] = []
        self.outputs: list[dict[str, np.ndarray]] = []
        self.inputs: list[np.ndarray] = []
        self.bytes = 0
        self.started = time.perf_counter()

    def add(self, rows: int, seconds: float, outputs: dict[str, Any], inputs: np.ndarray
            ) -> None:
        arrays = {name: np.asarray(value) for name, value in outputs.items()}
        self.inputs.append(inputs)
        self.rows.append(rows)
        self.seconds.append(seconds)
        self.outputs.append(arrays)
        self.bytes += sum(a.nbytes for a in arrays.values())

    @property
    def full(self) -> bool:
        return (self.bytes >= BLOCK_BYTES or len(self.rows) >= BLOCK_BATCHES
                or time.perf_counter() - self.started >= BLOCK_SECONDS)

    def messages(self) -> list[Block]:
        """One message for the whole block; one per batch where an output's per-sample shape
        changes between its batches: that is the reference's (or the comparison's) error to
        report, with the batch it happened in."""
        first = self.outputs[0]
        if len(self.outputs) == 1:
            return [Block(self.index, tuple(self.rows), tuple(self.seconds), first,
                          self.inputs[0])]
        if all(batch[name].shape[1:] == array.shape[1:]
               for batch in self.outputs for name, array in first.items()):
            joined = {name: np.concatenate([batch[name] for batch in self.outputs])
                      for name in first}
            return [Block(self.index, tuple(self.rows), tuple(self.seconds), joined,
                          np.concatenate(self.inputs))]
        return [Block(self.index + offset, (rows,), (seconds,), outputs, inputs)
                for offset, (rows, seconds, outputs, inputs) in
                enumerate(zip(self.rows, self.seconds, self.outputs, self.inputs, strict=True))]


def _send(conn: Connection, block: _Block) -> None:
    for message in block.messages():
        conn.send(message)


def run_job(job: Job, conn: Connection) -> None:
    stage = "load"
    try:
        os.environ.update(job.spec.env)  # before the runtime is imported: it may read them once
        backend = create_backend(job.spec, job.prediction, job.runtime)
        backend.activate(job.model)
        where = job.source.describe()
        layout = job.layout
        signature = layout.canonical(job.model.signature)  # the sources' batches: samples first
        stage = "warm-up"
        # Warm up while loading, before Ready: untimed work overlaps other workers' loading.
        first = next(calls(job.source, job.batch_size, layout), None)
        if first is not None:
            feed = layout.to_model(conform_batch(first, signature, where))
            for _ in range(job.warmup):
                backend.infer(feed)
        conn.send(Ready(_describe(backend, job.spec)))
        conn.recv()  # "go": wait while other backends run, so timings never overlap
        block = _Block(0)
        marker = StageMarker(job.stage_path)
        state = _State(layout, job.teacher)
        for index, batch in enumerate(calls(job.source, job.batch_size, layout)):
            stage = f"batch {index}"
            marker.mark(index)
            # what the source gave, before a carried state fills in: the audit checks that
            # every backend was fed the same
            given = row_digests(batch)
            feed = conform_batch(state.fill(batch), signature, where)
            rows = rows_of(feed)
            feed = layout.to_model(feed)
            start = time.perf_counter()
            outputs = backend.infer(feed)
            seconds = time.perf_counter() - start
            outputs = layout.to_canonical(outputs)
            state.update(outputs, rows)
            block.add(rows, seconds, outputs, given)
            if block.full:
                _send(conn, block)
                block = _Block(index + 1)
        if block.rows:
            _send(conn, block)
        stage = "finish"
        description = _describe(backend, job.spec)
        backend.deactivate()
        conn.send(Done(description))
    except BaseException as exc:  # anything the runtime throws is a finding
        conn.send(Failed(stage, *what_failed(exc)))


def what_failed(exc: BaseException) -> tuple[str, str, str]:
    """(kind, message, traceback) of an exception a backend raised, as a failure reports it:
    the user's mistake in its own words, anything else with its type. Also the Ray engine's."""
    if isinstance(exc, ModelParityError):
        return "user", str(exc), traceback.format_exc()
    return "exception", f"{type(exc).__name__}: {first_line(exc)}", traceback.format_exc()


class _State:
    """The state carried from one call into the next (`--carry`): the backend's own outputs,
    or teacher-forced, the reference's outputs for the same items, read from its spool. An item
    that gives the state input starts a sequence with it."""

    def __init__(self, layout: Layout, teacher: tuple[str, str] | None) -> None:
        self.carry = layout.carry
        self.carried: dict[str, np.ndarray] = {}
        self.reader: SpoolReader | None = None
        if teacher is not None and self.carry:
            spool = OutputSpool.load(*teacher)
            if spool is None:
                raise RuntimeError("teacher-forced run: the reference's outputs are not there")
            self.reader = spool.reader()

    def fill(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [(out, inp) for out, inp in self.carry if inp not in batch]
        if not missing:
            return batch
        batch = dict(batch)
        for out, inp in missing:
            if inp not in self.carried:
                raise ModelParityError(f"input '{inp}' is not given and no earlier call gave "
                                       f"'{out}' to carry into it")
            batch[inp] = self.carried[inp]
        return batch

    def update(self, outputs: dict[str, np.ndarray], rows: int) -> None:
        if not self.carry:
            return
        source = outputs
        if self.reader is not None:
            source = self.reader.read(rows) or {}
        for out, inp in self.carry:
            if out not in source:
                raise ModelParityError(f"--carry {out}={inp}: the model gave no output '{out}'")
            self.carried[inp] = np.asarray(source[out])


def _describe(backend: Any, spec: BackendSpec) -> dict[str, Any]:
    """The backend's description as plain JSON values: a runtime's own types (torch's version
    string is a `TorchVersion`) would import the runtime in the audit's process when unpickled."""
    description = dict(backend.describe())
    if spec.env:
        description["env"] = spec.env
    return json.loads(json.dumps(jsonable(description), default=str))


def _handle(conn: Connection) -> None:
    # `py:` backends and PyTorch factories may live in the directory the user ran modelparity
    # in: it goes last on the path (`python -P` left it off), so a stray onnxruntime.py there
    # never shadows the runtime.
    sys.path.append(os.getcwd())
    job: Job = conn.recv()
    redirect_output(job.log_path)
    run_job(job, conn)


if __name__ == "__main__":
    serve(_handle)
