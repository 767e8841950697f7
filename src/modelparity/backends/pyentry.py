"""Your own backend: `py:<module>:<factory>?<key>=<value>`.

The factory is called with the spec's options as a dict of strings and returns an object with
`activate(model)`, `infer(feed) -> dict of arrays`, and optionally `describe()` and
`deactivate()`: the same protocol as the built-in backends (subclassing `Backend` is optional).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelparity.backends.base import Backend
from modelparity.backends.runtime import Runtime
from modelparity.entrypoints import load_entry_point
from modelparity.errors import SpecError
from modelparity.model import PreparedModel
from modelparity.spec import BackendSpec


class PythonBackend(Backend):
    def __init__(self, spec: BackendSpec) -> None:
        super().__init__(spec)
        factory = load_entry_point(spec.target, SpecError,
                                   expected="py:module:factory returning a backend")
        self.user = factory(dict(spec.options))
        for method in ("activate", "infer"):
            if not callable(getattr(self.user, method, None)):
                raise SpecError(f"{spec.text}: the factory's object has no {method}() method")

    def activate_impl(self, model: PreparedModel) -> None:
        self.user.activate(model)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in self.user.infer(feed).items()}

    def describe_impl(self) -> dict[str, Any]:
        describe = getattr(self.user, "describe", None)
        info = dict(describe()) if callable(describe) else {}
        return {"runtime": "python", "entry_point": self.spec.target,
                "options": dict(self.spec.options), **info}

    def deactivate_impl(self) -> None:
        deactivate = getattr(self.user, "deactivate", None)
        if callable(deactivate):
            deactivate()


def create(spec: BackendSpec) -> PythonBackend:
    return PythonBackend(spec)


def check_spec(spec: BackendSpec) -> None:
    if ":" not in spec.target:
        raise SpecError(f"backend '{spec.text}': expected {RUNTIME.usage}")


RUNTIME = Runtime(
    name="py",
    title="Your own backend",
    usage="py:<module>:<factory>?<key>=<value>",
    module=__name__,
    open_targets=None,  # the factory receives every option as given
    check=check_spec,
    keep_target_case=True,
)
