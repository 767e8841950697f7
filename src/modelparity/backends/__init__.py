"""Runtime plugins. Each runtime family is one module with a `create(spec) -> Backend` function,
imported only when a spec names it (and only inside a worker process), so a missing or broken
runtime never affects the others."""

from __future__ import annotations

import importlib

from modelparity.backends.base import Backend
from modelparity.errors import BackendUnavailable
from modelparity.spec import BackendSpec

PLUGINS = {
    "ort": ("modelparity.backends.onnxruntime", "onnxruntime", "modelparity"),
    "openvino": ("modelparity.backends.openvino", "openvino", "modelparity[openvino]"),
    "torch": ("modelparity.backends.torch", "torch", "modelparity[torch]"),
    "py": ("modelparity.backends.pyentry", None, None),
    "emulate": ("modelparity.backends.emulate", "onnxruntime", "modelparity"),
    "coreml": ("modelparity.backends.coreml", "coremltools", "modelparity[coreml]"),
}


def create_backend(spec: BackendSpec) -> Backend:
    """Import the plugin for `spec.runtime` and build its backend (not yet activated)."""
    module_name, package, extra = PLUGINS[spec.runtime]
    if package is not None:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise BackendUnavailable(
                f"{spec.text}: needs the '{package}' package, which is not installed here "
                f"(pip install '{extra}'): {exc}"
            ) from None
    module = importlib.import_module(module_name)
    return module.create(spec)


def check_spec(spec: BackendSpec) -> None:
    """Validate a spec's target and options without importing its runtime (`modelparity lint`
    runs nothing); plugins that can check statically define `check_spec(spec)`."""
    module = importlib.import_module(PLUGINS[spec.runtime][0])
    check = getattr(module, "check_spec", None)
    if check is not None:
        check(spec)


__all__ = ["PLUGINS", "Backend", "check_spec", "create_backend"]
