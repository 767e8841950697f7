"""modelparity: prove a model makes the same decisions on every runtime it ships to.

The names below are imported lazily, so that worker processes (which import
`modelparity.execute.worker`) do not pay for the comparison and reporting code they never use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "audit": "modelparity.api",
    "localize": "modelparity.locate",
    "LocateResult": "modelparity.locate",
    "keep_fp32": "modelparity.locate.keep",
    "KeepResult": "modelparity.locate.keep",
    "AuditResult": "modelparity.result",
    "BackendResult": "modelparity.result",
    "BackendSpec": "modelparity.spec",
    "parse_spec": "modelparity.backends",
    "TaskConfig": "modelparity.decisions",
    "ModelParityError": "modelparity.errors",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'modelparity' has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
