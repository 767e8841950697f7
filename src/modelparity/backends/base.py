"""The one small protocol every runtime plugin implements.

A backend is created from a `BackendSpec`, then used as: `activate(model)` (load and compile),
`infer(feed)` once per batch, `describe()` (what really runs: versions, options as given and as
defaulted, the precision the runtime reports), `deactivate()`. It always runs inside a worker
process (see `runner.py`), so it may import its runtime freely and may crash without harm.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec


class Backend(ABC):
    """Base class for runtime plugins: subclasses implement the `*_impl` hooks."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.active = False

    def activate(self, model: PreparedModel) -> None:
        self.activate_impl(model)
        self.active = True

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise RuntimeError(f"{self.spec.text}: infer() called before activate()")
        return self.infer_impl(feed)

    def describe(self) -> dict[str, Any]:
        return self.describe_impl()

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
        self.active = False

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @abstractmethod
    def activate_impl(self, model: PreparedModel) -> None: ...

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def describe_impl(self) -> dict[str, Any]: ...

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Free the session; the default lets garbage collection do it."""
