"""Backend spec strings: `runtime:target?key=value&key=value`.

Examples: `ort:cpu`, `ort:cuda?use_tf32=0`, `openvino:cpu?INFERENCE_PRECISION_HINT=f32`,
`torch:cpu`, `py:my_pkg.backends:make_backend?flag=1`, `ort:tensorrt?env.NVIDIA_TF32_OVERRIDE=0`.
Values stay strings here; each backend converts and validates its own options, so this module
knows no runtime. `env.NAME=value` options are kept apart (`BackendSpec.env`): the worker sets
them in its environment before it imports the runtime, which never sees them as options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from modelparity.errors import SpecError

RUNTIMES = {
    "ort": "ONNX Runtime: ort:<execution provider>?<provider or session option>=<value>",
    "openvino": "OpenVINO: openvino:<device>?<PROPERTY>=<value>",
    "torch": "PyTorch eager: torch:<cpu|cuda|mps>",
    "py": "your own backend: py:<module>:<factory>?<key>=<value>",
    "emulate": "a lower precision emulated on the CPU: emulate:<fp16|bf16|tf32|int8>",
    "coreml": "Core ML through coremltools: coreml:<all|cpu_only|cpu_and_gpu|cpu_and_ne>"
              "?compute_precision=<fp16|fp32>&format=<mlprogram|neuralnetwork>",
}
DEFAULT_TARGET = {"ort": "cpu", "openvino": "cpu", "torch": "cpu", "coreml": "all"}
#: Options named env.NAME set an environment variable in the backend's worker process before
#: its runtime is imported (NVIDIA_TF32_OVERRIDE=0, ONEDNN_DEFAULT_FPMATH_MODE=strict, ...).
ENV_PREFIX = "env."


@dataclass(frozen=True)
class BackendSpec:
    runtime: str
    target: str
    options: dict[str, str] = field(default_factory=dict)  # for the runtime
    env: dict[str, str] = field(default_factory=dict)  # env.NAME=value: for the worker process

    @property
    def text(self) -> str:
        items = [*self.options.items(), *((ENV_PREFIX + k, v) for k, v in self.env.items())]
        query = "&".join(f"{k}={v}" for k, v in items)
        return f"{self.runtime}:{self.target}" + (f"?{query}" if query else "")

    def with_options(self, **options: str) -> BackendSpec:
        return BackendSpec(self.runtime, self.target, {**self.options, **options}, self.env)

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str) -> BackendSpec:
    """Parse a backend spec; raise `SpecError` with the expected syntax when it does not fit."""
    raw = text.strip()
    head, _, query = raw.partition("?")
    runtime, _, target = head.partition(":")
    runtime = runtime.strip().lower()
    if runtime not in RUNTIMES:
        known = "; ".join(RUNTIMES.values())
        raise SpecError(f"backend '{text}': unknown runtime '{runtime}' (expected one of: {known})")
    target = target.strip()
    if not target:
        if runtime not in DEFAULT_TARGET:
            raise SpecError(f"backend '{text}': expected {RUNTIMES[runtime]}")
        target = DEFAULT_TARGET[runtime]
    if runtime == "py" and ":" not in target:
        raise SpecError(f"backend '{text}': expected {RUNTIMES['py']}")
    if runtime != "py":
        target = target.lower()
    options: dict[str, str] = {}
    env: dict[str, str] = {}
    if query:
        for part in query.split("&"):
            if "=" not in part or not part.split("=", 1)[0]:
                raise SpecError(f"backend '{text}': option '{part}' is not key=value")
        for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            name, into = (key[len(ENV_PREFIX):], env) if key.startswith(ENV_PREFIX) \
                else (key, options)
            if not name or name in into:
                raise SpecError(f"backend '{text}': option '{key}' "
                                + ("given twice" if name else "names no variable"))
            into[name] = value
    return BackendSpec(runtime, target, options, env)


def slug(text: str) -> str:
    """A spec as a file name: worker logs, saved results and repro folders are named by it."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")
