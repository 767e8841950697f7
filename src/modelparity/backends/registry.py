"""Every runtime modelparity knows, from the runtimes' own declarations.

The built-in backend modules each declare `RUNTIME`; third-party packages add theirs under the
`modelparity.runtimes` entry point group (the entry point names a `Runtime`, or a module that
has a `RUNTIME`). Looking a runtime up imports its declaration, never the runtime itself.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from modelparity.backends.runtime import Runtime
from modelparity.errors import BackendUnavailable, SpecError
from modelparity.spec import BackendSpec, read_spec

ENTRY_POINT_GROUP = "modelparity.runtimes"
BUILTIN = (
    "modelparity.backends.onnxruntime",
    "modelparity.backends.openvino",
    "modelparity.backends.torch",
    "modelparity.backends.coreml",
    "modelparity.backends.emulate",
    "modelparity.backends.pyentry",
    "modelparity.backends.capture",
)


def _declaration(value: Any, where: str) -> Runtime:
    declared = getattr(value, "RUNTIME", value)
    if not isinstance(declared, Runtime):
        raise TypeError(f"{where}: expected a modelparity Runtime declaration, got "
                        f"{type(declared).__name__}")
    return declared


@functools.cache
def runtimes() -> dict[str, Runtime]:
    """{spec prefix: declaration}, built-ins first, then installed third-party runtimes."""
    from importlib import metadata  # scanning the installed distributions is not free

    found: dict[str, Runtime] = {}
    for name in BUILTIN:
        declared = _builtin(name)
        found[declared.name] = declared
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            declared = _declaration(entry.load(), f"entry point {entry.name} ({entry.value})")
        except Exception as exc:  # a broken plugin must not break the others
            import warnings

            warnings.warn(f"modelparity: runtime plugin {entry.name} ({entry.value}) could not "
                          f"be loaded: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        found.setdefault(declared.name, declared)
    return found


@functools.cache
def _builtin(module: str) -> Runtime:
    return _declaration(importlib.import_module(module), module)


def get_runtime(name: str) -> Runtime:
    """The declaration of runtime `name`. Built-in runtimes are looked at one by one until it
    is found, so an audit imports the declarations it uses; installed plugins are scanned only
    for a name no built-in runtime has."""
    for module in BUILTIN:
        declared = _builtin(module)
        if declared.name == name:
            return declared
    known = runtimes()
    if name not in known:
        listed = "; ".join(r.help_line() for r in known.values())
        raise SpecError(f"unknown runtime '{name}' (expected one of: {listed})")
    return known[name]


def parse_spec(text: str | BackendSpec) -> BackendSpec:
    """Parse and check a backend spec against its runtime's declaration: the runtime, the
    target (made canonical: `ort:CUDAExecutionProvider` is `ort:cuda`) and every option's name,
    type and value. `SpecError` (one line, naming the spec and what was expected) otherwise.
    Runs no runtime, so it works for runtimes this machine does not have."""
    spec = text if isinstance(text, BackendSpec) else read_spec(text)
    written = text if isinstance(text, str) else text.text
    try:
        runtime = get_runtime(spec.runtime)
    except SpecError as unknown:
        raise SpecError(f"backend '{written}': {unknown}") from None
    target = spec.target
    if not target:
        if runtime.default_target is None:
            raise SpecError(f"backend '{written}': expected {runtime.usage}")
        target = runtime.default_target
    spec = BackendSpec(spec.runtime, target, spec.options, spec.env)
    spec = BackendSpec(spec.runtime, runtime.canonical_target(spec), spec.options, spec.env)
    runtime.validate(spec)
    return spec


def create_backend(spec: BackendSpec, prediction: Any = None,
                   runtime: Runtime | None = None) -> Any:
    """Import the runtime's backend module and build its backend (not yet activated). Called in
    a worker process: this is where a runtime package is first imported. `prediction` (a
    `standin.Prediction`) is given where the plan found that the runtime cannot execute here;
    `runtime`, the declaration, spares the worker looking up every installed runtime."""
    runtime = runtime or get_runtime(spec.runtime)
    if runtime.package is not None:
        try:
            importlib.import_module(runtime.package)
        except ImportError as exc:
            hint = f" (pip install '{runtime.extra}')" if runtime.extra else ""
            raise BackendUnavailable(
                f"{spec.text}: needs the '{runtime.package}' package, which is not installed "
                f"here{hint}: {exc}"
            ) from None
    module = importlib.import_module(runtime.module)
    return module.create(spec) if prediction is None else module.create(spec, prediction)
