"""Runtime plugins. Each runtime family is one module that declares itself (`RUNTIME`, see
`runtime.py`) and has a `create(spec) -> Backend` function; the module's runtime package is
imported only when a spec names it, and only inside a worker process, so a missing or broken
runtime never affects the others. `registry.py` collects the declarations."""

from __future__ import annotations

from modelparity.backends.registry import (
    ENTRY_POINT_GROUP,
    create_backend,
    get_runtime,
    parse_spec,
    runtimes,
)
from modelparity.backends.runtime import Option, Runtime

__all__ = ["ENTRY_POINT_GROUP", "Option", "Runtime", "create_backend", "get_runtime",
           "parse_spec", "runtimes"]
