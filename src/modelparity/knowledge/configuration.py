"""A backend's resolved configuration: what the rules are matched against.

Statically (`modelparity lint`) it is the spec's options as given, this machine (OS, CPU flags,
NVIDIA GPU) and the installed runtime's version. After a run it also holds the options as the
runtime reports them once loaded (ONNX Runtime's effective provider options, OpenVINO's compiled
properties), which is how a default the user never wrote down becomes visible.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelparity.spec import BackendSpec


@dataclass(frozen=True)
class Configuration:
    spec: BackendSpec
    target: str  # canonical: ort:CUDAExecutionProvider -> cuda
    options: dict[str, str]  # as given, without env.* options
    env: dict[str, str]  # the process environment with the spec's env.* options on top
    reported: dict[str, str] = field(default_factory=dict)  # as the loaded runtime reports them
    version: str | None = None  # of the runtime package, None when not installed
    machine: str = ""
    system: str = ""
    cpu_flags: tuple[str, ...] | None = None  # None: not known on this OS
    gpu_sm: int | None = None  # compute capability x10 of the first NVIDIA GPU, None: none seen
    gpu_name: str | None = None
    os_version: str | None = None  # macOS's version on a Mac (platform.mac_ver); None elsewhere
    qairt: str | None = None  # the QNN SDK (QAIRT) behind ORT's QNN EP: not read, so None

    @property
    def runtime(self) -> str:
        return self.spec.runtime

    def option(self, name: str) -> str | None:
        """The option as given, else as the runtime reported it; None when neither says."""
        for source in (self.options, self.reported):
            for key, value in source.items():
                if key.lower() == name.lower():
                    return str(value)
        return None

    def given(self, name: str) -> bool:
        return any(key.lower() == name.lower() for key in self.options)


@functools.cache
def runtime_version(package: str) -> str | None:
    """The installed version of `package` (onnxruntime-gpu counts as onnxruntime), without
    importing it."""
    from importlib import metadata

    for name in (package, f"{package}-gpu"):  # the usual names first: the scan below is slow
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    for name in metadata.packages_distributions().get(package, []):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def resolve(spec: BackendSpec, description: Mapping[str, Any] | None = None, *,
            environ: Mapping[str, str] | None = None, package: str | None = None
            ) -> Configuration:
    """Resolve `spec` (canonical: see `backends.parse_spec`) against this machine and, after a
    run, its backend's description, with the options its runtime reported there (read by the
    runtime's own declaration: `Runtime.reported_options`)."""
    from modelparity.backends.registry import get_runtime
    from modelparity.environment import cpu_flags, nvidia_gpu

    description = description or {}
    runtime = get_runtime(spec.runtime)
    reported = runtime.reported_options(description) if runtime.reported_options else {}
    if runtime.static_options is not None:
        reported = {**runtime.static_options(spec), **reported}
    package = package or runtime.distribution
    env = dict(os.environ if environ is None else environ)
    env.update(spec.env)
    version = description.get("version")
    if not isinstance(version, str) and package:
        version = runtime_version(package)
    flags = cpu_flags() if sys.platform.startswith("linux") else None
    gpu = nvidia_gpu()
    machine, system = platform.machine().lower(), sys.platform
    os_version = (platform.mac_ver()[0] or None) if sys.platform == "darwin" else None
    captured = (description.get("capture") or {}).get("machine")
    if isinstance(captured, dict):  # a capture: the machine it was taken on, not this one
        system = str(captured.get("system") or "")
        machine = str(captured.get("machine") or "").lower()
        flags = captured.get("cpu_flags") if system.startswith("linux") else None
        gpu = tuple(captured["gpu"]) if captured.get("gpu") else None
        os_version = captured.get("os_version")
        env = {**{k: str(v) for k, v in (captured.get("env") or {}).items()}, **spec.env}
    return Configuration(
        spec=spec,
        target=spec.target,
        options=dict(spec.options),
        env=env,
        reported=reported,
        version=version if isinstance(version, str) else None,
        machine=machine,
        system=system,
        cpu_flags=tuple(flags) if flags is not None else None,
        gpu_sm=gpu[1] if gpu else None,
        gpu_name=gpu[0] if gpu else None,
        os_version=os_version,
    )
