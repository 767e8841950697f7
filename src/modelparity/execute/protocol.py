"""The one protocol between the audit and its child processes (backend workers, the PyTorch
export): typed messages over a socketpair with a fresh `python -P -m <module> <fd>`.

A fresh interpreter, not multiprocessing's spawn: no `if __name__ == "__main__"` guard is
needed in the caller's script, and the runtime is imported only in the child. `-P` keeps the
current directory off the child's import path, so a stray `onnxruntime.py` there is never run.
The child's C-level stdout/stderr go to a log file, out of the user's terminal.

Messages, parent to child: the job (a worker's `runner.Job`, the export's request), then "go".
Child to parent: `Ready` (loaded), `Block` (outputs of one or more batches), `Done`, `Exported`
(the export's result), `Failed` (a Python exception in the child, with its stage). A child that
dies or goes silent is told apart by the parent (`ChildLost`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from modelparity.errors import InputError


@dataclass(frozen=True)
class Ready:
    description: dict[str, Any]


@dataclass(frozen=True)
class Block:
    """Consecutive batches, sent together so the process boundary is crossed per block, not per
    inference call: `rows[i]` and `seconds[i]` (inference time, measured around each call) per
    batch, and each output's values for all of them, concatenated."""

    index: int  # of the first batch in the block
    rows: tuple[int, ...]
    seconds: tuple[float, ...]
    outputs: dict[str, Any]
    inputs: Any = None  # uint64, one digest per sample of what was fed (`row_digests`)


@dataclass(frozen=True)
class Done:
    description: dict[str, Any]


@dataclass(frozen=True)
class Exported:
    info: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    stage: str
    kind: str  # user | exception
    message: str
    detail: str | None = None


class ChildLost(Exception):
    """The child sent nothing in time (`timed_out`), or died (`code`: its exit status)."""

    def __init__(self, code: int | None, timed_out: bool = False) -> None:
        super().__init__("timed out" if timed_out else f"exit status {code}")
        self.code = code
        self.timed_out = timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "no answer"
        code = self.code if self.code is not None else 0
        if code < 0:
            try:
                return f"crashed ({signal.Signals(-code).name})"
            except ValueError:
                return f"crashed (signal {-code})"
        return f"exited with code {code}"


class Child:
    """The parent's end of one child process."""

    def __init__(self, module: str, temp: str | None = None) -> None:
        """With `temp`, the child's temporary files (a runtime's model copies, caches) go
        there: a folder the parent removes, even where the child is killed before it can."""
        parent, child = socket.socketpair()
        env = None
        if temp is not None:
            os.makedirs(temp, exist_ok=True)
            env = {**os.environ, "TMPDIR": temp, "TEMP": temp, "TMP": temp}
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", module, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        child.close()
        self.conn = Connection(parent.detach())

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def receive(self, timeout: float) -> Any:
        """The next message; `ChildLost` when none comes within `timeout` seconds (the child is
        killed) or the child dies first."""
        try:
            if not self.conn.poll(timeout):
                self.kill()
                raise ChildLost(None, timed_out=True)
            return self.conn.recv()
        except (EOFError, OSError, ConnectionError):
            raise ChildLost(self.exit_code()) from None

    def exit_code(self) -> int:
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def close(self, finished: bool = True) -> None:
        """End the child: wait for a finished one to exit, kill one that was cut short."""
        if not finished:
            self.kill()
        with contextlib.suppress(OSError):
            self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()


NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def private_file(path: str) -> int:
    """Open `path` to write it from scratch, never through a symbolic link planted there (a
    link at OUT/logs/x.log would truncate whatever it points to): one line names the path."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise InputError(f"{path}: is a symbolic link; modelparity writes its logs there "
                             f"and does not follow links (remove it)") from None
        raise InputError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def redirect_output(log_path: str | None) -> None:
    """In the child: send the C-level stdout/stderr to `log_path` (runtimes print there)."""
    if not log_path:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)


def die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies, however it dies (SIGKILL,
    a crash, `timeout`), so a hanging worker is never left behind. Elsewhere, nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call took effect
            os._exit(1)


def serve(handle: Callable[[Connection], None]) -> None:
    """The child's main: connect to the parent, run `handle(conn)`, exit without interpreter
    teardown (unloading a runtime can take a while, and everything has been sent)."""
    die_with_parent()
    conn = Connection(socket.socket(fileno=int(sys.argv[1])).detach())
    try:
        handle(conn)
    finally:
        with contextlib.suppress(OSError):
            conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class StageMarker:
    """The batch a worker is in, in 8 bytes of a shared file: a block of batches is sent only
    when full, so when the worker dies or hangs the parent reads here which batch it was in."""

    def __init__(self, path: str | None) -> None:
        self.map: mmap.mmap | None = None
        if path:
            with open(path, "r+b") as handle:
                self.map = mmap.mmap(handle.fileno(), 8)

    def mark(self, index: int) -> None:
        if self.map is not None:
            self.map[:8] = index.to_bytes(8, "little", signed=True)

    @staticmethod
    def create(path: str) -> str:
        with os.fdopen(private_file(path), "wb") as handle:
            handle.write((-1).to_bytes(8, "little", signed=True))
        return path

    @staticmethod
    def read(path: str | None) -> int | None:
        """The batch marked last, or None before the first."""
        if not path or not os.path.exists(path):
            return None
        with open(path, "rb") as handle:
            value = int.from_bytes(handle.read(8), "little", signed=True)
        return None if value < 0 else value
